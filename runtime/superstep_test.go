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
)

// Every node of a superstep reads the state as it was when the step began:
// a writes x from y while b writes y from x, and each sees the other's old
// value.
func TestSuperstepNodesShareSnapshot(t *testing.T) {
	const src = `
version: 1
name: snapshot
state:
  x: {type: int, default: 1}
  y: {type: int, default: 2}
nodes:
  a: {kind: set, set: {x: state.y + 100}}
  b: {kind: set, set: {y: state.x + 100}}
  c: {kind: set, set: {x: state.x + state.y}}
edges:
  - {from: START, to: [a, b]}
  - {from: [a, b], to: c}
  - {from: c, to: END}
`
	r := newRunner(t, src)
	cp := mustDone(t)(r.Run(bg, runtime.RunOptions{Thread: "t"}))
	// a saw y=2, b saw x=1; c (next step) sees both writes.
	wantValues(t, cp.Values, map[string]any{"x": 203, "y": 101})
}

const orderGraph = `
version: 1
name: order
state:
  s:   {type: string, reducer: add}
  rev: {type: string, reducer: {custom: update + current}}
  log: {type: list, items: string, reducer: append}
  n:   {type: int, reducer: {custom: current * 10 + update}}
nodes:
  # Declared out of name order; the fakes make a finish last.
  c: {kind: noop}
  a: {kind: noop}
  b: {kind: noop}
edges:
  - {from: START, to: [c, a, b]}
  - {from: [a, b, c], to: END}
`

// Writes of one superstep merge in node-name order, then in each node's own
// write order, whatever order the nodes finish in.
func TestMergeOrderIsNodeNameThenWriteOrder(t *testing.T) {
	h := newHarness(t, orderGraph, nil)
	for _, n := range []string{"a", "b", "c"} {
		n := n
		h.fk.on(n, func(ctx context.Context, _ *runtime.NodeCall) (*runtime.NodeResult, error) {
			if n == "a" {
				time.Sleep(2 * time.Millisecond) // finishes last
			}
			d := int(n[0]-'a') + 1
			return &runtime.NodeResult{Writes: []runtime.Write{
				w("s", n), w("rev", n), w("log", n+"1"), w("log", n+"2"), w("n", d),
			}}, nil
		})
	}
	want := map[string]any{
		"s":   "abc",
		"rev": "cba",
		"log": []any{"a1", "a2", "b1", "b2", "c1", "c2"},
		"n":   123,
	}
	for i := range 50 {
		cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: fmt.Sprint("t", i)}))
		for k, v := range want {
			if !reflect.DeepEqual(cp.Values[k], v) {
				t.Fatalf("run %d: state.%s = %#v, want %#v", i, k, cp.Values[k], v)
			}
		}
		if got := cp.Metadata.Writes; !reflect.DeepEqual(got["a"], []string{"s", "rev", "log", "n"}) {
			t.Fatalf("run %d: metadata writes %v", i, got)
		}
	}
}

// A node may write its own replace field more than once in a step; the
// last write wins.
func TestOneNodeRewritesReplaceField(t *testing.T) {
	const src = `
version: 1
name: rewrite
state:
  x: {type: string}
nodes:
  a: {kind: noop}
edges:
  - {from: START, to: a}
  - {from: a, to: END}
`
	h := newHarness(t, src, nil)
	h.fk.writes("a", w("x", "first"), w("x", "second"))
	cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
	wantValues(t, cp.Values, map[string]any{"x": "second"})
}

const conflictGraph = `
version: 1
name: conflict
state:
  answer: {type: string}
  log: {type: list, items: string, reducer: append}
nodes:
  prep: {kind: set, set: {log: '"prep"'}}
  b:    {kind: set, set: {answer: '"from b"', log: '"b"'}}
  a:    {kind: set, set: {answer: '"from a"', log: '"a"'}}
  after: {kind: set, set: {log: '"after:" + state.answer'}}
edges:
  - {from: START, to: prep}
  - {from: prep, to: [a, b]}
  - {from: a, to: after}
  - {from: after, to: END}
`

