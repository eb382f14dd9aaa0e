package checkpointtest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// testReadWhileWriting reads a thread's head, list and history while
// another goroutine keeps committing checkpoints and marking pending writes
// on it. Every read must see one consistent state of the thread: a reader
// that took the thread's row from one moment and the head's pending writes
// from a later one reports a damaged database that is not damaged.
func testReadWhileWriting(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "busy")
	th.commit("", first())
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	reader := func(read func() error) {
		defer wg.Done()
		for !stop.Load() {
			if err := read(); err != nil {
				errs <- err
				return
			}
		}
	}
	wg.Add(3)
	go reader(func() error {
		cp, err := s.Get(bg, "busy", "")
		if err != nil {
			return fmt.Errorf("Get of the head: %w", err)
		}
		if got := cp.Values["count"]; !equalJSON(got, cp.Step) {
			return fmt.Errorf("Get of the head: count %v at step %d", got, cp.Step)
		}
		return nil
	})
	go reader(func() error {
		if _, err := s.List(bg, "busy", 5); err != nil {
			return fmt.Errorf("List: %w", err)
		}
		return nil
	})
	go reader(func() error {
		if _, err := runtime.ReadHistory(bg, s, "busy", runtime.HistoryOptions{Limit: 3}); err != nil {
			return fmt.Errorf("ReadHistory: %w", err)
		}
		return nil
	})
	for i := 1; i <= 150 && len(errs) == 0; i++ {
		w := runtime.PendingWrite{Node: "a", Kind: runtime.PendingError, Error: fmt.Sprintf("a failed at %d", i)}
		th.commit(th.head, runtime.Delta{"count": set(i)}, w)
		row := th.row(runtime.StatusRunning)
		row.Head = th.head
		w2 := runtime.PendingWrite{Node: "b", Kind: runtime.PendingError, Error: "b failed"}
		if err := s.Mark(bg, &runtime.Mark{Thread: row, Writes: []runtime.PendingWrite{w2}}); err != nil {
			t.Fatalf("Mark: %v", err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
