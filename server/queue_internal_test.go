package server

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
)

// finishingStore is a Store whose run finishes elsewhere right after the
// first Events read: the rest of its events are stored and its row made
// final between that read and whatever the follower reads next, as a
// worker on another process may do at any moment.
type finishingStore struct {
	Store
	once sync.Once
	run  string
	rest []StoredEvent
}

func (f *finishingStore) Events(ctx context.Context, run string, after int) ([]StoredEvent, error) {
	evs, err := f.Store.Events(ctx, run, after)
	f.once.Do(func() {
		for _, ev := range f.rest {
			if err := f.Store.AppendEvent(ctx, f.run, ev); err != nil {
				panic(err)
			}
		}
		r, err := f.Store.Run(ctx, f.run)
		if err != nil {
			panic(err)
		}
		r.Status = runSuccess
		if err := f.Store.PutRun(ctx, r); err != nil {
			panic(err)
		}
	})
	return evs, err
}

// TestSyncRemoteKeepsLastEvents: a stream following a run of another
// process ends with every event the run stored, even when the run
// finishes between the follower's reads (it read the events, then found
// the row final, and ended without the events stored in between).
func TestSyncRemoteKeepsLastEvents(t *testing.T) {
	ctx := context.Background()
	st, err := OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fs := &finishingStore{Store: st, run: "r"}
	// The server starts before the run exists: it has nothing to requeue.
	s, err := New(Options{Store: fs, Saver: checkpoint.NewMemory(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	if err := st.PutThread(ctx, &Thread{ID: "t", Created: now, Updated: now, Status: "busy"}); err != nil {
		t.Fatal(err)
	}
	run := &Run{ID: "r", ThreadID: "t", GraphID: "g", Created: now, Updated: now, Status: runRunning, Request: &RunRequest{}}
	if err := st.PutRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	ev := func(i int) StoredEvent {
		return StoredEvent{ID: i, Event: "updates", Data: []byte(`{"n":` + string(rune('0'+i)) + `}`)}
	}
	for i := range 5 {
		if err := st.AppendEvent(ctx, "r", ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 5; i < 10; i++ {
		fs.rest = append(fs.rest, ev(i))
	}
	e := newExecution(s, run, nil, nil)
	e.remote = true
	s.mu.Lock()
	s.runs["r"] = e
	s.mu.Unlock()
	// The first sync reads the 5 events and, behind it, the run ends; the
	// run's final notification brings the second.
	s.syncRemote("r")
	s.syncRemote("r")
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the follower did not end after the run's row was final")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.events) != 10 {
		t.Fatalf("the follower ended with %d events, want the 10 the run stored", len(e.events))
	}
	for i, got := range e.events {
		if got.ID != i || string(got.Data) != string(ev(i).Data) {
			t.Fatalf("event %d: %+v, want %+v", i, got, ev(i))
		}
	}
}
