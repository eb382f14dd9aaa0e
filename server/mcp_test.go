package server_test

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// keyTransport sends an x-api-key.
type keyTransport struct{ key string }

func (k keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("x-api-key", k.key)
	return http.DefaultTransport.RoundTrip(r)
}

// TestServeMCP drives `lgrun serve`'s /mcp with the Go SDK's client: it
// needs the API key, lists the graphs as tools and runs one to its final
// state.
func TestServeMCP(t *testing.T) {
	db := filepath.Join(t.TempDir(), "lgrun.db")
	_, base := startServe(t, db, []string{"LGRUN_API_KEYS=k1"}, "../graphs/weather-agent.yaml", "../graphs/loop.yaml")
	ctx := context.Background()
	client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "v0"}, nil)

	if _, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, nil); err == nil || !strings.Contains(err.Error(), "Unauthorized") {
		t.Fatalf("connect without the key: %v", err)
	}

	sess, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: &http.Client{Transport: keyTransport{"k1"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var names []string
	for tool, err := range sess.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tool.Name)
	}
	if strings.Join(names, ",") != "weather-agent,loop" && strings.Join(names, ",") != "loop,weather-agent" {
		t.Fatalf("tools: %v", names)
	}
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "weather-agent", Arguments: map[string]any{
		"messages": []any{map[string]any{"role": "user", "content": "Weather in New York?"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	state, _ := res.StructuredContent.(map[string]any)
	msgs, _ := state["messages"].([]any)
	if res.IsError || len(msgs) == 0 || msgs[len(msgs)-1].(map[string]any)["content"] != "New York: clear, 72F." {
		t.Fatalf("result: %v %v", res.IsError, res.StructuredContent)
	}
	// The run is a thread of the checkpoint database.
	thread, _ := res.Meta["lgrun/thread"].(string)
	out, err := exec.Command(lgrunBinary(t), "state", "--db", db, "--thread", thread).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "New York: clear, 72F.") {
		t.Fatalf("lgrun state --thread %s: %v\n%s", thread, err, out)
	}
}
