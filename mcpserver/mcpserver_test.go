package mcpserver_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/mcpserver"
	"github.com/lgrun/lgrun/spec"
)

// TestHTTPHandler drives the streamable HTTP handler with the Go SDK's
// client: the graphs are listed as tools with their state schemas, and a
// call runs the graph (the mock model, offline) and returns its final
// state.
func TestHTTPHandler(t *testing.T) {
	eng, err := lgrun.New()
	if err != nil {
		t.Fatal(err)
	}
	var graphs []*spec.Graph
	for _, f := range []string{"../graphs/weather-agent.yaml", "../graphs/loop.yaml"} {
		g, diags := eng.Load(f)
		if diags.HasErrors() {
			t.Fatalf("%s: %v", f, diags)
		}
		graphs = append(graphs, g)
	}
	saver := checkpoint.NewMemory()
	h, err := mcpserver.Handler(eng, graphs, saver, "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	ctx := context.Background()
	client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "v0"}, nil)
	sess, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	checkServed(t, sess)
}

// checkServed lists the tools and calls weather-agent.
func checkServed(t *testing.T, sess *mcp.ClientSession) {
	t.Helper()
	ctx := context.Background()
	tools := map[string]*mcp.Tool{}
	for tool, err := range sess.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		tools[tool.Name] = tool
	}
	wa := tools["weather-agent"]
	if len(tools) != 2 || wa == nil || tools["loop"] == nil {
		t.Fatalf("tools: %v", tools)
	}
	schema, _ := json.Marshal(wa.InputSchema)
	if !strings.Contains(string(schema), `"max_iterations":{"default":5,"type":"integer"}`) || !strings.Contains(string(schema), `"messages":{`) {
		t.Fatalf("input schema: %s", schema)
	}
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "weather-agent", Arguments: map[string]any{
		"messages": []any{map[string]any{"role": "user", "content": "Weather in New York?"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError {
		t.Fatalf("error result: %v", res.Content)
	}
	state, _ := res.StructuredContent.(map[string]any)
	msgs, _ := state["messages"].([]any)
	if len(msgs) == 0 || state["iterations"] != float64(1) {
		t.Fatalf("final state: %v", res.StructuredContent)
	}
	last, _ := msgs[len(msgs)-1].(map[string]any)
	if last["content"] != "New York: clear, 72F." {
		t.Fatalf("last message: %v", last)
	}
	text := res.Content[0].(*mcp.TextContent).Text
	var fromText map[string]any
	if err := json.Unmarshal([]byte(text), &fromText); err != nil || fromText["iterations"] != float64(1) {
		t.Fatalf("text: %s (%v)", text, err)
	}
	if res.Meta["lgrun/status"] != "done" || !strings.HasPrefix(res.Meta["lgrun/thread"].(string), "mcp-") {
		t.Fatalf("meta: %v", res.Meta)
	}
	// Bad input is an error result, not a broken session.
	res, err = sess.CallTool(ctx, &mcp.CallToolParams{Name: "weather-agent", Arguments: map[string]any{"iterations": "many"}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsError {
		t.Fatalf("bad input: %v", res.StructuredContent)
	}
}

// TestStdio runs `lgrun mcp` as a child process and drives it over stdio
// with the Go SDK's client.
func TestStdio(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "lgrun")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/lgrun").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "mcp", "--no-db", "../graphs/weather-agent.yaml", "../graphs/loop.yaml")
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "v0"}, nil)
	sess, err := client.Connect(context.Background(), &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, stderr.String())
	}
	checkServed(t, sess)
	if err := sess.Close(); err != nil {
		t.Errorf("close: %v\n%s", err, stderr.String())
	}
}
