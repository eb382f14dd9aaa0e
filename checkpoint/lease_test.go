package checkpoint_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// Two handles on one database file stand for two processes.
func TestLeaseIsExclusive(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db")
	a := MustOpenPath(t, path, nil)
	b := MustOpenPath(t, path, nil)
	unlock, err := a.Lock(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Lock(ctx, "t1")
	var be *runtime.BusyError
	if !errors.As(err, &be) || !errors.Is(err, runtime.ErrConflict) || be.Thread != "t1" {
		t.Fatalf("second lock: %v, want a BusyError that is an ErrConflict", err)
	}
	// Another thread is not affected.
	u2, err := b.Lock(ctx, "t2")
	if err != nil {
		t.Fatalf("lock of another thread: %v", err)
	}
	u2()
	unlock()
	unlock() // idempotent
	u3, err := b.Lock(ctx, "t1")
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	u3()
}

func setLease(t *testing.T, s *checkpoint.SQLite, thread, host string, pid int, expires time.Time) {
	t.Helper()
	u, err := s.Lock(context.Background(), "create-the-table")
	if err != nil {
		t.Fatal(err)
	}
	u()
	if _, err := s.DB().Exec(`INSERT OR REPLACE INTO leases (thread, token, host, pid, acquired, expires) VALUES (?, 'x', ?, ?, ?, ?)`,
		thread, host, pid, time.Now().Add(-time.Minute).UnixNano(), expires.UnixNano()); err != nil {
		t.Fatal(err)
	}
}

// A lease whose owner died on this host, or that expired, is taken over.
func TestLeaseTakeover(t *testing.T) {
	ctx := context.Background()
	s := MustOpen(t, nil)
	host, _ := os.Hostname()

	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("no true command:", err)
	}
	dead := cmd.Process.Pid
	setLease(t, s, "dead", host, dead, time.Now().Add(time.Hour))
	if u, err := s.Lock(ctx, "dead"); err != nil {
		t.Fatalf("lease of a dead process: %v", err)
	} else {
		u()
	}

	setLease(t, s, "expired", "elsewhere", 1, time.Now().Add(-time.Second))
	if u, err := s.Lock(ctx, "expired"); err != nil {
		t.Fatalf("expired lease: %v", err)
	} else {
		u()
	}

	setLease(t, s, "held", "elsewhere", 1, time.Now().Add(time.Hour))
	_, err := s.Lock(ctx, "held")
	var be *runtime.BusyError
	if !errors.As(err, &be) || be.Owner != "pid 1 on elsewhere" {
		t.Fatalf("live lease on another host: %v", err)
	}
}

