package checkpoint_test

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// threadRowHead reads the head column and follow flag of a threads row as
// stored (layout version 5, see checkpoint/follow.go).
func threadRowHead(t *testing.T, s *checkpoint.SQLite, thread string) (string, bool) {
	t.Helper()
	var head string
	var follow sql.NullInt64
	if err := s.DB().QueryRow(`SELECT head, follow FROM threads WHERE id = ?`, thread).Scan(&head, &follow); err != nil {
		t.Fatal(err)
	}
	return head, follow.Valid && follow.Int64 == 1
}

// commitWith commits one checkpoint with id on parent, expecting head
// expect, with the thread in status st; it returns the error.
func commitWith(s runtime.Saver, thread, id, parent, expect string, step int, st runtime.Status, writes ...runtime.PendingWrite) error {
	now := time.Now()
	d := runtime.Delta{"n": {Kind: runtime.OpSet, Value: step}}
	src := runtime.SourceLoop
	if parent == "" {
		src = runtime.SourceInput
	}
	cp := &runtime.Checkpoint{Thread: thread, ID: id, ParentID: parent, Step: step, Values: map[string]any{"n": step}, Delta: d,
		Next: []string{"talk"}, Metadata: runtime.Metadata{Source: src, Graph: "chat", GraphHash: "h", Version: "test", Time: now}}
	return s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: expect, Writes: writes,
		Thread: runtime.Thread{ID: thread, Status: st, Graph: "chat", GraphHash: "h", Updated: now.Add(time.Microsecond)}})
}

// checkHead holds every read of thread's head in s to want: Thread,
// Threads, Get, History, and the pending writes want has.
func checkHead(t *testing.T, s *checkpoint.SQLite, thread, want string, pending int) {
	t.Helper()
	th, err := s.Thread(bg, thread)
	if err != nil || th.Head != want {
		t.Fatalf("Thread: head %v (%v), want %s", th, err, want)
	}
	ths, err := s.Threads(bg)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, x := range ths {
		if x.ID == thread {
			found = true
			if x.Head != want || !x.Updated.Equal(th.Updated) {
				t.Fatalf("Threads: %v, want head %s updated %v", x, want, th.Updated)
			}
		}
	}
	if !found {
		t.Fatalf("Threads left out %s", thread)
	}
	cp, err := s.Get(bg, thread, "")
	if err != nil || cp.ID != want || len(cp.Pending) != pending {
		t.Fatalf("Get of the head: %v (%v), want %s with %d pending writes", cp, err, want, pending)
	}
	hs, err := s.History(bg, thread, runtime.HistoryOptions{})
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	for _, h := range hs {
		if h.ID == want && len(h.Pending) != pending {
			t.Fatalf("History: head %s has %d pending writes, want %d", want, len(h.Pending), pending)
		}
	}
}

// TestFollowHead runs a thread through the life of a run: its row is
// written at the run's first commits (a new thread's row is pinned; the
// second commit makes it follow its greatest checkpoint) and at its last
// (pinned), not at the steps between, and every read sees the head the
// commits left.
func TestFollowHead(t *testing.T) {
	s := MustOpen(t, nil)
	c := newChain(t, s, "t")
	c.step(1)
	if head, follow := threadRowHead(t, s, "t"); head != c.head || follow {
		t.Fatalf("new thread: row head %s (follow %v), want %s, pinned", head, follow, c.head)
	}
	c.step(1)
	first := c.head
	for i := 0; i < 5; i++ {
		c.step(1)
		checkHead(t, s, "t", c.head, 0)
	}
	if head, follow := threadRowHead(t, s, "t"); head != first || !follow {
		t.Fatalf("row head %s (follow %v), want %s, following", head, follow, first)
	}
	// A step with pending writes: their count is in the checkpoint's row.
	var ids runtime.IDClock
	id := ids.Next(time.Now(), c.head)
	w := runtime.PendingWrite{Node: "talk", Kind: runtime.PendingWrites, Result: &runtime.NodeResult{Writes: []runtime.Write{{Field: "n", Value: 1}}}}
	if err := commitWith(s, "t", id, c.head, c.head, c.at+1, runtime.StatusRunning, w); err != nil {
		t.Fatal(err)
	}
	checkHead(t, s, "t", id, 1)
	if head, _ := threadRowHead(t, s, "t"); head != first {
		t.Fatalf("a step rewrote the row: head %s", head)
	}
	// The last commit of the run (done) pins the head.
	done := ids.Next(time.Now(), id)
	if err := commitWith(s, "t", done, id, id, c.at+2, runtime.StatusDone); err != nil {
		t.Fatal(err)
	}
	if head, follow := threadRowHead(t, s, "t"); head != done || follow {
		t.Fatalf("after the run: row head %s (follow %v), want %s, pinned", head, follow, done)
	}
	checkHead(t, s, "t", done, 0)
	if th, _ := s.Thread(bg, "t"); th.Status != runtime.StatusDone {
		t.Fatalf("status %s, want done", th.Status)
	}
	// The next run follows again from its first commit.
	next := ids.Next(time.Now(), done)
	if err := commitWith(s, "t", next, done, done, c.at+3, runtime.StatusRunning); err != nil {
		t.Fatal(err)
	}
	if head, follow := threadRowHead(t, s, "t"); head != next || !follow {
		t.Fatalf("a new run: row head %s (follow %v), want %s, following", head, follow, next)
	}
	checkHead(t, s, "t", next, 0)
}

