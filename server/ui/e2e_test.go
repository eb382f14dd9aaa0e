package ui_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// TestPageInChromium drives the page in headless Chromium against a real
// `lgrun serve` child process: the thread list, a thread's checkpoints (by
// keyboard), a run started from the form that stops at an interrupt and is
// approved, a fork from an old checkpoint with an edited value, a tool call
// approval and an error with its advice; every result is checked through
// the API. It rewrites the screenshots in docs/screenshots/.
func TestPageInChromium(t *testing.T) {
	browser := chromiumPath(t)
	base := startServe(t, nil)

	// Threads made through the API, so the list has something to show.
	loopA := assistantID(t, base, "loop")
	weatherA := assistantID(t, base, "weather-agent-approval")
	approvalA := assistantID(t, base, "approval")
	counted := newThread(t, base, "loop")
	api(t, base, "POST", "/threads/"+counted+"/runs/wait", map[string]any{"assistant_id": loopA, "input": map[string]any{"target": 3}}, nil)
	failed := newThread(t, base, "loop")
	api(t, base, "POST", "/threads/"+failed+"/runs/wait", map[string]any{"assistant_id": loopA, "input": map[string]any{"target": 10}, "config": map[string]any{"recursion_limit": 2}}, nil)
	weather := newThread(t, base, "weather-agent-approval")
	api(t, base, "POST", "/threads/"+weather+"/runs/wait", map[string]any{"assistant_id": weatherA, "input": map[string]any{}}, nil)

	ctx := newBrowser(t, browser)
	var mu sync.Mutex
	var problems []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *cdpruntime.EventConsoleAPICalled:
			if ev.Type == cdpruntime.ConsoleAPICalledTypeError || ev.Type == cdpruntime.ConsoleAPICalledTypeWarning || ev.Type == cdpruntime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				problems = append(problems, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
			}
		case *cdpruntime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			problems = append(problems, "exception: "+msg)
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				problems = append(problems, "log: "+ev.Entry.Text+" "+ev.Entry.URL)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, chromedp.EmulateViewport(1280, 800))
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}

	// The thread list.
	run(t, ctx, chromedp.Navigate(base+"/"))
	waitFor(t, ctx, `document.querySelectorAll("#threads a[data-thread]").length >= 3`)
	waitFor(t, ctx, `![...document.querySelectorAll("#threads .row2")].some(e => e.textContent.includes("…"))`)
	if got := evalString(t, ctx, `location.pathname`); got != "/ui/" {
		t.Errorf("/ led to %s, want /ui/", got)
	}
	screenshot(t, ctx, "home.png")

	// Filter by status and search by id.
	run(t, ctx, chromedp.SetValue(chromedp.ID("status-filter"), "error"), chromedp.Evaluate[chromedp.Void](`document.getElementById("status-filter").dispatchEvent(new Event("change"))`))
	waitFor(t, ctx, fmt.Sprintf(`document.querySelectorAll("#threads a[data-thread]").length === 1 && document.querySelector("#threads a").dataset.thread === %q`, failed))
	run(t, ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("status-filter").value = ""; document.getElementById("status-filter").dispatchEvent(new Event("change"))`))
	waitFor(t, ctx, `document.querySelectorAll("#threads a[data-thread]").length >= 3`)

	// The graph of approval, and a run from its form that stops at the interrupt.
	run(t, ctx, chromedp.Click(chromedp.CSS(`#graphs a[href="#/graph/`+approvalA+`"]`)))
	waitFor(t, ctx, `document.querySelectorAll("svg.graph .node").length === 6 && [...document.querySelectorAll("svg.graph .elabel text")].some(e => e.textContent.includes("state.review.approved"))`)
	run(t, ctx, chromedp.SetValue(chromedp.ID("in-topic"), "the web page"))
	screenshot(t, ctx, "graph.png")
	run(t, ctx, chromedp.Click(chromedp.ID("run-submit")))
	waitFor(t, ctx, `document.querySelector("#interrupt #approve") !== null && document.querySelector("#interrupt").textContent.includes("Draft about the web page")`)
	approvalThread := strings.TrimPrefix(evalString(t, ctx, `location.hash`), "#/thread/")
	approvalThread = strings.SplitN(approvalThread, "/", 2)[0]
	screenshot(t, ctx, "interrupt.png")
	run(t, ctx, chromedp.Focus(chromedp.ID("approve")), chromedp.KeyEvent("\r"))
	waitFor(t, ctx, `document.querySelector("#live.finished h2") && document.querySelector("#live h2").textContent.includes("success") && document.querySelector(".thread-head .pill").textContent === "idle"`)
	var st struct {
		Values map[string]any `json:"values"`
	}
	api(t, base, "GET", "/threads/"+approvalThread+"/state", nil, &st)
	if st.Values["published"] != true || st.Values["topic"] != "the web page" {
		t.Fatalf("approval thread after approve: %v", st.Values)
	}

	// Open the counted thread by searching its id, step through its checkpoints by keyboard.
	run(t, ctx, chromedp.Focus(chromedp.ID("main")), chromedp.KeyEvent("/"))
	if evalString(t, ctx, `document.activeElement.id`) != "thread-search" {
		t.Fatal(`"/" did not focus the thread search`)
	}
	// (CDP sends the "/" as a character too, which a real key press would not type.)
	run(t, ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("thread-search").value = ""`), chromedp.SendKeys(chromedp.ID("thread-search"), counted[:13]))
	waitFor(t, ctx, fmt.Sprintf(`document.querySelectorAll("#threads a[data-thread]").length === 1 && document.querySelector("#threads a").dataset.thread === %q`, counted))
	run(t, ctx, chromedp.KeyEvent("\r"))
	waitFor(t, ctx, fmt.Sprintf(`location.hash.startsWith("#/thread/%s") && document.querySelector(".thread-head .tid").title === %[1]q`, counted))
	var hist []struct {
		Checkpoint struct {
			ID string `json:"checkpoint_id"`
		} `json:"checkpoint"`
		Values   map[string]any `json:"values"`
		Metadata struct {
			Step int `json:"step"`
		} `json:"metadata"`
		Parent *struct {
			ID string `json:"checkpoint_id"`
		} `json:"parent_checkpoint"`
	}
	api(t, base, "POST", "/threads/"+counted+"/history", map[string]any{"limit": 100}, &hist)
	if n := evalInt(t, ctx, `document.querySelectorAll(".timeline .cp").length`); n != len(hist) {
		t.Fatalf("timeline shows %d checkpoints, the API has %d", n, len(hist))
	}
	selected := func() string {
		return evalString(t, ctx, `document.querySelector(".timeline .cp[aria-selected=true]").dataset.cid`)
	}
	if selected() != hist[0].Checkpoint.ID {
		t.Fatalf("selected %s first, want the head %s", selected(), hist[0].Checkpoint.ID)
	}
	run(t, ctx, chromedp.Focus(chromedp.CSS(".timeline .cp[aria-selected=true]")))
	for i := 1; i < len(hist); i++ {
		run(t, ctx, chromedp.KeyEvent(kb.ArrowDown))
		if got := selected(); got != hist[i].Checkpoint.ID {
			var ids []string
			for _, c := range hist {
				ids = append(ids, c.Checkpoint.ID)
			}
			t.Fatalf("after %d ArrowDown: selected %s, want %s (history %v, page %s)", i, got, hist[i].Checkpoint.ID, ids,
				evalString(t, ctx, `[...document.querySelectorAll(".timeline .cp")].map(e => e.dataset.cid).join(" ")`))
		}
		want := fmt.Sprintf("Step %d", hist[i].Metadata.Step)
		if got := evalString(t, ctx, `document.querySelector("#detail h2").textContent`); !strings.HasPrefix(got, want) {
			t.Fatalf("detail shows %q, want %q", got, want)
		}
	}
	run(t, ctx, chromedp.KeyEvent("k"), chromedp.KeyEvent("k"), chromedp.KeyEvent("j"))
	old := hist[len(hist)-2] // step 1: count 1, target 3
	if got := selected(); got != old.Checkpoint.ID {
		t.Fatalf("after k k j: selected %s, want %s", got, old.Checkpoint.ID)
	}
	if old.Values["count"] != float64(1) {
		t.Fatalf("checkpoint %s has count %v, want 1", old.Checkpoint.ID, old.Values["count"])
	}
	run(t, ctx, chromedp.Click(chromedp.ID("tab-diff")))
	waitFor(t, ctx, `document.querySelector("table.diff") && document.querySelector("table.diff").textContent.includes("count")`)
	screenshot(t, ctx, "timeline.png")

	// Fork at step 1 with target 5, and run the fork.
	run(t, ctx, chromedp.SetValue(chromedp.ID("fork-field"), "target"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("fork-field").dispatchEvent(new Event("change"))`),
		chromedp.SetValue(chromedp.ID("fork-value"), "5"),
		chromedp.Click(chromedp.ID("fork-run")))
	waitFor(t, ctx, `document.querySelector("#live.finished h2") && document.querySelector("#live h2").textContent.includes("success") && document.querySelector(".timeline .pill.fork") !== null`)
	api(t, base, "GET", "/threads/"+counted+"/state", nil, &st)
	if st.Values["count"] != float64(5) || st.Values["target"] != float64(5) {
		t.Fatalf("forked thread head: %v, want count 5 and target 5", st.Values)
	}
	var hist2 []struct {
		Checkpoint struct {
			ID string `json:"checkpoint_id"`
		} `json:"checkpoint"`
		Values map[string]any `json:"values"`
		Parent *struct {
			ID string `json:"checkpoint_id"`
		} `json:"parent_checkpoint"`
	}
	api(t, base, "POST", "/threads/"+counted+"/history", map[string]any{"limit": 100}, &hist2)
	forked := false
	for _, c := range hist2 {
		if c.Parent != nil && c.Parent.ID == old.Checkpoint.ID && c.Values["target"] == float64(5) {
			forked = true
		}
	}
	if !forked {
		t.Fatalf("no checkpoint with target 5 whose parent is %s", old.Checkpoint.ID)
	}
	if n := evalInt(t, ctx, `document.querySelectorAll(".timeline .cp").length`); n != len(hist2) {
		t.Fatalf("timeline shows %d checkpoints after the fork, the API has %d", n, len(hist2))
	}
	// Show the fork: the timeline at the top, scrolled to the old branch.
	run(t, ctx, chromedp.Evaluate[chromedp.Void](`document.querySelector("#live").hidden = true; const tl = document.querySelector(".timeline"); tl.scrollTop = tl.scrollHeight; document.querySelector(".cp.lane1").click()`))
	screenshotAt(t, ctx, "fork.png", ".thread-head")
	run(t, ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("thread-search").value = ""; document.getElementById("thread-search").dispatchEvent(new Event("input"))`))

	// The weather thread: the pending tool call in the chat, approved.
	run(t, ctx, chromedp.Navigate(base+"/ui/#/thread/"+weather))
	waitFor(t, ctx, `document.querySelector("#interrupt .toolcalls") && document.querySelector("#interrupt").textContent.includes("get_weather")`)
	waitFor(t, ctx, `document.querySelector('#thread-graph [data-node="tools"]').classList.contains("next") && document.querySelector('#thread-graph [data-node="agent"]').classList.contains("done")`)
	run(t, ctx, chromedp.Click(chromedp.ID("tab-chat")))
	waitFor(t, ctx, `document.querySelectorAll("#detail .chat .msg").length === 2`)
	screenshot(t, ctx, "chat.png")
	run(t, ctx, chromedp.Click(chromedp.ID("approve")))
	waitFor(t, ctx, `document.querySelector("#live.finished h2") && document.querySelector("#live h2").textContent.includes("success")`)
	var wst struct {
		Values struct {
			Messages []map[string]any `json:"messages"`
		} `json:"values"`
		Metadata struct {
			Totals struct {
				Cost float64 `json:"cost"`
			} `json:"totals"`
		} `json:"metadata"`
	}
	api(t, base, "GET", "/threads/"+weather+"/state", nil, &wst)
	msgs := wst.Values.Messages
	if len(msgs) != 4 || msgs[2]["role"] != "tool" || !strings.Contains(fmt.Sprint(msgs[3]["content"]), "") || msgs[3]["role"] != "assistant" {
		t.Fatalf("weather thread after approve: %v", msgs)
	}
	if wst.Metadata.Totals.Cost <= 0 {
		t.Fatalf("weather thread cost %v, want > 0", wst.Metadata.Totals.Cost)
	}
	cost := evalString(t, ctx, `document.querySelector(".thread-head .cost").textContent`)
	if cost == "$0" {
		t.Errorf("the thread head shows cost %q", cost)
	}

	// The failed thread: the message and what to do; continue with a higher limit.
	run(t, ctx, chromedp.Navigate(base+"/ui/#/thread/"+failed))
	waitFor(t, ctx, `document.querySelector("#error") && document.querySelector("#error").textContent.includes("step limit of 2") && document.querySelector("#error").textContent.includes("What to do")`)
	screenshot(t, ctx, "error.png")
	run(t, ctx, chromedp.SetValue(chromedp.ID("cont-limit"), "50"), chromedp.Click(chromedp.ID("continue-run")))
	waitFor(t, ctx, `document.querySelector("#live.finished h2") && document.querySelector("#live h2").textContent.includes("success")`)
	api(t, base, "GET", "/threads/"+failed+"/state", nil, &st)
	if st.Values["count"] != float64(10) {
		t.Fatalf("failed thread after continue: %v, want count 10", st.Values)
	}

	// A narrow window.
	run(t, ctx, chromedp.EmulateViewport(420, 860), chromedp.Navigate(base+"/ui/#/thread/"+counted))
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector(".thread-head .tid") && document.querySelector(".thread-head .tid").title === %q`, counted))
	if w := evalInt(t, ctx, `document.documentElement.scrollWidth`); w > 420 {
		t.Errorf("narrow window: the page is %d px wide, wider than the 420 px window", w)
	}
	screenshot(t, ctx, "narrow.png")

	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser: %s", p)
	}
}

