package builtin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// The MCP tests run a real third-party server,
// @modelcontextprotocol/server-everything, pinned in testdata/mcp
// (package.json and package-lock.json; `npm ci` there installs it, and
// .ci/run does). Without node or the package the tests skip, except under
// CI=true, where they fail.

var (
	everythingOnce sync.Once
	everythingErr  error
)

// everything returns the path of server-everything's entry point.
func everything(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "mcp"))
	if err != nil {
		t.Fatal(err)
	}
	entry := filepath.Join(dir, "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js")
	everythingOnce.Do(func() {
		if _, err := exec.LookPath("node"); err != nil {
			everythingErr = fmt.Errorf("node is not installed: %v", err)
			return
		}
		if _, err := os.Stat(entry); err == nil {
			return
		}
		if _, err := exec.LookPath("npm"); err != nil {
			everythingErr = fmt.Errorf("npm is not installed, and %s is missing", entry)
			return
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			everythingErr = fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
		}
	})
	if everythingErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("MCP test server unavailable under CI: %v", everythingErr)
		}
		t.Skipf("MCP test server unavailable: %v (CI=true makes this a failure)", everythingErr)
	}
	return entry
}

// mcpEnv passes PATH to the server besides the model's key.
func mcpEnv() func(string) string {
	return func(k string) string {
		switch k {
		case "TEST_KEY":
			return testKey
		case "PATH", "HOME":
			return os.Getenv(k)
		}
		return ""
	}
}

// agentGraph is an agent loop over the mcp source src.
func agentGraph(t *testing.T, modelURL, src string) *spec.Graph {
	t.Helper()
	return mustGraph(t, `version: 1
name: mcp-agent
state:
  messages: {type: messages, default: [{role: user, content: "go"}]}
models:
  m:
`+modelAt(modelURL, "stream: false")+`
tools:
  ev:
`+src+`
nodes:
  agent: {kind: llm, model: m, tools: [ev]}
  tools: {kind: tools, tools: [ev]}
edges:
  - {from: START, to: agent}
  - {from: agent, when: has_tool_calls(state.messages), to: tools, else: END}
  - {from: tools, to: agent}
`, nil)
}

// toolMessages returns the tool messages of a run's state by call id.
func toolMessages(values map[string]any) map[string]string {
	out := map[string]string{}
	l, _ := values["messages"].([]any)
	for _, m := range l {
		mm, _ := m.(map[string]any)
		if mm["role"] == "tool" {
			out[fmt.Sprint(mm["tool_call_id"])] = fmt.Sprint(mm["content"])
		}
	}
	return out
}

