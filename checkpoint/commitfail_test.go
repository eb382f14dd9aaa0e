package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// TestCommitFailsWhole makes a commit fail after the thread's head has
// moved in its transaction (its checkpoint id is taken, so the insert
// fails), then a commit fail its head's compare-and-swap: the thread and
// its checkpoints are as before each, and the handle commits again
// afterwards (the statements of a commit are reset after a failure).
func TestCommitFailsWhole(t *testing.T) {
	s := MustOpen(t, nil)
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	var clock runtime.IDClock
	row := runtime.Thread{ID: "t", Status: runtime.StatusRunning, Graph: "g", GraphHash: "h", Created: now, Updated: now}
	commit := func(id, head string, step int) error {
		cp := &runtime.Checkpoint{Thread: "t", ID: id, ParentID: head, Step: step, Values: map[string]any{"n": step},
			Delta: runtime.Delta{"n": {Kind: runtime.OpSet, Value: step}}, Next: []string{"inc"},
			Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g", GraphHash: "h", Version: "v", Time: now}}
		return s.Commit(ctx, &runtime.Commit{Checkpoint: cp, ExpectHead: head, Thread: row})
	}
	first := clock.Next(now, "")
	if err := commit(first, "", 0); err != nil {
		t.Fatal(err)
	}
	second := clock.Next(now, first)
	if err := commit(second, first, 1); err != nil {
		t.Fatal(err)
	}
	// The insert fails: the checkpoint id is the head's own.
	if err := commit(second, second, 2); err == nil || !strings.Contains(err.Error(), "insert checkpoint") {
		t.Fatalf("a commit of a taken checkpoint id: %v, want the insert's failure", err)
	}
	// The compare-and-swap fails.
	third := clock.Next(now, second)
	if err := commit(third, first, 2); !errors.Is(err, runtime.ErrConflict) {
		t.Fatalf("commit on a stale head: %v, want ErrConflict", err)
	}
	th, err := s.Thread(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if th.Head != second {
		t.Fatalf("head %s after the failed commits, want %s", th.Head, second)
	}
	if l, err := s.List(ctx, "t", 0); err != nil || len(l) != 2 {
		t.Fatalf("%d checkpoints (%v), want 2", len(l), err)
	}
	if err := commit(third, second, 2); err != nil {
		t.Fatalf("commit after the failures: %v", err)
	}
	cp, err := s.Get(ctx, "t", "")
	if err != nil {
		t.Fatal(err)
	}
	if cp.ID != third || cp.Values["n"] != 2 {
		t.Fatalf("head %s with %v, want %s with n = 2", cp.ID, cp.Values, third)
	}
}

// TestCommitDuringClose commits from one goroutine while another closes
// the handle: every commit either succeeds or returns an error (no
// panic), and what was committed before the close reads back.
func TestCommitDuringClose(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	for round := range 20 {
		path := filepath.Join(dir, fmt.Sprintf("r%d.db", round))
		s, err := checkpoint.OpenSQLite(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		row := runtime.Thread{ID: "t", Status: runtime.StatusRunning, Graph: "g", GraphHash: "h", Created: now, Updated: now}
		var clock runtime.IDClock
		done := make(chan string)
		go func() {
			head := ""
			defer func() { done <- head }()
			for step := 0; ; step++ {
				id := clock.Next(now, head)
				cp := &runtime.Checkpoint{Thread: "t", ID: id, ParentID: head, Step: step, Values: map[string]any{"n": step},
					Delta: runtime.Delta{"n": {Kind: runtime.OpSet, Value: step}}, Next: []string{"inc"},
					Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g", GraphHash: "h", Version: "v", Time: now}}
				if err := s.Commit(ctx, &runtime.Commit{Checkpoint: cp, ExpectHead: head, Thread: row}); err != nil {
					return
				}
				head = id
			}
		}()
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		s.Close()
		head := <-done
		if head == "" {
			continue
		}
		s, err = checkpoint.OpenSQLite(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		th, err := s.Thread(ctx, "t")
		if err != nil || th.Head != head {
			t.Fatalf("round %d: head %v (%v), want the last commit that succeeded, %s", round, th, err, head)
		}
		s.Close()
	}
}
