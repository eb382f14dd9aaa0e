package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// countGraph increments count until it reaches target: one superstep per
// increment, so a run takes exactly target steps.
func countGraph(limits string) string {
	return `
version: 1
name: count
state:
  count:  {type: int}
  target: {type: int, default: 3}
nodes:
  inc: {kind: set, set: {count: state.count + 1}}
edges:
  - {from: START, to: inc}
  - {from: inc, when: state.count < state.target, to: inc}
` + limits
}

func TestDefaultStepLimitIs25(t *testing.T) {
	if spec.DefaultStepLimit != 25 {
		t.Fatalf("DefaultStepLimit %d; docs/semantics.md says 25", spec.DefaultStepLimit)
	}
	r := newRunner(t, countGraph(""))
	cp := mustDone(t)(r.Run(bg, runtime.RunOptions{Thread: "25", Input: map[string]any{"target": 25}}))
	if cp.Step != 25 {
		t.Fatalf("step %d", cp.Step)
	}
	res, err := r.Run(bg, runtime.RunOptions{Thread: "26", Input: map[string]any{"target": 26}})
	sl := wantErrAs[*runtime.StepLimitError](t, err)
	if sl.Limit != 25 || sl.Step != 25 || res.Checkpoint.Values["count"] != 25 {
		t.Fatalf("limit error %+v, count %v", sl, res.Checkpoint.Values["count"])
	}
}

// A run that needs exactly N supersteps succeeds under a limit of N; one
// that needs N+1 stops after N with a StepLimitError naming the limit, the
// step and the nodes still scheduled, and can be resumed with a higher
// limit. The limit comes from the run's Config, else the graph, else 25.
func TestStepLimit(t *testing.T) {
	tests := []struct {
		name   string
		limits string // graph limits
		cfg    int    // Config.StepLimit
		target int    // steps the run needs
		fail   bool
		limit  int // effective limit
	}{
		{name: "config exact", cfg: 4, target: 4, limit: 4},
		{name: "config one over", cfg: 4, target: 5, fail: true, limit: 4},
		{name: "graph exact", limits: "limits: {steps: 3}", target: 3, limit: 3},
		{name: "graph one over", limits: "limits: {steps: 3}", target: 4, fail: true, limit: 3},
		{name: "config overrides graph", limits: "limits: {steps: 3}", cfg: 6, target: 6, limit: 6},
		{name: "config lower than graph", limits: "limits: {steps: 10}", cfg: 2, target: 3, fail: true, limit: 2},
		{name: "limit 1", cfg: 1, target: 1, limit: 1},
	}
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					saver, reopen := sk.open(t)
					r := newHarness(t, countGraph(tt.limits), saver)
					res, err := r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"target": tt.target}, Config: runtime.Config{StepLimit: tt.cfg}})
					if !tt.fail {
						cp := mustDone(t)(res, err)
						if cp.Values["count"] != tt.target || cp.Step != tt.target {
							t.Fatalf("count %v at step %d", cp.Values["count"], cp.Step)
						}
						return
					}
					sl := wantErrAs[*runtime.StepLimitError](t, err)
					if sl.Limit != tt.limit || sl.Step != tt.limit || !reflect.DeepEqual(sl.Nodes, []string{"inc"}) {
						t.Fatalf("limit error %+v", sl)
					}
					for _, s := range []string{fmt.Sprintf("step limit of %d", tt.limit), fmt.Sprintf("at step %d", tt.limit), "inc", "the state is saved"} {
						if !strings.Contains(err.Error(), s) {
							t.Errorf("error %q does not say %q", err, s)
						}
					}
					mustStatus(t, res, runtime.StatusBudget)
					th, cp := head(t, saver, "t")
					if th.Status != runtime.StatusBudget || cp.Step != tt.limit || cp.Values["count"] != tt.limit {
						t.Fatalf("thread %s at step %d count %v", th.Status, cp.Step, cp.Values["count"])
					}
					// Resume (in another process) with a higher limit: the
					// limit counts the turn's steps, so a limit of target
					// is exactly enough.
					r.Saver = reopen()
					cp = mustDone(t)(r.Resume(bg, runtime.ResumeOptions{Thread: "t", Config: runtime.Config{StepLimit: tt.target}}))
					if cp.Values["count"] != tt.target {
						t.Fatalf("after resume count %v", cp.Values["count"])
					}
				})
			}
		})
	}
}

