package checkpoint_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// TestWriterOpenedAtFirstWrite: opening an existing database and reading
// from it uses one connection (the writer's is opened, and its statements
// prepared, at the first write); writes through a handle that read first
// work and are seen by the next handle.
func TestWriterOpenedAtFirstWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lgrun.db")
	commit := func(s *checkpoint.SQLite, id, parent string, n int) {
		t.Helper()
		now := time.Date(2026, 1, 1, 0, 0, n, 0, time.UTC)
		cp := &runtime.Checkpoint{Thread: "t", ID: id, ParentID: parent, Step: n, Values: map[string]any{"n": n},
			Delta: runtime.Delta{"n": {Kind: runtime.OpSet, Value: n}}, Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g", Time: now}}
		if err := s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: parent, Thread: runtime.Thread{ID: "t", Status: runtime.StatusRunning, Graph: "g", Updated: now}}); err != nil {
			t.Fatal(err)
		}
	}
	s := MustOpenPath(t, path, nil)
	commit(s, "0001", "", 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = MustOpenPath(t, path, nil)
	cp, err := s.Get(bg, "t", "")
	if err != nil {
		t.Fatal(err)
	}
	if cp.Values["n"] != 1 {
		t.Fatalf("values %v", cp.Values)
	}
	if n := s.DB().Stats().OpenConnections; n != 1 {
		t.Fatalf("a handle that only read holds %d connections, want 1", n)
	}
	commit(s, "0002", "0001", 2)
	// The writer took the idle connection; reads open another.
	if cp, err = s.Get(bg, "t", ""); err != nil || cp.ID != "0002" {
		t.Fatalf("head after the write %v, %v", cp, err)
	}
	if n := s.DB().Stats().OpenConnections; n != 2 {
		t.Fatalf("after a write and a read the handle holds %d connections, want 2 (reader and writer)", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = MustOpenPath(t, path, nil)
	if cp, err = s.Get(bg, "t", ""); err != nil || cp.ID != "0002" || cp.Values["n"] != 2 {
		t.Fatalf("head %v, %v", cp, err)
	}
}
