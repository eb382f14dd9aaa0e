package pgstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lgrun/lgrun/checkpoint/postgres"
	"github.com/lgrun/lgrun/checkpoint/postgres/pgtest"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/server"
	"github.com/lgrun/lgrun/server/pgstore"
)

// TestFenceStolenClaim: worker A claims a run, the sweeper requeues it
// and worker B claims it. Everything A then writes under its claim's
// fence fails with a FencedError and leaves the database as it was: the
// checkpoint commit, the pending writes and status (Mark), the thread's
// deletion, the run's status, the server thread, stream events, the
// run's deletion. B's writes under its fence apply.
func TestFenceStolenClaim(t *testing.T) {
	ctx := context.Background()
	_, u := pgtest.Schema(t)
	saver, err := postgres.Open(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer saver.Close()
	st, err := pgstore.New(ctx, saver.Pool())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0).UTC()
	run := &server.Run{ID: "r1", ThreadID: "t1", Status: "pending", Created: now, Updated: now}
	if err := st.PutRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	if err := st.PutThread(ctx, &server.Thread{ID: "t1", Status: "busy", Created: now, Updated: now}); err != nil {
		t.Fatal(err)
	}
	if r, _, err := st.Claim(ctx, "A", "tokA"); err != nil || r == nil {
		t.Fatalf("A's claim: %v, %v", r, err)
	}
	a := st.Fence(ctx, "r1", "tokA")
	commit := func(ctx context.Context, id, expect string) error {
		cp := &runtime.Checkpoint{Thread: "t1", ID: id, ParentID: expect, Values: map[string]any{"n": id},
			Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g", GraphHash: "h", Version: "v", Time: now}}
		return saver.Commit(ctx, &runtime.Commit{Checkpoint: cp, ExpectHead: expect,
			Thread: runtime.Thread{ID: "t1", Status: runtime.StatusRunning, Created: now, Updated: now}})
	}
	if err := commit(a, "c1", ""); err != nil {
		t.Fatalf("A's commit while it holds the claim: %v", err)
	}
	if _, err := saver.Pool().Exec(ctx, `UPDATE server_runs SET heartbeat = now() - interval '1 hour'`); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Sweep(ctx, time.Second); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if err := commit(a, "c2", "c1"); !errors.Is(err, runtime.ErrFenced) {
		t.Fatalf("A's commit after the sweep: %v, want ErrFenced", err)
	}
	if r, _, err := st.Claim(ctx, "B", "tokB"); err != nil || r == nil {
		t.Fatalf("B's claim: %v, %v", r, err)
	}
	b := st.Fence(ctx, "r1", "tokB")

	fenced := func(what string, err error) {
		t.Helper()
		var fe *runtime.FencedError
		if !errors.As(err, &fe) || !errors.Is(err, runtime.ErrConflict) || fe.Claim != "run r1" {
			t.Errorf("A's %s: %v, want a FencedError on run r1 (an ErrConflict)", what, err)
		}
	}
	fenced("commit", commit(a, "c2", "c1"))
	fenced("mark", saver.Mark(a, &runtime.Mark{Thread: runtime.Thread{ID: "t1", Head: "c1", Status: runtime.StatusDone, Updated: now},
		Writes: []runtime.PendingWrite{{Node: "x", Kind: runtime.PendingError, Error: "boom"}}}))
	fenced("saver thread deletion", saver.DeleteThread(a, "t1"))
	fenced("run status", st.PutRun(a, &server.Run{ID: "r1", ThreadID: "t1", Seq: run.Seq, Status: "success", Created: now, Updated: now}))
	fenced("other run", st.PutRun(a, &server.Run{ID: "r2", ThreadID: "t1", Seq: 99, Status: "success", Created: now, Updated: now}))
	fenced("thread", st.PutThread(a, &server.Thread{ID: "t1", Status: "idle", Created: now, Updated: now}))
	fenced("event", st.AppendEvent(a, "r1", server.StoredEvent{ID: 0, Event: "end", Data: []byte(`{}`)}))
	fenced("run deletion", st.DeleteRun(a, "r1"))
	fenced("thread deletion", st.DeleteThread(a, "t1"))

	// Nothing of A's landed.
	th, err := saver.Thread(ctx, "t1")
	if err != nil || th.Head != "c1" || th.Status != runtime.StatusRunning {
		t.Fatalf("saver thread after A's fenced writes: %+v, %v; want head c1, running", th, err)
	}
	if cp, err := saver.Get(ctx, "t1", ""); err != nil || len(cp.Pending) != 0 {
		t.Fatalf("head after A's fenced mark: %v pending, %v", cp, err)
	}
	var status, token string
	if err := saver.Pool().QueryRow(ctx, `SELECT status, token FROM server_runs WHERE id = 'r1'`).Scan(&status, &token); err != nil || status != "running" || token != "tokB" {
		t.Fatalf("run after A's fenced writes: %s, token %s, %v; want running under B's claim", status, token, err)
	}
	if _, err := st.Run(ctx, "r2"); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("run r2 written under A's lost claim: %v", err)
	}
	if sth, err := st.Thread(ctx, "t1"); err != nil || sth.Status != "busy" {
		t.Fatalf("server thread after A's fenced writes: %+v, %v", sth, err)
	}
	if evs, err := st.Events(ctx, "r1", -1); err != nil || len(evs) != 0 {
		t.Fatalf("events after A's fenced write: %v, %v", evs, err)
	}

	// B's writes apply.
	if err := commit(b, "c2", "c1"); err != nil {
		t.Fatalf("B's commit: %v", err)
	}
	if err := saver.Mark(b, &runtime.Mark{Thread: runtime.Thread{ID: "t1", Head: "c2", Status: runtime.StatusDone, Updated: now}}); err != nil {
		t.Fatalf("B's mark: %v", err)
	}
	if err := st.AppendEvent(b, "r1", server.StoredEvent{ID: 0, Event: "end", Data: []byte(`{"by":"B"}`)}); err != nil {
		t.Fatalf("B's event: %v", err)
	}
	if err := st.PutThread(b, &server.Thread{ID: "t1", Status: "idle", Created: now, Updated: now}); err != nil {
		t.Fatalf("B's thread: %v", err)
	}
	if err := st.PutRun(b, &server.Run{ID: "r1", ThreadID: "t1", Seq: run.Seq, Status: "success", Created: now, Updated: now}); err != nil {
		t.Fatalf("B's run status: %v", err)
	}
	if r, err := st.Run(ctx, "r1"); err != nil || r.Status != "success" {
		t.Fatalf("run after B's write: %+v, %v", r, err)
	}
	if th, err := saver.Thread(ctx, "t1"); err != nil || th.Head != "c2" || th.Status != runtime.StatusDone {
		t.Fatalf("saver thread after B's writes: %+v, %v", th, err)
	}
	if evs, err := st.Events(ctx, "r1", -1); err != nil || len(evs) != 1 || string(evs[0].Data) != `{"by":"B"}` {
		t.Fatalf("events after B's write: %v, %v", evs, err)
	}
	// A finished run still belongs to its last claimer: its later writes
	// (a temporary thread's clean-up) go through.
	if err := st.DeleteRun(b, "r1"); err != nil {
		t.Fatalf("B's run deletion: %v", err)
	}
}

