package runtime_test

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// A Run on a finished thread starts a new turn on the same state: input
// merges through the reducers (append fields keep earlier items), steps
// keep counting, and the step limit counts from the turn's input.
func TestMultiTurn(t *testing.T) {
	const src = `
version: 1
name: chat
state:
  messages: {type: messages}
  turns: {type: int, reducer: add}
nodes:
  reply:
    kind: set
    set:
      messages: '{"role": "assistant", "content": "echo " + state.messages[len(state.messages)-1].content}'
      turns: 1
edges:
  - {from: START, to: reply}
  - {from: reply, to: END}
`
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			h := newHarness(t, src, saver)
			user := func(s string) map[string]any {
				return map[string]any{"messages": map[string]any{"role": "user", "content": s}}
			}
			cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t", Input: user("hi")}))
			if cp.Step != 1 || cp.TurnStep != 0 {
				t.Fatalf("turn 1 ended at step %d (turn step %d)", cp.Step, cp.TurnStep)
			}
			h = newHarness(t, src, reopen())
			cp = mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t", Input: user("again")}))
			want := []any{
				msg("0.__input__.0", "user", "hi"),
				msg("1.reply.0", "assistant", "echo hi"),
				msg("2.__input__.0", "user", "again"),
				msg("3.reply.0", "assistant", "echo again"),
			}
			wantValues(t, cp.Values, map[string]any{"messages": want, "turns": 2})
			if cp.Step != 3 || cp.TurnStep != 2 {
				t.Fatalf("turn 2 ended at step %d (turn step %d)", cp.Step, cp.TurnStep)
			}
			list := history(t, h.Saver, "t")
			if len(list) != 4 || list[2].Metadata.Source != runtime.SourceInput || list[2].ParentID != list[1].ID {
				t.Fatalf("history %d checkpoints; third is %s with parent %s", len(list), list[2].Metadata.Source, list[2].ParentID)
			}
		})
	}
}

// A Run on a thread whose last run did not finish is refused.
func TestRunOnUnfinishedThreadRefused(t *testing.T) {
	r := newRunner(t, countGraph(""))
	_, err := r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"target": 5}, Config: runtime.Config{StepLimit: 2}})
	wantErrAs[*runtime.StepLimitError](t, err)
	_, err = r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"target": 1}})
	if ue := wantErrAs[*runtime.UnfinishedError](t, err); !errors.Is(err, runtime.ErrUnfinished) || ue.Thread != "t" || !reflect.DeepEqual(ue.Next, []string{"inc"}) {
		t.Fatalf("error %v", err)
	}
	// Input naming an undeclared field is refused before anything is saved.
	_, err = r.Run(bg, runtime.RunOptions{Thread: "new", Input: map[string]any{"nope": 1}})
	if err == nil || !strings.Contains(err.Error(), `write to "nope": no such state field`) {
		t.Fatalf("error %v", err)
	}
	if _, err := r.Saver.Thread(bg, "new"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("thread saved: %v", err)
	}
}

