package builtin

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// newCountingServer answers body to every request and counts them.
func newCountingServer(t testing.TB, hits *int, body string) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		*hits++
		mu.Unlock()
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// toolsGraph declares tools (YAML lines under tools:, indented by 2) and a
// tools node running them with the given node settings.
func toolsGraph(t testing.TB, tools, node string) *spec.Graph {
	t.Helper()
	return mustGraph(t, `version: 1
name: tools
state:
  messages: {type: messages}
tools:
`+tools+`
nodes:
  run: {kind: tools`+node+`}
edges:
  - {from: START, to: run}
  - {from: run, to: END}
`, nil)
}

// withCalls is a state whose last message calls tools, given as name, args pairs.
func withCalls(pairs ...string) map[string]any {
	var calls []any
	for i := 0; i+1 < len(pairs); i += 2 {
		calls = append(calls, map[string]any{"id": fmt.Sprint("c", i/2), "name": pairs[i], "arguments": pairs[i+1]})
	}
	return map[string]any{"messages": []any{
		userMsg("go"),
		map[string]any{"id": "a", "role": "assistant", "content": "", "tool_calls": calls},
	}}
}

// results runs the tools node and returns the content of each tool message.
func results(t testing.TB, g *spec.Graph, opts Options, state map[string]any) []string {
	t.Helper()
	res, _, err := callNode(t, g, opts, "run", state)
	if err != nil {
		t.Fatalf("tools node failed (tool errors must become messages): %v", err)
	}
	var out []string
	for _, m := range res.Writes[0].Value.([]any) {
		mm := m.(map[string]any)
		if mm["role"] != "tool" || mm["tool_call_id"] == "" || mm["name"] == "" {
			t.Fatalf("not a tool message: %v", mm)
		}
		out = append(out, mm["content"].(string))
	}
	return out
}

const exprTools = `  add:
    kind: expr
    parameters:
      type: object
      properties: {a: {type: integer}, b: {type: integer}}
      required: [a, b]
      additionalProperties: false
    expr: args.a + args.b
  greet:
    kind: expr
    expr: '{"hello": args.name}'
`

func TestExprToolsAndErrorsAsMessages(t *testing.T) {
	g := toolsGraph(t, exprTools, "")
	got := results(t, g, Options{}, withCalls(
		"add", `{"a": 2, "b": 3}`,
		"greet", `{"name": "Ada"}`,
		"nosuch", `{}`,
		"add", `{"a": 2}`,
		"add", `{"a": 2, "b": `,
		"add", `[1, 2]`,
	))
	want := []string{
		"5",
		`{"hello":"Ada"}`,
		`{"error":"unknown tool \"nosuch\"; available tools: add, greet"}`,
		`arguments of \"add\" do not match its parameters: at /: missing property 'b'`,
		`arguments of \"add\" are not valid JSON`,
		`arguments of \"add\" must be a JSON object, got list`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d results: %q", len(got), got)
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("result %d: %s\nwant it to contain %s", i, got[i], want[i])
		}
		if i >= 2 && !strings.HasPrefix(got[i], `{"error":`) {
			t.Errorf("result %d is not a structured error: %s", i, got[i])
		}
	}
}

func TestToolsRunOnlyCallsWithoutResults(t *testing.T) {
	g := toolsGraph(t, exprTools, "")
	st := withCalls("add", `{"a": 1, "b": 1}`, "add", `{"a": 2, "b": 2}`)
	st["messages"] = append(st["messages"].([]any), map[string]any{"role": "tool", "tool_call_id": "c0", "content": "2"})
	if got := results(t, g, Options{}, st); len(got) != 1 || got[0] != "4" {
		t.Fatalf("results %q", got)
	}
	res, ev, err := callNode(t, g, Options{}, "run", map[string]any{"messages": []any{userMsg("hi")}})
	if err != nil || len(res.Writes) != 0 || !strings.Contains(ev.messages(), "no tool calls") {
		t.Fatalf("no calls: %v %v %q", res, err, ev.messages())
	}
}

func TestToolsParallelAndSequential(t *testing.T) {
	// The server answers "together" only when all three calls are in
	// flight at once, "alone" when it waited 300ms in vain.
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived++
		if arrived == 3 {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
			fmt.Fprint(w, "together")
		case <-time.After(300 * time.Millisecond):
			fmt.Fprint(w, "alone")
		}
	}))
	defer srv.Close()
	tools := "  meet:\n    kind: http\n    url: " + srv.URL + "\n    allow_hosts: [127.0.0.1]\n"
	state := withCalls("meet", "{}", "meet", "{}", "meet", "{}")
	if got := results(t, toolsGraph(t, tools, ""), Options{}, state); strings.Join(got, " ") != "together together together" {
		t.Fatalf("parallel: %q", got)
	}
	mu.Lock()
	arrived, all = 0, make(chan struct{})
	mu.Unlock()
	if got := results(t, toolsGraph(t, tools, ", parallel: false"), Options{}, state); strings.Join(got, " ") != "alone alone together" {
		t.Fatalf("sequential: %q", got)
	}
}

