package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/server"
	"github.com/lgrun/lgrun/spec"
)

// TestGraphEdgeLabels: a conditional edge of /assistants/{id}/graph names
// its condition in data (the when expression, "else"), so a drawing can
// label the route.
func TestGraphEdgeLabels(t *testing.T) {
	hs := newTestServer(t)
	status, g := do(t, hs, "GET", "/assistants/loop/graph", ``)
	if status != 200 {
		t.Fatalf("graph: %d %v", status, g)
	}
	labels := map[string]any{}
	for _, e := range g["edges"].([]any) {
		e := e.(map[string]any)
		labels[e["source"].(string)+">"+e["target"].(string)] = e["data"]
	}
	want := map[string]any{"increment>increment": "state.count < state.target", "increment>finish": "else", "__start__>increment": nil}
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("edge %s: data %v, want %v", k, labels[k], v)
		}
	}
}

// TestHistoryUsage: each checkpoint of the history carries the model calls
// of its step (metadata.usage) and the thread's totals so far
// (metadata.totals), so the page can show usage and cost per checkpoint.
func TestHistoryUsage(t *testing.T) {
	hs := newTestServerWith(t, func(o *server.Options) {
		g, diags := spec.LoadFile("../graphs/weather-agent.yaml", nil)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		o.Graphs = append(o.Graphs, g)
		o.MaxBody = 1 << 20
	})
	_, th := do(t, hs, "POST", "/threads", `{}`)
	tid := th["thread_id"].(string)
	if run := runTo(t, hs, tid, `{"assistant_id": "weather-agent", "input": {}}`); run["status"] != "success" {
		t.Fatalf("run: %v", run)
	}
	status, hist := doList(t, hs, "POST", "/threads/"+tid+"/history", `{}`)
	if status != 200 || len(hist) < 3 {
		t.Fatalf("history: %d %v", status, hist)
	}
	head := hist[0].(map[string]any)["metadata"].(map[string]any)
	totals := head["totals"].(map[string]any)
	if totals["llm_calls"] != float64(2) || totals["cost"].(float64) <= 0 {
		t.Errorf("head totals %v, want 2 calls and a cost", totals)
	}
	calls := 0
	for _, c := range hist {
		md := c.(map[string]any)["metadata"].(map[string]any)
		for _, u := range md["usage"].([]any) {
			u := u.(map[string]any)
			if u["node"] != "agent" || u["model"] == "" || u["in"].(float64) <= 0 {
				t.Errorf("usage %v", u)
			}
			calls++
		}
	}
	if calls != 2 {
		t.Errorf("%d calls in the checkpoints' usage, want 2", calls)
	}
}

// TestPageMounted: / leads to the page at /ui/, whose assets are embedded
// and need no API key (the API still does).
func TestPageMounted(t *testing.T) {
	hs := newTestServer(t, "secret")
	client := hs.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Get(hs.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /: %d to %q, want 302 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	for path, want := range map[string]string{"/ui/": "<title>lgrun</title>", "/ui/app.js": "readSSE", "/ui/style.css": ".timeline"} {
		resp, err := client.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d, body without %q", path, resp.StatusCode, want)
		}
	}
	if status, _ := do(t, hs, "POST", "/threads/search", `{}`); status != 401 {
		t.Errorf("the API without a key: %d, want 401", status)
	}
}
