package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/checkpoint/postgres"
	"github.com/lgrun/lgrun/checkpoint/postgres/pgtest"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// ids makes the tests' checkpoint ids.
var ids runtime.IDClock

// commit commits a child of parent ("" for the first checkpoint) that
// appends a message, expecting head; it returns the new id.
func commit(s runtime.Saver, ctx context.Context, thread, parent, expect string, step int) (string, error) {
	now := time.Now()
	d := runtime.Delta{"messages": {Kind: runtime.OpAppend, Value: []any{fmt.Sprintf("message %d", step)}}}
	if parent == "" {
		d = runtime.Delta{"messages": {Kind: runtime.OpSet, Value: []any{}}}
	}
	cp := &runtime.Checkpoint{Thread: thread, ID: ids.Next(now, parent), ParentID: parent, Step: step,
		Values: map[string]any{}, Delta: d,
		Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g", GraphHash: "h", Version: "v", Time: now}}
	err := s.Commit(ctx, &runtime.Commit{Checkpoint: cp, ExpectHead: expect,
		Thread: runtime.Thread{ID: thread, Status: runtime.StatusRunning, Graph: "g", Updated: now}})
	return cp.ID, err
}

func mustCommit(t *testing.T, s runtime.Saver, thread, parent string, step int) string {
	t.Helper()
	id, err := commit(s, bg, thread, parent, parent, step)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Processes starting together on a fresh schema migrate it once: the
// advisory lock serialises them, and the later ones find the work done.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	name := pgtest.Name(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.Open(bg, pgtest.ServerURL(), &postgres.Options{Schema: name, MaxConns: 2})
			if err == nil {
				_, err = commit(s, bg, fmt.Sprintf("t%d", i), "", "", 0)
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("opener %d: %v", i, err)
		}
	}
	s := openURL(t, pgtest.WithSearchPath(pgtest.ServerURL(), name), nil)
	var versions int
	if err := s.Pool().QueryRow(bg, `SELECT count(*) FROM lgrun_migrations`).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if versions != postgres.SchemaVersion {
		t.Errorf("%d migration rows, want %d", versions, postgres.SchemaVersion)
	}
	if ts, err := s.Threads(bg); err != nil || len(ts) != n {
		t.Errorf("%d threads (%v), want %d", len(ts), err, n)
	}
}

// A schema written by a newer lgrun is refused, naming the versions.
func TestNewerSchemaRefused(t *testing.T) {
	t.Parallel()
	s, u := open(t, nil)
	if _, err := s.Pool().Exec(bg, `INSERT INTO lgrun_migrations (version) VALUES ($1)`, postgres.SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	_, err := postgres.Open(bg, u, nil)
	if err == nil || !strings.Contains(err.Error(), "newer lgrun") {
		t.Fatalf("opening a newer schema: %v", err)
	}
}

// Two processes (two pools) committing on one head: exactly one wins each
// round, the other gets ErrConflict and leaves nothing behind.
func TestTwoPoolsRaceCAS(t *testing.T) {
	t.Parallel()
	a, u := open(t, nil)
	b := openURL(t, u, nil)
	head := mustCommit(t, a, "th", "", 0)
	const rounds = 20
	for r := 1; r <= rounds; r++ {
		var wg sync.WaitGroup
		ids := make([]string, 2)
		errs := make([]error, 2)
		for i, s := range []*postgres.Postgres{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids[i], errs[i] = commit(s, bg, "th", head, head, r)
			}()
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if won >= 0 {
					t.Fatalf("round %d: both commits won", r)
				}
				won = i
			case !errors.Is(err, runtime.ErrConflict):
				t.Fatalf("round %d: loser's error %v, want ErrConflict", r, err)
			}
		}
		if won < 0 {
			t.Fatalf("round %d: no commit won: %v", r, errs)
		}
		th, err := b.Thread(bg, "th")
		if err != nil || th.Head != ids[won] {
			t.Fatalf("round %d: head %v (%v), want the winner %s", r, th, err, ids[won])
		}
		head = ids[won]
	}
	list, err := a.List(bg, "th", 0)
	if err != nil || len(list) != rounds+1 {
		t.Fatalf("%d checkpoints (%v), want %d: a loser left a row behind", len(list), err, rounds+1)
	}
	cp, err := b.Get(bg, "th", "")
	if err != nil || len(cp.Values["messages"].([]any)) != rounds {
		t.Fatalf("head values %v (%v)", cp, err)
	}
}

