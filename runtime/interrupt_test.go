package runtime_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// abcGraph runs a → b → c, each logging its name.
func abcGraph(extra string) string {
	return `
version: 1
name: abc
state:
  x:   {type: int}
  log: {type: list, items: string, reducer: append}
nodes:
  a: {kind: set, set: {log: '"a"'}}
  b: {kind: set, set: {log: '"b" + string(state.x)'}}
  c: {kind: set, set: {log: '"c"'}}
edges:
  - {from: START, to: a}
  - {from: a, to: b}
  - {from: b, to: c}
  - {from: c, to: END}
` + extra
}

func wantPaused(t *testing.T, res *runtime.Result, err error, want ...runtime.Interrupt) {
	t.Helper()
	if err != nil {
		t.Fatalf("run failed: %v", err)
	}
	mustStatus(t, res, runtime.StatusInterrupted)
	if !reflect.DeepEqual(res.Interrupts, want) {
		t.Fatalf("interrupts %+v, want %+v", res.Interrupts, want)
	}
}

// Static breakpoints pause before or after the listed nodes, whether the
// graph lists them or the run's Config does. A breakpoint before a node
// pauses at the checkpoint whose next step would run it; after, at the
// checkpoint its step committed. Resume continues past it.
func TestStaticBreakpoints(t *testing.T) {
	tests := []struct {
		name     string
		extra    string
		cfg      runtime.Config
		want     runtime.Interrupt
		pausedAt int // step of the checkpoint the thread pauses at
		log      []any
	}{
		{name: "graph before", extra: "interrupts: {before: [b]}", want: runtime.Interrupt{Node: "b", When: runtime.InterruptBefore}, pausedAt: 1, log: []any{"a"}},
		{name: "graph after", extra: "interrupts: {after: [b]}", want: runtime.Interrupt{Node: "b", When: runtime.InterruptAfter}, pausedAt: 2, log: []any{"a", "b0"}},
		{name: "config before", cfg: runtime.Config{InterruptBefore: []string{"b"}}, want: runtime.Interrupt{Node: "b", When: runtime.InterruptBefore}, pausedAt: 1, log: []any{"a"}},
		{name: "config after", cfg: runtime.Config{InterruptAfter: []string{"b"}}, want: runtime.Interrupt{Node: "b", When: runtime.InterruptAfter}, pausedAt: 2, log: []any{"a", "b0"}},
		{name: "before the first node", extra: "interrupts: {before: [a]}", want: runtime.Interrupt{Node: "a", When: runtime.InterruptBefore}, pausedAt: 0, log: []any{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, abcGraph(tt.extra), nil)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t", Config: tt.cfg})
			wantPaused(t, res, err, tt.want)
			th, cp := head(t, h.Saver, "t")
			if th.Status != runtime.StatusInterrupted || cp.Step != tt.pausedAt || !reflect.DeepEqual(cp.Values["log"], tt.log) {
				t.Fatalf("thread %s at step %d log %v", th.Status, cp.Step, cp.Values["log"])
			}
			if evs := h.rec.ofKind(runtime.EvInterrupt); len(evs) != 1 || evs[0].Node != tt.want.Node {
				t.Fatalf("interrupt events %+v", evs)
			}
			cp = mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
			if want := []any{"a", "b0", "c"}; !reflect.DeepEqual(cp.Values["log"], want) {
				t.Fatalf("log %v", cp.Values["log"])
			}
		})
	}
}

// An after-breakpoint on a node whose step ends the run does not pause.
func TestAfterBreakpointAtEndDoesNotPause(t *testing.T) {
	h := newHarness(t, abcGraph("interrupts: {after: [c]}"), nil)
	mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
}