// A raised limit given to Resume is stored with the thread: a later resume
// without a limit keeps it.
func TestStepLimitKeptWithThread(t *testing.T) {
	r := newRunner(t, countGraph(""))
	_, err := r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"target": 8}, Config: runtime.Config{StepLimit: 2}})
	wantErrAs[*runtime.StepLimitError](t, err)
	// Resume with no limit: the stored 2 still applies (no progress).
	_, err = r.Resume(bg, runtime.ResumeOptions{Thread: "t"})
	if sl := wantErrAs[*runtime.StepLimitError](t, err); sl.Limit != 2 || sl.Step != 2 {
		t.Fatalf("limit error %+v", sl)
	}
	_, err = r.Resume(bg, runtime.ResumeOptions{Thread: "t", Config: runtime.Config{StepLimit: 5}})
	if sl := wantErrAs[*runtime.StepLimitError](t, err); sl.Limit != 5 || sl.Step != 5 {
		t.Fatalf("limit error %+v", sl)
	}
	th, _ := head(t, r.Saver, "t")
	if th.Config.StepLimit != 5 {
		t.Fatalf("stored limit %d", th.Config.StepLimit)
	}
	_, err = r.Resume(bg, runtime.ResumeOptions{Thread: "t"})
	if sl := wantErrAs[*runtime.StepLimitError](t, err); sl.Limit != 5 {
		t.Fatalf("limit error %+v", sl)
	}
	cp := mustDone(t)(r.Resume(bg, runtime.ResumeOptions{Thread: "t", Config: runtime.Config{StepLimit: 8}}))
	if cp.Values["count"] != 8 {
		t.Fatalf("count %v", cp.Values["count"])
	}
}

// The limit counts the supersteps of one turn: each new input on a done
// thread starts counting again.
func TestStepLimitCountsPerTurn(t *testing.T) {
	r := newRunner(t, countGraph("limits: {steps: 3}"))
	for turn, target := range []int{3, 6, 9} {
		cp := mustDone(t)(r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"target": target}}))
		if cp.Values["count"] != target {
			t.Fatalf("turn %d: count %v", turn, cp.Values["count"])
		}
		// Steps keep counting over the thread: input + 3 per turn.
		if want := 4*turn + 3; cp.Step != want || cp.TurnStep != 4*turn {
			t.Fatalf("turn %d: step %d turn step %d, want %d and %d", turn, cp.Step, cp.TurnStep, want, 4*turn)
		}
	}
	_, err := r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"target": 13}})
	wantErrAs[*runtime.StepLimitError](t, err)
}

// usageGraph loops node spend, which the test's fake reports as one model
// call of 100 tokens costing $0.01, until count reaches 5.
const usageGraph = `
version: 1
name: spend
state:
  count: {type: int}
nodes:
  spend: {kind: noop}
  inc: {kind: set, set: {count: state.count + 1}}
edges:
  - {from: START, to: [spend, inc]}
  - {from: inc, when: state.count < 5, to: [spend, inc]}
`

func spender(h *harness) {
	h.fk.on("spend", func(context.Context, *runtime.NodeCall) (*runtime.NodeResult, error) {
		return &runtime.NodeResult{Usage: []runtime.Usage{{Node: "spend", Model: "m", InputTokens: 60, OutputTokens: 40, CostUSD: 0.01}}}, nil
	})
}