func TestExecTool(t *testing.T) {
	for _, p := range []string{"cat", "sh", "env", "yes", "sleep"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("no %s program", p)
		}
	}
	tools := `  echo:
    kind: exec
    command: [cat]
  env:
    kind: exec
    command: [env]
  fail:
    kind: exec
    command: [sh, -c, 'echo "bad input" >&2; exit 3']
  flood:
    kind: exec
    command: ["yes", "y"]
    max_output_bytes: 1000
    timeout: 10s
  hang:
    kind: exec
    command: [sh, -c, 'sleep 10 & sleep 10']
    timeout: 200ms
`
	g := toolsGraph(t, tools, "")
	opts := Options{Getenv: envOf("PATH", "/usr/bin:/bin", "OPENAI_API_KEY", testKey, "TEST_KEY", testKey)}
	start := time.Now()
	got := results(t, g, opts, withCalls(
		"echo", `{"x": [1, 2]}`,
		"env", `{}`,
		"fail", `{}`,
		"flood", `{}`,
		"hang", `{}`,
	))
	if got[0] != `{"x": [1, 2]}` {
		t.Errorf("echo: the arguments are the program's stdin: %q", got[0])
	}
	if strings.Contains(got[1], testKey) || !strings.Contains(got[1], "PATH=/usr/bin:/bin") {
		t.Errorf("env: only an allowlisted environment reaches the program: %q", got[1])
	}
	if !strings.Contains(got[2], `"error":"tool \"fail\" failed: sh: exit status 3: bad input"`) {
		t.Errorf("fail: %s", got[2])
	}
	if !strings.HasPrefix(got[3], "y\ny\n") || !strings.HasSuffix(got[3], "[output truncated at 1000 bytes]") || len(got[3]) > 1100 {
		t.Errorf("flood: output not capped (%d bytes): %.80q…", len(got[3]), got[3])
	}
	if got[4] != `{"error":"tool \"hang\" timed out after 200ms"}` {
		t.Errorf("hang: %s", got[4])
	}
	// The timeout killed the program and its child; the cap killed yes.
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("exec tools took %s", d)
	}
}

func TestToolTimeout(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	tools := "  slow:\n    kind: http\n    url: " + slow.URL + "\n    allow_hosts: [127.0.0.1]\n    timeout: 100ms\n"
	start := time.Now()
	got := results(t, toolsGraph(t, tools, ""), Options{}, withCalls("slow", "{}"))
	if got[0] != `{"error":"tool \"slow\" timed out after 100ms"}` || time.Since(start) > 2*time.Second {
		t.Fatalf("%s after %s", got[0], time.Since(start))
	}
}

