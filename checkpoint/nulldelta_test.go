package checkpoint_test

import (
	"context"
	"database/sql"
	"reflect"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
)

// Older versions stored an empty write to an append or messages field as
// a delta of null ({"op":"append","v":null}). Such threads load again:
// the null delta changes nothing, alone or composed with the deltas after
// it (item 1 of "The core keeps every promise").
func TestNullListDeltasOfOlderVersionsLoad(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/lgrun.db"
	s := MustOpenPath(t, path, nil)
	msg := func(id, content string) map[string]any {
		return map[string]any{"id": id, "role": "user", "content": content}
	}
	values := map[string]any{"f": []any{"a"}, "m": []any{msg("m1", "hi")}}
	parent := ""
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	var clock runtime.IDClock
	commit := func(step int, d runtime.Delta) {
		t.Helper()
		cp := &runtime.Checkpoint{Thread: "t", ID: clock.Next(now, parent), ParentID: parent, Step: step,
			Values: values, Delta: d, Metadata: runtime.Metadata{Source: runtime.SourceLoop, Time: now}}
		th := runtime.Thread{ID: "t", Status: runtime.StatusDone, Updated: now}
		if err := s.Commit(ctx, &runtime.Commit{Checkpoint: cp, ExpectHead: parent, Thread: th}); err != nil {
			t.Fatal(err)
		}
		parent = cp.ID
		ids = append(ids, cp.ID)
	}
	commit(0, runtime.Delta{"f": {Kind: runtime.OpSet, Value: values["f"]}, "m": {Kind: runtime.OpSet, Value: values["m"]}})
	// What an empty write stored before: JSON null.
	commit(1, runtime.Delta{"f": {Kind: runtime.OpAppend}, "m": {Kind: runtime.OpMessages}})
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const old = `{"f":{"op":"append","v":null},"m":{"op":"messages","v":null}}`
	if _, err := db.Exec(`UPDATE checkpoints SET delta = ? WHERE id = ?`, old, ids[1]); err != nil {
		t.Fatal(err)
	}
	values = map[string]any{"f": []any{"a", "b"}, "m": []any{msg("m1", "hi"), msg("m2", "more")}}
	commit(2, runtime.Delta{"f": {Kind: runtime.OpAppend, Value: []any{"b"}}, "m": {Kind: runtime.OpMessages, Value: []any{msg("m2", "more")}}})
	commit(3, runtime.Delta{"f": {Kind: runtime.OpAppend}, "m": {Kind: runtime.OpMessages}})

	want := []map[string]any{
		{"f": []any{"a"}, "m": []any{msg("m1", "hi")}},
		{"f": []any{"a"}, "m": []any{msg("m1", "hi")}},
		values, values,
	}
	for i, id := range ids {
		cp, err := s.Get(ctx, "t", id)
		if err != nil {
			t.Fatalf("checkpoint %d: %v", i, err)
		}
		if !reflect.DeepEqual(cp.Values, want[i]) {
			t.Fatalf("checkpoint %d: values %#v, want %#v", i, cp.Values, want[i])
		}
	}
	if _, err := s.List(ctx, "t", 0); err != nil {
		t.Fatal(err)
	}
}
