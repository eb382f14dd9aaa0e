package ui_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// finished is true once the page's live run panel shows the run's end with
// status.
func finished(status string) string {
	return fmt.Sprintf(`!!document.querySelector("#live.finished h2") && document.querySelector("#live h2").textContent.includes(%q)`, status)
}

// TestAPIKeyInChromium: on a server that needs an API key, the page asks
// for it, says so when the key is wrong, and with the right one works as
// usual and keeps it across a reload.
func TestAPIKeyInChromium(t *testing.T) {
	browser := chromiumPath(t)
	base := startServe(t, serveOpts{env: []string{"LGRUN_API_KEYS=right-key,other-key"}})
	if status, _ := apiStatus(t, server{URL: base.URL}, "POST", "/assistants/search", map[string]any{}); status != 401 {
		t.Fatalf("the server answers %d without a key, want 401", status)
	}
	// The requests the page makes without the key (or with a wrong one)
	// fail with 401 in the browser's log, on purpose.
	ctx := newBrowser(t, browser, regexp.MustCompile(`status of 401`))
	run(t, ctx, chromedp.Navigate(base.URL+"/"))
	waitFor(t, ctx, `!document.getElementById("key-form").hidden && document.getElementById("banner").textContent.includes("needs an API key")`)
	if n := evalInt(t, ctx, `document.querySelectorAll("#graphs a").length`); n != 0 {
		t.Fatalf("without a key the page lists %d graphs", n)
	}

	run(t, ctx, chromedp.SendKeys(chromedp.ID("api-key"), "wrong-key"), chromedp.KeyEvent(kb.Enter))
	waitFor(t, ctx, `!document.getElementById("key-form").hidden && document.getElementById("banner").textContent.includes("wrong")`)

	run(t, ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("api-key").value = ""`), chromedp.SendKeys(chromedp.ID("api-key"), "right-key"), chromedp.Click(chromedp.CSS(`#key-form button`)))
	waitFor(t, ctx, `document.getElementById("key-form").hidden && document.querySelectorAll("#graphs a").length === 3 && document.getElementById("banner").hidden`)
	if got := evalString(t, ctx, `localStorage.getItem("lgrun-api-key")`); got != "right-key" {
		t.Fatalf("the page keeps the key %q", got)
	}

	// With the key kept, a reload needs no prompt; a run from the form goes
	// through, streamed with the key.
	loopA := assistantID(t, base, "loop")
	run(t, ctx, chromedp.Navigate(base.URL+"/ui/#/graph/"+loopA), chromedp.Reload())
	waitFor(t, ctx, `document.getElementById("in-target") !== null && document.getElementById("key-form").hidden`)
	run(t, ctx, chromedp.SetValue(chromedp.ID("in-target"), "2"), chromedp.Click(chromedp.ID("run-submit")))
	waitFor(t, ctx, finished("success"))
	tid := hashThread(t, ctx)
	var st struct {
		Values map[string]any `json:"values"`
	}
	api(t, base, "GET", "/threads/"+tid+"/state", nil, &st)
	if st.Values["count"] != float64(2) {
		t.Fatalf("the run from the page with the key: %v, want count 2", st.Values)
	}
}

// TestCancelInChromium: Cancel stops a live run (the model call it waits
// on is dropped), the page says what to do, and continuing finishes it.
func TestCancelInChromium(t *testing.T) {
	browser := chromiumPath(t)
	modelURL, release, gone := holdingModel(t)
	base := startServe(t, serveOpts{env: []string{"LGRUN_PROVIDER=openai", "OPENAI_BASE_URL=" + modelURL, "OPENAI_API_KEY=test"}, graphs: []string{"../../graphs/weather-agent.yaml"}})
	agent := assistantID(t, base, "weather-agent")

	ctx := newBrowser(t, browser)
	run(t, ctx, chromedp.Navigate(base.URL+"/ui/#/graph/"+agent))
	waitFor(t, ctx, `document.getElementById("run-submit") !== null`)
	run(t, ctx, chromedp.Click(chromedp.ID("run-submit")))
	waitFor(t, ctx, `document.getElementById("cancel-run") !== null && document.querySelector('#thread-graph [data-node="agent"]').classList.contains("active")`)
	tid := hashThread(t, ctx)
	rs := runsOf(t, base, tid)
	if len(rs) != 1 || rs[0].Status != "running" {
		t.Fatalf("runs before the cancel: %+v, want one running", rs)
	}
	run(t, ctx, chromedp.Click(chromedp.ID("cancel-run")))
	select {
	case <-gone:
	case <-time.After(20 * time.Second):
		t.Fatal("the cancel did not drop the model call")
	}
	waitFor(t, ctx, finished("cancelled"))
	rs = runsOf(t, base, tid)
	if len(rs) != 1 || rs[0].Status != "interrupted" {
		t.Fatalf("runs after the cancel: %+v, want one interrupted", rs)
	}
	var th struct {
		Status string `json:"status"`
	}
	api(t, base, "GET", "/threads/"+tid, nil, &th)
	if th.Status == "busy" {
		t.Fatalf("the thread is still busy after the cancel")
	}
	// What to do: continue from the last checkpoint.
	waitFor(t, ctx, `!!document.querySelector("#stopped") && document.querySelector("#stopped").textContent.includes("cancelled") && document.querySelector("#stopped").textContent.includes("What to do")`)
	screenshot(t, ctx, "cancelled.png")
	close(release)
	run(t, ctx, chromedp.Click(chromedp.ID("continue-run")))
	waitFor(t, ctx, finished("success"))
	var st struct {
		Values struct {
			Messages []map[string]any `json:"messages"`
		} `json:"values"`
	}
	api(t, base, "GET", "/threads/"+tid+"/state", nil, &st)
	if msgs := st.Values.Messages; len(msgs) != 2 || msgs[1]["content"] != "Foggy, 57F." {
		t.Fatalf("after continuing the cancelled run: %v", msgs)
	}
	rs = runsOf(t, base, tid)
	if len(rs) != 2 || rs[0].Status != "success" {
		t.Fatalf("runs after continuing: %+v, want the newest a success", rs)
	}
	if evalBool(t, ctx, `!!document.querySelector("#stopped")`) {
		t.Fatal("the page still shows the cancel after the run finished")
	}
}

// TestRerunInChromium: "Re-run from here" at an old checkpoint runs the
// graph again from it, as a new branch; the old line stays.
func TestRerunInChromium(t *testing.T) {
	browser := chromiumPath(t)
	base := startServe(t, serveOpts{})
	loopA := assistantID(t, base, "loop")
	tid := newThread(t, base, "loop")
	api(t, base, "POST", "/threads/"+tid+"/runs/wait", map[string]any{"assistant_id": loopA, "input": map[string]any{"target": 3}}, nil)
	before := history(t, base, tid)
	old := before[len(before)-2] // step 1, count 1
	if old.Metadata.Step != 1 || old.Values["count"] != float64(1) {
		t.Fatalf("checkpoint %s: step %d, count %v", old.Checkpoint.ID, old.Metadata.Step, old.Values["count"])
	}

	ctx := newBrowser(t, browser)
	run(t, ctx, chromedp.Navigate(base.URL+"/ui/#/thread/"+tid))
	waitFor(t, ctx, fmt.Sprintf(`document.querySelectorAll(".timeline .cp").length === %d`, len(before)))
	run(t, ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`.timeline .cp[data-cid=%q]`, old.Checkpoint.ID))))
	waitFor(t, ctx, `document.querySelector("#detail h2").textContent.startsWith("Step 1")`)
	run(t, ctx, chromedp.Click(chromedp.ID("rerun")))
	waitFor(t, ctx, finished("success"))
	after := history(t, base, tid)
	// The re-run writes steps 2, 3 and 4 again, the first with the old
	// step 1 as its parent.
	if len(after) != len(before)+3 {
		t.Fatalf("history has %d checkpoints after the re-run, want %d", len(after), len(before)+3)
	}
	head := after[0]
	if head.Values["count"] != float64(3) || len(head.Next) != 0 {
		t.Fatalf("head after the re-run: %v next %v", head.Values, head.Next)
	}
	branched := 0
	for _, c := range after {
		if c.Parent != nil && c.Parent.ID == old.Checkpoint.ID {
			branched++
		}
	}
	if branched != 2 {
		t.Fatalf("%d checkpoints have step 1 as parent, want 2 (the old line and the re-run)", branched)
	}
	if rs := runsOf(t, base, tid); len(rs) != 2 || rs[0].Status != "success" || rs[0].Kwargs["checkpoint_id"] != old.Checkpoint.ID {
		t.Fatalf("runs after the re-run: %+v, want the newest from %s", rs, old.Checkpoint.ID)
	}
	waitFor(t, ctx, fmt.Sprintf(`document.querySelectorAll(".timeline .cp").length === %d && document.querySelectorAll(".timeline .pill.fork").length === 1`, len(after)))
}