// Two nodes writing one replace field in a step is an error naming both;
// the step is not committed, the thread stays at its last good checkpoint,
// and it can be continued past the conflict.
func TestConflictLeavesLastGoodCheckpoint(t *testing.T) {
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, _ := sk.open(t)
			r := newHarness(t, conflictGraph, saver)
			res, err := r.Run(bg, runtime.RunOptions{Thread: "t"})
			ce := wantErrAs[*runtime.ConflictError](t, err)
			if ce.Field != "answer" || !reflect.DeepEqual(ce.Nodes, []string{"a", "b"}) || ce.Step != 2 {
				t.Fatalf("conflict %+v", ce)
			}
			for _, s := range []string{`"a"`, `"b"`, `"answer"`, "step 2"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %s", err, s)
				}
			}
			mustStatus(t, res, runtime.StatusFailed)
			th, cp := head(t, saver, "t")
			if th.Status != runtime.StatusFailed || cp.Step != 1 || !reflect.DeepEqual(cp.Next, []string{"a", "b"}) {
				t.Fatalf("thread %s at step %d next %v, want failed at step 1 next [a b]", th.Status, cp.Step, cp.Next)
			}
			wantValues(t, cp.Values, map[string]any{"answer": "", "log": []any{"prep"}})
			if n := len(history(t, saver, "t")); n != 2 {
				t.Fatalf("%d checkpoints, want 2 (input, prep)", n)
			}
			// A merge failure saves no pending writes: retrying as is runs
			// both nodes again and meets the same conflict.
			if len(cp.Pending) != 0 {
				t.Fatalf("pending writes after a merge failure: %+v", cp.Pending)
			}
			if _, err := r.Resume(bg, runtime.ResumeOptions{Thread: "t"}); !errors.As(err, &ce) {
				t.Fatalf("plain resume: %v, want the conflict again", err)
			}
			if n := r.rec.started(); n["a"] != 2 || n["b"] != 2 {
				t.Fatalf("nodes ran %v, want a and b twice", n)
			}
			// New input is refused while the run is unfinished.
			if _, err := r.Run(bg, runtime.RunOptions{Thread: "t"}); !errors.Is(err, runtime.ErrUnfinished) {
				t.Fatalf("run on failed thread: %v, want ErrUnfinished", err)
			}

			// Fix 1: write the answer as if a had run; next follows a's edges.
			res, err = r.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("answer", "human"), w("log", "fixed")}, AsNode: "a"})
			cp = mustDone(t)(res, err)
			wantValues(t, cp.Values, map[string]any{"answer": "human", "log": []any{"prep", "fixed", "after:human"}})

			// Fix 2: fork the failed checkpoint as b (which has no edges: END).
			list := history(t, saver, "t")
			res, err = r.Fork(bg, "t", list[1].ID, []runtime.Write{w("answer", "forked")}, "b", runtime.Config{})
			cp = mustDone(t)(res, err)
			wantValues(t, cp.Values, map[string]any{"answer": "forked", "log": []any{"prep"}})
			if cp.ParentID != list[1].ID || cp.Metadata.Source != runtime.SourceFork {
				t.Fatalf("fork parent %s source %s", cp.ParentID, cp.Metadata.Source)
			}
		})
	}
}

// A merge conflict is decided by the merge, not by which node finished
// first: the same conflict is reported on every run.
func TestConflictIsDeterministic(t *testing.T) {
	r := newRunner(t, conflictGraph)
	for i := range 20 {
		_, err := r.Run(bg, runtime.RunOptions{Thread: fmt.Sprint("t", i)})
		ce := wantErrAs[*runtime.ConflictError](t, err)
		if !reflect.DeepEqual(ce.Nodes, []string{"a", "b"}) {
			t.Fatalf("run %d: nodes %v", i, ce.Nodes)
		}
	}
}