func loadLoop(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../graphs/loop.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Fork writes an edited checkpoint branching from an older one, as if
// AsNode had written it (next comes from AsNode's edges on the edited
// state), and continues; the original branch stays intact.
func TestFork(t *testing.T) {
	src := loadLoop(t)
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, _ := sk.open(t)
			h := newHarness(t, src, saver)
			orig := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
			list := history(t, saver, "t")
			if len(list) != 5 {
				t.Fatalf("%d checkpoints", len(list))
			}
			step1 := list[1] // count=1, next increment

			// As increment, count=10: increment's edge now leads to finish.
			cp := mustDone(t)(h.Fork(bg, "t", step1.ID, []runtime.Write{w("count", 10)}, "increment", runtime.Config{}))
			wantValues(t, cp.Values, map[string]any{"count": 10, "log": []any{"count=1", "done at 10"}})
			after := history(t, saver, "t")
			if len(after) != 7 {
				t.Fatalf("%d checkpoints after fork, want 7", len(after))
			}
			fork := after[5]
			if fork.ParentID != step1.ID || fork.Step != 2 || fork.Metadata.Source != runtime.SourceFork ||
				!reflect.DeepEqual(fork.Next, []string{"finish"}) || !reflect.DeepEqual(fork.Metadata.Writes, map[string][]string{"increment": {"count"}}) {
				t.Fatalf("fork checkpoint %+v", fork)
			}
			// The original branch is intact.
			old, err := saver.Get(bg, "t", orig.ID)
			if err != nil || !reflect.DeepEqual(old.Values["log"], orig.Values["log"]) {
				t.Fatalf("original head %v: %v", old, err)
			}
			th, _ := head(t, saver, "t")
			if th.Head != cp.ID {
				t.Fatalf("thread head %s, want the fork's end %s", th.Head, cp.ID)
			}

			// Without AsNode the next nodes stay those of the checkpoint.
			cp = mustDone(t)(h.Fork(bg, "t", step1.ID, []runtime.Write{w("target", 2)}, "", runtime.Config{}))
			wantValues(t, cp.Values, map[string]any{"count": 2, "log": []any{"count=1", "count=2", "done at 2"}})

			// An unknown AsNode is refused.
			if _, err := h.Fork(bg, "t", step1.ID, nil, "nope", runtime.Config{}); err == nil || !strings.Contains(err.Error(), `no node "nope"`) {
				t.Fatalf("unknown as-node: %v", err)
			}
		})
	}
}

// Replay re-executes the nodes after a checkpoint as a new branch.
func TestReplay(t *testing.T) {
	src := loadLoop(t)
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, _ := sk.open(t)
			h := newHarness(t, src, saver)
			orig := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
			list := history(t, saver, "t")
			h.rec.reset()
			cp := mustDone(t)(h.Replay(bg, "t", list[1].ID, runtime.Config{}))
			if !reflect.DeepEqual(cp.Values, orig.Values) {
				t.Fatalf("replay ended with %v, original %v", cp.Values, orig.Values)
			}
			if n := h.rec.started(); n["increment"] != 2 || n["finish"] != 1 {
				t.Fatalf("replay ran %v", n)
			}
			all := history(t, saver, "t")
			if len(all) != 8 {
				t.Fatalf("%d checkpoints after replay, want 8", len(all))
			}
			// No copy of the replayed checkpoint: the branch begins with
			// the first re-executed step.
			if all[5].ParentID != list[1].ID || all[5].Step != 2 || all[5].Metadata.Source != runtime.SourceLoop {
				t.Fatalf("replay branch starts at %+v", all[5])
			}
			// A checkpoint with nothing to run cannot be replayed.
			if _, err := h.Replay(bg, "t", orig.ID, runtime.Config{}); !errors.Is(err, runtime.ErrNothingToResume) {
				t.Fatalf("replay of the end: %v", err)
			}
		})
	}
}

