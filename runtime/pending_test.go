package runtime_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// pendingGraph runs count (a fake that counts its executions) and pick (a
// set node that fails at run time when idx is out of range) in one step.
const pendingGraph = `
version: 1
name: pending
state:
  items:  {type: list, items: int, default: [10, 20]}
  idx:    {type: int}
  picked: {type: int}
  log:    {type: list, items: string, reducer: append}
nodes:
  count: {kind: noop}
  pick:  {kind: set, set: {picked: 'state.items[state.idx]', log: '"pick"'}}
  done:  {kind: set, set: {log: '"done"'}}
edges:
  - {from: START, to: [count, pick]}
  - {from: [count, pick], to: done}
  - {from: done, to: END}
`

func newPendingHarness(t *testing.T, saver runtime.Saver) *harness {
	h := newHarness(t, pendingGraph, saver)
	h.fk.on("count", func(context.Context, *runtime.NodeCall) (*runtime.NodeResult, error) {
		return &runtime.NodeResult{Writes: []runtime.Write{w("log", "count")}}, nil
	})
	return h
}

// When one node of a step fails, the others' results are saved as pending
// writes against the last checkpoint; a resume reuses them instead of
// executing those nodes again, and runs only the failed node.
func TestPendingWritesNotReexecuted(t *testing.T) {
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			h := newPendingHarness(t, saver)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"idx": 5}})
			ne := wantErrAs[*runtime.NodeError](t, err)
			if ne.Node != "pick" || ne.Step != 1 || !strings.Contains(err.Error(), "set picked") {
				t.Fatalf("error %v", err)
			}
			mustStatus(t, res, runtime.StatusFailed)
			_, cp := head(t, saver, "t")
			if cp.Step != 0 || len(cp.Pending) != 2 || cp.Pending[0].Node != "count" || cp.Pending[0].Kind != runtime.PendingWrites ||
				cp.Pending[1].Node != "pick" || cp.Pending[1].Kind != runtime.PendingError {
				t.Fatalf("head at step %d pending %+v", cp.Step, cp.Pending)
			}
			if !reflect.DeepEqual(cp.Pending[0].Result.Writes, []runtime.Write{w("log", "count")}) {
				t.Fatalf("pending result %+v", cp.Pending[0].Result)
			}

			// Another process resumes as is: pick fails again, count is
			// still not executed again and its writes stay pending.
			h = newPendingHarness(t, reopen())
			if _, err := h.Resume(bg, runtime.ResumeOptions{Thread: "t"}); err == nil {
				t.Fatal("resume without a fix succeeded")
			}
			_, cp = head(t, h.Saver, "t")
			if len(cp.Pending) != 2 || cp.Pending[0].Node != "count" {
				t.Fatalf("pending after second failure %+v", cp.Pending)
			}

			// Fixed with Resume{Set}: the update checkpoint carries the
			// pending writes over.
			cp = mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("idx", 1)}}))
			wantValues(t, cp.Values, map[string]any{"picked": 20, "log": []any{"count", "pick", "done"}})
			if n := h.fk.count("count"); n != 0 {
				t.Fatalf("count executed %d times on resume", n)
			}
			if n := h.rec.started(); n["pick"] != 2 || n["done"] != 1 {
				t.Fatalf("resumes ran %v", n)
			}
			// The step that used the pending writes records count as a writer.
			list := history(t, h.Saver, "t")
			step := list[len(list)-2]
			if !reflect.DeepEqual(step.Metadata.Writes["count"], []string{"log"}) {
				t.Fatalf("metadata writes %v", step.Metadata.Writes)
			}
		})
	}
}

// A fork or replay is a new branch: it does not reuse the pending writes
// of the checkpoint it starts from.
func TestPendingWritesNotCarriedToBranches(t *testing.T) {
	h := newPendingHarness(t, nil)
	res, _ := h.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"idx": 5}})
	failedAt := res.Checkpoint.ID

	mustDone(t)(h.Fork(bg, "t", failedAt, []runtime.Write{w("idx", 0)}, "", runtime.Config{}))
	if n := h.fk.count("count"); n != 2 {
		t.Fatalf("fork: count executed %d times in all, want 2", n)
	}
	if _, err := h.Replay(bg, "t", failedAt, runtime.Config{}); err == nil || !strings.Contains(err.Error(), "set picked") {
		t.Fatalf("replay of the failed step: %v", err)
	}
	if n := h.fk.count("count"); n != 3 {
		t.Fatalf("replay: count executed %d times in all, want 3", n)
	}
}

// A node failure at run time points at the node's line in the graph file.
func TestRuntimeExpressionErrorPointsAtNode(t *testing.T) {
	h := newPendingHarness(t, nil)
	_, err := h.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"idx": -7}})
	ne := wantErrAs[*runtime.NodeError](t, err)
	// The error points at the node's line in the graph file.
	if ne.Pos.File != "test.yaml" || ne.Pos.Line != 11 || !strings.HasPrefix(err.Error(), "test.yaml:11:") {
		t.Fatalf("position %v in %q", ne.Pos, err)
	}
}