// TestFollowConflict commits with a wrong expected head on a thread whose
// commits take the path without the thread's row: ErrConflict naming the
// head, nothing written, and the right head still commits.
func TestFollowConflict(t *testing.T) {
	s := MustOpen(t, nil)
	c := newChain(t, s, "t")
	c.step(4)
	list := mustList(t, s, "t")
	var ids runtime.IDClock
	for _, expect := range []string{list[1].ID, "", "nonexistent"} {
		err := commitWith(s, "t", ids.Next(time.Now(), c.head), c.head, expect, c.at+1, runtime.StatusRunning)
		if !errors.Is(err, runtime.ErrConflict) || !strings.Contains(err.Error(), "head is "+c.head) {
			t.Fatalf("commit expecting %q: %v, want ErrConflict naming head %s", expect, err, c.head)
		}
	}
	if n := len(mustList(t, s, "t")); n != 4 {
		t.Fatalf("%d checkpoints after refused commits, want 4", n)
	}
	checkHead(t, s, "t", c.head, 0)
	c.step(2)
	checkHead(t, s, "t", c.head, 0)
	if head, follow := threadRowHead(t, s, "t"); head != list[2].ID || !follow {
		t.Fatalf("row head %s (follow %v), want the second checkpoint %s, following", head, follow, list[2].ID)
	}
}

// TestFollowForkPins commits a fork whose id is older than the thread's
// greatest checkpoint: the head is pinned to it, and a later commit whose
// id grows past every id follows again.
func TestFollowForkPins(t *testing.T) {
	s := MustOpen(t, nil)
	c := newChain(t, s, "t")
	c.step(3)
	list := mustList(t, s, "t") // newest first
	// An id between the first two checkpoints' ids.
	fork := list[2].ID + "0"
	if fork >= list[1].ID {
		t.Fatalf("fork id %s not below %s", fork, list[1].ID)
	}
	if err := commitWith(s, "t", fork, list[2].ID, c.head, 1, runtime.StatusRunning); err != nil {
		t.Fatal(err)
	}
	if head, follow := threadRowHead(t, s, "t"); head != fork || follow {
		t.Fatalf("row head %s (follow %v), want %s, pinned", head, follow, fork)
	}
	checkHead(t, s, "t", fork, 0)
	// The commit before the fork is not the head any more.
	if err := commitWith(s, "t", list[0].ID+"1", c.head, c.head, 4, runtime.StatusRunning); !errors.Is(err, runtime.ErrConflict) {
		t.Fatalf("commit on the old head: %v, want ErrConflict", err)
	}
	next := list[0].ID + "2" // past every id
	if err := commitWith(s, "t", next, fork, fork, 2, runtime.StatusRunning); err != nil {
		t.Fatal(err)
	}
	if head, follow := threadRowHead(t, s, "t"); head != next || !follow {
		t.Fatalf("row head %s (follow %v), want %s, following", head, follow, next)
	}
	after := next + "3"
	if err := commitWith(s, "t", after, next, next, 3, runtime.StatusRunning); err != nil {
		t.Fatal(err)
	}
	checkHead(t, s, "t", after, 0)
	if head, _ := threadRowHead(t, s, "t"); head != next {
		t.Fatalf("row head %s, want %s (the step after it does not write the row)", head, next)
	}
}