// TestRejectAndAnswerInChromium: at an interrupt node, Reject resumes with
// the feedback (the graph revises and asks again) and an answer in JSON
// resumes with that value; at a pending tool call, Reject answers the call
// with a refusal that the model then reads.
func TestRejectAndAnswerInChromium(t *testing.T) {
	browser := chromiumPath(t)
	base := startServe(t, serveOpts{})
	approvalA := assistantID(t, base, "approval")
	tid := newThread(t, base, "approval")
	api(t, base, "POST", "/threads/"+tid+"/runs/wait", map[string]any{"assistant_id": approvalA, "input": map[string]any{"topic": "cats"}}, nil)

	ctx := newBrowser(t, browser)
	run(t, ctx, chromedp.Navigate(base.URL+"/ui/#/thread/"+tid))
	waitFor(t, ctx, `!!document.querySelector("#interrupt #reject") && document.querySelector("#interrupt").textContent.includes("Draft about cats")`)
	run(t, ctx, chromedp.SendKeys(chromedp.ID("reject-feedback"), "shorter"), chromedp.Click(chromedp.ID("reject")))
	waitFor(t, ctx, finished("paused at an interrupt")+` && !!document.querySelector("#interrupt") && document.querySelector("#interrupt").textContent.includes("[revised: shorter]")`)
	var st struct {
		Values map[string]any `json:"values"`
	}
	api(t, base, "GET", "/threads/"+tid+"/state", nil, &st)
	review, _ := st.Values["review"].(map[string]any)
	if review["approved"] != false || review["feedback"] != "shorter" || st.Values["revision"] != float64(1) || st.Values["draft"] != "Draft about cats [revised: shorter]" {
		t.Fatalf("after Reject: %v", st.Values)
	}
	if rs := runsOf(t, base, tid); fmt.Sprint(rs[0].Kwargs["command"]) != "map[resume:map[approved:false feedback:shorter]]" {
		t.Fatalf("Reject sent %v", rs[0].Kwargs["command"])
	}

	// An answer that is not JSON says so and sends nothing.
	run(t, ctx, chromedp.Click(chromedp.CSS(`#interrupt details.answer summary`)),
		chromedp.SetValue(chromedp.ID("answer-json"), `{"approved": tru`), chromedp.Click(chromedp.ID("answer")))
	waitFor(t, ctx, `!document.getElementById("banner").hidden && document.getElementById("banner").textContent.includes("answer: not valid JSON")`)
	if n := len(runsOf(t, base, tid)); n != 2 {
		t.Fatalf("a bad answer started a run: %d runs", n)
	}
	run(t, ctx, chromedp.SetValue(chromedp.ID("answer-json"), `{"approved": true, "feedback": "fine now"}`), chromedp.Click(chromedp.ID("answer")))
	waitFor(t, ctx, finished("success")+` && !document.querySelector("#interrupt") && document.querySelector(".thread-head .pill").textContent === "idle"`)
	api(t, base, "GET", "/threads/"+tid+"/state", nil, &st)
	review, _ = st.Values["review"].(map[string]any)
	if st.Values["published"] != true || review["feedback"] != "fine now" {
		t.Fatalf("after the answer: %v", st.Values)
	}
	if log := fmt.Sprint(st.Values["log"]); log != "[write revise 1 publish revision 1]" {
		t.Fatalf("log after the answer: %s", log)
	}

	// The pending tool call, rejected with a reason.
	weatherA := assistantID(t, base, "weather-agent-approval")
	wt := newThread(t, base, "weather-agent-approval")
	api(t, base, "POST", "/threads/"+wt+"/runs/wait", map[string]any{"assistant_id": weatherA, "input": map[string]any{}}, nil)
	run(t, ctx, chromedp.Navigate(base.URL+"/ui/#/thread/"+wt))
	waitFor(t, ctx, `!!document.querySelector("#interrupt .toolcalls") && !!document.getElementById("reject")`)
	run(t, ctx, chromedp.SendKeys(chromedp.ID("reject-feedback"), "not now"), chromedp.Click(chromedp.ID("reject")))
	waitFor(t, ctx, finished("success"))
	var wst struct {
		Values struct {
			Messages []map[string]any `json:"messages"`
		} `json:"values"`
	}
	api(t, base, "GET", "/threads/"+wt+"/state", nil, &wst)
	msgs := wst.Values.Messages
	if len(msgs) != 4 || msgs[2]["role"] != "tool" || msgs[2]["content"] != "denied by the operator: not now" || msgs[3]["role"] != "assistant" {
		t.Fatalf("weather thread after Reject: %v", msgs)
	}
	calls, _ := msgs[1]["tool_calls"].([]any)
	if len(calls) != 1 || msgs[2]["tool_call_id"] != calls[0].(map[string]any)["id"] {
		t.Fatalf("the refusal answers %v, the call was %v", msgs[2]["tool_call_id"], calls)
	}
}