// A held lease is renewed, so a long step does not lose it.
func TestLeaseRenewal(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db")
	a := MustOpenPath(t, path, &checkpoint.Options{LeaseTTL: 150 * time.Millisecond})
	b := MustOpenPath(t, path, nil)
	unlock, err := a.Lock(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	time.Sleep(400 * time.Millisecond) // more than twice the TTL
	var expires int64
	if err := b.DB().QueryRow(`SELECT expires FROM leases WHERE thread = 't'`).Scan(&expires); err != nil {
		t.Fatal(err)
	}
	if time.Unix(0, expires).Before(time.Now()) {
		t.Fatal("the lease was not renewed")
	}
}

// Each saver keeps its own lease TTL: two savers in one process (two
// engines) with different TTLs take leases of their own length, at the
// same time.
func TestLeaseTTLPerSaver(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	short := MustOpenPath(t, filepath.Join(dir, "short.db"), &checkpoint.Options{LeaseTTL: time.Second})
	long := MustOpenPath(t, filepath.Join(dir, "long.db"), &checkpoint.Options{LeaseTTL: time.Hour})
	deflt := MustOpenPath(t, filepath.Join(dir, "default.db"), nil)
	ttl := func(s *checkpoint.SQLite) time.Duration {
		t.Helper()
		var acquired, expires int64
		if err := s.DB().QueryRow(`SELECT acquired, expires FROM leases WHERE thread = 't'`).Scan(&acquired, &expires); err != nil {
			t.Fatal(err)
		}
		return time.Duration(expires - acquired)
	}
	for _, s := range []*checkpoint.SQLite{short, long, deflt} {
		u, err := s.Lock(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		defer u()
	}
	if got := ttl(short); got != time.Second {
		t.Errorf("short saver's lease lasts %s, want 1s", got)
	}
	if got := ttl(long); got != time.Hour {
		t.Errorf("long saver's lease lasts %s, want 1h", got)
	}
	if got := ttl(deflt); got != checkpoint.DefaultLeaseTTL {
		t.Errorf("default saver's lease lasts %s, want %s", got, checkpoint.DefaultLeaseTTL)
	}
}

func TestMemoryLease(t *testing.T) {
	ctx := context.Background()
	m := checkpoint.NewMemory()
	u, err := m.Lock(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Lock(ctx, "t"); !errors.Is(err, runtime.ErrConflict) {
		t.Fatalf("second lock: %v", err)
	}
	u()
	if u, err := m.Lock(ctx, "t"); err != nil {
		t.Fatal(err)
	} else {
		u()
	}
}

// The memory saver's leases have the SQLite saver's TTL semantics: each
// saver's own TTL (the default when unset), renewal while held, takeover
// of an expired lease, and an old holder's unlock leaves the new holder's
// lease alone.
func TestMemoryLeaseTTL(t *testing.T) {
	ctx := context.Background()
	ttl := func(m *checkpoint.Memory) time.Duration {
		t.Helper()
		acquired, expires, held := checkpoint.MemoryLease(m, "t")
		if !held {
			t.Fatal("no lease held")
		}
		return expires.Sub(acquired)
	}
	short := checkpoint.NewMemoryWith(&checkpoint.MemoryOptions{LeaseTTL: time.Second})
	long := checkpoint.NewMemoryWith(&checkpoint.MemoryOptions{LeaseTTL: time.Hour})
	deflt := checkpoint.NewMemory()
	for _, m := range []*checkpoint.Memory{short, long, deflt} {
		u, err := m.Lock(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		defer u()
	}
	if got := ttl(short); got != time.Second {
		t.Errorf("short saver's lease lasts %s, want 1s", got)
	}
	if got := ttl(long); got != time.Hour {
		t.Errorf("long saver's lease lasts %s, want 1h", got)
	}
	if got := ttl(deflt); got != checkpoint.DefaultLeaseTTL {
		t.Errorf("default saver's lease lasts %s, want %s", got, checkpoint.DefaultLeaseTTL)
	}

	t.Run("renewal", func(t *testing.T) {
		m := checkpoint.NewMemoryWith(&checkpoint.MemoryOptions{LeaseTTL: 150 * time.Millisecond})
		u, err := m.Lock(ctx, "r")
		if err != nil {
			t.Fatal(err)
		}
		defer u()
		time.Sleep(400 * time.Millisecond) // more than twice the TTL
		if _, expires, _ := checkpoint.MemoryLease(m, "r"); expires.Before(time.Now()) {
			t.Fatal("the lease was not renewed")
		}
		if _, err := m.Lock(ctx, "r"); !errors.Is(err, runtime.ErrConflict) {
			t.Fatalf("lock of a renewed lease: %v", err)
		}
	})

	t.Run("takeover", func(t *testing.T) {
		m := checkpoint.NewMemoryWith(&checkpoint.MemoryOptions{LeaseTTL: time.Hour})
		old, err := m.Lock(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		checkpoint.ExpireMemoryLease(m, "x")
		taken, err := m.Lock(ctx, "x")
		if err != nil {
			t.Fatalf("expired lease: %v", err)
		}
		old() // the hung holder finally lets go
		if _, err := m.Lock(ctx, "x"); !errors.Is(err, runtime.ErrConflict) {
			t.Fatalf("the old holder's unlock released the new holder's lease: %v", err)
		}
		taken()
		if u, err := m.Lock(ctx, "x"); err != nil {
			t.Fatalf("after the new holder's unlock: %v", err)
		} else {
			u()
		}
	})
}

// A released lease's row goes with the handle's next transaction, or on
// its own within moments when none comes (other processes see it go), or
// when the handle closes.
func TestLeaseReleaseReachesTheDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db")
	a := MustOpenPath(t, path, nil)
	other := MustOpenPath(t, path, nil)
	rows := func(thread string) int {
		t.Helper()
		var n int
		if err := other.DB().QueryRow(`SELECT count(*) FROM leases WHERE thread = ?`, thread).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// No other transaction: the row goes by itself.
	u, err := a.Lock(ctx, "idle")
	if err != nil {
		t.Fatal(err)
	}
	if rows("idle") != 1 {
		t.Fatal("no lease row while held")
	}
	u()
	deadline := time.Now().Add(2 * time.Second)
	for rows("idle") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the released lease's row is still there after 2s")
		}
		time.Sleep(time.Millisecond)
	}
	// The next lease of the handle takes the previous one's row with it.
	u1, err := a.Lock(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	u1()
	u2, err := a.Lock(ctx, "two")
	if err != nil {
		t.Fatal(err)
	}
	if rows("one") != 0 || rows("two") != 1 {
		t.Fatalf("after the next lock: %d rows of the released lease, %d of the held one", rows("one"), rows("two"))
	}
	u2()
	// Closing deletes what is still queued.
	u3, err := a.Lock(ctx, "three")
	if err != nil {
		t.Fatal(err)
	}
	u3()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if rows("two") != 0 || rows("three") != 0 {
		t.Fatal("lease rows left after Close")
	}
}