// chromiumPath finds Chromium; under CI=true its absence fails the test.
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (apt-get install -y chromium); CI=true needs it")
	}
	t.Skip("chromium is not installed (apt-get install -y chromium)")
	return ""
}

func newBrowser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	return ctx
}

func run(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("view").innerText.slice(0, 1500) + "\nbanner: " + document.getElementById("banner").innerText`))
		t.Fatalf("waiting for %s: %v\npage:\n%s", expr, err, body)
	}
}

func evalString(t *testing.T, ctx context.Context, expr string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func evalInt(t *testing.T, ctx context.Context, expr string) int {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[int](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// screenshot writes the viewport, scrolled to the top, to
// docs/screenshots/name.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	screenshotAt(t, ctx, name, "")
}

// screenshotAt is screenshot with the element sel scrolled to the top.
func screenshotAt(t *testing.T, ctx context.Context, name, sel string) {
	t.Helper()
	js := `window.scrollTo(0, 0)`
	if sel != "" {
		js = fmt.Sprintf(`document.querySelector(%q).scrollIntoView({block: "start"})`, sel)
	}
	run(t, ctx, chromedp.Evaluate[chromedp.Void](js))
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("..", "..", "docs", "screenshots", name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startServe builds cmd/lgrun and starts `lgrun serve` on loopback with
// the example graphs; it is killed at the end of the test.
func startServe(t *testing.T, env []string, graphs ...string) string {
	t.Helper()
	if len(graphs) == 0 {
		graphs = []string{"../../graphs/approval.yaml", "../../graphs/weather-agent-approval.yaml", "../../graphs/loop.yaml"}
	}
	dir := t.TempDir()
	bin := lgrunBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, append([]string{"serve", "--db", filepath.Join(dir, "lgrun.db"), "--addr", addr}, graphs...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(ready) })
			}
			t.Log("serve: " + sc.Text())
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("lgrun serve did not start listening in 20s")
	}
	return "http://" + addr
}

func api(t *testing.T, base, method, path string, body, out any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

func assistantID(t *testing.T, base, graph string) string {
	var as []struct {
		ID string `json:"assistant_id"`
	}
	api(t, base, "POST", "/assistants/search", map[string]any{"graph_id": graph}, &as)
	if len(as) == 0 {
		t.Fatalf("no assistant for %s", graph)
	}
	return as[0].ID
}

func newThread(t *testing.T, base, graph string) string {
	var th struct {
		ID string `json:"thread_id"`
	}
	api(t, base, "POST", "/threads", map[string]any{"metadata": map[string]any{"graph_id": graph}}, &th)
	return th.ID
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// lgrunBinary builds cmd/lgrun once per test binary.
func lgrunBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lgrun-ui-test")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "lgrun")
		if out, err := exec.Command("go", "build", "-o", binPath, "../../cmd/lgrun").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// TestLiveNodeInChromium: while a run is in a node, the page's graph draws
// that node as running, from the run's own event stream. The model is a
// loopback OpenAI-compatible server (driven by lgrun's real go-openai
// client) that holds its reply until the test has seen the highlight.
func TestLiveNodeInChromium(t *testing.T) {
	browser := chromiumPath(t)
	release := make(chan struct{})
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Stream bool `json:"stream"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Foggy, 57F."},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":4,"total_tokens":24}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, chunk := range []string{
			`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"Foggy, 57F."},"finish_reason":null}]}`,
			`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
			`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":4,"total_tokens":24}}`,
			`[DONE]`,
		} {
			fmt.Fprintf(w, "data: %s\n\n", chunk)
		}
	}))
	t.Cleanup(func() {
		model.Close()
	})
	base := startServe(t, []string{"LGRUN_PROVIDER=openai", "OPENAI_BASE_URL=" + model.URL + "/v1", "OPENAI_API_KEY=test"}, "../../graphs/weather-agent.yaml")
	agent := assistantID(t, base, "weather-agent")

	ctx := newBrowser(t, browser)
	run(t, ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(base+"/ui/#/graph/"+agent))
	waitFor(t, ctx, `document.getElementById("run-submit") !== null`)
	run(t, ctx, chromedp.Click(chromedp.ID("run-submit")))
	waitFor(t, ctx, `document.querySelector('#thread-graph [data-node="agent"]') && document.querySelector('#thread-graph [data-node="agent"]').classList.contains("active") && document.querySelector("#live h2").textContent.includes("in progress") && document.querySelectorAll(".timeline .cp").length === 1 && document.querySelector("#thread-status").textContent === "busy"`)
	screenshot(t, ctx, "live.png")
	close(release)
	waitFor(t, ctx, `document.querySelector("#live.finished h2") && document.querySelector("#live h2").textContent.includes("success") && !document.querySelector('#thread-graph .node.active')`)
	tid := strings.SplitN(strings.TrimPrefix(evalString(t, ctx, `location.hash`), "#/thread/"), "/", 2)[0]
	var st struct {
		Values struct {
			Messages []map[string]any `json:"messages"`
		} `json:"values"`
	}
	api(t, base, "GET", "/threads/"+tid+"/state", nil, &st)
	msgs := st.Values.Messages
	if len(msgs) != 2 || msgs[1]["content"] != "Foggy, 57F." {
		t.Fatalf("after the run: %v", msgs)
	}
}