// TestBudgetStopInChromium: a run stopped by its budget shows the message
// and what to do, and continues with a larger budget.
func TestBudgetStopInChromium(t *testing.T) {
	browser := chromiumPath(t)
	base := startServe(t, serveOpts{})
	weatherA := assistantID(t, base, "weather-agent-approval")

	ctx := newBrowser(t, browser)
	run(t, ctx, chromedp.Navigate(base.URL+"/ui/#/graph/"+weatherA))
	waitFor(t, ctx, `document.getElementById("run-submit") !== null`)
	run(t, ctx, chromedp.Click(chromedp.CSS(`details.opts summary`)),
		chromedp.SendKeys(chromedp.ID("run-cost"), "0.00001"), chromedp.Click(chromedp.ID("run-submit")))
	waitFor(t, ctx, finished("error")+` && !!document.querySelector("#error")`)
	tid := hashThread(t, ctx)
	var th struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	api(t, base, "GET", "/threads/"+tid, nil, &th)
	rs := runsOf(t, base, tid)
	if th.Status != "error" || len(rs) != 1 || rs[0].Status != "error" {
		t.Fatalf("thread %s (%s), runs %+v after the budget stop", th.Status, th.Error, rs)
	}
	text := evalString(t, ctx, `document.querySelector("#error").textContent`)
	if !strings.Contains(text, "budget") || !strings.Contains(text, "What to do: a budget stopped the run") {
		t.Fatalf("the error panel says %q", text)
	}
	run(t, ctx, chromedp.SendKeys(chromedp.ID("cont-cost"), "1"), chromedp.Click(chromedp.ID("continue-run")))
	// With the budget raised, the run goes on to its breakpoint before tools.
	waitFor(t, ctx, finished("paused at an interrupt")+` && !!document.querySelector("#interrupt .toolcalls") && !document.querySelector("#error")`)
	api(t, base, "GET", "/threads/"+tid, nil, &th)
	if th.Status != "interrupted" {
		t.Fatalf("thread %s after continuing with a larger budget, want interrupted", th.Status)
	}
}