// Breakpoints given at run time are stored with the thread: every later
// resume, in any process, keeps pausing at them.
func TestConfigBreakpointsKeptAcrossResumes(t *testing.T) {
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			r := newHarness(t, loopGraph, saver)
			res, err := r.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{InterruptBefore: []string{"inc"}, StepLimit: 7}})
			wantPaused(t, res, err, runtime.Interrupt{Node: "inc", When: runtime.InterruptBefore})
			for i := 1; i <= 2; i++ {
				r = newHarness(t, loopGraph, reopen())
				res, err = r.Resume(bg, runtime.ResumeOptions{Thread: "t"})
				wantPaused(t, res, err, runtime.Interrupt{Node: "inc", When: runtime.InterruptBefore})
				if res.Checkpoint.Values["count"] != i {
					t.Fatalf("resume %d: count %v", i, res.Checkpoint.Values["count"])
				}
			}
			th, _ := head(t, r.Saver, "t")
			if !reflect.DeepEqual(th.Config, runtime.Config{InterruptBefore: []string{"inc"}, StepLimit: 7}) {
				t.Fatalf("stored config %+v", th.Config)
			}
			cp := mustDone(t)(r.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
			if cp.Values["count"] != 3 {
				t.Fatalf("count %v", cp.Values["count"])
			}
		})
	}
}

// askGraph writes a draft, asks a human about it and publishes.
var askGraph = mustRead("testdata/ask.yaml")

// An interrupt node pauses with its payload; Resume with a value writes the
// value to the node's resume field, and the run continues.
func TestInterruptNode(t *testing.T) {
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			h := newHarness(t, askGraph, saver)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
			wantPaused(t, res, err, runtime.Interrupt{Node: "ask", When: runtime.InterruptNode, Payload: map[string]any{"question": "ok?", "draft": "hello"}})
			_, cp := head(t, saver, "t")
			if cp.Step != 1 || !reflect.DeepEqual(cp.Next, []string{"ask"}) {
				t.Fatalf("paused at step %d next %v", cp.Step, cp.Next)
			}

			h = newHarness(t, askGraph, reopen())
			// New input is refused, saying how to resume.
			_, err = h.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"draft": "other"}})
			pe := wantErrAs[*runtime.PausedError](t, err)
			if pe.Thread != "t" || len(pe.Interrupts) != 1 || pe.Interrupts[0].Node != "ask" {
				t.Fatalf("paused error %+v", pe)
			}
			for _, s := range []string{`thread "t" is paused at ask`, "new input would drop the pending step"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			// A resume needs a value.
			if _, err := h.Resume(bg, runtime.ResumeOptions{Thread: "t"}); !errors.Is(err, runtime.ErrNeedValue) {
				t.Fatalf("resume without value: %v", err)
			}
			if len(history(t, h.Saver, "t")) != 2 {
				t.Fatal("refused calls committed checkpoints")
			}
			cp = mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t", Value: map[string]any{"approved": true}, HasValue: true}))
			wantValues(t, cp.Values, map[string]any{"review": map[string]any{"approved": true}, "log": []any{"write", "publish true"}})
			list := history(t, h.Saver, "t")
			if ask := list[2]; ask.Step != 2 || !reflect.DeepEqual(ask.Metadata.Writes, map[string][]string{"ask": {"review"}}) {
				t.Fatalf("ask's checkpoint: step %d writes %v", ask.Step, ask.Metadata.Writes)
			}
		})
	}
}

// A value given to a thread that waits at no interrupt node is an error,
// and so is resuming a finished thread.
func TestResumeValueNotNeeded(t *testing.T) {
	h := newHarness(t, abcGraph("interrupts: {before: [b], after: [a]}"), nil)
	res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
	wantPaused(t, res, err, runtime.Interrupt{Node: "a", When: runtime.InterruptAfter})
	_, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t", Value: 1, HasValue: true})
	if !errors.Is(err, runtime.ErrValueNotNeeded) || !strings.Contains(err.Error(), "not waiting at an interrupt node") {
		t.Fatalf("after breakpoint: %v", err)
	}
	res, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t"})
	wantPaused(t, res, err, runtime.Interrupt{Node: "b", When: runtime.InterruptBefore})
	_, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t", Value: 1, HasValue: true})
	if !errors.Is(err, runtime.ErrValueNotNeeded) || !strings.Contains(err.Error(), "not waiting at an interrupt node") {
		t.Fatalf("before breakpoint: %v", err)
	}
	mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
	_, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t"})
	if de := wantErrAs[*runtime.DoneError](t, err); !errors.Is(err, runtime.ErrNothingToResume) || de.Thread != "t" {
		t.Fatalf("resume of a done thread: %v", err)
	}
}