func TestHTTPTool(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("X-Api-Key")+" "+r.Header.Get("Content-Type")+" "+string(b))
		mu.Unlock()
		switch r.URL.Path {
		case "/big":
			fmt.Fprint(w, strings.Repeat("x", 5000))
		case "/missing":
			http.Error(w, "no such city", http.StatusNotFound)
		case "/hop":
			http.Redirect(w, r, "/weather?city=hopped", http.StatusFound)
		case "/away":
			// localhost is the same machine but not an allowed host.
			http.Redirect(w, r, strings.Replace(r.Host, "127.0.0.1", "http://localhost", 1)+"/weather", http.StatusFound)
		default:
			fmt.Fprintf(w, "weather in %s: sunny", r.URL.Query().Get("city"))
		}
	}))
	defer api.Close()
	tools := `  weather:
    kind: http
    url: '` + api.URL + `/weather?city={{ args.city }}'
    headers_env: {X-Api-Key: WEATHER_KEY}
    allow_hosts: [127.0.0.1]
  post:
    kind: http
    method: POST
    url: '` + api.URL + `/notes'
    body: '{"note": args.text}'
    allow_hosts: [127.0.0.1]
  fetch:
    kind: http
    url: '` + api.URL + `/{{ args.path }}'
    allow_hosts: ["127.0.0.1"]
    max_output_bytes: 100
  anywhere:
    kind: http
    url: '{{ args.url }}'
    allow_hosts: [127.0.0.1, "*.example.com"]
`
	g := toolsGraph(t, tools, ", parallel: false")
	got := results(t, g, Options{Getenv: envOf("WEATHER_KEY", "k-123")}, withCalls(
		"weather", `{"city": "Oslo"}`,
		"post", `{"text": "hi"}`,
		"fetch", `{"path": "big"}`,
		"fetch", `{"path": "missing"}`,
		"fetch", `{"path": "hop"}`,
		"fetch", `{"path": "away"}`,
		"anywhere", `{"url": "http://example.org/x"}`,
		"anywhere", `{"url": "file:///etc/passwd"}`,
	))
	checks := []string{
		"weather in Oslo: sunny",
		"", // post: checked through seen
		"[output truncated at 100 bytes]",
		`HTTP 404 Not Found: no such city`,
		"weather in hopped: sunny",
		`redirect`,
		`host \"example.org\" is not in allow_hosts (127.0.0.1, *.example.com)`,
		`only http and https URLs are allowed`,
	}
	for i, c := range checks {
		if !strings.Contains(got[i], c) {
			t.Errorf("result %d: %s\nwant it to contain %s", i, got[i], c)
		}
	}
	if !strings.Contains(got[5], "localhost") || !strings.Contains(got[5], "not in allow_hosts") || !strings.HasPrefix(got[5], `{"error":`) {
		t.Errorf("redirect to a disallowed host: %s", got[5])
	}
	if len(got[2]) > 200 {
		t.Errorf("big response not capped: %d bytes", len(got[2]))
	}
	mu.Lock()
	defer mu.Unlock()
	joined := strings.Join(seen, "\n")
	if !strings.Contains(joined, "GET /weather?city=Oslo k-123") {
		t.Errorf("header from the environment missing: %s", joined)
	}
	if !strings.Contains(joined, `POST /notes  application/json {"note":"hi"}`) {
		t.Errorf("POST body: %s", joined)
	}
	if strings.Contains(joined, "/weather ") && strings.Count(joined, "\n") > 7 {
		t.Errorf("the disallowed redirect was followed: %s", joined)
	}

	// A missing header variable is an error result, not a request without it.
	got = results(t, g, Options{Getenv: envOf()}, withCalls("weather", `{"city": "Oslo"}`))
	if !strings.Contains(got[0], "environment variable WEATHER_KEY is empty") {
		t.Errorf("missing header env: %s", got[0])
	}
}

func TestAllowedHosts(t *testing.T) {
	for _, tc := range []struct {
		url   string
		hosts []string
		ok    bool
	}{
		{"https://api.example.com/x", []string{"api.example.com"}, true},
		{"https://API.example.com:8443/x", []string{"api.example.com"}, true},
		{"https://api.example.com:8443/x", []string{"api.example.com:443"}, false},
		{"https://api.example.com:8443/x", []string{"api.example.com:8443"}, true},
		{"https://a.b.example.com/", []string{"*.example.com"}, true},
		{"https://example.com/", []string{"*.example.com"}, false},
		{"https://evil-example.com/", []string{"*.example.com"}, false},
		{"https://example.com.evil.io/", []string{"example.com"}, false},
		{"ftp://example.com/", []string{"example.com"}, false},
	} {
		u, _ := url.Parse(tc.url)
		if err := allowed(u, tc.hosts); (err == nil) != tc.ok {
			t.Errorf("%s with %v: %v", tc.url, tc.hosts, err)
		}
	}
}

func TestToolFailuresBecomeMessages(t *testing.T) {
	g := toolsGraph(t, exprTools, "")
	e, err := newEngine(NewEnvironment(), g, Options{Getenv: envOf()})
	if err != nil {
		t.Fatal(err)
	}
	// A tool whose kind the engine cannot run fails as a message.
	bad := *g.Tools["add"]
	bad.Kind = "teleport"
	out, err := e.runTool(t.Context(), &runtime.NodeCall{Graph: g}, map[string]*spec.Tool{"add": &bad}, nil, map[string]any{"id": "c", "name": "add", "arguments": `{"a":1,"b":2}`}, nil)
	if err != nil || !out.isErr || !strings.Contains(out.content, "unknown tool kind") {
		t.Fatalf("%+v %v", out, err)
	}
	bad.Expr = nil
	bad.Kind = "expr"
	out, err = e.runTool(t.Context(), &runtime.NodeCall{Graph: g}, map[string]*spec.Tool{"add": &bad}, nil, map[string]any{"id": "c", "name": "add", "arguments": `{"a":1,"b":2}`}, nil)
	if err != nil || !out.isErr {
		t.Fatalf("%+v %v", out, err)
	}
}
