package runtime_test

import (
	"context"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// Update commits a checkpoint without running anything; as a node, that
// node's edges decide what runs next; at an old checkpoint it forks.
func TestUpdateCommitsWithoutRunning(t *testing.T) {
	const src = `
version: 1
name: up
state:
  count: {type: int, default: 0}
  target: {type: int, default: 2}
nodes:
  inc: {kind: set, set: {count: state.count + 1}}
edges:
  - {from: START, to: inc}
  - {from: inc, when: state.count < state.target, to: inc, else: END}
`
	ctx := context.Background()
	r := newRunner(t, src)
	res, err := r.Run(ctx, runtime.RunOptions{Thread: "t", Input: map[string]any{}})
	mustDone(t)(res, err)
	cp, err := r.Update(ctx, "t", "", []runtime.Write{w("target", 4)}, "inc")
	if err != nil {
		t.Fatal(err)
	}
	if cp.Metadata.Source != runtime.SourceUpdate || len(cp.Next) != 1 || cp.Next[0] != "inc" {
		t.Fatalf("update as inc: source %s, next %v", cp.Metadata.Source, cp.Next)
	}
	th, _ := r.Saver.Thread(ctx, "t")
	if th.Status != runtime.StatusInterrupted || th.Head != cp.ID {
		t.Fatalf("thread after update: status %s head %s", th.Status, th.Head)
	}
	if cp.Values["count"] != 2 {
		t.Fatalf("update ran a node: count %v", cp.Values["count"])
	}
	res, err = r.Resume(ctx, runtime.ResumeOptions{Thread: "t"})
	done := mustDone(t)(res, err)
	wantValues(t, done.Values, map[string]any{"count": 4, "target": 4})
	// A human update at an old checkpoint forks from it; nothing runs.
	list, _ := r.Saver.List(ctx, "t", 0)
	oldest := list[len(list)-1]
	fork, err := r.Update(ctx, "t", oldest.ID, []runtime.Write{w("target", 1)}, "")
	if err != nil {
		t.Fatal(err)
	}
	if fork.ParentID != oldest.ID || fork.Values["count"] != 0 {
		t.Fatalf("fork: parent %s (want %s), count %v", fork.ParentID, oldest.ID, fork.Values["count"])
	}
}

// Resume with Goto runs the named node next instead of the pending step:
// the interrupt node waiting for a value is skipped and needs none.
func TestResumeGoto(t *testing.T) {
	const src = `
version: 1
name: gt
state:
  review: {type: object}
  log: {type: list, items: string, reducer: append}
nodes:
  ask: {kind: interrupt, payload: '"ok?"', resume: review}
  publish: {kind: set, set: {log: '"publish"'}}
  revise: {kind: set, set: {log: '"revise"'}}
edges:
  - {from: START, to: ask}
  - {from: ask, when: state.review.approved == true, to: publish, else: revise}
  - {from: revise, to: END}
  - {from: publish, to: END}
`
	ctx := context.Background()
	r := newRunner(t, src)
	res, err := r.Run(ctx, runtime.RunOptions{Thread: "t", Input: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	mustStatus(t, res, runtime.StatusInterrupted)
	if _, err := r.Resume(ctx, runtime.ResumeOptions{Thread: "t", Goto: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), `no node "nope"`) {
		t.Fatalf("goto an unknown node: %v", err)
	}
	res, err = r.Resume(ctx, runtime.ResumeOptions{Thread: "t", Goto: []string{"revise"}})
	done := mustDone(t)(res, err)
	wantValues(t, done.Values, map[string]any{"review": map[string]any{}, "log": []any{"revise"}})
}

// Update of a thread that does not exist makes its first checkpoint from
// the graph's defaults; a run then continues from it.
func TestUpdateNewThread(t *testing.T) {
	const src = `
version: 1
name: up
state:
  count: {type: int, default: 0}
  target: {type: int, default: 2}
nodes:
  inc: {kind: set, set: {count: state.count + 1}}
edges:
  - {from: START, to: inc}
  - {from: inc, when: state.count < state.target, to: inc, else: END}
`
	for _, saver := range []string{"memory", "sqlite"} {
		t.Run(saver, func(t *testing.T) { testUpdateNewThread(t, src, saver) })
	}
}

func testUpdateNewThread(t *testing.T, src, saver string) {
	ctx := context.Background()
	r := newRunner(t, src)
	if saver == "sqlite" {
		r.Saver = openSQLite(t, t.TempDir())
	}
	cp, err := r.Update(ctx, "new", "", []runtime.Write{w("count", 5)}, "")
	if err != nil {
		t.Fatal(err)
	}
	if cp.ParentID != "" || len(cp.Next) != 0 {
		t.Fatalf("first checkpoint: parent %q, next %v", cp.ParentID, cp.Next)
	}
	// Read back through the saver: every field is stored, defaults too.
	got, err := r.Saver.Get(ctx, "new", "")
	if err != nil {
		t.Fatal(err)
	}
	wantValues(t, got.Values, map[string]any{"count": 5, "target": 2})
	res, err := r.Run(ctx, runtime.RunOptions{Thread: "new", Input: map[string]any{"target": 7}})
	done := mustDone(t)(res, err)
	wantValues(t, done.Values, map[string]any{"count": 7, "target": 7})
	// As a node: that node's edges decide what runs next.
	cp, err = r.Update(ctx, "other", "", nil, "inc")
	if err != nil {
		t.Fatal(err)
	}
	if len(cp.Next) != 1 || cp.Next[0] != "inc" {
		t.Fatalf("as inc: next %v", cp.Next)
	}
}
