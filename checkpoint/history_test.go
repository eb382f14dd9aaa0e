package checkpoint_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// sameHistory fails unless the history walk of every thread of s returns
// what one Get per checkpoint does: the same checkpoints and the same
// error, to the letter. It reports whether some history had an error.
func sameHistory(t *testing.T, s *checkpoint.SQLite, what string) bool {
	t.Helper()
	failed := false
	ths, _ := s.Threads(bg)
	for _, th := range ths {
		for _, o := range []runtime.HistoryOptions{{}, {Limit: 2}} {
			want, werr := runtime.HistoryByGet(bg, s, th.ID, o)
			got, gerr := s.History(bg, th.ID, o)
			if fmt.Sprint(gerr) != fmt.Sprint(werr) {
				t.Fatalf("%s: thread %s: History error\n got  %v\n want %v", what, th.ID, gerr, werr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: thread %s: History returned\n got  %s\n want %s", what, th.ID, mustJSON(t, got), mustJSON(t, want))
			}
			failed = failed || werr != nil
		}
	}
	return failed
}

// TestHistoryFlippedBytes damages the fixture database of the current
// layout one byte at a time, as TestFlippedBytes does, and holds the
// history walk to one Get per checkpoint on the damaged database: the
// same checkpoints, and the same *runtime.CorruptError naming the same
// row.
func TestHistoryFlippedBytes(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "lgrun.db")
	copyFile(t, filepath.Join("testdata", fmt.Sprintf("v%d.db", checkpoint.SchemaVersion)), path)
	s := MustOpenPath(t, path, nil)
	db, err := s.DB().Conn(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(bg, `PRAGMA foreign_keys = OFF`); err != nil {
		t.Fatal(err)
	}
	if sameHistory(t, s, "undamaged") {
		t.Fatal("the undamaged fixture has errors")
	}
	detected := 0
	rng := rand.New(rand.NewPCG(2026, 16))
	for trial := 0; trial < flipTrials/2; trial++ {
		ft := flipTargets[rng.IntN(len(flipTargets))]
		col := ft.cols[rng.IntN(len(ft.cols))]
		keys := strings.Split(ft.key, ", ")
		q := fmt.Sprintf(`SELECT %s, typeof(%s), %s FROM %s WHERE %s IS NOT NULL ORDER BY %s`, ft.key, col, col, ft.table, col, ft.key)
		rows, err := db.QueryContext(bg, q)
		if err != nil {
			t.Fatal(err)
		}
		var cands [][]any
		for rows.Next() {
			dest := make([]any, len(keys)+2)
			ptrs := make([]any, len(dest))
			for i := range dest {
				ptrs[i] = &dest[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			cands = append(cands, dest)
		}
		rows.Close()
		if len(cands) == 0 {
			trial--
			continue
		}
		c := cands[rng.IntN(len(cands))]
		key, typ, orig := c[:len(keys)], c[len(keys)].(string), c[len(keys)+1]
		damaged, ok := flipByte(rng, typ, orig)
		if !ok {
			trial--
			continue
		}
		where := ""
		for i, k := range keys {
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
		for i, k := range keys {
			if k == col {
				key[i] = damaged
			}
		}
		if sameHistory(t, s, fmt.Sprintf("trial %d: byte flipped in %s.%s of %v", trial, ft.table, col, key)) {
			detected++
		}
		set(orig)
	}
	// Not every damaged row is one a history reads, but most are.
	if detected < flipTrials/4 {
		t.Errorf("only %d of %d trials made a history fail", detected, flipTrials/2)
	}
	t.Logf("%d of %d trials made a history fail", detected, flipTrials/2)
	if sameHistory(t, s, "restored") {
		t.Fatal("errors after restoring")
	}
}

// TestHistoryBrokenChain deletes checkpoints from the middle of chains,
// with and without their snapshots, and holds the walk to Get.
func TestHistoryBrokenChain(t *testing.T) {
	t.Parallel()
	s := MustOpen(t, nil)
	th := "broken"
	ids := commitMessages(t, s, th, 120, 2000) // ~2 KB a step: several snapshots
	sameHistory(t, s, "whole")
	var snaps []string
	rows, err := s.DB().QueryContext(bg, `SELECT id FROM checkpoints WHERE thread = ? AND snapshot IS NOT NULL ORDER BY id`, th)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, id)
	}
	rows.Close()
	if len(snaps) < 3 {
		t.Fatalf("only %d snapshots; the test needs a chain across several", len(snaps))
	}
	for _, id := range []string{ids[len(ids)/2], snaps[1], ids[0]} {
		if _, err := s.DB().ExecContext(bg, `DELETE FROM checkpoints WHERE thread = ? AND id = ?`, th, id); err != nil {
			t.Fatal(err)
		}
		if !sameHistory(t, s, "without "+id) {
			t.Fatalf("without %s: no error", id)
		}
	}
	if _, err := s.History(bg, th, runtime.HistoryOptions{}); err == nil {
		t.Fatal("History of a broken chain: no error")
	} else if ce := (*runtime.CorruptError)(nil); !errors.As(err, &ce) {
		t.Fatalf("History of a broken chain: %v, want a CorruptError", err)
	}
}

// commitMessages commits a thread of n checkpoints, each adding a message
// of about size bytes to a messages field, and returns their ids, oldest
// first.
func commitMessages(tb testing.TB, s runtime.Saver, thread string, n, size int) []string {
	tb.Helper()
	var clock runtime.IDClock
	pad := strings.Repeat("x", size)
	var ids []string
	values := map[string]any{}
	parent := ""
	for i := 0; i < n; i++ {
		d := runtime.Delta{"messages": {Kind: runtime.OpMessages, Value: []any{map[string]any{"id": fmt.Sprintf("m%d", i), "role": "user", "content": fmt.Sprint(i, pad)}}}, "count": {Kind: runtime.OpSet, Value: i}}
		if err := runtime.ApplyDelta(values, d); err != nil {
			tb.Fatal(err)
		}
		now := benchTime(i)
		cp := &runtime.Checkpoint{Thread: thread, ID: clock.Next(now, parent), ParentID: parent, Step: i, Values: values, Delta: d,
			Next: []string{"a"}, Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g", Time: now}}
		err := s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: parent, Thread: runtime.Thread{ID: thread, Status: runtime.StatusRunning, Graph: "g", Updated: now}})
		if err != nil {
			tb.Fatal(err)
		}
		copied := make(map[string]any, len(values))
		for k, v := range values {
			copied[k] = v
		}
		values = copied
		parent = cp.ID
		ids = append(ids, cp.ID)
	}
	return ids
}

// benchTime is the fixed clock of commitMessages: i milliseconds into 2026.
func benchTime(i int) time.Time {
	return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond)
}
