package postgres_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/checkpoint/postgres"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Snapshots of 1 KiB or more are stored compressed, as SQLite stores
// them; rows stored plain (by earlier versions) still read, alone or
// mixed with compressed ones in one chain, through Get, History and GC.
func TestSnapshotCompressedAndPlain(t *testing.T) {
	t.Parallel()
	s, _ := open(t, nil)
	g, errs := spec.Parse("chat.yaml", []byte(chatGraph), nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	r := &runtime.Runner{Graph: g, Saver: s, Version: "test"}
	if _, err := r.Run(bg, runtime.RunOptions{Thread: "chat", Input: map[string]any{"target": 400}}); err != nil {
		t.Fatal(err)
	}
	// Rows as layout version 2 stored them.
	if err := postgres.Unblock(bg, s, "chat"); err != nil {
		t.Fatal(err)
	}
	snapped := func(compressed bool) []string {
		q := `SELECT id FROM checkpoints WHERE thread = 'chat' AND snapshot IS NOT NULL AND (get_byte(snapshot, 0) = 1) = $1 ORDER BY id`
		rows, err := s.Pool().Query(bg, q, compressed)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	large := snapped(true)
	if len(large) < 2 {
		t.Fatalf("%d compressed snapshots (plain: %v), want at least 2", len(large), snapped(false))
	}
	list, err := s.List(bg, "chat", 0)
	if err != nil || len(list) != 401 {
		t.Fatal(len(list), err)
	}
	// Every 8th checkpoint, the snapshots and the checkpoints after them
	// (a full pass of 401 Gets, four times, is slow on a loaded machine).
	sample := map[string]bool{}
	for _, id := range large {
		sample[id] = true
	}
	for i, cp := range list {
		if i%8 == 0 || sample[cp.ID] || (i+1 < len(list) && sample[list[i+1].ID] && cp.ParentID == list[i+1].ID) {
			sample[cp.ID] = true
		}
	}
	want := map[string]map[string]any{}
	for _, cp := range list {
		if !sample[cp.ID] {
			continue
		}
		got, err := s.Get(bg, "chat", cp.ID)
		if err != nil {
			t.Fatal(err)
		}
		want[cp.ID] = got.Values
	}
	check := func(label string) {
		t.Helper()
		for id, v := range want {
			got, err := s.Get(bg, "chat", id)
			if err != nil {
				t.Fatalf("%s: get %s: %v", label, id, err)
			}
			if !reflect.DeepEqual(got.Values, v) {
				t.Fatalf("%s: checkpoint %s reads other values", label, id)
			}
		}
		h, err := s.History(bg, "chat", runtime.HistoryOptions{})
		if err != nil || len(h) != len(list) {
			t.Fatalf("%s: history: %d checkpoints, %v", label, len(h), err)
		}
		for _, cp := range h {
			if v, ok := want[cp.ID]; ok && !reflect.DeepEqual(cp.Values, v) {
				t.Fatalf("%s: history of %s reads other values", label, cp.ID)
			}
		}
	}
	// Store a snapshot as earlier versions did: its JSON, with the row's
	// checksums renewed for it.
	plain := func(id string) {
		t.Helper()
		var row checkpoint.Row
		if err := s.Pool().QueryRow(bg, `SELECT c.thread, c.id, c.parent, c.step, c.turn_step, c.next, c.waiting, c.source, c.writes,
			g.name, g.hash, g.version, c.time, c.usage, c.totals, c.records, c.delta
			FROM checkpoints c JOIN graphs g ON g.id = c.graph WHERE c.thread = 'chat' AND c.id = $1`, id).Scan(
			&row.Thread, &row.ID, &row.Parent, &row.Step, &row.TurnStep, &row.Next, &row.Waiting, &row.Source, &row.Writes,
			&row.Graph, &row.GraphHash, &row.Version, &row.Time, &row.Usage, &row.Totals, &row.Records, &row.Delta); err != nil {
			t.Fatal(err)
		}
		// The checksum covers the delta's JSON, not its stored form.
		d, err := postgres.DecodeDelta(row.Delta)
		if err != nil {
			t.Fatal(err)
		}
		row.Delta = d
		js, err := checkpoint.Marshal(want[id])
		if err != nil {
			t.Fatal(err)
		}
		row.Seal(js)
		if _, err := s.Pool().Exec(bg, `UPDATE checkpoints SET snapshot = $1, sum = $2, snap_sum = $3 WHERE thread = 'chat' AND id = $4`,
			js, row.Sum, row.SnapSum, id); err != nil {
			t.Fatal(err)
		}
	}
	check("compressed")
	plain(large[0])
	if got := snapped(true); len(got) != len(large)-1 {
		t.Fatalf("compressed snapshots %v after rewriting %s plain", got, large[0])
	}
	check("mixed")
	for _, id := range large[1:] {
		plain(id)
	}
	if got := snapped(true); len(got) != 0 {
		t.Fatalf("compressed snapshots %v left", got)
	}
	check("plain")
	// GC materialises the values of a kept checkpoint whose parent goes:
	// that snapshot is written compressed, on a chain of plain ones.
	if _, err := s.GC(context.Background(), checkpoint.GCOptions{Keep: 50}); err != nil {
		t.Fatal(err)
	}
	if got := snapped(true); len(got) != 1 {
		t.Fatalf("after GC, compressed snapshots %v, want the new oldest checkpoint's", got)
	}
	after, err := s.List(bg, "chat", 0)
	if err != nil || len(after) != 50 {
		t.Fatal(len(after), err)
	}
	for _, cp := range after {
		if !sample[cp.ID] {
			continue
		}
		got, err := s.Get(bg, "chat", cp.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Values, want[cp.ID]) {
			t.Fatalf("after GC: checkpoint %s reads other values", cp.ID)
		}
	}
}

// A step's delta of 128 bytes or more is stored compressed when that is
// smaller; deltas stored plain (by earlier versions) read alongside, and a
// damaged compressed delta is a CorruptError naming its row.
func TestDeltaCompressedAndPlain(t *testing.T) {
	t.Parallel()
	s, _ := open(t, nil)
	g, errs := spec.Parse("chat.yaml", []byte(chatGraph), nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	r := &runtime.Runner{Graph: g, Saver: s, Version: "test"}
	if _, err := r.Run(bg, runtime.RunOptions{Thread: "chat", Input: map[string]any{"target": 200}}); err != nil {
		t.Fatal(err)
	}
	if err := postgres.Unblock(bg, s, "chat"); err != nil {
		t.Fatal(err)
	}
	var compressed, all, stored, raw int
	if err := s.Pool().QueryRow(bg, `SELECT count(*) FILTER (WHERE get_byte(delta, 0) = 1), count(*), sum(octet_length(delta)) FROM checkpoints WHERE thread = 'chat'`).Scan(&compressed, &all, &stored); err != nil {
		t.Fatal(err)
	}
	if compressed < 195 || all != 201 {
		t.Fatalf("%d of %d deltas stored compressed, want the 200 steps'", compressed, all)
	}
	list, err := s.List(bg, "chat", 0)
	if err != nil || len(list) != all {
		t.Fatal(len(list), err)
	}
	want := map[string]map[string]any{}
	for _, cp := range list {
		got, err := s.Get(bg, "chat", cp.ID)
		if err != nil {
			t.Fatal(err)
		}
		want[cp.ID] = got.Values
		if n := len(cp.Delta); n == 0 {
			t.Fatalf("List's checkpoint %s has no delta", cp.ID)
		}
	}
	// Rewrite every other delta as its JSON, as earlier versions stored it.
	rows, err := s.Pool().Query(bg, `SELECT id, delta FROM checkpoints WHERE thread = 'chat' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	plain := map[string][]byte{}
	i := 0
	for rows.Next() {
		var id string
		var b []byte
		if err := rows.Scan(&id, &b); err != nil {
			t.Fatal(err)
		}
		js, err := postgres.DecodeDelta(b)
		if err != nil {
			t.Fatal(err)
		}
		raw += len(js)
		if i%2 == 0 {
			plain[id] = js
		}
		i++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("deltas: %d bytes stored, %d bytes of JSON", stored, raw)
	if stored*2 > raw {
		t.Errorf("compressed deltas take %d bytes of %d", stored, raw)
	}
	for id, js := range plain {
		if _, err := s.Pool().Exec(bg, `UPDATE checkpoints SET delta = $1 WHERE thread = 'chat' AND id = $2`, js, id); err != nil {
			t.Fatal(err)
		}
	}
	for id, v := range want {
		got, err := s.Get(bg, "chat", id)
		if err != nil {
			t.Fatalf("mixed deltas: get %s: %v", id, err)
		}
		if !reflect.DeepEqual(got.Values, v) {
			t.Fatalf("mixed deltas: checkpoint %s reads other values", id)
		}
	}
	h, err := s.History(bg, "chat", runtime.HistoryOptions{})
	if err != nil || len(h) != all {
		t.Fatalf("mixed deltas: history of %d, %v", len(h), err)
	}
	for _, cp := range h {
		if !reflect.DeepEqual(cp.Values, want[cp.ID]) {
			t.Fatalf("mixed deltas: history of %s reads other values", cp.ID)
		}
	}
	// Damage a compressed delta: its DEFLATE stream then fails to
	// inflate or inflates to other bytes, and either way the row fails.
	head := list[0].ID
	var bad string
	if err := s.Pool().QueryRow(bg, `SELECT id FROM checkpoints WHERE thread = 'chat' AND get_byte(delta, 0) = 1 AND id < $1 ORDER BY id DESC LIMIT 1`, head).Scan(&bad); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(bg, `UPDATE checkpoints SET delta = set_byte(delta, 5, get_byte(delta, 5) # 255) WHERE thread = 'chat' AND id = $1`, bad); err != nil {
		t.Fatal(err)
	}
	var ce *runtime.CorruptError
	if _, err := s.Get(bg, "chat", bad); !errors.As(err, &ce) || ce.Checkpoint != bad {
		t.Fatalf("Get of a damaged compressed delta: %v, want a CorruptError naming %s", err, bad)
	}
	if l, err := s.List(bg, "chat", 0); !errors.As(err, &ce) || ce.Checkpoint != bad || len(l) != all-1 {
		t.Fatalf("List with a damaged compressed delta: %d rows, %v", len(l), err)
	}
}

// A schema of layout version 1 (with its rows) is migrated to the current
// version on open, and its threads and checkpoints read as before.
func TestMigrateFromVersion1(t *testing.T) {
	t.Parallel()
	s, u := open(t, nil)
	a := mustCommit(t, s, "th", "", 0)
	b := mustCommit(t, s, "th", a, 1)
	if err := postgres.Unblock(bg, s, "th"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Put the schema back to version 1: what versions 2 and 3 changed,
	// undone.
	raw := openURL(t, u, nil) // migrates nothing: the schema is current
	for _, q := range []string{
		`DROP TABLE blocks`,
		`DROP TABLE open_blocks`,
		`CREATE INDEX threads_updated ON threads (updated DESC, id)`,
		`ALTER TABLE threads RESET (fillfactor)`,
		`DELETE FROM lgrun_migrations WHERE version > 1`,
	} {
		if _, err := raw.Pool().Exec(bg, q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	s = openURL(t, u, nil)
	var version int
	var index bool
	var opts string
	if err := s.Pool().QueryRow(bg, `SELECT (SELECT max(version) FROM lgrun_migrations), to_regclass('threads_updated') IS NOT NULL,
		(SELECT COALESCE(array_to_string(reloptions, ','), '') FROM pg_class WHERE oid = 'threads'::regclass)`).Scan(&version, &index, &opts); err != nil {
		t.Fatal(err)
	}
	if version != postgres.SchemaVersion || index || opts != "fillfactor=80" {
		t.Fatalf("after migrating: version %d, threads_updated there: %v, threads options %q", version, index, opts)
	}
	c := mustCommit(t, s, "th", b, 2)
	th, err := s.Thread(bg, "th")
	if err != nil || th.Head != c {
		t.Fatalf("thread after migrating: %+v, %v", th, err)
	}
	if l, err := s.List(bg, "th", 0); err != nil || len(l) != 3 {
		t.Fatalf("list after migrating: %d, %v", len(l), err)
	}
	if _, err := s.Get(bg, "th", b); err != nil {
		t.Fatal(err)
	}
}