// A thread remembers its graph's hash: continuing it with a changed graph
// warns, or fails in strict mode.
func TestGraphChanged(t *testing.T) {
	src := loadLoop(t)
	changed := strings.Replace(src, "description: Counts", "description: Still counts", 1)
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			a := newHarness(t, src, saver)
			res, err := a.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{InterruptBefore: []string{"finish"}}})
			wantPaused(t, res, err, runtime.Interrupt{Node: "finish", When: runtime.InterruptBefore})

			strict := newHarness(t, changed, reopen())
			strict.Strict = true
			if _, err := strict.Resume(bg, runtime.ResumeOptions{Thread: "t"}); !errors.Is(err, runtime.ErrGraphChanged) {
				t.Fatalf("strict: %v", err)
			}
			b := newHarness(t, changed, reopen())
			mustDone(t)(b.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
			warns := b.rec.ofKind(runtime.EvWarning)
			if len(warns) != 1 || !strings.Contains(warns[0].Message, `graph "loop" changed since thread "t" was created`) {
				t.Fatalf("warnings %+v", warns)
			}
			// Fork and replay check the graph that made the checkpoint.
			first := history(t, b.Saver, "t")[0].ID // oldest: made by the original graph
			if _, err := strict.Fork(bg, "t", first, nil, "", runtime.Config{}); !errors.Is(err, runtime.ErrGraphChanged) {
				t.Fatalf("strict fork: %v", err)
			}
			if _, err := strict.Replay(bg, "t", first, runtime.Config{}); !errors.Is(err, runtime.ErrGraphChanged) {
				t.Fatalf("strict replay: %v", err)
			}
			// The resume above continued with the changed graph, so its
			// checkpoints record it: new turns do not warn again.
			b.rec.reset()
			// (The stored breakpoint before finish pauses each turn.)
			for range 2 {
				res, err := b.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"count": 0}})
				wantPaused(t, res, err, runtime.Interrupt{Node: "finish", When: runtime.InterruptBefore})
				mustDone(t)(b.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
			}
			if n := len(b.rec.ofKind(runtime.EvWarning)); n != 0 {
				t.Fatalf("%d warnings over two new turns, want none", n)
			}
		})
	}
}

// A missing next node is an error even without Strict.
func TestGraphChangedNextNodeGone(t *testing.T) {
	src := loadLoop(t)
	renamed := strings.ReplaceAll(src, "increment", "step")
	a := newHarness(t, src, nil)
	res, err := a.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{InterruptBefore: []string{"increment"}}})
	wantPaused(t, res, err, runtime.Interrupt{Node: "increment", When: runtime.InterruptBefore})
	b := newHarness(t, renamed, a.Saver)
	_, err = b.Resume(bg, runtime.ResumeOptions{Thread: "t"})
	if !errors.Is(err, runtime.ErrGraphChanged) || !strings.Contains(err.Error(), `next node "increment" no longer exists`) {
		t.Fatalf("error %v", err)
	}
	if n := len(b.rec.all()); n != 0 {
		t.Fatalf("events %v", b.rec.all())
	}
}

// Two processes resuming one thread at once: exactly one proceeds, the
// other is told the thread has moved on (ErrConflict), and the thread ends
// as a single run would leave it.
func TestConcurrentResumeOneWins(t *testing.T) {
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			src := strings.Replace(abcGraph("interrupts: {before: [b]}"), `b: {kind: set, set: {log: '"b" + string(state.x)'}}`, "b: {kind: noop}", 1)
			h := newHarness(t, src, saver)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
			wantPaused(t, res, err, runtime.Interrupt{Node: "b", When: runtime.InterruptBefore})
			start := make(chan struct{})
			errs := make(chan error, 2)
			var arrived sync.WaitGroup
			arrived.Add(2)
			for range 2 {
				// Without the saver's lease (a holder whose lease expired,
				// say), both processes run b before either commits its
				// step: the head's compare-and-swap lets one win.
				p := newHarness(t, src, noLease{reopen()})
				p.fk.on("b", func(context.Context, *runtime.NodeCall) (*runtime.NodeResult, error) {
					arrived.Done()
					arrived.Wait()
					return &runtime.NodeResult{Writes: []runtime.Write{w("log", "b")}}, nil
				})
				go func() {
					<-start
					_, err := p.Resume(bg, runtime.ResumeOptions{Thread: "t"})
					errs <- err
				}()
			}
			close(start)
			var ok, conflict int
			for range 2 {
				switch err := <-errs; {
				case err == nil:
					ok++
				case errors.Is(err, runtime.ErrConflict):
					conflict++
					if ce := wantErrAs[*runtime.CommitConflictError](t, err); ce.Thread != "t" {
						t.Errorf("conflict error %+v does not name the thread", ce)
					}
				default:
					t.Errorf("unexpected error %v", err)
				}
			}
			if ok != 1 || conflict != 1 {
				t.Fatalf("%d succeeded, %d conflicted", ok, conflict)
			}
			th, cp := head(t, saver, "t")
			if th.Status != runtime.StatusDone || !reflect.DeepEqual(cp.Values["log"], []any{"a", "b", "c"}) {
				t.Fatalf("thread %s log %v", th.Status, cp.Values["log"])
			}
		})
	}
}

