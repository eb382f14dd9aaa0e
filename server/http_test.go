package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lgrun/lgrun/builtin"
	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/server"
	"github.com/lgrun/lgrun/spec"
)

func newTestServer(t *testing.T, keys ...string) *httptest.Server {
	t.Helper()
	return newTestServerWith(t, func(o *server.Options) { o.APIKeys = keys })
}

func newTestServerWith(t *testing.T, edit func(*server.Options)) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	saver, err := checkpoint.OpenSQLite(filepath.Join(dir, "lgrun.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { saver.Close() })
	store, err := server.OpenSQLite(filepath.Join(dir, "lgrun-server.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	var graphs []*spec.Graph
	for _, f := range []string{"../graphs/loop.yaml", "../graphs/approval.yaml"} {
		g, diags := spec.LoadFile(f, nil)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		graphs = append(graphs, g)
	}
	opts := server.Options{
		Graphs: graphs, Saver: saver, Store: store, MaxBody: 1024, Heartbeat: 50 * time.Millisecond,
		Kinds: func(g *spec.Graph) (map[string]runtime.NodeFunc, error) {
			return builtin.Kinds(g, builtin.Options{Getenv: func(string) string { return "" }})
		},
		Logf: t.Logf,
	}
	edit(&opts)
	srv, err := server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		srv.Shutdown(t.Context())
	})
	return hs
}

// do sends a request and returns the status and the decoded JSON body.
func do(t *testing.T, hs *httptest.Server, method, path, body string, header ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s %s: content type %q, body %s", method, path, ct, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %s", method, path, b)
	}
	return resp.StatusCode, m
}

func TestErrorPaths(t *testing.T) {
	hs := newTestServer(t)
	_, th := do(t, hs, "POST", "/threads", `{}`)
	tid := th["thread_id"].(string)
	_, th = do(t, hs, "POST", "/threads", `{"metadata": {"graph_id": "loop"}}`)
	loopThread := th["thread_id"].(string)
	cases := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"bad JSON", "POST", "/threads", `{"metadata": `, 400, "not valid JSON"},
		{"wrong type", "POST", "/threads", `{"metadata": 3}`, 422, "metadata"},
		{"unknown assistant", "POST", "/threads/" + tid + "/runs/wait", `{"assistant_id": "nope"}`, 404, `assistant "nope" not found`},
		{"unknown assistant get", "GET", "/assistants/nope", ``, 404, "graphs served: loop, approval"},
		{"unknown thread", "GET", "/threads/nope", ``, 404, `thread "nope" not found`},
		{"unknown thread run", "POST", "/threads/nope/runs", `{"assistant_id": "loop"}`, 404, "if_not_exists"},
		{"unknown thread state", "GET", "/threads/nope/state", ``, 404, `thread "nope" not found`},
		{"unknown run", "GET", "/threads/" + tid + "/runs/nope", ``, 404, `run "nope"`},
		{"unknown field in input", "POST", "/threads/" + tid + "/runs", `{"assistant_id": "loop", "input": {"nope": 1}}`, 422, `no state field "nope"`},
		{"wrong value type", "POST", "/threads/" + tid + "/runs", `{"assistant_id": "loop", "input": {"target": "x"}}`, 422, `field "target"`},
		{"unknown interrupt node", "POST", "/threads/" + tid + "/runs", `{"assistant_id": "loop", "interrupt_before": ["nope"]}`, 422, `no node "nope"`},
		{"unsupported stream mode", "POST", "/threads/" + tid + "/runs/stream", `{"assistant_id": "loop", "stream_mode": "events"}`, 422, "not supported"},
		{"goto unknown node", "POST", "/threads/" + tid + "/runs", `{"assistant_id": "loop", "command": {"goto": "nope"}}`, 422, `no node "nope"`},
		{"goto send", "POST", "/threads/" + tid + "/runs", `{"assistant_id": "loop", "command": {"goto": {"node": "finish", "input": {}}}}`, 422, "sends are not supported"},
		{"oversized body", "POST", "/threads", `{"metadata": {"x": "` + strings.Repeat("a", 2000) + `"}}`, 413, "larger than 1024 bytes"},
		{"crons", "POST", "/runs/crons", `{}`, 501, "crons are not supported"},
		{"store", "PUT", "/store/items", `{}`, 501, "store endpoints are not supported"},
		{"no endpoint", "GET", "/nope", ``, 404, "no endpoint GET /nope"},
		{"bad Last-Event-ID", "GET", "/threads/" + tid + "/runs/" + "nope" + "/stream", ``, 404, `run "nope"`},
		{"bad cancel action", "POST", "/runs/cancel?action=drop", `{"status": "all"}`, 422, "want interrupt or rollback"},
		{"bad strategy", "POST", "/threads/" + tid + "/runs", `{"assistant_id": "loop", "multitask_strategy": "later"}`, 422, "multitask_strategy"},
		{"thread exists", "POST", "/threads", `{"thread_id": "` + tid + `"}`, 409, "already exists"},
		{"bad thread id", "POST", "/threads", `{"thread_id": "a/b"}`, 422, "without \"/\""},
		{"wrong graph for thread", "POST", "/threads/" + loopThread + "/runs/wait", `{"assistant_id": "approval"}`, 422, "belongs to graph"},
		{"update state of a graphless thread", "POST", "/threads/" + tid + "/state", `{"values": {"target": 1}}`, 400, "has no graph yet"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := do(t, hs, c.method, c.path, c.body)
			if status != c.status {
				t.Errorf("status %d, want %d (body %v)", status, c.status, body)
			}
			msg, _ := body["message"].(string)
			if !strings.Contains(msg, c.msg) {
				t.Errorf("message %q does not contain %q", msg, c.msg)
			}
			if strings.Contains(msg, "goroutine") || strings.Contains(msg, ".go:") {
				t.Errorf("message holds a stack trace: %q", msg)
			}
		})
	}
}