// checkAgentLoop runs the loop against source src: a call, an isError
// result, a timeout, then the answer.
func checkAgentLoop(t *testing.T, src string) {
	srv := newFakeServer(t,
		fakeReply{ToolCalls: []fakeCall{{ID: "c1", Name: "ev_echo", Args: `{"message": "hello mcp"}`}}},
		fakeReply{ToolCalls: []fakeCall{{ID: "c2", Name: "ev_get-resource-reference", Args: `{"resourceType": "Text", "resourceId": -3}`}}},
		fakeReply{ToolCalls: []fakeCall{{ID: "c3", Name: "ev_trigger-long-running-operation", Args: `{"duration": 30, "steps": 2}`}}},
		fakeReply{ToolCalls: []fakeCall{{ID: "c4", Name: "ev_get-sum", Args: `{"a": 2, "b": 40}`}}},
		fakeReply{Content: "done"},
	)
	g := agentGraph(t, srv.URL(), src)
	env := NewEnvironment()
	t.Cleanup(func() { _ = env.CloseMCP() })
	r, _ := newRunnerIn(t, env, g, Options{Getenv: mcpEnv()})
	res := runGraph(t, r, "t", nil)
	if res.Status != runtime.StatusDone || lastMessage(t, res.Checkpoint.Values)["content"] != "done" {
		t.Fatalf("run: %s %v", res.Status, res.Checkpoint.Values)
	}
	// The model got the listed tools as functions with the server's schemas.
	req := srv.requests()[0].Body
	fns := map[string]map[string]any{}
	for _, x := range req["tools"].([]any) {
		fn := x.(map[string]any)["function"].(map[string]any)
		fns[fn["name"].(string)] = fn
	}
	if len(fns) != 4 || fns["ev_echo"]["description"] != "Echoes back the input string" || !strings.Contains(jsonOf(t, fns["ev_echo"]["parameters"]), `"message"`) {
		t.Fatalf("functions: %s", jsonOf(t, req["tools"]))
	}
	got := toolMessages(res.Checkpoint.Values)
	if got["c1"] != "Echo: hello mcp" {
		t.Errorf("echo: %q", got["c1"])
	}
	if !strings.Contains(got["c2"], "Invalid resourceId: -3") || !strings.Contains(got["c2"], "failed") {
		t.Errorf("isError result: %q", got["c2"])
	}
	if !strings.Contains(got["c3"], "timed out after 2s") {
		t.Errorf("timeout: %q", got["c3"])
	}
	if !strings.Contains(got["c4"], "42") {
		t.Errorf("sum after a timeout: %q", got["c4"])
	}
	// One session served the whole run.
	env.mcp.mu.Lock()
	defer env.mcp.mu.Unlock()
	if len(env.mcp.conns) != 1 {
		t.Fatalf("%d connections", len(env.mcp.conns))
	}
	for _, c := range env.mcp.conns {
		if c.gen != 1 {
			t.Errorf("%d sessions, want 1", c.gen)
		}
	}
}

const everythingTools = `    tools: [echo, get-resource-reference, trigger-long-running-operation, get-sum]
    prefix: ev_
    timeout: 2s
`

func TestMCPStdioAgentLoop(t *testing.T) {
	entry := everything(t)
	checkAgentLoop(t, `    kind: mcp
    command: [node, `+entry+`, stdio]
`+everythingTools)
}