// Resumed with a changed graph, a thread's state is fitted to the new
// declaration: new fields start at their defaults, removed fields are
// dropped, and values that no longer fit their field's type are reset.
func TestGraphChangedFitsState(t *testing.T) {
	const a = `
version: 1
name: fit
state:
  keep:  {type: int}
  gone:  {type: string}
  retyped: {type: string}
nodes:
  one: {kind: set, set: {keep: 1, gone: '"x"', retyped: '"text"'}}
  two: {kind: set, set: {keep: state.keep + 1}}
edges:
  - {from: START, to: one}
  - {from: one, to: two}
  - {from: two, to: END}
interrupts: {before: [two]}
`
	b := strings.NewReplacer("  gone:  {type: string}\n", "  added: {type: int, default: 42}\n", "retyped: {type: string}", "retyped: {type: int, default: 7}", `, gone: '"x"', retyped: '"text"'`, "").Replace(a)
	ha := newHarness(t, a, nil)
	res, err := ha.Run(bg, runtime.RunOptions{Thread: "t"})
	wantPaused(t, res, err, runtime.Interrupt{Node: "two", When: runtime.InterruptBefore})
	hb := newHarness(t, b, ha.Saver)
	cp := mustDone(t)(hb.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
	if want := map[string]any{"keep": 2, "added": 42, "retyped": 7}; !reflect.DeepEqual(cp.Values, want) {
		t.Fatalf("values %v, want %v", cp.Values, want)
	}
}

// noLease hides a saver's Locker, leaving only the compare-and-swap.
type noLease struct{ runtime.Saver }

// A second process finds the thread's lease held and fails at once,
// before running anything, while the first goes on.
func TestConcurrentResumeLeaseBusy(t *testing.T) {
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			src := strings.Replace(abcGraph("interrupts: {before: [b]}"), `b: {kind: set, set: {log: '"b" + string(state.x)'}}`, "b: {kind: noop}", 1)
			h := newHarness(t, src, saver)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
			wantPaused(t, res, err, runtime.Interrupt{Node: "b", When: runtime.InterruptBefore})

			first := newHarness(t, src, reopen())
			inB, release := make(chan struct{}), make(chan struct{})
			first.fk.on("b", func(context.Context, *runtime.NodeCall) (*runtime.NodeResult, error) {
				close(inB)
				<-release
				return &runtime.NodeResult{Writes: []runtime.Write{w("log", "b")}}, nil
			})
			done := make(chan error, 1)
			go func() {
				_, err := first.Resume(bg, runtime.ResumeOptions{Thread: "t"})
				done <- err
			}()
			<-inB
			second := newHarness(t, src, reopen())
			ran := false
			second.fk.on("b", func(context.Context, *runtime.NodeCall) (*runtime.NodeResult, error) {
				ran = true
				return &runtime.NodeResult{}, nil
			})
			_, err = second.Resume(bg, runtime.ResumeOptions{Thread: "t"})
			var be *runtime.BusyError
			if !errors.As(err, &be) || !errors.Is(err, runtime.ErrConflict) || ran {
				t.Fatalf("second resume: %v (ran b: %v), want a BusyError before running anything", err, ran)
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			th, cp := head(t, saver, "t")
			if th.Status != runtime.StatusDone || !reflect.DeepEqual(cp.Values["log"], []any{"a", "b", "c"}) {
				t.Fatalf("thread %s, log %v", th.Status, cp.Values["log"])
			}
		})
	}
}