// A lease held by another owner is a BusyError naming it; once the holder
// stops renewing (its process died), the lease is taken over after its
// TTL, by the database's clock.
func TestLeaseBusyThenTakenOver(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	_, u := open(t, nil)
	a, err := postgres.Open(bg, u, &postgres.Options{LeaseTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	b := openURL(t, u, &postgres.Options{LeaseTTL: ttl})
	if _, err := a.Lock(bg, "th"); err != nil {
		t.Fatal(err)
	}
	_, err = b.Lock(bg, "th")
	var busy *runtime.BusyError
	if !errors.As(err, &busy) || !strings.Contains(busy.Owner, "pid ") {
		t.Fatalf("second lock: %v, want a BusyError naming the owner", err)
	}
	// Still busy while a renews, past its TTL.
	time.Sleep(ttl + ttl/2)
	if _, err := b.Lock(bg, "th"); !errors.As(err, &busy) {
		t.Fatalf("lock while the holder renews: %v, want BusyError", err)
	}
	a.Close() // the holder dies: no more renewals, no release
	deadline := time.Now().Add(5 * ttl)
	for {
		unlock, err := b.Lock(bg, "th")
		if err == nil {
			unlock()
			break
		}
		if !errors.As(err, &busy) || time.Now().After(deadline) {
			t.Fatalf("taking over a dead holder's lease: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Released: free at once.
	unlock, err := b.Lock(bg, "th")
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock()
}

// A damaged row is a CorruptError naming it, from Get and from List (which
// still returns the good rows).
func TestCorruptRow(t *testing.T) {
	t.Parallel()
	s, _ := open(t, nil)
	a := mustCommit(t, s, "th", "", 0)
	b := mustCommit(t, s, "th", a, 1)
	c := mustCommit(t, s, "th", b, 2)
	// Rows as layout version 2 stored them (blocks have their own test).
	if err := postgres.Unblock(bg, s, "th"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(bg, `UPDATE checkpoints SET delta = replace(convert_from(delta, 'UTF8'), 'message 1', 'message X')::bytea WHERE thread = 'th' AND id = $1`, b); err != nil {
		t.Fatal(err)
	}
	var ce *runtime.CorruptError
	_, err := s.Get(bg, "th", c)
	if !errors.As(err, &ce) || ce.Checkpoint != b {
		t.Fatalf("Get over a damaged row: %v, want a CorruptError naming %s", err, b)
	}
	list, err := s.List(bg, "th", 0)
	if !errors.As(err, &ce) || ce.Checkpoint != b || len(list) != 2 {
		t.Fatalf("List with a damaged row: %d rows, %v", len(list), err)
	}
	if _, err := s.Pool().Exec(bg, `UPDATE threads SET status = 'done' WHERE id = 'th'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Thread(bg, "th"); !errors.As(err, &ce) || ce.Thread != "th" {
		t.Fatalf("Thread with a damaged row: %v", err)
	}
}

// A server that is not there, or a bad URL, is a clear error naming the
// host, not a panic or a hang.
func TestOpenErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, want string }{
		{"postgres://postgres@127.0.0.1:1/test?connect_timeout=5", "127.0.0.1:1"},
		{"postgres://postgres@nohost.invalid:5432/test?connect_timeout=5", "nohost.invalid"},
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=bogus", "sslmode"},
		{"postgres://user:secret@[::1", "bad connection URL"},
	} {
		s, err := postgres.Open(bg, tc.url, nil)
		if err == nil {
			s.Close()
			t.Errorf("%s: opened", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to name %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", tc.url, err)
		}
	}
}

// A commit whose context is cancelled while it waits in the database
// leaves the last good checkpoint as the head, and the thread goes on.
func TestCancelMidCommit(t *testing.T) {
	t.Parallel()
	s, _ := open(t, nil)
	a := mustCommit(t, s, "th", "", 0)
	// Another transaction holds the thread's row, so the commit blocks in
	// its compare-and-swap until the context ends.
	tx, err := s.Pool().Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(bg, `SELECT 1 FROM threads WHERE id = 'th' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	defer cancel()
	_, err = commit(s, ctx, "th", a, a, 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled commit: %v, want the context's error", err)
	}
	if err := tx.Rollback(bg); err != nil {
		t.Fatal(err)
	}
	th, err := s.Thread(bg, "th")
	if err != nil || th.Head != a {
		t.Fatalf("head after a cancelled commit: %v (%v), want %s", th, err, a)
	}
	if list, _ := s.List(bg, "th", 0); len(list) != 1 {
		t.Fatalf("%d checkpoints after a cancelled commit, want 1", len(list))
	}
	b := mustCommit(t, s, "th", a, 1)
	if cp, err := s.Get(bg, "th", ""); err != nil || cp.ID != b {
		t.Fatalf("commit after the cancelled one: %v %v", cp, err)
	}
}

// A fork of a checkpoint that another process's GC pruned fails with
// ErrNotFound and leaves no orphan, even when this process committed that
// checkpoint itself (nothing about the parent is cached).
func TestForkOfCheckpointPrunedElsewhere(t *testing.T) {
	t.Parallel()
	a, u := open(t, nil)
	b := openURL(t, u, nil)
	c1 := mustCommit(t, a, "th", "", 0)
	c2 := mustCommit(t, a, "th", c1, 1)
	c3 := mustCommit(t, b, "th", c2, 2)
	if _, err := b.GC(bg, checkpoint.GCOptions{Keep: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := commit(a, bg, "th", c2, c3, 3); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("fork of a pruned checkpoint: %v, want ErrNotFound", err)
	}
	if list, err := a.List(bg, "th", 0); err != nil || len(list) != 1 || list[0].ID != c3 {
		t.Fatalf("after the failed fork: %v %v", list, err)
	}
	if cp, err := a.Get(bg, "th", ""); err != nil || len(cp.Values["messages"].([]any)) != 2 {
		t.Fatalf("head after GC: %v %v", cp, err)
	}
}

// A role that may use a migrated schema but not create anything in the
// database or the schema opens it and commits: opening creates only what
// is missing.
func TestOpenWithoutCreatePrivilege(t *testing.T) {
	t.Parallel()
	admin, _ := open(t, nil)
	var schema string
	if err := admin.Pool().QueryRow(bg, `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	role := schema + "_user"
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT USAGE ON SCHEMA ` + schema + ` TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ` + schema + ` TO ` + role,
		`GRANT USAGE ON ALL SEQUENCES IN SCHEMA ` + schema + ` TO ` + role,
	} {
		if _, err := admin.Pool().Exec(bg, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		for _, q := range []string{`DROP OWNED BY ` + role, `DROP ROLE ` + role} {
			if _, err := admin.Pool().Exec(bg, q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	p, err := url.Parse(pgtest.WithSearchPath(pgtest.ServerURL(), schema))
	if err != nil {
		t.Fatal(err)
	}
	p.User = url.User(role)
	u := p.String()
	s := openURL(t, u, nil)
	mustCommit(t, s, "th", "", 0)
	if _, err := s.Pool().Exec(bg, `CREATE TABLE probe (x int)`); err == nil {
		t.Fatal("the role can create tables: the test proves nothing")
	}
}

// Storage grows linearly with a messages thread, not with its square:
// deltas between geometrically spaced snapshots, as on SQLite.
func TestStorageLinear(t *testing.T) {
	t.Parallel()
	g, errs := spec.Parse("chat.yaml", []byte(chatGraph), nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	grown := func(n int) int64 {
		s, _ := open(t, nil)
		empty, err := s.Size(bg)
		if err != nil {
			t.Fatal(err)
		}
		r := &runtime.Runner{Graph: g, Saver: s, Version: "test"}
		if _, err := r.Run(bg, runtime.RunOptions{Thread: "chat", Input: map[string]any{"target": n}}); err != nil {
			t.Fatal(err)
		}
		full, err := s.Size(bg)
		if err != nil {
			t.Fatal(err)
		}
		return full - empty
	}
	small, large := grown(200), grown(800)
	// Linear is 4×; storing the whole list per step would be about 16×.
	if ratio := float64(large) / float64(small); ratio > 6 {
		t.Fatalf("800 messages take %d bytes, 200 take %d: %.1f×, want about 4×", large, small, ratio)
	} else {
		t.Logf("200 messages: %d bytes, 800: %d bytes (%.1f×)", small, large, ratio)
	}
}
