package ui_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// newBrowser starts headless Chromium with a 1280×800 viewport and watches
// its console: at the end of the test, any console error, warning or
// assertion, uncaught exception or error log entry (such as a failed
// request) fails the test, unless its text matches one of allowed.
func newBrowser(t *testing.T, path string, allowed ...*regexp.Regexp) context.Context {
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
	var mu sync.Mutex
	var problems []string
	add := func(p string) {
		for _, re := range allowed {
			if re.MatchString(p) {
				return
			}
		}
		mu.Lock()
		problems = append(problems, p)
		mu.Unlock()
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *cdpruntime.EventConsoleAPICalled:
			if ev.Type == cdpruntime.ConsoleAPICalledTypeError || ev.Type == cdpruntime.ConsoleAPICalledTypeWarning || ev.Type == cdpruntime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				add(fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
			}
		case *cdpruntime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			add("exception: " + msg)
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
				add("log: " + ev.Entry.Text + " " + ev.Entry.URL)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancelT()
		cancelC()
		cancelA()
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Errorf("browser: %s", p)
		}
	})
	run(t, ctx, chromedp.EmulateViewport(1280, 800))
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
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

func evalBool(t *testing.T, ctx context.Context, expr string) bool {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// hashThread returns the thread id in the page's address (#/thread/ID/…).
func hashThread(t *testing.T, ctx context.Context) string {
	t.Helper()
	return strings.SplitN(strings.TrimPrefix(evalString(t, ctx, `location.hash`), "#/thread/"), "/", 2)[0]
}

// tabTo presses Tab until the focused element matches the CSS selector
// sel, at most max times, and fails if it never does. At every stop the
// focus must be drawn (an outline), so a keyboard user sees where it is.
func tabTo(t *testing.T, ctx context.Context, sel string, max int) {
	t.Helper()
	var seen []string
	for i := 0; i < max; i++ {
		run(t, ctx, chromedp.KeyEvent(kb.Tab))
		got := evalString(t, ctx, fmt.Sprintf(`(() => {
			const e = document.activeElement;
			if (!e || e === document.body) return "body";
			const st = getComputedStyle(e);
			const name = e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.dataset.thread ? "[" + e.dataset.thread.slice(0, 8) + "]" : "");
			if (st.outlineStyle === "none" || parseFloat(st.outlineWidth) === 0) return "UNDRAWN " + name;
			return e.matches(%q) ? "MATCH" : name;
		})()`, sel))
		if got == "MATCH" {
			return
		}
		if strings.HasPrefix(got, "UNDRAWN ") {
			t.Fatalf("Tab stop %d (%s) has no visible focus", i+1, strings.TrimPrefix(got, "UNDRAWN "))
		}
		seen = append(seen, got)
	}
	t.Fatalf("%d Tabs did not reach %s; they went through %s", max, sel, strings.Join(seen, " "))
}

// volatile names what changes from run to run however the page looks:
// ids, times, run logs. Screenshots ignore differences inside them.
const volatile = `#thread-search:not(:placeholder-shown), #threads code, #threads .row2, .thread-head .tid, .thread-head .facts, .cp-sub,
	#detail h2 code, #detail h2 .ago, #stopped code,
	#live-log, #banner, table.runs td:nth-child(1), table.runs td:nth-child(3), .chat .who`

// screenshot writes the viewport, scrolled to the top, to
// docs/screenshots/name.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	screenshotAt(t, ctx, name, "")
}

type rect struct{ x0, y0, x1, y1 int }

// screenshotAt is screenshot with the element sel scrolled to the top. It
// keeps the file as it is when the page looks the same: when the only
// pixels that differ are inside the volatile elements (ids, times), so a
// test run on a clean tree leaves it clean.
func screenshotAt(t *testing.T, ctx context.Context, name, sel string) {
	t.Helper()
	js := `window.scrollTo(0, 0)`
	if sel != "" {
		js = fmt.Sprintf(`document.querySelector(%q).scrollIntoView({block: "start"})`, sel)
	}
	run(t, ctx, chromedp.Evaluate[chromedp.Void](js))
	masks, err := chromedp.Run(ctx, chromedp.Evaluate[[][4]float64](fmt.Sprintf(`[...document.querySelectorAll(%q)].map(e => {
		const r = e.getBoundingClientRect(), d = devicePixelRatio;
		return [r.left * d, r.top * d, r.right * d, r.bottom * d];
	})`, volatile)))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "docs", "screenshots", name)
	var rs []rect
	for _, m := range masks {
		rs = append(rs, rect{int(m[0]) - 2, int(m[1]) - 2, int(m[2]) + 3, int(m[3]) + 3})
	}
	if old, err := os.ReadFile(path); err == nil && samePicture(old, shot, rs) {
		return
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
}