// Parallel interrupt nodes pause the step together; one resume value
// answers them all. A node of the same step that finished is not executed
// again.
func TestParallelInterruptNodes(t *testing.T) {
	const src = `
version: 1
name: two
state:
  ans1: {type: any}
  ans2: {type: any}
  log:  {type: list, items: string, reducer: append}
nodes:
  q1: {kind: interrupt, payload: '"first?"', resume: ans1}
  q2: {kind: interrupt, payload: '"second?"', resume: ans2}
  work: {kind: noop}
  after: {kind: set, set: {log: '"after " + string(state.ans1) + " " + string(state.ans2)'}}
edges:
  - {from: START, to: [q1, q2, work]}
  - {from: [q1, q2, work], to: after}
  - {from: after, to: END}
`
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			h := newHarness(t, src, saver)
			h.fk.writes("work", w("log", "work"))
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
			wantPaused(t, res, err,
				runtime.Interrupt{Node: "q1", When: runtime.InterruptNode, Payload: "first?"},
				runtime.Interrupt{Node: "q2", When: runtime.InterruptNode, Payload: "second?"})
			h2 := newHarness(t, src, reopen())
			h2.fk.writes("work", w("log", "work"))
			cp := mustDone(t)(h2.Resume(bg, runtime.ResumeOptions{Thread: "t", Value: "yes", HasValue: true}))
			wantValues(t, cp.Values, map[string]any{"ans1": "yes", "ans2": "yes", "log": []any{"work", "after yes yes"}})
			if h.fk.count("work")+h2.fk.count("work") != 1 {
				t.Fatalf("work ran %d + %d times", h.fk.count("work"), h2.fk.count("work"))
			}
		})
	}
}

// An interrupt node without a resume field continues without writing.
func TestInterruptNodeWithoutResumeField(t *testing.T) {
	const src = `
version: 1
name: pause
state:
  log: {type: list, items: string, reducer: append}
nodes:
  hold: {kind: interrupt}
  go: {kind: set, set: {log: '"go"'}}
edges:
  - {from: START, to: hold}
  - {from: hold, to: go}
  - {from: go, to: END}
`
	h := newHarness(t, src, nil)
	res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
	wantPaused(t, res, err, runtime.Interrupt{Node: "hold", When: runtime.InterruptNode})
	cp := mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t", Value: nil, HasValue: true}))
	if !reflect.DeepEqual(cp.Values["log"], []any{"go"}) {
		t.Fatalf("log %v", cp.Values["log"])
	}
}

// Editing the state at a before-breakpoint (Resume with Set) and going on
// runs the node the breakpoint stopped, on the edited state.
func TestSetAtBeforeBreakpointRunsNode(t *testing.T) {
	h := newHarness(t, abcGraph("interrupts: {before: [b]}"), nil)
	res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
	wantPaused(t, res, err, runtime.Interrupt{Node: "b", When: runtime.InterruptBefore})
	res, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("x", 7)}})
	cp := mustDone(t)(res, err)
	if want := []any{"a", "b7", "c"}; !reflect.DeepEqual(cp.Values["log"], want) {
		t.Fatalf("log %v, want %v", cp.Values["log"], want)
	}
}

