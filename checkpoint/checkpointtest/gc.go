package checkpointtest

import (
	"errors"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// testGC holds a saver's GC to [checkpoint.GCOptions]: Before deletes the
// threads last updated before it, with their child runs, and no other;
// Thread limits it, and Keep, to one thread; Keep prunes every thread to
// its latest checkpoints and head, whose values do not change; a second
// GC finds nothing left. Run holds only savers with GC to it.
func testGC(t *testing.T, s runtime.Saver) {
	gc := s.(gcSaver)
	// The threads' clocks: old ones before the cut, fresh ones after.
	cut := base.Add(500 * time.Second)
	build := func(id string, tick, n int) *thread {
		th := newThread(t, s, id)
		th.tick = tick
		p := th.commit("", first())
		for i := 1; i < n; i++ {
			p = th.commit(p, runtime.Delta{"count": set(i)})
		}
		return th
	}
	build("old1", 0, 6)
	build("old1/sub@2-", 10, 3)
	build("old1/sub@2-/deeper@1-", 20, 2)
	build("old2", 0, 4)
	fresh := build("fresh", 1000, 9)
	other := build("other", 1000, 5)

	res, err := gc.GC(bg, checkpoint.GCOptions{Before: cut, Thread: "old2"})
	if err != nil || res.Threads != 1 || res.Checkpoints != 4 {
		t.Fatalf("GC before the cut of old2: %+v %v; want 1 thread, 4 checkpoints", res, err)
	}
	if _, err := s.Thread(bg, "old1"); err != nil {
		t.Fatalf("GC of old2 deleted old1: %v", err)
	}
	res, err = gc.GC(bg, checkpoint.GCOptions{Before: cut})
	if err != nil || res.Threads != 3 || res.Checkpoints != 11 {
		t.Fatalf("GC before the cut: %+v %v; want 3 threads (old1 and its child runs), 11 checkpoints", res, err)
	}
	for _, id := range []string{"old1", "old2", "old1/sub@2-", "old1/sub@2-/deeper@1-"} {
		if _, err := s.Thread(bg, id); !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("thread %s survived GC: %v", id, err)
		}
	}
	fresh.check()
	other.check()

	// Keep, limited to one thread, then for all.
	res, err = gc.GC(bg, checkpoint.GCOptions{Keep: 3, Thread: "fresh"})
	if err != nil || res.Threads != 0 || res.Checkpoints != 6 {
		t.Fatalf("GC keeping 3 of fresh: %+v %v; want 6 checkpoints", res, err)
	}
	if n := len(mustList(t, s, "other")); n != 5 {
		t.Fatalf("GC of fresh pruned other: %d checkpoints", n)
	}
	res, err = gc.GC(bg, checkpoint.GCOptions{Keep: 2})
	if err != nil || res.Checkpoints != 1+3 {
		t.Fatalf("GC keeping 2: %+v %v; want 4 checkpoints", res, err)
	}
	for _, th := range []*thread{fresh, other} {
		list := mustList(t, s, th.id)
		if len(list) != 2 || list[0].ID != th.head {
			t.Fatalf("%s: %d checkpoints after GC, newest %s; want 2, newest the head %s", th.id, len(list), list[0].ID, th.head)
		}
		for _, cp := range list {
			th.checkOne(cp.ID)
		}
	}
	// Nothing left to collect.
	if res, err := gc.GC(bg, checkpoint.GCOptions{Before: cut, Keep: 2}); err != nil || res.Threads != 0 || res.Checkpoints != 0 {
		t.Fatalf("GC again: %+v %v", res, err)
	}
}
