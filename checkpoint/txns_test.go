package checkpoint_test

import (
	"context"
	"errors"
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

// A run of a new thread on a saver with leases takes the lease in its
// input commit, which rides with its first step's (set nodes only): 2
// write transactions for its 3 checkpoints, the lease row there from the
// input checkpoint on (the run_start event comes once it is committed). Two handles on one file stand
// for two processes: while the run holds the lease, a run of the thread
// through the other handle is busy; so is a run of a new thread whose
// lease the other handle holds (taken with Lock, nothing committed yet),
// and that run commits nothing. Released, the lease is free again.
func TestRunTakesItsLeaseWithItsInputCommit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db")
	a := MustOpenPath(t, path, nil)
	b := MustOpenPath(t, path, nil)
	g := mustParse(t, fanout3)
	rb := &runtime.Runner{Graph: g, Saver: b, Version: "test"}
	var before, atStart, atDone int64 = checkpoint.WriteTxns(a), -1, -1
	var leaseRows int
	var busyErr error
	ra := &runtime.Runner{Graph: g, Saver: a, Version: "test", Events: func(e runtime.Event) {
		switch e.Kind {
		case runtime.EvRunStart:
			atStart = checkpoint.WriteTxns(a) - before
			if err := b.DB().QueryRow(`SELECT count(*) FROM leases WHERE thread = 't1'`).Scan(&leaseRows); err != nil {
				t.Error(err)
			}
			_, busyErr = rb.Run(ctx, runtime.RunOptions{Thread: "t1"})
		case runtime.EvDone:
			atDone = checkpoint.WriteTxns(a) - before
		}
	}}
	res, err := ra.Run(ctx, runtime.RunOptions{Thread: "t1"})
	if err != nil || res.Status != runtime.StatusDone {
		t.Fatalf("run: %v, %v", res, err)
	}
	if atStart != 1 || leaseRows != 1 {
		t.Fatalf("at the input checkpoint: %d write transactions and %d lease rows, want 1 and 1", atStart, leaseRows)
	}
	if atDone != 2 {
		t.Fatalf("%d write transactions for the run's 3 checkpoints, want 2", atDone)
	}
	var be *runtime.BusyError
	if !errors.As(busyErr, &be) || be.Thread != "t1" {
		t.Fatalf("run through the other handle while the lease is held: %v, want a BusyError", busyErr)
	}

	// A new thread whose lease is held: busy, and nothing committed.
	unlock, err := a.Lock(ctx, "t2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rb.Run(ctx, runtime.RunOptions{Thread: "t2"}); !errors.As(err, &be) || be.Thread != "t2" {
		t.Fatalf("run of a new thread whose lease is held: %v, want a BusyError", err)
	}
	if _, err := b.Thread(ctx, "t2"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("the busy run left thread t2: %v", err)
	}
	unlock()
	// Released leases are free: t1 runs a second turn, t2 its first.
	for _, th := range []string{"t1", "t2"} {
		if res, err := rb.Run(ctx, runtime.RunOptions{Thread: th}); err != nil || res.Status != runtime.StatusDone {
			t.Fatalf("run of %s after release: %v, %v", th, res, err)
		}
	}
}