// Budgets are checked between supersteps against the thread's totals: the
// step that reaches a budget completes, and the run stops before the next
// one with a BudgetError and status budget-exceeded. A resume with a
// raised budget continues.
func TestBudgets(t *testing.T) {
	tests := []struct {
		name   string
		cfg    runtime.Config
		limits string
		what   string
		raised runtime.Config
	}{
		{name: "llm calls", cfg: runtime.Config{LLMCalls: 2}, what: "llm_calls", raised: runtime.Config{LLMCalls: 10}},
		{name: "tokens", cfg: runtime.Config{Tokens: 200}, what: "tokens", raised: runtime.Config{Tokens: 1000}},
		{name: "cost", cfg: runtime.Config{CostUSD: 0.015}, what: "cost_usd", raised: runtime.Config{CostUSD: 1}},
		{name: "graph llm calls", limits: "limits: {llm_calls: 2}", what: "llm_calls", raised: runtime.Config{LLMCalls: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, usageGraph+tt.limits, nil)
			spender(h)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t", Config: tt.cfg})
			be := wantErrAs[*runtime.BudgetError](t, err)
			if be.What != tt.what || !strings.Contains(err.Error(), "budget "+tt.what+" reached") {
				t.Fatalf("budget error %+v: %v", be, err)
			}
			mustStatus(t, res, runtime.StatusBudget)
			th, cp := head(t, h.Saver, "t")
			tot := cp.Metadata.Totals
			if th.Status != runtime.StatusBudget || cp.Step != 2 || tot.LLMCalls != 2 || tot.InputTokens != 120 || tot.OutputTokens != 80 {
				t.Fatalf("thread %s at step %d totals %+v", th.Status, cp.Step, tot)
			}
			if h.fk.count("spend") != 2 {
				t.Fatalf("spend ran %d times", h.fk.count("spend"))
			}
			cp = mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t", Config: tt.raised}))
			if cp.Values["count"] != 5 || cp.Metadata.Totals.LLMCalls != 5 {
				t.Fatalf("after resume count %v totals %+v", cp.Values["count"], cp.Metadata.Totals)
			}
		})
	}
}

// Totals carry over turns: a budget bounds the thread, not the turn.
func TestBudgetSpansTurns(t *testing.T) {
	h := newHarness(t, usageGraph, nil)
	spender(h)
	cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{LLMCalls: 7}}))
	if cp.Metadata.Totals.LLMCalls != 5 {
		t.Fatalf("totals %+v", cp.Metadata.Totals)
	}
	_, err := h.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"count": 0}})
	if be := wantErrAs[*runtime.BudgetError](t, err); be.Used != "7" {
		t.Fatalf("budget %+v", be)
	}
}

// slowGraph runs node wait, which the fakes block until the context ends.
const slowGraph = `
version: 1
name: slow
state:
  log: {type: list, items: string, reducer: append}
nodes:
  first: {kind: set, set: {log: '"first"'}}
  wait: {kind: noop}
  quick: {kind: set, set: {log: '"quick"'}}
  last: {kind: set, set: {log: '"last"'}}
edges:
  - {from: START, to: first}
  - {from: first, to: [wait, quick]}
  - {from: [wait, quick], to: last}
  - {from: last, to: END}
`

// blockUntilDone makes node wait block until its context ends, the first
// time; later calls return at once.
func blockUntilDone(h *harness, started chan<- struct{}) {
	first := true
	h.fk.on("wait", func(ctx context.Context, _ *runtime.NodeCall) (*runtime.NodeResult, error) {
		if !first {
			return &runtime.NodeResult{Writes: []runtime.Write{w("log", "wait")}}, nil
		}
		first = false
		if started != nil {
			close(started)
		}
		<-ctx.Done()
		return nil, ctx.Err()
	})
}

// Config.Timeout bounds a Run or Resume call: when it passes, the run
// stops with BudgetError "timeout", status budget-exceeded, at its last
// checkpoint, keeping the step's finished nodes as pending writes. A resume
// with a raised timeout continues.
func TestRunTimeout(t *testing.T) {
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, _ := sk.open(t)
			h := newHarness(t, slowGraph, saver)
			blockUntilDone(h, nil)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{Timeout: runtime.Duration(50 * time.Millisecond)}})
			be := wantErrAs[*runtime.BudgetError](t, err)
			if be.What != "timeout" || be.Limit != "50ms" {
				t.Fatalf("budget error %+v", be)
			}
			mustStatus(t, res, runtime.StatusBudget)
			th, cp := head(t, saver, "t")
			if th.Status != runtime.StatusBudget || cp.Step != 1 || !reflect.DeepEqual(cp.Next, []string{"quick", "wait"}) {
				t.Fatalf("thread %s at step %d next %v", th.Status, cp.Step, cp.Next)
			}
			cp = mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t", Config: runtime.Config{Timeout: runtime.Duration(time.Minute)}}))
			if want := []any{"first", "quick", "wait", "last"}; !reflect.DeepEqual(cp.Values["log"], want) {
				t.Fatalf("log %v, want %v", cp.Values["log"], want)
			}
			if n := h.rec.started()["quick"]; n != 1 {
				t.Fatalf("quick ran %d times; its pending write should have been reused", n)
			}
		})
	}
}

