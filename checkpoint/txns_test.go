package checkpoint_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// unlocked hides the saver's Locker, so a run takes no lease and its
// write transactions are its commits and marks only.
type unlocked struct{ runtime.Saver }

const fanout3 = `version: 1
name: fanout
state:
  results: {type: list, items: string, reducer: append}
  total: {type: int}
nodes:
  a: {kind: set, set: {results: '"a"'}}
  b: {kind: set, set: {results: '"b"'}}
  c: {kind: set, set: {results: '"c"'}}
  join: {kind: set, set: {total: len(state.results)}}
edges:
  - {from: START, to: [a, b, c]}
  - {from: [a, b, c], to: join}
  - {from: join, to: END}
`

// A run that ends right after a commit writes the thread's done status
// in that commit's transaction: one write transaction per checkpoint, no
// status mark after the last, and the thread reads back done at the
// final checkpoint from another handle (another process's view).
func TestRunEndsInItsLastCommit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db")
	s := MustOpenPath(t, path, nil)
	r := &runtime.Runner{Graph: mustParse(t, fanout3), Saver: unlocked{s}, Version: "test"}
	before := checkpoint.WriteTxns(s)
	res, err := r.Run(ctx, runtime.RunOptions{Thread: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	txns := checkpoint.WriteTxns(s) - before
	cps, err := s.List(ctx, "t1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) != 3 || txns != int64(len(cps)) {
		t.Fatalf("%d write transactions for %d checkpoints, want 3 and 3", txns, len(cps))
	}
	if res.Status != runtime.StatusDone || res.Checkpoint.Values["total"] != 3 {
		t.Fatalf("result %s, total %v", res.Status, res.Checkpoint.Values["total"])
	}
	other := MustOpenPath(t, path, nil)
	th, err := other.Thread(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if th.Status != runtime.StatusDone || th.Error != "" || th.Head != res.Checkpoint.ID {
		t.Fatalf("thread %s %q at %s, want done at %s", th.Status, th.Error, th.Head, res.Checkpoint.ID)
	}
	cp, err := other.Get(ctx, "t1", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(cp.Pending) != 0 || len(cp.Next) != 0 {
		t.Fatalf("head has pending %v, next %v", cp.Pending, cp.Next)
	}

	// A second run of the done thread commits its input and ends again in
	// the same way.
	before = checkpoint.WriteTxns(s)
	if _, err := r.Run(ctx, runtime.RunOptions{Thread: "t1"}); err != nil {
		t.Fatal(err)
	}
	if txns := checkpoint.WriteTxns(s) - before; txns != 3 {
		t.Fatalf("second run: %d write transactions, want 3", txns)
	}
}