// Updating the state as a node at a before-breakpoint (Resume with Set and
// AsNode) continues past the breakpoint exactly once: the node runs on the
// updated state, and the breakpoint pauses again when the run comes back to
// it. A breakpoint the update reaches for the first time still pauses, and
// the breakpoints of that pause are all honoured by the next resume.
func TestUpdateAsNodeAtBeforeBreakpoint(t *testing.T) {
	const src = `
version: 1
name: bp
state:
  x:   {type: int}
  n:   {type: int}
  log: {type: list, items: string, reducer: append}
nodes:
  a: {kind: set, set: {log: '"a"'}}
  b: {kind: set, set: {log: '"b" + string(state.x)', n: state.n + 1}}
  c: {kind: set, set: {log: '"c"'}}
  d: {kind: set, set: {log: '"d"'}}
  z: {kind: set, set: {log: '"z"'}}
edges:
  - {from: START, to: a}
  - {from: a, when: state.x > 100, to: z, else: b}
  - {from: z, to: [b, d]}
  - {from: b, to: c}
  - {from: d, to: END}
  - {from: c, when: state.n < 2 && state.x < 100, to: b, else: END}
interrupts: {before: [b, d]}
`
	before := func(n string) runtime.Interrupt { return runtime.Interrupt{Node: n, When: runtime.InterruptBefore} }
	for _, sk := range saverKinds {
		t.Run(sk.name+"/past the breakpoint once", func(t *testing.T) {
			saver, reopen := sk.open(t)
			h := newHarness(t, src, saver)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
			wantPaused(t, res, err, before("b"))
			h = newHarness(t, src, reopen())
			res, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("x", 7)}, AsNode: "a"})
			// b ran on the update; the loop brought the run back to b.
			wantPaused(t, res, err, before("b"))
			if want := []any{"a", "b7", "c"}; !reflect.DeepEqual(res.Checkpoint.Values["log"], want) {
				t.Fatalf("log %v, want %v", res.Checkpoint.Values["log"], want)
			}
			if n := h.rec.started()["b"]; n != 1 {
				t.Fatalf("b ran %d times in the resume, want 1", n)
			}
			cp := mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
			if want := []any{"a", "b7", "c", "b7", "c"}; !reflect.DeepEqual(cp.Values["log"], want) {
				t.Fatalf("log %v, want %v", cp.Values["log"], want)
			}
		})
		t.Run(sk.name+"/a new breakpoint pauses", func(t *testing.T) {
			saver, reopen := sk.open(t)
			h := newHarness(t, src, saver)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
			wantPaused(t, res, err, before("b"))
			// As z, the update schedules b (whose pause is answered) and d
			// (never paused at): the step pauses for d, listing both.
			h.rec.reset()
			res, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("x", 200)}, AsNode: "z"})
			wantPaused(t, res, err, before("b"), before("d"))
			if n := len(h.rec.started()); n != 0 {
				t.Fatalf("nodes ran before the pause: %v", h.rec.started())
			}
			h = newHarness(t, src, reopen())
			cp := mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
			if want := []any{"a", "b200", "d", "c"}; !reflect.DeepEqual(cp.Values["log"], want) {
				t.Fatalf("log %v, want %v", cp.Values["log"], want)
			}
		})
	}
}

// A resume refused for want of a value changes nothing: no update
// checkpoint is committed and the thread still reports interrupted.
func TestRefusedResumeChangesNothing(t *testing.T) {
	h := newHarness(t, askGraph, nil)
	res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
	wantPaused(t, res, err, runtime.Interrupt{Node: "ask", When: runtime.InterruptNode, Payload: map[string]any{"question": "ok?", "draft": "hello"}})
	before := len(history(t, h.Saver, "t"))
	_, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("log", "edited")}})
	if !errors.Is(err, runtime.ErrNeedValue) {
		t.Fatalf("resume with set and no value: %v", err)
	}
	th, cp := head(t, h.Saver, "t")
	if n := len(history(t, h.Saver, "t")); n != before || th.Status != runtime.StatusInterrupted {
		t.Errorf("refused resume left %d checkpoints (was %d), status %s (want interrupted), log %v", n, before, th.Status, cp.Values["log"])
	}
	// Answering then applies the edit once.
	cp = mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("log", "edited")}, Value: map[string]any{"approved": false}, HasValue: true}))
	if want := []any{"write", "edited", "publish false"}; !reflect.DeepEqual(cp.Values["log"], want) {
		t.Errorf("log %v, want %v", cp.Values["log"], want)
	}
}

