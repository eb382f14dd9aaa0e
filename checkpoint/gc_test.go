package checkpoint_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// snapshotAll loads every checkpoint of a thread: id → values as JSON.
func snapshotAll(t *testing.T, s runtime.Saver, thread string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, cp := range mustList(t, s, thread) {
		full, err := s.Get(bg, thread, cp.ID)
		if err != nil {
			t.Fatalf("Get %s: %v", cp.ID, err)
		}
		b, _ := json.Marshal(full.Values)
		out[cp.ID] = string(b)
	}
	return out
}

func mustList(t *testing.T, s runtime.Saver, thread string) []*runtime.Checkpoint {
	t.Helper()
	l, err := s.List(bg, thread, 0)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// forkAt commits n steps on a new branch from checkpoint id of c's thread,
// which becomes the head.
func (c *chain) forkAt(t *testing.T, id string, n int) {
	t.Helper()
	cp, err := c.s.Get(bg, c.thread, id)
	if err != nil {
		t.Fatal(err)
	}
	c.at, c.values = cp.Step, cp.Values
	// A fork commits on the thread's head with another parent.
	now := time.Now()
	d := runtime.Delta{"n": {Kind: runtime.OpSet, Value: -1}}
	values := map[string]any{"n": -1, "messages": cp.Values["messages"]}
	fork := &runtime.Checkpoint{Thread: c.thread, ParentID: id, Step: cp.Step + 1, Values: values, Delta: d,
		Metadata: runtime.Metadata{Source: runtime.SourceFork, Time: now}, ID: c.ids.Next(now, c.head)}
	if err := c.s.Commit(bg, &runtime.Commit{Checkpoint: fork, ExpectHead: c.head, Thread: runtime.Thread{ID: c.thread, Status: runtime.StatusRunning, Updated: now}}); err != nil {
		t.Fatal(err)
	}
	c.head, c.at, c.values = fork.ID, fork.Step, values
	c.step(n)
}

func TestGCKeepLatest(t *testing.T) {
	t.Parallel()
	s := MustOpen(t, nil)
	c := newChain(t, s, "long")
	c.step(250) // past a snapshot
	trunk := mustList(t, s, "long")
	// A branch from an old checkpoint, and a branch from a recent one.
	c.forkAt(t, trunk[150].ID, 20)
	c.forkAt(t, trunk[5].ID, 30)
	row := runtime.Thread{ID: "long", Head: c.head, Status: runtime.StatusInterrupted, Updated: time.Now()}
	pw := runtime.PendingWrite{Node: "talk", Kind: runtime.PendingInterrupt, Interrupt: &runtime.Interrupt{Node: "talk", When: runtime.InterruptNode}}
	if err := s.Mark(bg, &runtime.Mark{Thread: row, Writes: []runtime.PendingWrite{pw}}); err != nil {
		t.Fatal(err)
	}
	other := newChain(t, s, "other")
	other.step(50)
	before := snapshotAll(t, s, "long")
	otherBefore := snapshotAll(t, s, "other")
	size := fileBytes(t, s)

	const keep = 40
	res, err := s.GC(bg, checkpoint.GCOptions{Keep: keep, Thread: "long"})
	if err != nil {
		t.Fatal(err)
	}
	after := snapshotAll(t, s, "long")
	if len(after) != keep || res.Checkpoints != len(before)-keep {
		t.Fatalf("kept %d checkpoints, deleted %d; want %d kept of %d", len(after), res.Checkpoints, keep, len(before))
	}
	// The kept ones are the newest, and load the same values.
	ids := make([]string, 0, len(before))
	for id := range before {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for i, id := range ids {
		got, ok := after[id]
		if i >= len(ids)-keep {
			if !ok {
				t.Fatalf("checkpoint %s (newest %d) was deleted", id, len(ids)-i)
			}
			if got != before[id] {
				t.Fatalf("checkpoint %s loads other values after GC", id)
			}
		} else {
			if ok {
				t.Fatalf("old checkpoint %s was kept", id)
			}
			if _, err := s.Get(bg, "long", id); !errors.Is(err, runtime.ErrNotFound) {
				t.Fatalf("Get of a deleted checkpoint: %v", err)
			}
		}
	}
	if cp, _ := s.Get(bg, "long", ""); cp.ID != c.head || len(cp.Pending) != 1 {
		t.Fatalf("head %s with pending %v after GC", cp.ID, cp.Pending)
	}
	if got := snapshotAll(t, s, "other"); !mapsEqual(got, otherBefore) {
		t.Fatal("GC of one thread changed another")
	}
	if res.BytesAfter >= res.BytesBefore {
		t.Errorf("GC reported %d bytes before, %d after", res.BytesBefore, res.BytesAfter)
	}
	if now := fileBytes(t, s); now >= size {
		t.Errorf("database takes %d bytes after GC, %d before", now, size)
	}
	// The thread goes on from its head, and GC again changes nothing.
	c.step(5)
	again, err := s.GC(bg, checkpoint.GCOptions{Keep: keep + 5, Thread: "long"})
	if err != nil || again.Checkpoints != 0 {
		t.Fatalf("second GC: %+v %v", again, err)
	}
	if cp, err := s.Get(bg, "long", ""); err != nil || cp.Values["n"] != c.at {
		t.Fatalf("head after GC: %v %v", cp, err)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestGCKeepEveryThread(t *testing.T) {
	t.Parallel()
	s := MustOpen(t, nil)
	for i := 0; i < 3; i++ {
		newChain(t, s, fmt.Sprintf("t%d", i)).step(10 + i)
	}
	wants := map[string]map[string]string{}
	for i := 0; i < 3; i++ {
		wants[fmt.Sprintf("t%d", i)] = snapshotAll(t, s, fmt.Sprintf("t%d", i))
	}
	res, err := s.GC(bg, checkpoint.GCOptions{Keep: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Checkpoints != 9+10+11 {
		t.Fatalf("deleted %d checkpoints, want 30", res.Checkpoints)
	}
	for th, want := range wants {
		l := mustList(t, s, th)
		if len(l) != 1 {
			t.Fatalf("%s: %d checkpoints", th, len(l))
		}
		cp, err := s.Get(bg, th, "")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(cp.Values)
		if string(b) != want[cp.ID] {
			t.Fatalf("%s: head values changed", th)
		}
	}
}

func TestGCOlderThan(t *testing.T) {
	t.Parallel()
	s := MustOpen(t, nil)
	newChain(t, s, "old1").step(20)
	// Child runs of old1, listed after it or before it.
	newChain(t, s, "old1/sub@2-").step(4)
	newChain(t, s, "old1/sub@2-/deeper@1-").step(2)
	newChain(t, s, "old2").step(3)
	time.Sleep(10 * time.Millisecond)
	cut := time.Now()
	time.Sleep(10 * time.Millisecond)
	fresh := newChain(t, s, "fresh")
	fresh.step(30)
	want := snapshotAll(t, s, "fresh")
	size := fileBytes(t, s)

	// A thread filter limits GC to that thread.
	res, err := s.GC(bg, checkpoint.GCOptions{Before: cut, Thread: "old2"})
	if err != nil || res.Threads != 1 || res.Checkpoints != 3 {
		t.Fatalf("GC old2: %+v %v", res, err)
	}
	if _, err := s.Thread(bg, "old1"); err != nil {
		t.Fatalf("GC of old2 deleted old1: %v", err)
	}
	res, err = s.GC(bg, checkpoint.GCOptions{Before: cut})
	if err != nil || res.Threads != 3 || res.Checkpoints != 26 {
		t.Fatalf("GC: %+v %v; want 3 threads (old1 and its children) and 26 checkpoints", res, err)
	}
	for _, th := range []string{"old1", "old2", "old1/sub@2-", "old1/sub@2-/deeper@1-"} {
		if _, err := s.Thread(bg, th); !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("thread %s survived GC: %v", th, err)
		}
	}
	if got := snapshotAll(t, s, "fresh"); !mapsEqual(got, want) {
		t.Fatal("GC changed a thread updated after the cut")
	}
	if now := fileBytes(t, s); now >= size {
		t.Errorf("database takes %d bytes after GC, %d before", now, size)
	}
	// Nothing left to collect.
	if res, err := s.GC(bg, checkpoint.GCOptions{Before: cut}); err != nil || res.Threads != 0 {
		t.Fatalf("GC again: %+v %v", res, err)
	}
	if _, err := os.Stat(s.Path()); err != nil {
		t.Fatal(err)
	}
}
