package checkpoint_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// flipTarget is a column of a table whose bytes TestFlippedBytes damages.
type flipTarget struct {
	table string
	key   string // the columns naming a row
	cols  []string
}

// Every column that determines what a read returns, but the ones that
// name a checkpoint or thread row (a checkpoint's thread and id, a
// thread's id): damage there moves a row out of reach instead of changing
// it, and is reported (as a missing head or chain link) only where
// another row refers to it. A write moved away from the head is missed by
// its count in the thread's row (the fixture's writes all belong to
// heads).
var flipTargets = []flipTarget{
	{"checkpoints", "thread, id", []string{"parent", "step", "turn_step", "next", "waiting", "source", "writes", "graph", "time", "usage", "totals", "records", "delta", "snapshot", "sum", "snap_sum", "link_sum", "pending", "updated_off", "live_sum"}},
	{"writes", "thread, checkpoint, seq", []string{"thread", "checkpoint", "seq", "node", "kind", "data", "sum"}},
	{"threads", "id", []string{"head", "status", "error", "graph", "graph_hash", "graph_file", "config", "updated", "pending", "sum", "follow"}},
	{"graphs", "id", []string{"name", "hash", "version"}},
}

// TestFlippedBytes flips one byte at a time, at random (with a fixed
// seed), in the stored rows of a real database (the fixture of the
// current layout, which uses every part of it), and reads everything back:
// every read must return exactly what it did before the damage, or a
// *runtime.CorruptError naming the thread and the damaged checkpoint —
// never changed state. List must keep returning the undamaged checkpoints.
func TestFlippedBytes(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "lgrun.db")
	copyFile(t, filepath.Join("testdata", fmt.Sprintf("v%d.db", checkpoint.SchemaVersion)), path)
	s := MustOpenPath(t, path, nil)
	// One connection, without foreign key checks, so that damage can
	// point a row at a graph that does not exist.
	db, err := s.DB().Conn(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(bg, `PRAGMA foreign_keys = OFF`); err != nil {
		t.Fatal(err)
	}

	want := readAll(t, s)
	liveHeads := map[string]string{}
	rows, err := db.QueryContext(bg, `SELECT t.id, max(c.id) FROM threads t JOIN checkpoints c ON c.thread = t.id WHERE t.follow = 1 GROUP BY t.id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var th, id string
		if err := rows.Scan(&th, &id); err != nil {
			t.Fatal(err)
		}
		liveHeads[th] = id
	}
	rows.Close()
	if len(liveHeads) == 0 {
		t.Fatal("the fixture has no thread whose row follows its greatest checkpoint")
	}
	rng := rand.New(rand.NewPCG(2026, 11))
	const trials = flipTrials
	detected := 0
	for trial := 0; trial < trials; trial++ {
		ft := flipTargets[rng.IntN(len(flipTargets))]
		col := ft.cols[rng.IntN(len(ft.cols))]
		var n int
		if err := db.QueryRowContext(bg, `SELECT count(*) FROM `+ft.table+` WHERE `+col+` IS NOT NULL`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			trial--
			continue
		}
		// The row, by its key, and what it belongs to.
		q := fmt.Sprintf(`SELECT %s, typeof(%s), %s FROM %s WHERE %s IS NOT NULL ORDER BY %s LIMIT 1 OFFSET ?`, ft.key, col, col, ft.table, col, ft.key)
		var key []any
		var thread, cpID string
		var typ string
		var orig any
		switch ft.table {
		case "checkpoints":
			if err := db.QueryRowContext(bg, q, rng.IntN(n)).Scan(&thread, &cpID, &typ, &orig); err != nil {
				t.Fatal(err)
			}
			key = []any{thread, cpID}
		case "writes":
			var seq int64
			if err := db.QueryRowContext(bg, q, rng.IntN(n)).Scan(&thread, &cpID, &seq, &typ, &orig); err != nil {
				t.Fatal(err)
			}
			key = []any{thread, cpID, seq}
		case "threads":
			if err := db.QueryRowContext(bg, q, rng.IntN(n)).Scan(&thread, &typ, &orig); err != nil {
				t.Fatal(err)
			}
			key = []any{thread}
		case "graphs":
			var id int64
			if err := db.QueryRowContext(bg, q, rng.IntN(n)).Scan(&id, &typ, &orig); err != nil {
				t.Fatal(err)
			}
			key = []any{id}
		}
		damaged, ok := flipByte(rng, typ, orig)
		if !ok {
			trial--
			continue
		}
		where := ""
		for i, k := range strings.Split(ft.key, ", ") {
			if i > 0 {
				where += " AND "
			}
			where += k + " = ?"
		}
		set := func(v any) {
			t.Helper()
			if _, err := db.ExecContext(bg, `UPDATE `+ft.table+` SET `+col+` = ? WHERE `+where, append([]any{v}, key...)...); err != nil {
				t.Fatalf("trial %d: damage %s.%s: %v", trial, ft.table, col, err)
			}
		}
		set(damaged)
		for i, k := range strings.Split(ft.key, ", ") {
			if k == col {
				key[i] = damaged // the restore finds the row by its new key
			}
		}
		what := fmt.Sprintf("trial %d: byte flipped in %s.%s of %v (%s %.60q → %.60q)", trial, ft.table, col, key, typ, fmt.Sprint(orig), fmt.Sprint(damaged))
		// The greatest checkpoint of a thread whose row follows it holds
		// the thread's state (layout version 5): damage to that is
		// damage to the thread, which Threads reports.
		live := ft.table == "checkpoints" && liveHeads[thread] == cpID && slices.Contains([]string{"time", "pending", "updated_off", "live_sum"}, col)
		if checkReads(t, s, want, what, ft.table, thread, cpID, live) {
			detected++
		}
		set(orig)
	}
	// Every damaged row is one some read verifies: each trial must have
	// been caught, not just left unchanged by luck.
	if detected != trials {
		t.Errorf("%d of %d flipped bytes were reported as corrupt, want all", detected, trials)
	}
	// Undamaged again, everything reads as before.
	got := readAll(t, s)
	for k, v := range want {
		if !bytes.Equal(got[k], v) {
			t.Fatalf("after restoring: %s reads differently", k)
		}
	}
}

// flipByte returns v (as scanned, of SQLite type typ) with one byte
// XOR-ed with a random non-zero value, in the same storage type.
func flipByte(rng *rand.Rand, typ string, v any) (any, bool) {
	mask := byte(1 + rng.IntN(255))
	switch typ {
	case "integer":
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(v.(int64)))
		b[rng.IntN(8)] ^= mask
		return int64(binary.BigEndian.Uint64(b[:])), true
	case "text", "blob":
		var b []byte
		switch x := v.(type) {
		case string:
			b = []byte(x)
		case []byte:
			b = append([]byte(nil), x...)
		}
		if len(b) == 0 {
			return nil, false
		}
		b[rng.IntN(len(b))] ^= mask
		if typ == "text" {
			return string(b), true
		}
		return b, true
	}
	return nil, false
}

// readAll reads every thread's List and every checkpoint's Get, as JSON
// by "thread/list" and "thread/id".
func readAll(t *testing.T, s *checkpoint.SQLite) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	ths, err := s.Threads(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, th := range ths {
		out[th.ID+"/thread"] = mustJSON(t, th)
		cps, err := s.List(bg, th.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, cp := range cps {
			out[th.ID+"/list/"+cp.ID] = mustJSON(t, cp)
			full, err := s.Get(bg, th.ID, cp.ID)
			if err != nil {
				t.Fatal(err)
			}
			out[th.ID+"/get/"+cp.ID] = mustJSON(t, full)
		}
		head, err := s.Get(bg, th.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		out[th.ID+"/head"] = mustJSON(t, head)
	}
	return out
}

// checkReads reads everything of want again after damage to a row of
// table (of thread and checkpoint cpID, for the tables that have them)
// and reports whether the damage was detected. Any read that returns
// changed state fails the test. live tells that the damaged checkpoint
// row holds its thread's state (see checkpoint/follow.go), which Threads
// may then leave out, as it leaves out a damaged threads row.
func checkReads(t *testing.T, s *checkpoint.SQLite, want map[string][]byte, what, table, thread, cpID string, live bool) bool {
	t.Helper()
	detected := false
	corrupt := func(key string, err error) {
		t.Helper()
		var ce *runtime.CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("%s: %s: %v, want the original or a *runtime.CorruptError", what, key, err)
		}
		if table != "graphs" && (ce.Thread != thread || ce.Checkpoint != cpID) {
			t.Fatalf("%s: %s: the error names checkpoint %q of thread %q, want %q of %q: %v", what, key, ce.Checkpoint, ce.Thread, cpID, thread, err)
		}
		detected = true
	}
	same := func(key string, v any) {
		t.Helper()
		if got := mustJSON(t, v); !bytes.Equal(got, want[key]) {
			t.Fatalf("%s: %s silently changed:\n got  %s\n want %s", what, key, got, want[key])
		}
	}
	ths, err := s.Threads(bg)
	if err != nil {
		corrupt("threads", err)
	}
	listed := map[string]bool{}
	for _, th := range ths {
		listed[th.ID] = true
		same(th.ID+"/thread", th)
	}
	var ids []string
	for k := range want {
		if id, ok := strings.CutSuffix(k, "/thread"); ok {
			ids = append(ids, id)
			if !listed[id] && (table != "threads" && !live || id != thread) {
				t.Fatalf("%s: Threads left out thread %q (%v)", what, id, err)
			}
		}
	}
	for _, id := range ids {
		if table != "graphs" && id != thread {
			continue // damage to a thread's rows reaches no other thread
		}
		if th, err := s.Thread(bg, id); err != nil {
			corrupt(id+"/thread", err)
		} else {
			same(id+"/thread", th)
		}
		cps, err := s.List(bg, id, 0)
		if err != nil {
			corrupt(id+"/list", err)
		}
		listed := map[string]bool{}
		for _, cp := range cps {
			listed[cp.ID] = true
			same(id+"/list/"+cp.ID, cp)
		}
		// List leaves out only what it reports: with one damaged
		// checkpoint row, every other one is still listed.
		for k := range want {
			if cp, ok := strings.CutPrefix(k, id+"/list/"); ok && !listed[cp] && (table != "checkpoints" && table != "graphs" || table == "checkpoints" && cp != cpID) {
				t.Fatalf("%s: List of %q left out checkpoint %s (%v)", what, id, cp, err)
			}
		}
		for k := range want {
			cp, ok := strings.CutPrefix(k, id+"/get/")
			if !ok {
				continue
			}
			full, err := s.Get(bg, id, cp)
			if err != nil {
				corrupt(k, err)
				continue
			}
			same(k, full)
		}
		if head, err := s.Get(bg, id, ""); err != nil {
			corrupt(id+"/head", err)
		} else {
			same(id+"/head", head)
		}
	}
	return detected
}

// TestUnappliableDelta plants a row that passes its checksum but whose
// delta does not apply (a messages delta that is not a list):
// reading any checkpoint built on it names that row, the ones before it
// still load, and FindLastGood points at its parent.
func TestUnappliableDelta(t *testing.T) {
	s := MustOpen(t, nil)
	c := newChain(t, s, "t")
	c.step(10)
	cps := mustList(t, s, "t") // newest first: cps[9-i] is step i
	bad, good := cps[9-5], cps[9-4]
	if _, err := s.DB().Exec(`UPDATE checkpoints SET delta = '{"messages":{"op":"messages","v":"x"},"n":{"op":"set","v":5}}' WHERE thread = 't' AND id = ?`, bad.ID); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.Reseal(s, "t", bad.ID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", cps[0].ID, cps[9-7].ID, bad.ID} {
		_, err := s.Get(bg, "t", id)
		var ce *runtime.CorruptError
		if !errors.As(err, &ce) || ce.Thread != "t" || ce.Checkpoint != bad.ID || !strings.Contains(err.Error(), "messages delta is string, want list") {
			t.Fatalf("Get %q: %v, want a *runtime.CorruptError naming checkpoint %s and the delta", id, err, bad.ID)
		}
		err = runtime.FindLastGood(bg, s, err)
		want := fmt.Sprintf("checkpoint %s of thread \"t\" cannot be read: its delta does not apply: field \"messages\": messages delta is string, want list; the last good checkpoint is %s", bad.ID, good.ID)
		if err.Error() != want {
			t.Fatalf("Get %q with the last good checkpoint:\n got  %v\n want %s", id, err, want)
		}
	}
	for _, cp := range cps[9-4:] {
		if _, err := s.Get(bg, "t", cp.ID); err != nil {
			t.Errorf("checkpoint %s (step %d), before the bad one: %v", cp.ID, cp.Step, err)
		}
	}
	if got, err := s.List(bg, "t", 0); err != nil || len(got) != 10 {
		t.Errorf("List: %d checkpoints, %v; want all 10 (the row itself decodes)", len(got), err)
	}
}

// TestDamagedThreadRow damages one thread's row: Thread refuses it,
// Threads and ChildThreads return the others with a CorruptError for it,
// and the rows of other threads are not its concern.
func TestDamagedThreadRow(t *testing.T) {
	s := MustOpen(t, nil)
	for _, id := range []string{"p", "p/a", "p/b", "q"} {
		newChain(t, s, id).step(2)
	}
	if _, err := s.DB().Exec(`UPDATE threads SET status = 'done' WHERE id = 'p/a'`); err != nil {
		t.Fatal(err)
	}
	var ce *runtime.CorruptError
	if _, err := s.Thread(bg, "p/a"); !errors.As(err, &ce) || ce.Thread != "p/a" || ce.Checkpoint != "" {
		t.Fatalf("Thread of the damaged row: %v", err)
	}
	if _, err := s.Get(bg, "p/a", ""); !errors.As(err, &ce) || ce.Thread != "p/a" {
		t.Fatalf("Get of its head: %v", err)
	}
	ts, err := s.Threads(bg)
	if bad, ok := runtime.CorruptErrors(err); !ok || len(bad) != 1 || bad[0].Thread != "p/a" || len(ts) != 3 {
		t.Fatalf("Threads: %d rows, %v", len(ts), err)
	}
	kids, err := runtime.ChildThreads(bg, s, "p")
	if bad, ok := runtime.CorruptErrors(err); !ok || len(bad) != 1 || len(kids) != 1 || kids[0].ID != "p/b" {
		t.Fatalf("ChildThreads of p: %v, %v", kids, err)
	}
	if kids, err := runtime.ChildThreads(bg, s, "q"); err != nil || len(kids) != 0 {
		t.Fatalf("ChildThreads of q: %v, %v", kids, err)
	}
}
