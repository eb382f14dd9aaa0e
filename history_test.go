package lgrun_test

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/runtime"
)

const chatLoop = `version: 1
name: chat
limits: {steps: 100}
state:
  n: {type: int}
  messages: {type: messages}
nodes:
  talk:
    kind: set
    set:
      n: state.n + 1
      messages: '{"role": "assistant", "content": "reply " + string(state.n)}'
edges:
  - {from: START, to: talk}
  - {from: talk, when: state.n < 30, to: talk, else: END}
`

// HistoryValues returns, newest first, each checkpoint as State would
// for it, on SQLite and in memory.
func TestHistoryValues(t *testing.T) {
	ctx := context.Background()
	eng, err := lgrun.New()
	if err != nil {
		t.Fatal(err)
	}
	g, diags := eng.Parse("chat.yaml", []byte(chatLoop))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	db, err := lgrun.OpenSQLite(filepath.Join(t.TempDir(), "h.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for name, saver := range map[string]runtime.Saver{"sqlite": db, "memory": lgrun.NewMemorySaver()} {
		if _, err := eng.Run(ctx, g, saver, "t1", nil); err != nil {
			t.Fatal(err)
		}
		all, err := lgrun.History(ctx, saver, "t1")
		if err != nil {
			t.Fatal(err)
		}
		got, err := lgrun.HistoryValues(ctx, saver, "t1", runtime.HistoryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(all) || len(got) < 30 {
			t.Fatalf("%s: %d checkpoints with values, %d listed", name, len(got), len(all))
		}
		for i, cp := range got {
			if cp.ID != all[len(all)-1-i].ID {
				t.Fatalf("%s: checkpoint %d is %s, want %s (newest first)", name, i, cp.ID, all[len(all)-1-i].ID)
			}
			want, err := saver.Get(ctx, "t1", cp.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cp, want) {
				t.Fatalf("%s: checkpoint %s differs from Get", name, cp.ID)
			}
		}
		odd, err := lgrun.HistoryValues(ctx, saver, "t1", runtime.HistoryOptions{Limit: 3, Filter: func(cp *runtime.Checkpoint) bool { return cp.Step%2 == 1 }})
		if err != nil || len(odd) != 3 || odd[0].Step%2 != 1 || odd[0].Values["n"] != odd[0].Step {
			t.Fatalf("%s: filtered history %v, %v", name, odd, err)
		}
		if _, err := lgrun.HistoryValues(ctx, saver, "nope", runtime.HistoryOptions{}); err == nil {
			t.Fatalf("%s: history of a missing thread: no error", name)
		}
	}
}