// TestDepthAcrossStores counts pending runs through two stores on one
// schema, each with its own pool (as two processes): each sees the runs
// the other queued, and a claimed run is no longer queued.
func TestDepthAcrossStores(t *testing.T) {
	ctx := context.Background()
	_, u := pgtest.Schema(t)
	var stores [2]*pgstore.Store
	for i := range stores {
		pool, err := pgxpool.New(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		if stores[i], err = pgstore.New(ctx, pool); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Unix(1700000000, 0).UTC()
	for i, tid := range []string{"t1", "t2", "t3"} {
		if err := stores[i%2].PutRun(ctx, &server.Run{ID: "r" + tid, ThreadID: tid, Status: "pending", Created: now, Updated: now}); err != nil {
			t.Fatal(err)
		}
	}
	for i, st := range stores {
		if n, err := st.Depth(ctx); err != nil || n != 3 {
			t.Fatalf("store %d: depth %d, %v; want 3", i, n, err)
		}
	}
	if r, _, err := stores[1].Claim(ctx, "w", "tok"); err != nil || r == nil {
		t.Fatalf("claim: %v, %v", r, err)
	}
	if n, err := stores[0].Depth(ctx); err != nil || n != 2 {
		t.Fatalf("depth after a claim through the other store: %d, %v; want 2", n, err)
	}
}