func TestUnknownFieldsIgnored(t *testing.T) {
	hs := newTestServer(t)
	status, th := do(t, hs, "POST", "/threads", `{"future_field": {"a": 1}, "metadata": {"k": "v"}}`)
	if status != 200 {
		t.Fatalf("status %d: %v", status, th)
	}
	tid := th["thread_id"].(string)
	status, out := do(t, hs, "POST", "/threads/"+tid+"/runs/wait", `{"assistant_id": "loop", "input": {"target": 2}, "durability": "sync", "checkpoint_during": true, "strict_resume": false}`)
	if status != 200 || out["count"] != float64(2) {
		t.Fatalf("status %d, body %v", status, out)
	}
}

func TestAPIKey(t *testing.T) {
	hs := newTestServer(t, "right-key")
	if status, body := do(t, hs, "GET", "/threads/x", ``); status != 401 || !strings.Contains(body["message"].(string), "x-api-key") {
		t.Errorf("no key: status %d, body %v", status, body)
	}
	if status, body := do(t, hs, "GET", "/info", ``, "x-api-key", "wrong-key"); status != 401 {
		t.Errorf("wrong key: status %d, body %v", status, body)
	}
	if status, body := do(t, hs, "POST", "/threads", `{}`, "x-api-key", "right-key"); status != 200 {
		t.Errorf("right key: status %d, body %v", status, body)
	}
	if status, _ := do(t, hs, "GET", "/ok", ``); status != 200 {
		t.Errorf("/ok needs no key: status %d", status)
	}
}