// TestFollowTwoHandles interleaves the commits of two handles on one file
// to one thread: each must see the other's commits (PRAGMA data_version)
// and refuse a commit on a head the other moved on from.
func TestFollowTwoHandles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lgrun.db")
	a := MustOpenPath(t, path, nil)
	b := MustOpenPath(t, path, nil)
	ca, cb := newChain(t, a, "t"), newChain(t, b, "t")
	ca.step(3)
	for round := 0; round < 6; round++ {
		// b takes over from a's head.
		cb.head, cb.at, cb.values = ca.head, ca.at, ca.values
		cb.step(2)
		// a's next commit, on the head it left, conflicts.
		if err := ca.try(); !errors.Is(err, runtime.ErrConflict) || !strings.Contains(err.Error(), "head is "+cb.head) {
			t.Fatalf("round %d: a commits on its stale head: %v, want ErrConflict naming %s", round, err, cb.head)
		}
		// So does one on the head the thread's row names, when it
		// follows a later checkpoint.
		if rowHead, follow := threadRowHead(t, a, "t"); follow && rowHead != cb.head {
			var ids runtime.IDClock
			err := commitWith(a, "t", ids.Next(time.Now(), cb.head), rowHead, rowHead, cb.at, runtime.StatusRunning)
			if !errors.Is(err, runtime.ErrConflict) || !strings.Contains(err.Error(), "head is "+cb.head) {
				t.Fatalf("round %d: a commits on the row's head %s: %v, want ErrConflict naming %s", round, rowHead, err, cb.head)
			}
		} else if round > 0 {
			t.Fatalf("round %d: row head %s (follow %v), want a row that follows, behind %s", round, rowHead, follow, cb.head)
		}
		for _, s := range []*checkpoint.SQLite{a, b} {
			checkHead(t, s, "t", cb.head, 0)
		}
		// a takes over again.
		ca.head, ca.at, ca.values = cb.head, cb.at, cb.values
		ca.step(2)
		if err := cb.try(); !errors.Is(err, runtime.ErrConflict) {
			t.Fatalf("round %d: b commits on its stale head: %v, want ErrConflict", round, err)
		}
		for _, s := range []*checkpoint.SQLite{a, b} {
			checkHead(t, s, "t", ca.head, 0)
			cp, err := s.Get(bg, "t", "")
			if err != nil || cp.Values["n"] != ca.at {
				t.Fatalf("round %d: values %v (%v), want n = %d", round, cp, err, ca.at)
			}
		}
	}
	// A mark by one handle (which pins the head) and a commit by the other.
	th, err := b.Thread(bg, "t")
	if err != nil {
		t.Fatal(err)
	}
	th.Status, th.Updated = runtime.StatusInterrupted, time.Now()
	if err := b.Mark(bg, &runtime.Mark{Thread: *th, ClearWrites: true}); err != nil {
		t.Fatal(err)
	}
	if head, follow := threadRowHead(t, a, "t"); head != ca.head || follow {
		t.Fatalf("after the mark: row head %s (follow %v), want %s, pinned", head, follow, ca.head)
	}
	ca.step(1)
	checkHead(t, b, "t", ca.head, 0)
	if n := len(mustList(t, a, "t")); n != 3+6*4+1 {
		t.Fatalf("%d checkpoints, want %d", n, 3+6*4+1)
	}
}

