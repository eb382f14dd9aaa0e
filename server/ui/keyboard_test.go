package ui_test

import (
	"fmt"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// TestKeyboardOnlyInChromium walks the main flow with the keyboard alone:
// Tab to a control (every stop with its focus drawn), Enter or Space to
// use it, arrows in the checkpoint list and typing in fields. It opens a
// graph, starts a run that stops at an interrupt, approves it, opens a
// thread from the list, steps to an old checkpoint and forks it with an
// edited value; the results are checked through the API.
func TestKeyboardOnlyInChromium(t *testing.T) {
	browser := chromiumPath(t)
	base := startServe(t, serveOpts{})
	loopA := assistantID(t, base, "loop")
	counted := newThread(t, base, "loop")
	api(t, base, "POST", "/threads/"+counted+"/runs/wait", map[string]any{"assistant_id": loopA, "input": map[string]any{"target": 3}}, nil)

	ctx := newBrowser(t, browser)
	run(t, ctx, chromedp.Navigate(base.URL+"/"))
	waitFor(t, ctx, `document.querySelectorAll("#graphs a").length === 3 && !!document.querySelector("#threads a[data-thread]") && !document.querySelector("#threads").textContent.includes("…")`)

	// A graph, and a run from its form.
	tabTo(t, ctx, `#graphs a[href$="`+assistantID(t, base, "approval")+`"]`, 10)
	run(t, ctx, chromedp.KeyEvent(kb.Enter))
	waitFor(t, ctx, `!!document.getElementById("in-topic")`)
	tabTo(t, ctx, `#in-topic`, 40)
	run(t, ctx, chromedp.KeyEvent(kb.End), chromedp.KeyEvent(" by keyboard"))
	tabTo(t, ctx, `#run-submit`, 20)
	run(t, ctx, chromedp.KeyEvent(kb.Enter))
	waitFor(t, ctx, `!!document.querySelector("#interrupt #approve") && document.querySelector("#interrupt").textContent.includes("by keyboard")`)
	approval := hashThread(t, ctx)
	// The interrupt panel comes before the checkpoints: a few Tabs from the
	// top of the thread reach Approve.
	run(t, ctx, chromedp.Focus(chromedp.ID("main")))
	tabTo(t, ctx, `#approve`, 10)
	run(t, ctx, chromedp.KeyEvent(kb.Enter))
	waitFor(t, ctx, finished("success")+` && document.querySelector(".thread-head .pill").textContent === "idle"`)
	var st struct {
		Values map[string]any `json:"values"`
	}
	api(t, base, "GET", "/threads/"+approval+"/state", nil, &st)
	if st.Values["published"] != true || st.Values["topic"] != "release notes by keyboard" {
		t.Fatalf("approval thread after a keyboard approve: %v", st.Values)
	}

	// A thread from the list, its checkpoints by arrow keys, a fork.
	waitFor(t, ctx, `!document.querySelector("#threads").textContent.includes("…")`)
	run(t, ctx, chromedp.Focus(chromedp.CSS(".brand")))
	tabTo(t, ctx, fmt.Sprintf(`#threads a[data-thread=%q]`, counted), 20)
	run(t, ctx, chromedp.KeyEvent(kb.Enter))
	waitFor(t, ctx, fmt.Sprintf(`!!document.querySelector(".thread-head .tid") && document.querySelector(".thread-head .tid").title === %q`, counted))
	hist := history(t, base, counted)
	tabTo(t, ctx, `.timeline .cp[aria-selected=true]`, 20)
	for i := 0; i < len(hist)-2; i++ {
		run(t, ctx, chromedp.KeyEvent(kb.ArrowDown))
	}
	old := hist[len(hist)-2] // step 1: count 1, target 3
	waitFor(t, ctx, fmt.Sprintf(`document.activeElement.dataset.cid === %q && document.querySelector("#detail h2").textContent.startsWith("Step 1")`, old.Checkpoint.ID))
	tabTo(t, ctx, `#fork-field`, 20)
	// Typing a field's first letters picks it in the closed menu.
	run(t, ctx, chromedp.KeyEvent("ta"))
	waitFor(t, ctx, `document.getElementById("fork-field").value === "target" && document.getElementById("fork-value").value === "3"`)
	tabTo(t, ctx, `#fork-value`, 3)
	run(t, ctx, chromedp.KeyEvent("a", chromedp.KeyModifiers(chromedp.ModifierCtrl)), chromedp.KeyEvent("4"))
	tabTo(t, ctx, `#fork-run`, 4)
	run(t, ctx, chromedp.KeyEvent(" "))
	waitFor(t, ctx, finished("success")+` && !!document.querySelector(".timeline .pill.fork")`)
	api(t, base, "GET", "/threads/"+counted+"/state", nil, &st)
	if st.Values["count"] != float64(4) || st.Values["target"] != float64(4) {
		t.Fatalf("after a keyboard fork: %v, want count 4 and target 4", st.Values)
	}
	forked := false
	for _, c := range history(t, base, counted) {
		if c.Parent != nil && c.Parent.ID == old.Checkpoint.ID && c.Values["target"] == float64(4) {
			forked = true
		}
	}
	if !forked {
		t.Fatalf("no checkpoint with target 4 whose parent is %s", old.Checkpoint.ID)
	}
}