// The timeout bounds each call, not the thread's lifetime: time spent
// paused does not count.
func TestTimeoutIsPerCall(t *testing.T) {
	h := newHarness(t, abcGraph("interrupts: {before: [b]}"), nil)
	res, err := h.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{Timeout: runtime.Duration(200 * time.Millisecond)}})
	wantPaused(t, res, err, runtime.Interrupt{Node: "b", When: runtime.InterruptBefore})
	time.Sleep(250 * time.Millisecond)
	mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
	if th, _ := head(t, h.Saver, "t"); th.Config.Timeout != runtime.Duration(200*time.Millisecond) {
		t.Fatalf("stored timeout %v", th.Config.Timeout)
	}
}

// Cancelling the context stops the run: the step in flight is not
// committed, the nodes that finished keep their writes as pending writes,
// and the thread resumes from its last checkpoint.
func TestCancelLeavesThreadResumable(t *testing.T) {
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			h := newHarness(t, slowGraph, saver)
			started := make(chan struct{})
			blockUntilDone(h, started)
			ctx, cancel := context.WithCancel(bg)
			go func() { <-started; cancel() }()
			res, err := h.Run(ctx, runtime.RunOptions{Thread: "t"})
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "run cancelled") {
				t.Fatalf("error %v", err)
			}
			mustStatus(t, res, runtime.StatusFailed)
			_, cp := head(t, saver, "t")
			if cp.Step != 1 || !reflect.DeepEqual(cp.Values["log"], []any{"first"}) {
				t.Fatalf("head at step %d log %v", cp.Step, cp.Values["log"])
			}
			var kinds []string
			for _, p := range cp.Pending {
				kinds = append(kinds, p.Node+":"+string(p.Kind))
			}
			if !reflect.DeepEqual(kinds, []string{"quick:writes", "wait:error"}) {
				t.Fatalf("pending %v", kinds)
			}
			h2 := newHarness(t, slowGraph, reopen())
			h2.fk.writes("wait", w("log", "wait"))
			cp = mustDone(t)(h2.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
			if want := []any{"first", "quick", "wait", "last"}; !reflect.DeepEqual(cp.Values["log"], want) {
				t.Fatalf("log %v", cp.Values["log"])
			}
			if n := h2.rec.started(); n["quick"] != 0 || n["wait"] != 1 {
				t.Fatalf("resume ran %v", n)
			}
		})
	}
}

// A context cancelled before the run starts commits the input and stops
// before the first step.
func TestCancelBeforeFirstStep(t *testing.T) {
	h := newHarness(t, slowGraph, nil)
	ctx, cancel := context.WithCancel(bg)
	cancel()
	res, err := h.Run(ctx, runtime.RunOptions{Thread: "t"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v", err)
	}
	if res.Checkpoint.Step != 0 || len(h.rec.started()) != 0 {
		t.Fatalf("stopped at step %d after running %v", res.Checkpoint.Step, h.rec.started())
	}
	mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
}

const retryGraph = `
version: 1
name: retry
state:
  log: {type: list, items: string, reducer: append}
nodes:
  flaky:
    kind: noop
    retry: {max_attempts: 3, initial_backoff: 1ms, max_backoff: 2ms}
edges:
  - {from: START, to: flaky}
  - {from: flaky, to: END}
`

// flaky fails its first failures calls, then writes its attempt number.
func flaky(h *harness, failures int) {
	n := 0
	h.fk.on("flaky", func(context.Context, *runtime.NodeCall) (*runtime.NodeResult, error) {
		n++
		if n <= failures {
			return nil, fmt.Errorf("flake %d", n)
		}
		return &runtime.NodeResult{Writes: []runtime.Write{w("log", fmt.Sprint("ok on ", n))}}, nil
	})
}

// retry.max_attempts bounds the attempts of a node within one step; each
// retry is reported as a message event; the last error fails the step.
func TestNodeRetry(t *testing.T) {
	tests := []struct {
		failures int
		calls    int
		ok       bool
	}{
		{failures: 0, calls: 1, ok: true},
		{failures: 2, calls: 3, ok: true},
		{failures: 3, calls: 3, ok: false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.failures, " failures"), func(t *testing.T) {
			h := newHarness(t, retryGraph, nil)
			flaky(h, tt.failures)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
			if got := h.fk.count("flaky"); got != tt.calls {
				t.Fatalf("%d calls, want %d", got, tt.calls)
			}
			retries := h.rec.ofKind(runtime.EvMessage)
			if len(retries) != tt.calls-1 {
				t.Fatalf("%d retry messages, want %d", len(retries), tt.calls-1)
			}
			if len(retries) > 0 && !strings.Contains(retries[0].Message, "attempt 1 of 3 failed: flake 1; retrying") {
				t.Fatalf("retry message %q", retries[0].Message)
			}
			if tt.ok {
				cp := mustDone(t)(res, err)
				if want := []any{fmt.Sprint("ok on ", tt.calls)}; !reflect.DeepEqual(cp.Values["log"], want) {
					t.Fatalf("log %v", cp.Values["log"])
				}
				return
			}
			ne := wantErrAs[*runtime.NodeError](t, err)
			if ne.Node != "flaky" || !strings.Contains(err.Error(), "flake 3") {
				t.Fatalf("error %v", err)
			}
			mustStatus(t, res, runtime.StatusFailed)
			// A resume starts a new round of attempts.
			mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
			if got := h.fk.count("flaky"); got != 4 {
				t.Fatalf("%d calls after resume", got)
			}
		})
	}
}

