package postgres_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
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
	want := map[string]map[string]any{}
	for _, cp := range list {
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
		if err != nil || len(h) != len(want) {
			t.Fatalf("%s: history: %d checkpoints, %v", label, len(h), err)
		}
		for _, cp := range h {
			if !reflect.DeepEqual(cp.Values, want[cp.ID]) {
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
		got, err := s.Get(bg, "chat", cp.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Values, want[cp.ID]) {
			t.Fatalf("after GC: checkpoint %s reads other values", cp.ID)
		}
	}
}
