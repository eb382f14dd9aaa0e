package checkpoint

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// TestMemoryKeepsFewValues commits a 100-step chain and a fork from a
// checkpoint whose values were dropped, checks that only every
// memKeepEvery-th checkpoint of a chain (and each head) keeps a values
// map, and that every checkpoint's values read back as committed, by Get
// and by History.
func TestMemoryKeepsFewValues(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	var ids runtime.IDClock
	now := time.Unix(1_700_000_000, 0).UTC()
	want := map[string]map[string]any{}
	commit := func(parent string, head string, values map[string]any, d runtime.Delta) string {
		t.Helper()
		if parent != "" {
			values = spec.DeepCopy(want[parent]).(map[string]any)
			if err := runtime.ApplyDelta(values, d); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(time.Second)
		id := ids.Next(now, parent)
		cp := &runtime.Checkpoint{Thread: "t", ID: id, ParentID: parent, Values: values, Delta: d,
			Metadata: runtime.Metadata{Source: runtime.SourceLoop, Writes: map[string][]string{"n": {"count", "log"}}, Time: now}}
		if err := m.Commit(ctx, &runtime.Commit{Checkpoint: cp, ExpectHead: head, Thread: runtime.Thread{ID: "t", Status: runtime.StatusRunning, Updated: now}}); err != nil {
			t.Fatal(err)
		}
		want[id] = spec.DeepCopy(values).(map[string]any)
		return id
	}
	root := commit("", "", map[string]any{"count": 0, "log": []any{}}, runtime.Delta{"count": {Kind: runtime.OpSet, Value: 0}})
	chain := []string{root}
	for i := 1; i <= 100; i++ {
		prev := chain[len(chain)-1]
		chain = append(chain, commit(prev, prev, nil, runtime.Delta{
			"count": {Kind: runtime.OpSet, Value: i},
			"log":   {Kind: runtime.OpAppend, Value: []any{fmt.Sprintf("step %d", i)}},
		}))
	}
	fork := commit(chain[40], chain[100], nil, runtime.Delta{"log": {Kind: runtime.OpAppend, Value: []any{"fork"}}})

	th := m.threads["t"]
	withValues := 0
	for _, e := range th.cps {
		if e.cp.Values != nil {
			withValues++
		}
	}
	// The root, steps 16, 32, …, 96 (6), the chain's head and the fork.
	if withValues != 9 {
		t.Fatalf("%d of %d checkpoints keep values, want 9", withValues, len(th.cps))
	}
	for id, w := range want {
		got, err := m.Get(ctx, "t", id)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Values, w) {
			t.Fatalf("Get %s: values %v, want %v", id, got.Values, w)
		}
	}
	if got, _ := m.Get(ctx, "t", fork); len(got.Values["log"].([]any)) != 41 {
		t.Fatalf("fork log %v", got.Values["log"])
	}
	hist, err := m.History(ctx, "t", runtime.HistoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != len(want) {
		t.Fatalf("History: %d checkpoints, want %d", len(hist), len(want))
	}
	for _, cp := range hist {
		if !reflect.DeepEqual(cp.Values, want[cp.ID]) {
			t.Fatalf("History %s: values %v, want %v", cp.ID, cp.Values, want[cp.ID])
		}
	}
}