// samePicture reports whether two PNGs have the same size and no pixel
// outside masks differs by more than a small tolerance in any channel.
func samePicture(a, b []byte, masks []rect) bool {
	ia, err := png.Decode(bytes.NewReader(a))
	if err != nil {
		return false
	}
	ib, err := png.Decode(bytes.NewReader(b))
	if err != nil || ia.Bounds() != ib.Bounds() {
		return false
	}
	const tol = 24 << 8 // of 0xffff
	bd := ia.Bounds()
	for y := bd.Min.Y; y < bd.Max.Y; y++ {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			if masked(masks, x, y) {
				continue
			}
			r1, g1, b1, a1 := ia.At(x, y).RGBA()
			r2, g2, b2, a2 := ib.At(x, y).RGBA()
			if far(r1, r2, tol) || far(g1, g2, tol) || far(b1, b2, tol) || far(a1, a2, tol) {
				return false
			}
		}
	}
	return true
}

func masked(masks []rect, x, y int) bool {
	for _, m := range masks {
		if x >= m.x0 && x < m.x1 && y >= m.y0 && y < m.y1 {
			return true
		}
	}
	return false
}

func far(a, b, tol uint32) bool {
	if a > b {
		return a-b > tol
	}
	return b-a > tol
}

// server is a running `lgrun serve`: its URL and the API key it needs.
type server struct {
	URL, Key string
}

// serveOpts configures startServe: extra environment, the --db argument
// (a fresh SQLite file when empty) and the graphs (the three examples of
// the page when empty).
type serveOpts struct {
	env    []string
	db     string
	graphs []string
}

// startServe builds cmd/lgrun and starts `lgrun serve` on loopback; it is
// killed at the end of the test.
func startServe(t *testing.T, o serveOpts) server {
	t.Helper()
	if len(o.graphs) == 0 {
		o.graphs = []string{"../../graphs/approval.yaml", "../../graphs/weather-agent-approval.yaml", "../../graphs/loop.yaml"}
	}
	if o.db == "" {
		o.db = filepath.Join(t.TempDir(), "lgrun.db")
	}
	bin := lgrunBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, append([]string{"serve", "--db", o.db, "--addr", addr}, o.graphs...)...)
	cmd.Env = append(os.Environ(), o.env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logged := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-logged // t.Log after the test ends would panic
		cmd.Wait()
	})
	ready := make(chan struct{})
	go func() {
		defer close(logged)
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
	s := server{URL: "http://" + addr}
	for _, e := range o.env {
		if k, ok := strings.CutPrefix(e, "LGRUN_API_KEYS="); ok {
			s.Key = strings.Split(k, ",")[0]
		}
	}
	return s
}

// api calls the server's API with its key and decodes the answer into out;
// anything but 200 fails the test.
func api(t *testing.T, s server, method, path string, body, out any) {
	t.Helper()
	status, b := apiStatus(t, s, method, path, body)
	if status != 200 {
		t.Fatalf("%s %s: %d %s", method, path, status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

// apiStatus calls the server's API with its key and returns the status and
// the body.
func apiStatus(t *testing.T, s server, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if s.Key != "" {
		req.Header.Set("x-api-key", s.Key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func assistantID(t *testing.T, s server, graph string) string {
	t.Helper()
	var as []struct {
		ID string `json:"assistant_id"`
	}
	api(t, s, "POST", "/assistants/search", map[string]any{"graph_id": graph}, &as)
	if len(as) == 0 {
		t.Fatalf("no assistant for %s", graph)
	}
	return as[0].ID
}

func newThread(t *testing.T, s server, graph string) string {
	t.Helper()
	var th struct {
		ID string `json:"thread_id"`
	}
	api(t, s, "POST", "/threads", map[string]any{"metadata": map[string]any{"graph_id": graph}}, &th)
	return th.ID
}

// checkpoint is an entry of POST /threads/{id}/history.
type checkpoint struct {
	Checkpoint struct {
		ID string `json:"checkpoint_id"`
	} `json:"checkpoint"`
	Values   map[string]any `json:"values"`
	Next     []string       `json:"next"`
	Metadata struct {
		Step int `json:"step"`
	} `json:"metadata"`
	Parent *struct {
		ID string `json:"checkpoint_id"`
	} `json:"parent_checkpoint"`
}

func history(t *testing.T, s server, tid string) []checkpoint {
	t.Helper()
	var h []checkpoint
	api(t, s, "POST", "/threads/"+tid+"/history", map[string]any{"limit": 1000}, &h)
	return h
}

// threadRun is an entry of GET /threads/{id}/runs, newest first.
type threadRun struct {
	ID     string         `json:"run_id"`
	Status string         `json:"status"`
	Kwargs map[string]any `json:"kwargs"`
}

func runsOf(t *testing.T, s server, tid string) []threadRun {
	t.Helper()
	var rs []threadRun
	api(t, s, "GET", "/threads/"+tid+"/runs", nil, &rs)
	return rs
}

// holdingModel is a loopback OpenAI-compatible server (driven by lgrun's
// real go-openai client) that answers "Foggy, 57F." but holds each reply
// until release is closed. gone receives when a held request is dropped
// by its client (a cancelled run).
func holdingModel(t *testing.T) (url string, release chan struct{}, gone chan struct{}) {
	release = make(chan struct{})
	gone = make(chan struct{}, 8)
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Stream bool `json:"stream"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		select {
		case <-release:
		case <-r.Context().Done():
			gone <- struct{}{}
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
	t.Cleanup(model.Close)
	return model.URL + "/v1", release, gone
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
