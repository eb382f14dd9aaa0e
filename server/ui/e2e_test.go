package ui_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/jackc/pgx/v5"

	"github.com/lgrun/lgrun/checkpoint/postgres/pgtest"
)

// TestPageInChromium drives the page in headless Chromium against a real
// `lgrun serve` child process: the thread list, a thread's checkpoints (by
// keyboard), a run started from the form that stops at an interrupt and is
// approved, a fork from an old checkpoint with an edited value, a tool call
// approval and an error with its advice; every result is checked through
// the API. It rewrites the screenshots in docs/screenshots/.
func TestPageInChromium(t *testing.T) {
	browser := chromiumPath(t)
	t.Run("sqlite", func(t *testing.T) {
		mainFlow(t, browser, startServe(t, serveOpts{}), true)
	})
	// The same flow on a Postgres store (server/pgstore), in a schema of
	// its own; it leaves the screenshots to the SQLite run.
	t.Run("postgres", func(t *testing.T) {
		_, u := pgtest.Schema(t)
		mainFlow(t, browser, startServe(t, serveOpts{db: u}), false)
		// The threads the page showed are rows of that schema.
		conn, err := pgx.Connect(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM server_threads`).Scan(&n); err != nil || n != 4 {
			t.Fatalf("server_threads in the test schema: %d rows (%v), want the 4 threads of the flow", n, err)
		}
	})
}

// mainFlow is TestPageInChromium on one server; shots says whether it
// takes the screenshots.
func mainFlow(t *testing.T, browser string, base server, shots bool) {
	screenshot := func(t *testing.T, ctx context.Context, name string) {
		t.Helper()
		if shots {
			screenshotAt(t, ctx, name, "")
		}
	}
	screenshotAt := func(t *testing.T, ctx context.Context, name, sel string) {
		t.Helper()
		if shots {
			screenshotAt(t, ctx, name, sel)
		}
	}

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
	// The thread list.
	run(t, ctx, chromedp.Navigate(base.URL+"/"))
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
	run(t, ctx, chromedp.Navigate(base.URL+"/ui/#/thread/"+weather))
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
	run(t, ctx, chromedp.Navigate(base.URL+"/ui/#/thread/"+failed))
	waitFor(t, ctx, `document.querySelector("#error") && document.querySelector("#error").textContent.includes("step limit of 2") && document.querySelector("#error").textContent.includes("What to do")`)
	screenshot(t, ctx, "error.png")
	run(t, ctx, chromedp.SetValue(chromedp.ID("cont-limit"), "50"), chromedp.Click(chromedp.ID("continue-run")))
	waitFor(t, ctx, `document.querySelector("#live.finished h2") && document.querySelector("#live h2").textContent.includes("success")`)
	api(t, base, "GET", "/threads/"+failed+"/state", nil, &st)
	if st.Values["count"] != float64(10) {
		t.Fatalf("failed thread after continue: %v, want count 10", st.Values)
	}

	// A narrow window.
	run(t, ctx, chromedp.EmulateViewport(420, 860), chromedp.Navigate(base.URL+"/ui/#/thread/"+counted))
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector(".thread-head .tid") && document.querySelector(".thread-head .tid").title === %q`, counted))
	if w := evalInt(t, ctx, `document.documentElement.scrollWidth`); w > 420 {
		t.Errorf("narrow window: the page is %d px wide, wider than the 420 px window", w)
	}
	screenshot(t, ctx, "narrow.png")
}

// TestLiveNodeInChromium: while a run is in a node, the page's graph draws
// that node as running, from the run's own event stream. The model is a
// loopback OpenAI-compatible server (driven by lgrun's real go-openai
// client) that holds its reply until the test has seen the highlight.
func TestLiveNodeInChromium(t *testing.T) {
	browser := chromiumPath(t)
	modelURL, release, _ := holdingModel(t)
	base := startServe(t, serveOpts{env: []string{"LGRUN_PROVIDER=openai", "OPENAI_BASE_URL=" + modelURL, "OPENAI_API_KEY=test"}, graphs: []string{"../../graphs/weather-agent.yaml"}})
	agent := assistantID(t, base, "weather-agent")

	ctx := newBrowser(t, browser)
	run(t, ctx, chromedp.Navigate(base.URL+"/ui/#/graph/"+agent))
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