// TestFollowDamagedHead damages the greatest checkpoint of a thread whose
// row follows it: reads of the thread report that checkpoint, and do not
// fall back to the one before. A row whose own head is gone is reported
// as in layout 4.
func TestFollowDamagedHead(t *testing.T) {
	s := MustOpen(t, nil)
	c := newChain(t, s, "t")
	c.step(4)
	first, _ := threadRowHead(t, s, "t")
	for _, col := range []string{"pending", "updated_off", "live_sum", "time"} {
		if _, err := s.DB().Exec(`UPDATE checkpoints SET `+col+` = `+col+` + 1 WHERE thread = 't' AND id = ?`, c.head); err != nil {
			t.Fatal(err)
		}
		var ce *runtime.CorruptError
		_, err := s.Thread(bg, "t")
		if !errors.As(err, &ce) || ce.Checkpoint != c.head {
			t.Fatalf("%s damaged: Thread: %v, want a CorruptError naming %s", col, err, c.head)
		}
		if _, err := s.Get(bg, "t", ""); !errors.As(err, &ce) || ce.Checkpoint != c.head {
			t.Fatalf("%s damaged: Get: %v, want a CorruptError naming %s", col, err, c.head)
		}
		if _, err := s.History(bg, "t", runtime.HistoryOptions{}); !errors.As(err, &ce) || ce.Checkpoint != c.head {
			t.Fatalf("%s damaged: History: %v, want a CorruptError naming %s", col, err, c.head)
		}
		if _, err := s.DB().Exec(`UPDATE checkpoints SET `+col+` = `+col+` - 1 WHERE thread = 't' AND id = ?`, c.head); err != nil {
			t.Fatal(err)
		}
	}
	checkHead(t, s, "t", c.head, 0)
	// Without the rows from the one the thread's row names on, the head is
	// missing.
	if _, err := s.DB().Exec(`DELETE FROM checkpoints WHERE thread = 't' AND id >= ?`, first); err != nil {
		t.Fatal(err)
	}
	var ce *runtime.CorruptError
	if _, err := s.Get(bg, "t", ""); !errors.As(err, &ce) || ce.Checkpoint != first || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Get of a lost head: %v, want a CorruptError naming %s as missing", err, first)
	}
}

// TestFollowProcess has another process commit to a thread between two of
// this process's commits: this process's next commit on its own last head
// conflicts, and one on the other's head goes through.
func TestFollowProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "follow.db")
	s := MustOpenPath(t, path, nil)
	c := newChain(t, s, "t")
	c.step(3)
	for round := 0; round < 3; round++ {
		h := startHelper(t, "commit", path, "t", c.head, "2")
		release(t, h)
		out := h.line(t)
		other, ok := strings.CutPrefix(out, "ok ")
		if !ok {
			t.Fatalf("helper: %s", out)
		}
		if err := c.try(); !errors.Is(err, runtime.ErrConflict) || !strings.Contains(err.Error(), "head is "+other) {
			t.Fatalf("round %d: commit on the head the other process moved on from: %v, want ErrConflict naming %s", round, err, other)
		}
		checkHead(t, s, "t", other, 0)
		c.head = other
		c.at += 2
		cp, err := s.Get(bg, "t", "")
		if err != nil {
			t.Fatal(err)
		}
		c.values = cp.Values
		c.step(2)
		checkHead(t, s, "t", c.head, 0)
	}
	if n := len(mustList(t, s, "t")); n != 3+3*4 {
		t.Fatalf("%d checkpoints, want %d", n, 3+3*4)
	}
}