// startEverythingHTTP runs server-everything in streamableHttp mode on a
// free loopback port and returns its /mcp URL and the process.
func startEverythingHTTP(t *testing.T, entry string, port int) (string, *exec.Cmd) {
	t.Helper()
	if port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	cmd := exec.Command("node", entry, "streamableHttp")
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatalf("server-everything did not listen on %s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "http://" + addr + "/mcp", cmd
}

func TestMCPStreamableHTTPAgentLoop(t *testing.T) {
	entry := everything(t)
	u, _ := startEverythingHTTP(t, entry, 0)
	checkAgentLoop(t, `    kind: mcp
    url: `+u+`
    allow_hosts: [127.0.0.1]
`+everythingTools)
}

// TestMCPServerDiesMidRun: the server dies after the first call; the next
// call is an error the model sees, the llm node then fails cleanly while
// the server is down (the last checkpoint kept), and resuming once the
// server is back finishes the run on a new session.
func TestMCPServerDiesMidRun(t *testing.T) {
	entry := everything(t)
	dir := t.TempDir()
	pidFile, downFile := filepath.Join(dir, "pid"), filepath.Join(dir, "down")
	script := fmt.Sprintf(`if [ -e %q ]; then echo "server is down" >&2; exit 1; fi; echo $$ > %q; exec node %q stdio`, downFile, pidFile, entry)
	kill := func() {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Error(err)
			return
		}
		var pid int
		fmt.Sscan(string(b), &pid)
		if err := os.WriteFile(downFile, nil, 0o644); err != nil {
			t.Error(err)
		}
		p, _ := os.FindProcess(pid)
		_ = p.Kill()
		time.Sleep(300 * time.Millisecond)
	}
	replies := []fakeReply{
		{ToolCalls: []fakeCall{{ID: "c1", Name: "echo", Args: `{"message": "one"}`}}},
		{ToolCalls: []fakeCall{{ID: "c2", Name: "echo", Args: `{"message": "two"}`}}},
		{ToolCalls: []fakeCall{{ID: "c3", Name: "echo", Args: `{"message": "three"}`}}},
		{Content: "done"},
	}
	f := &fakeServer{replies: replies}
	var n int
	var mu sync.Mutex
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		if n == 2 {
			kill() // before the model asks for the second call
		}
		mu.Unlock()
		f.handle(w, r)
	}))
	t.Cleanup(f.Close)
	g := agentGraph(t, f.URL(), `    kind: mcp
    command: [sh, -c, '`+script+`']
    tools: [echo]
`)
	env := NewEnvironment()
	t.Cleanup(func() { _ = env.CloseMCP() })
	r, _ := newRunnerIn(t, env, g, Options{Getenv: mcpEnv()})
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t"})
	if err == nil && res.Status != runtime.StatusFailed {
		t.Fatalf("run with the server down: %v %v", res.Status, res.Checkpoint.Values)
	}
	msg := fmt.Sprint(err)
	if th, terr := r.Saver.Thread(context.Background(), "t"); terr == nil && th.Error != "" {
		msg = th.Error
	}
	if !strings.Contains(msg, "server is down") || !strings.Contains(msg, "mcp server of ev") {
		t.Fatalf("error: %s", msg)
	}
	cp, err := r.Saver.Get(context.Background(), "t", "")
	if err != nil || cp == nil {
		t.Fatalf("latest checkpoint: %v", err)
	}
	got := toolMessages(cp.Values)
	if got["c1"] != "Echo: one" || !strings.Contains(got["c2"], "is not available") || !strings.Contains(got["c2"], "server is down") {
		t.Fatalf("tool messages before the failure: %v", got)
	}
	if err := os.Remove(downFile); err != nil {
		t.Fatal(err)
	}
	res, err = r.Resume(context.Background(), runtime.ResumeOptions{Thread: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != runtime.StatusDone || lastMessage(t, res.Checkpoint.Values)["content"] != "done" {
		t.Fatalf("resume: %s %v", res.Status, res.Checkpoint.Values)
	}
	if got := toolMessages(res.Checkpoint.Values); got["c3"] != "Echo: three" {
		t.Fatalf("after the restart: %v", got)
	}
}

// TestMCPScriptedAndReplayedOffline: a test script answers an mcp
// function's calls without starting its server, and a replay of a real run
// reuses the recorded MCP results without starting it again.
func TestMCPScriptedAndReplayedOffline(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "started")
	script := fmt.Sprintf(`echo started >> %q; exec node %q stdio`, marker, everything(t))
	g := agentGraph(t, "http://127.0.0.1:1/v1", `    kind: mcp
    command: [sh, -c, '`+script+`']
    tools: [echo]
    prefix: ev_
`)
	sc := &Script{
		Models: map[string][]any{"agent": {
			map[string]any{"tool_calls": []any{map[string]any{"name": "ev_echo", "arguments": map[string]any{"message": "x"}}}},
			map[string]any{"text": "ok"},
		}},
		Tools: map[string][]any{"ev_echo": {"Echo: scripted"}},
	}
	r, _ := newRunner(t, g, Options{Getenv: mcpEnv(), Script: sc})
	res := runGraph(t, r, "t", nil)
	if got := toolMessages(res.Checkpoint.Values); res.Status != runtime.StatusDone || len(got) != 1 || !strings.Contains(fmt.Sprint(got), "Echo: scripted") {
		t.Fatalf("scripted run: %s %v", res.Status, res.Checkpoint.Values)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the scripted run started the server (%v)", err)
	}

	// A real run records the result; its replay does not call the server.
	srv := newFakeServer(t,
		fakeReply{ToolCalls: []fakeCall{{ID: "c1", Name: "ev_echo", Args: `{"message": "rec"}`}}},
		fakeReply{Content: "ok"},
	)
	g = agentGraph(t, srv.URL(), `    kind: mcp
    command: [sh, -c, '`+script+`']
    tools: [echo]
    prefix: ev_
`)
	env := NewEnvironment()
	r, _ = newRunnerIn(t, env, g, Options{Getenv: mcpEnv()})
	res = runGraph(t, r, "t", nil)
	if got := toolMessages(res.Checkpoint.Values); got["c1"] != "Echo: rec" {
		t.Fatalf("real run: %v", got)
	}
	if err := env.CloseMCP(); err != nil {
		t.Logf("close: %v", err)
	}
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	hist, err := r.Saver.List(context.Background(), "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	first := hist[len(hist)-1] // the input checkpoint
	r.ReuseRecords = true
	rep, err := r.Replay(context.Background(), "t", first.ID, runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(srv.requests()) != 2 {
		t.Fatalf("the replay asked the model again: %d requests", len(srv.requests()))
	}
	if got := toolMessages(rep.Checkpoint.Values); got["c1"] != "Echo: rec" {
		t.Fatalf("replay: %v", got)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the replay started the server (%v)", err)
	}
}

// TestMCPResolve: resolving connects and reports, at their positions, a
// listed tool the server lacks and an imported function that clashes with
// a tool of the graph.
func TestMCPResolve(t *testing.T) {
	entry := everything(t)
	g := mustGraph(t, `version: 1
name: resolve
state:
  messages: {type: messages}
models:
  m: {provider: mock, fixtures: f.yaml}
tools:
  echo: {kind: expr, expr: args}
  listed:
    kind: mcp
    command: [node, `+entry+`, stdio]
    tools: [get-sum, no-such-tool]
    prefix: x_
  all:
    kind: mcp
    command: [node, `+entry+`]
nodes:
  agent: {kind: llm, model: m, tools: [listed, all]}
edges:
  - {from: START, to: agent}
  - {from: agent, to: END}
`, map[string]string{"f.yaml": "replies: {agent: [{text: hi}]}\n"})
	env := NewEnvironment()
	t.Cleanup(func() { _ = env.CloseMCP() })
	errs := env.ResolveMCP(context.Background(), g, Options{Getenv: mcpEnv()})
	got := errs.Error()
	for _, want := range []string{
		`graph.yaml:12:22: error: tools.listed.tools: the mcp server has no tool "no-such-tool" (it has echo,`,
		`graph.yaml:14:3: error: tools.all: the server's tool "echo" is the function "echo", which tool echo already is`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if len(errs) != 2 {
		t.Errorf("%d diagnostics:\n%s", len(errs), got)
	}
}

// TestMCPCloseEndsProcessGroup: closing the environment's sessions ends
// what a stdio server's launcher started too (npx runs the server as its
// child), not only the launched process.
func TestMCPCloseEndsProcessGroup(t *testing.T) {
	entry := everything(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	script := fmt.Sprintf(`sleep 300 & echo $! > %q; exec node %q stdio`, pidFile, entry)
	g := mustGraph(t, `version: 1
name: group
state:
  messages: {type: messages}
models:
  m: {provider: mock, fixtures: f.yaml}
tools:
  ev:
    kind: mcp
    command: [sh, -c, '`+script+`']
nodes:
  agent: {kind: llm, model: m, tools: [ev]}
edges:
  - {from: START, to: agent}
  - {from: agent, to: END}
`, map[string]string{"f.yaml": "replies: {agent: [{text: hi}]}\n"})
	env := NewEnvironment()
	if errs := env.ResolveMCP(context.Background(), g, Options{Getenv: mcpEnv()}); len(errs) > 0 {
		t.Fatal(errs)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	if err := env.CloseMCP(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		// Gone, or a zombie of an exited parent: not running any more.
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(st), ") Z ") {
			break
		}
		if i > 50 {
			_ = exec.Command("kill", fmt.Sprint(pid)).Run()
			t.Fatalf("the server's child %d outlived CloseMCP", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
