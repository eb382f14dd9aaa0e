package runtime_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// Tests of rules where lgrun deliberately differs from LangGraph (see
// docs/semantics.md, "Deliberate differences from LangGraph").

// A join's arrivals belong to the turn: a new turn starts with none, so a
// source that finished in an earlier turn does not count towards the join.
func TestJoinArrivalsResetEachTurn(t *testing.T) {
	const src = `
version: 1
name: turns
state:
  first: {type: bool, default: true}
  log:   {type: list, items: string, reducer: append}
nodes:
  a: {kind: set, set: {log: '"a"'}}
  b: {kind: set, set: {log: '"b"'}}
  m: {kind: set, set: {log: '"m"'}}
edges:
  - {from: START, when: state.first, to: a, else: b}
  - {from: [a, b], to: m}
  - {from: m, to: END}
`
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			h := newHarness(t, src, saver)
			// Turn 1: only a runs; the join waits for b and the turn ends.
			cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
			if want := map[string][]string{"m": {"a"}}; !reflect.DeepEqual(cp.Waiting, want) {
				t.Fatalf("after turn 1 waiting %v, want %v", cp.Waiting, want)
			}
			// Turn 2: only b runs. a's arrival from turn 1 does not count:
			// m does not run.
			h = newHarness(t, src, reopen())
			cp = mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"first": false}}))
			if want := []any{"a", "b"}; !reflect.DeepEqual(cp.Values["log"], want) {
				t.Fatalf("log %v, want %v (m must not run)", cp.Values["log"], want)
			}
			if want := map[string][]string{"m": {"b"}}; !reflect.DeepEqual(cp.Waiting, want) {
				t.Fatalf("after turn 2 waiting %v, want %v", cp.Waiting, want)
			}
			if list := history(t, h.Saver, "t"); list[len(list)-2].Metadata.Source != runtime.SourceInput || list[len(list)-2].Waiting != nil {
				t.Fatalf("turn 2's input checkpoint waits for %v, want nothing", list[len(list)-2].Waiting)
			}
		})
	}
}

// A map node is a node like any other: its results (each item's writes, in
// item order) merge at its place in the step's node-name order, before or
// after the plain nodes of the same step.
func TestMapResultsMergeByNodeName(t *testing.T) {
	const src = `
version: 1
name: maps
state:
  items: {type: list, items: int, default: [1, 2]}
  item:  {type: int}
  log:   {type: list, items: string, reducer: append}
nodes:
  amap: {kind: map, over: state.items, node: ma, item_as: item, concurrency: 2}
  mid:  {kind: set, set: {log: '"mid"'}}
  zmap: {kind: map, over: state.items, node: mz, item_as: item, concurrency: 2}
  ma:   {kind: set, set: {log: '"a" + string(state.item)'}}
  mz:   {kind: set, set: {log: '"z" + string(state.item)'}}
edges:
  - {from: START, to: [amap, mid, zmap]}
  - {from: [amap, mid, zmap], to: END}
`
	h := newHarness(t, src, nil)
	cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
	if want := []any{"a1", "a2", "mid", "z1", "z2"}; !reflect.DeepEqual(cp.Values["log"], want) {
		t.Fatalf("log %v, want %v", cp.Values["log"], want)
	}
	if cp.Step != 1 {
		t.Fatalf("the maps and mid ran in %d steps, want 1", cp.Step)
	}
}

// A subgraph (or a map item's graph) starts from the parent's items of a
// shared append list and writes back only the items it added: the parent's
// items are not appended again.
func TestSubgraphAppendWrittenBackOnce(t *testing.T) {
	g := writeGraphs(t, map[string]string{
		"main.yaml": `
version: 1
name: parent
state:
  log:   {type: list, items: string, reducer: append}
  items: {type: list, items: int, default: [1, 2]}
nodes:
  p:   {kind: set, set: {log: '"p"'}}
  sub: {kind: subgraph, graph: child.yaml}
  fan: {kind: map, over: state.items, graph: child.yaml, item_as: i}
edges:
  - {from: START, to: p}
  - {from: p, to: sub}
  - {from: sub, to: fan}
  - {from: fan, to: END}
`,
		"child.yaml": `
version: 1
name: child
state:
  log: {type: list, items: string, reducer: append}
  i:   {type: int}
nodes:
  c: {kind: set, set: {log: '"c" + string(state.i) + " saw " + string(len(state.log))'}}
edges:
  - {from: START, to: c}
  - {from: c, to: END}
`,
	})
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, _ := sk.open(t)
			r := &runtime.Runner{Graph: g, Saver: saver}
			cp := mustDone(t)(r.Run(bg, runtime.RunOptions{Thread: "t"}))
			// Each child saw the parent's items, and added one.
			want := []any{"p", "c0 saw 1", "c1 saw 2", "c2 saw 2"}
			if !reflect.DeepEqual(cp.Values["log"], want) {
				t.Fatalf("log %v, want %v", cp.Values["log"], want)
			}
		})
	}
}