// A node timeout bounds each attempt; the error names the node and the
// timeout, and the run continues to other retries or fails the step.
func TestNodeTimeout(t *testing.T) {
	const src = `
version: 1
name: nodetimeout
state:
  log: {type: list, items: string, reducer: append}
nodes:
  slow:
    kind: noop
    timeout: 20ms
    retry: {max_attempts: 2, initial_backoff: 1ms}
edges:
  - {from: START, to: slow}
  - {from: slow, to: END}
`
	t.Run("every attempt times out", func(t *testing.T) {
		h := newHarness(t, src, nil)
		h.fk.on("slow", func(ctx context.Context, _ *runtime.NodeCall) (*runtime.NodeResult, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
		res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
		if err == nil || !strings.Contains(err.Error(), `node "slow" timed out after 20ms`) {
			t.Fatalf("error %v", err)
		}
		wantErrAs[*runtime.NodeError](t, err)
		mustStatus(t, res, runtime.StatusFailed)
		if h.fk.count("slow") != 2 {
			t.Fatalf("%d attempts", h.fk.count("slow"))
		}
	})
	t.Run("a retry within the timeout succeeds", func(t *testing.T) {
		h := newHarness(t, src, nil)
		h.fk.on("slow", func(ctx context.Context, _ *runtime.NodeCall) (*runtime.NodeResult, error) {
			if h.fk.count("slow") == 1 {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return &runtime.NodeResult{Writes: []runtime.Write{w("log", "second")}}, nil
		})
		cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
		if !reflect.DeepEqual(cp.Values["log"], []any{"second"}) {
			t.Fatalf("log %v", cp.Values["log"])
		}
	})
}

// A node kind that panics fails its step like an error.
func TestNodePanicFailsStep(t *testing.T) {
	h := newHarness(t, retryGraph, nil)
	h.fk.on("flaky", func(context.Context, *runtime.NodeCall) (*runtime.NodeResult, error) { panic("boom") })
	res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
	if err == nil || !strings.Contains(err.Error(), "panicked: boom") {
		t.Fatalf("error %v", err)
	}
	mustStatus(t, res, runtime.StatusFailed)
}

// The step limit counts supersteps: a human update (Resume with Set) in
// the middle of a turn does not use up a step of the limit.
func TestStepLimitIgnoresUpdates(t *testing.T) {
	h := newHarness(t, abcGraph("interrupts: {after: [a]}"), nil)
	res, err := h.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{StepLimit: 3}})
	wantPaused(t, res, err, runtime.Interrupt{Node: "a", When: runtime.InterruptAfter})
	res, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("x", 7)}})
	cp := mustDone(t)(res, err)
	if want := []any{"a", "b7", "c"}; !reflect.DeepEqual(cp.Values["log"], want) {
		t.Fatalf("log %v, want %v", cp.Values["log"], want)
	}
}

// A budget reached by the step that ends the run does not fail it.
func TestBudgetReachedAtEnd(t *testing.T) {
	h := newHarness(t, usageGraph, nil)
	spender(h)
	cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{LLMCalls: 5}}))
	if cp.Metadata.Totals.LLMCalls != 5 {
		t.Fatalf("totals %+v", cp.Metadata.Totals)
	}
}