// Breakpoints stored with a thread also apply to its later turns.
func TestConfigBreakpointsKeptAcrossTurns(t *testing.T) {
	h := newHarness(t, abcGraph(""), nil)
	res, err := h.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{InterruptAfter: []string{"b"}}})
	wantPaused(t, res, err, runtime.Interrupt{Node: "b", When: runtime.InterruptAfter})
	mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
	res, err = h.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"x": 2}})
	wantPaused(t, res, err, runtime.Interrupt{Node: "b", When: runtime.InterruptAfter})
	if want := []any{"a", "b0", "c", "a", "b2"}; !reflect.DeepEqual(res.Checkpoint.Values["log"], want) {
		t.Fatalf("log %v", res.Checkpoint.Values["log"])
	}
}

// A human can answer for an interrupt node by writing the state as that
// node (Resume with Set and AsNode): the run goes on along its edges.
func TestAnswerAsInterruptNode(t *testing.T) {
	h := newHarness(t, askGraph, nil)
	res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
	if err != nil || res.Status != runtime.StatusInterrupted {
		t.Fatalf("run: %v %v", res, err)
	}
	cp := mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("review", map[string]any{"approved": "as node"})}, AsNode: "ask"}))
	if want := []any{"write", "publish as node"}; !reflect.DeepEqual(cp.Values["log"], want) {
		t.Fatalf("log %v", cp.Values["log"])
	}
	if n := h.rec.started()["ask"]; n != 1 {
		t.Fatalf("ask ran %d times, want 1 (the pause)", n)
	}
}

// Resume with Set on a finished thread records the update and leaves the
// thread done; without Set there is nothing to resume.
func TestResumeSetOnDoneThread(t *testing.T) {
	h := newHarness(t, abcGraph(""), nil)
	mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
	cp := mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("x", 9)}}))
	if cp.Values["x"] != 9 || cp.Metadata.Source != runtime.SourceUpdate || h.rec.started()["a"] != 1 {
		t.Fatalf("values %v source %s", cp.Values, cp.Metadata.Source)
	}
	if !reflect.DeepEqual(cp.Metadata.Writes, map[string][]string{"__human__": {"x"}}) {
		t.Fatalf("update written by %v, want __human__", cp.Metadata.Writes)
	}
}

// A before-breakpoint on one node of a step pauses the whole step: none of
// its nodes run until the resume.
func TestBeforeBreakpointPausesWholeStep(t *testing.T) {
	const src = `
version: 1
name: pair
state:
  log: {type: list, items: string, reducer: append}
nodes:
  a: {kind: set, set: {log: '"a"'}}
  b: {kind: set, set: {log: '"b"'}}
edges:
  - {from: START, to: [a, b]}
  - {from: [a, b], to: END}
interrupts: {before: [b]}
`
	h := newHarness(t, src, nil)
	res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
	wantPaused(t, res, err, runtime.Interrupt{Node: "b", When: runtime.InterruptBefore})
	if n := len(h.rec.started()); n != 0 {
		t.Fatalf("nodes ran before the pause: %v", h.rec.started())
	}
	cp := mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
	if want := []any{"a", "b"}; !reflect.DeepEqual(cp.Values["log"], want) || cp.Step != 1 {
		t.Fatalf("log %v at step %d", cp.Values["log"], cp.Step)
	}
}
