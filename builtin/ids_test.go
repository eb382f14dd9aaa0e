package builtin

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// A map over an llm node: every item's prompt and reply get an id of its
// own (the runtime names them, not the node kind), and the state read back
// from SQLite is the state of the run.
func TestMapOverLLMNodeKeepsEveryMessage(t *testing.T) {
	g := mustGraph(t, `version: 1
name: mapllm
state:
  messages: {type: messages}
  items: {type: list, items: string, default: [a, b, c]}
  item: {type: string}
models:
  m: {provider: mock, fixtures: f.yaml, model: x}
nodes:
  fan: {kind: map, over: state.items, node: agent, item_as: item}
  agent: {kind: llm, model: m, prompt: '{{ state.item }}'}
edges:
  - {from: START, to: fan}
  - {from: fan, to: END}
`, map[string]string{"f.yaml": "replies:\n  agent:\n    - text: done\n"})
	r, _ := newRunner(t, g, Options{})
	db, err := checkpoint.OpenSQLite(filepath.Join(t.TempDir(), "lgrun.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r.Saver = db
	res := runGraph(t, r, "t", nil)
	var got []string
	ids := map[string]bool{}
	for _, m := range res.Checkpoint.Values["messages"].([]any) {
		mm := m.(map[string]any)
		got = append(got, mm["role"].(string)+":"+mm["content"].(string))
		ids[mm["id"].(string)] = true
	}
	want := []string{"user:a", "assistant:done", "user:b", "assistant:done", "user:c", "assistant:done"}
	if !reflect.DeepEqual(got, want) || len(ids) != len(want) {
		t.Fatalf("messages %q with ids %v, want %q with distinct ids", got, ids, want)
	}
	stored, err := db.Get(context.Background(), "t", "")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(stored.Values, res.Checkpoint.Values) {
		t.Fatalf("reloaded %v\nlive %v", stored.Values, res.Checkpoint.Values)
	}
	if res.Status != runtime.StatusDone {
		t.Fatalf("status %s", res.Status)
	}
}