// Resuming a finished thread is refused with ErrNothingToResume and a hint
// to start a new turn; nothing is written and no node runs.
func TestResumeDoneThreadRefused(t *testing.T) {
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			h := newHarness(t, abcGraph(""), saver)
			mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
			n := len(history(t, saver, "t"))
			h = newHarness(t, abcGraph(""), reopen())
			res, err := h.Resume(bg, runtime.ResumeOptions{Thread: "t"})
			if !errors.Is(err, runtime.ErrNothingToResume) || res != nil {
				t.Fatalf("resume of a done thread: %v, %v", res, err)
			}
			const msg = "thread \"t\" is done: nothing to resume"
			if de := wantErrAs[*runtime.DoneError](t, err); de.Thread != "t" || err.Error() != msg {
				t.Fatalf("error %q, want %q", err, msg)
			}
			th, _ := head(t, h.Saver, "t")
			if len(history(t, h.Saver, "t")) != n || th.Status != runtime.StatusDone || len(h.rec.started()) != 0 {
				t.Fatalf("refused resume changed the thread: status %s, %d checkpoints (was %d), ran %v", th.Status, len(history(t, h.Saver, "t")), n, h.rec.started())
			}
			// A new turn is the way on.
			cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"x": 1}}))
			if got := strings.Join(anyStrings(cp.Values["log"]), " "); got != "a b0 c a b1 c" {
				t.Fatalf("log after a new turn %q", got)
			}
		})
	}
}

func anyStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// A replay writes no copy of the checkpoint it replays from: the new
// branch's first checkpoint is its first re-executed step [TestReplay].
// Only a replay whose first step does not commit (it pauses, fails or
// reaches a limit) commits a copy (source fork) to hold the stop, so a
// resume continues the new branch and the original head is left as it was.
func TestReplayStopBeforeFirstCommit(t *testing.T) {
	tests := []struct {
		name   string
		extra  string
		cfg    runtime.Config
		status runtime.Status
	}{
		{name: "pause", extra: "interrupts: {before: [b]}", status: runtime.StatusInterrupted},
		{name: "limit", cfg: runtime.Config{StepLimit: 1}, status: runtime.StatusBudget},
	}
	for _, sk := range saverKinds {
		for _, tt := range tests {
			t.Run(sk.name+"/"+tt.name, func(t *testing.T) {
				saver, reopen := sk.open(t)
				h := newHarness(t, abcGraph(tt.extra), saver)
				res, err := h.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{StepLimit: 10}})
				if res.Status == runtime.StatusInterrupted {
					res, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t"})
				}
				orig := mustDone(t)(res, err)
				list := history(t, saver, "t")
				from := list[1] // step 1, next b
				res, err = h.Replay(bg, "t", from.ID, tt.cfg)
				if res == nil || res.Status != tt.status {
					t.Fatalf("replay: %v, %v; want status %s", res, err, tt.status)
				}
				after := history(t, saver, "t")
				cp := after[len(after)-1]
				if len(after) != len(list)+1 || cp.ParentID != from.ID || cp.Metadata.Source != runtime.SourceFork ||
					!reflect.DeepEqual(cp.Values, from.Values) || !reflect.DeepEqual(cp.Next, from.Next) || res.Checkpoint.ID != cp.ID {
					t.Fatalf("replay stop held by %+v (result at %s), want one copy of %s", cp, res.Checkpoint.ID, from.ID)
				}
				th, hd := head(t, saver, "t")
				if th.Head != cp.ID || th.Status != tt.status || len(hd.Pending) == 0 && tt.status == runtime.StatusInterrupted {
					t.Fatalf("thread head %s status %s pending %v", th.Head, th.Status, hd.Pending)
				}
				if old, err := saver.Get(bg, "t", orig.ID); err != nil || len(old.Pending) != 0 {
					t.Fatalf("original head has pending writes %v (%v)", old.Pending, err)
				}
				// Resuming continues the new branch from the replayed step.
				h = newHarness(t, abcGraph(tt.extra), reopen())
				done := mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t", Config: runtime.Config{StepLimit: 10}}))
				if n := h.rec.started(); n["b"] != 1 || n["c"] != 1 || n["a"] != 0 || done.ParentID == orig.ID {
					t.Fatalf("resume ran %v", n)
				}
				if !reflect.DeepEqual(done.Values["log"], orig.Values["log"]) {
					t.Fatalf("new branch log %v, original %v", done.Values["log"], orig.Values["log"])
				}
			})
		}
	}
}