// TestFollowChain commits chains (several commits in one transaction):
// of one thread, and of two threads interleaved, whose later commit builds
// on what the same transaction left.
func TestFollowChain(t *testing.T) {
	s := MustOpen(t, nil)
	var ids runtime.IDClock
	mk := func(thread, parent string, step int) *runtime.Commit {
		now := time.Now()
		return &runtime.Commit{
			Checkpoint: &runtime.Checkpoint{Thread: thread, ID: ids.Next(now, parent), ParentID: parent, Step: step,
				Values: map[string]any{"n": step}, Delta: runtime.Delta{"n": {Kind: runtime.OpSet, Value: step}},
				Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g", Time: now}},
			ExpectHead: parent,
			Thread:     runtime.Thread{ID: thread, Status: runtime.StatusRunning, Graph: "g", Updated: now},
		}
	}
	a1 := mk("a", "", 0)
	a2 := mk("a", a1.Checkpoint.ID, 1)
	if _, err := s.CommitChain(bg, []*runtime.Commit{a1, a2}, false); err != nil {
		t.Fatal(err)
	}
	if head, follow := threadRowHead(t, s, "a"); head != a2.Checkpoint.ID || follow {
		t.Fatalf("row head %s (follow %v), want %s, pinned", head, follow, a2.Checkpoint.ID)
	}
	a3 := mk("a", a2.Checkpoint.ID, 2)
	a4 := mk("a", a3.Checkpoint.ID, 3)
	if _, err := s.CommitChain(bg, []*runtime.Commit{a3, a4}, false); err != nil {
		t.Fatal(err)
	}
	checkHead(t, s, "a", a4.Checkpoint.ID, 0)
	if head, follow := threadRowHead(t, s, "a"); head != a4.Checkpoint.ID || !follow {
		t.Fatalf("row head %s (follow %v), want %s, following", head, follow, a4.Checkpoint.ID)
	}
	// a, b, a again: the second commit of a starts on the head the first
	// left in the same transaction.
	a5 := mk("a", a4.Checkpoint.ID, 4)
	b1 := mk("b", "", 0)
	a6 := mk("a", a5.Checkpoint.ID, 5)
	if _, err := s.CommitChain(bg, []*runtime.Commit{a5, b1, a6}, false); err != nil {
		t.Fatal(err)
	}
	checkHead(t, s, "a", a6.Checkpoint.ID, 0)
	checkHead(t, s, "b", b1.Checkpoint.ID, 0)
	// The same with a wrong head for the last: nothing is written, and
	// what the handle knows of a is as before.
	a7 := mk("a", a6.Checkpoint.ID, 6)
	b2 := mk("b", b1.Checkpoint.ID, 1)
	bad := mk("a", a5.Checkpoint.ID, 7)
	if _, err := s.CommitChain(bg, []*runtime.Commit{a7, b2, bad}, false); !errors.Is(err, runtime.ErrConflict) || !strings.Contains(err.Error(), "head is "+a7.Checkpoint.ID) {
		t.Fatalf("chain with a wrong head: %v, want ErrConflict naming %s", err, a7.Checkpoint.ID)
	}
	checkHead(t, s, "a", a6.Checkpoint.ID, 0)
	checkHead(t, s, "b", b1.Checkpoint.ID, 0)
	if err := s.Commit(bg, a7); err != nil {
		t.Fatal(err)
	}
	checkHead(t, s, "a", a7.Checkpoint.ID, 0)
}

// TestFollowTwoHandlesRace has two handles on one file commit to one
// thread at once, each on the head it reads, retrying on ErrConflict:
// every commit that succeeds extends the one before it (no fork, none
// lost), and both handles read the same head, the last commit.
func TestFollowTwoHandlesRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lgrun.db")
	hs := []*checkpoint.SQLite{MustOpenPath(t, path, nil), MustOpenPath(t, path, nil)}
	newChain(t, hs[0], "t").step(1)
	const perHandle = 40
	type done struct {
		id, parent string
	}
	results := make(chan done, 2*perHandle)
	errs := make(chan error, 2)
	var conflicts atomic.Int64
	for k, s := range hs {
		go func() {
			var ids runtime.IDClock
			for n := 0; n < perHandle; {
				cp, err := s.Get(bg, "t", "")
				if err != nil {
					errs <- err
					return
				}
				id := ids.Next(time.Now(), cp.ID)
				err = commitWith(s, "t", id, cp.ID, cp.ID, cp.Step+1, runtime.StatusRunning)
				if errors.Is(err, runtime.ErrConflict) {
					conflicts.Add(1)
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("handle %d: %w", k, err)
					return
				}
				results <- done{id, cp.ID}
				n++
			}
			errs <- nil
		}()
	}
	for range hs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(results)
	t.Logf("%d commits refused on a head the other handle had moved on from", conflicts.Load())
	parents := map[string]string{}
	for r := range results {
		parents[r.id] = r.parent
	}
	list := mustList(t, hs[0], "t") // newest first
	if len(list) != 1+2*perHandle {
		t.Fatalf("%d checkpoints, want %d", len(list), 1+2*perHandle)
	}
	for i := 0; i+1 < len(list); i++ {
		if list[i].ParentID != list[i+1].ID || parents[list[i].ID] != list[i+1].ID {
			t.Fatalf("checkpoint %s: parent %s, want the one before it, %s", list[i].ID, list[i].ParentID, list[i+1].ID)
		}
	}
	for _, s := range hs {
		checkHead(t, s, "t", list[0].ID, 0)
	}
}