func TestBusyThreadRejects(t *testing.T) {
	hs := newTestServer(t)
	_, th := do(t, hs, "POST", "/threads", `{}`)
	tid := th["thread_id"].(string)
	status, run := do(t, hs, "POST", "/threads/"+tid+"/runs", `{"assistant_id": "loop", "input": {"target": 100000}, "config": {"recursion_limit": 200000}}`)
	if status != 200 || run["status"] != "pending" {
		t.Fatalf("create: %d %v", status, run)
	}
	if status, body := do(t, hs, "POST", "/threads/"+tid+"/runs", `{"assistant_id": "loop", "multitask_strategy": "reject"}`); status != 409 {
		t.Errorf("reject: status %d, body %v", status, body)
	}
	if status, body := do(t, hs, "POST", "/threads/"+tid+"/state", `{"values": {"target": 1}}`); status != 409 {
		t.Errorf("update state of a busy thread: status %d, body %v", status, body)
	}
	if status, body := do(t, hs, "DELETE", "/threads/"+tid+"/runs/"+run["run_id"].(string), ``); status != 409 {
		t.Errorf("delete a running run: status %d, body %v", status, body)
	}
	req, _ := http.NewRequest("POST", hs.URL+"/threads/"+tid+"/runs/"+run["run_id"].(string)+"/cancel?wait=1", nil)
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("cancel: status %d", resp.StatusCode)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, got := do(t, hs, "GET", "/threads/"+tid+"/runs/"+run["run_id"].(string), ``)
		if got["status"] == "interrupted" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run status %v after cancel", got["status"])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runTo creates a background run and polls it until it leaves pending and
// running, returning its final row.
func runTo(t *testing.T, hs *httptest.Server, tid, body string) map[string]any {
	t.Helper()
	status, run := do(t, hs, "POST", "/threads/"+tid+"/runs", body)
	if status != 200 {
		t.Fatalf("create run: %d %v", status, run)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, got := do(t, hs, "GET", "/threads/"+tid+"/runs/"+run["run_id"].(string), ``)
		if got["status"] != "pending" && got["status"] != "running" {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("run still %v after 10s", got["status"])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunStatuses(t *testing.T) {
	hs := newTestServer(t)
	newThread := func() string {
		_, th := do(t, hs, "POST", "/threads", `{}`)
		return th["thread_id"].(string)
	}
	// A step limit is an error of the run and of the thread.
	tid := newThread()
	run := runTo(t, hs, tid, `{"assistant_id": "loop", "input": {"target": 100}, "config": {"recursion_limit": 5}}`)
	if run["status"] != "error" {
		t.Errorf("step limit: run %v, want error", run["status"])
	}
	_, th := do(t, hs, "GET", "/threads/"+tid, ``)
	if th["status"] != "error" || !strings.Contains(th["error"].(string), "step limit of 5") {
		t.Errorf("step limit: thread %v (%v), want error", th["status"], th["error"])
	}
	// A timeout from the request's config.
	tid = newThread()
	run = runTo(t, hs, tid, `{"assistant_id": "loop", "input": {"target": 10000000}, "config": {"recursion_limit": 100000000, "configurable": {"timeout": "100ms"}}}`)
	if run["status"] != "timeout" {
		t.Errorf("timeout: run %v, want timeout", run["status"])
	}
	// A breakpoint: the run succeeds, the thread is interrupted.
	tid = newThread()
	run = runTo(t, hs, tid, `{"assistant_id": "loop", "input": {"target": 2}, "interrupt_after": ["increment"]}`)
	_, th = do(t, hs, "GET", "/threads/"+tid, ``)
	if run["status"] != "success" || th["status"] != "interrupted" {
		t.Errorf("breakpoint: run %v, thread %v; want success, interrupted", run["status"], th["status"])
	}
}

func TestStreamHeartbeatAndDisconnect(t *testing.T) {
	hs := newTestServer(t)
	_, th := do(t, hs, "POST", "/threads", `{}`)
	tid := th["thread_id"].(string)
	req, _ := http.NewRequest("POST", hs.URL+"/threads/"+tid+"/runs/stream",
		strings.NewReader(`{"assistant_id": "loop", "input": {"target": 100000000}, "config": {"recursion_limit": 1000000000}, "stream_mode": []}`))
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	loc := resp.Header.Get("Content-Location")
	if !strings.HasPrefix(loc, "/threads/"+tid+"/runs/") {
		t.Fatalf("Content-Location %q", loc)
	}
	buf := make([]byte, 4096)
	var got strings.Builder
	for !strings.Contains(got.String(), ": heartbeat\n\n") {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("stream ended before a heartbeat: %v\n%s", err, got.String())
		}
	}
	if !strings.HasPrefix(got.String(), "event: metadata\ndata: {") {
		t.Errorf("stream does not begin with the metadata event:\n%s", got.String())
	}
	// on_disconnect defaults to cancel: closing the stream stops the run.
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, run := do(t, hs, "GET", loc, ``)
		if run["status"] == "interrupted" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %v after the client went away, want interrupted", run["status"])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIfNotExistsCreate(t *testing.T) {
	hs := newTestServer(t)
	status, out := do(t, hs, "POST", "/threads/fresh/runs/wait", `{"assistant_id": "loop", "input": {"target": 1}, "if_not_exists": "create"}`)
	if status != 200 || out["count"] != float64(1) {
		t.Fatalf("status %d, body %v", status, out)
	}
	if status, th := do(t, hs, "GET", "/threads/fresh", ``); status != 200 || th["status"] != "idle" {
		t.Fatalf("thread: %d %v", status, th)
	}
	// A thread-less run keeps its thread with on_completion keep.
	status, out = do(t, hs, "POST", "/runs/wait", `{"assistant_id": "loop", "input": {"target": 1}, "on_completion": "keep"}`)
	if status != 200 || out["count"] != float64(1) {
		t.Fatalf("status %d, body %v", status, out)
	}
	status, list := doList(t, hs, "POST", "/threads/search", `{"limit": 100}`)
	if status != 200 || len(list) != 2 {
		t.Fatalf("threads: %d %v", status, list)
	}
}

func doList(t *testing.T, hs *httptest.Server, method, path, body string) (int, []any) {
	t.Helper()
	req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l []any
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, l
}

func TestWaitDisconnectCancels(t *testing.T) {
	hs := newTestServer(t)
	_, th := do(t, hs, "POST", "/threads", `{}`)
	tid := th["thread_id"].(string)
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "POST", hs.URL+"/threads/"+tid+"/runs/wait",
		strings.NewReader(`{"assistant_id": "loop", "input": {"target": 100000000}, "config": {"recursion_limit": 1000000000}}`))
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	loc := resp.Header.Get("Content-Location")
	if !strings.HasPrefix(loc, "/threads/"+tid+"/runs/") {
		t.Fatalf("Content-Location %q", loc)
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, run := do(t, hs, "GET", loc, ``)
		if run["status"] == "interrupted" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %v after the /wait client went away, want interrupted", run["status"])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With MaxRuns 1, a run on a second thread stays pending until the first
// one ends, then runs.
func TestMaxRuns(t *testing.T) {
	hs := newTestServerWith(t, func(o *server.Options) { o.MaxRuns = 1 })
	var threads, runs []string
	for i := 0; i < 2; i++ {
		_, th := do(t, hs, "POST", "/threads", `{}`)
		tid := th["thread_id"].(string)
		_, run := do(t, hs, "POST", "/threads/"+tid+"/runs", `{"assistant_id": "loop", "input": {"target": 100000000}, "config": {"recursion_limit": 1000000000}}`)
		threads, runs = append(threads, tid), append(runs, run["run_id"].(string))
	}
	path := func(i int) string { return "/threads/" + threads[i] + "/runs/" + runs[i] }
	waitStatus := func(i int, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, run := do(t, hs, "GET", path(i), ``)
			if run["status"] == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("run %d: %v, want %s", i, run["status"], want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitStatus(0, "running")
	time.Sleep(200 * time.Millisecond)
	if _, run := do(t, hs, "GET", path(1), ``); run["status"] != "pending" {
		t.Fatalf("second run %v while the first runs, want pending", run["status"])
	}
	req, _ := http.NewRequest("POST", hs.URL+path(0)+"/cancel?wait=1", nil)
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitStatus(1, "running")
	req, _ = http.NewRequest("POST", hs.URL+path(1)+"/cancel?wait=1", nil)
	if resp, err = hs.Client().Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitStatus(1, "interrupted")
}
