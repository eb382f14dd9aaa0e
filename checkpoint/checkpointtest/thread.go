package checkpointtest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

var bg = context.Background()

// base is a fixed clock so times round-trip exactly.
var base = time.Date(2025, 1, 2, 3, 4, 5, 600_000_000, time.UTC)

// thread builds a chain of checkpoints on one thread, keeping the values
// the saver must return for each checkpoint.
type thread struct {
	t      *testing.T
	s      runtime.Saver
	id     string
	head   string
	want   map[string]map[string]any // checkpoint id → values
	cps    map[string]*runtime.Checkpoint
	status runtime.Status
	tick   int
	ids    runtime.IDClock // the suite's own clock: no saver test shares one
}

func newThread(t *testing.T, s runtime.Saver, id string) *thread {
	return &thread{t: t, s: s, id: id, want: map[string]map[string]any{}, cps: map[string]*runtime.Checkpoint{}}
}

func (th *thread) now() time.Time {
	th.tick++
	return base.Add(time.Duration(th.tick) * time.Second)
}

func (th *thread) row(status runtime.Status) runtime.Thread {
	return runtime.Thread{
		ID: th.id, Status: status, Graph: "g", GraphHash: "hash1", GraphFile: "g.yaml",
		Config:  runtime.Config{StepLimit: 7, InterruptBefore: []string{"b"}},
		Created: base, Updated: th.now(),
	}
}

// commit commits a child of parent ("" for the first checkpoint) applying
// d, with the thread's current head as the expected head. It returns the
// new checkpoint's id.
func (th *thread) commit(parent string, d runtime.Delta, writes ...runtime.PendingWrite) string {
	th.t.Helper()
	cp, err := th.try(parent, th.head, d, writes...)
	if err != nil {
		th.t.Fatalf("commit child of %q: %v", parent, err)
	}
	return cp.ID
}

func (th *thread) try(parent, expect string, d runtime.Delta, writes ...runtime.PendingWrite) (*runtime.Checkpoint, error) {
	th.t.Helper()
	values := map[string]any{}
	step := 0
	if parent != "" {
		values = spec.DeepCopy(th.want[parent]).(map[string]any)
		step = th.cps[parent].Step + 1
	}
	if err := runtime.ApplyDelta(values, d); err != nil {
		th.t.Fatalf("test delta does not apply: %v", err)
	}
	cp := &runtime.Checkpoint{
		Thread: th.id, ParentID: parent, Step: step, TurnStep: 0,
		Values: values, Delta: d,
		Next:    []string{"a", "b"},
		Waiting: map[string][]string{"join": {"a"}},
		Metadata: runtime.Metadata{
			Source: runtime.SourceLoop, Writes: map[string][]string{"a": sortedKeys(d)},
			Graph: "g", GraphHash: "hash1", Version: "test", Time: th.now(),
			Usage:   []runtime.Usage{{Node: "a", Model: "m", InputTokens: 3, OutputTokens: 4, CostUSD: 0.5}},
			Totals:  runtime.Totals{LLMCalls: step + 1, InputTokens: 3, OutputTokens: 4, CostUSD: 0.5},
			Records: map[string][]any{"a": {map[string]any{"reply": "hi", "n": 1}}},
		},
	}
	if parent == "" {
		cp.Metadata.Source = runtime.SourceInput
		cp.Waiting = nil
	}
	cp.ID = th.ids.Next(cp.Metadata.Time, parent)
	row := th.row(runtime.StatusRunning)
	err := th.s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: expect, Thread: row, Writes: writes})
	if err != nil {
		return nil, err
	}
	th.head = cp.ID
	th.want[cp.ID] = spec.DeepCopy(values).(map[string]any)
	stored := *cp
	stored.Values = th.want[cp.ID]
	stored.Delta = cloneDelta(d)
	th.cps[cp.ID] = &stored
	return cp, nil
}

func cloneDelta(d runtime.Delta) runtime.Delta {
	out := make(runtime.Delta, len(d))
	for k, op := range d {
		out[k] = runtime.Op{Kind: op.Kind, Value: spec.DeepCopy(op.Value)}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	return spec.SortedKeys(m)
}

// check loads every checkpoint committed through th and compares it.
func (th *thread) check() {
	th.t.Helper()
	for id := range th.want {
		th.checkOne(id)
	}
}

func (th *thread) checkOne(id string) *runtime.Checkpoint {
	th.t.Helper()
	got, err := th.s.Get(bg, th.id, id)
	if err != nil {
		th.t.Fatalf("Get(%q, %s): %v", th.id, id, err)
	}
	want := th.cps[id]
	if got.ID != id || got.ParentID != want.ParentID || got.Step != want.Step || got.TurnStep != want.TurnStep || got.Thread != th.id {
		th.t.Fatalf("Get(%s): id/parent/step/turn/thread = %s/%s/%d/%d/%s, want %s/%s/%d/%d/%s",
			id, got.ID, got.ParentID, got.Step, got.TurnStep, got.Thread, id, want.ParentID, want.Step, want.TurnStep, th.id)
	}
	if !equalJSON(got.Values, th.want[id]) {
		th.t.Fatalf("Get(%s) at step %d: values\n got  %s\n want %s", id, want.Step, js(got.Values), js(th.want[id]))
	}
	checkMeta(th.t, "Get", got, want)
	return got
}

// checkMeta compares everything but Values and Pending.
func checkMeta(t *testing.T, what string, got, want *runtime.Checkpoint) {
	t.Helper()
	if !equalJSON(got.Delta, want.Delta) {
		t.Errorf("%s(%s): delta\n got  %s\n want %s", what, want.ID, js(got.Delta), js(want.Delta))
	}
	if !reflect.DeepEqual(got.Next, want.Next) {
		t.Errorf("%s(%s): next %q, want %q", what, want.ID, got.Next, want.Next)
	}
	if !equalJSON(got.Waiting, want.Waiting) {
		t.Errorf("%s(%s): waiting %v, want %v", what, want.ID, got.Waiting, want.Waiting)
	}
	gm, wm := got.Metadata, want.Metadata
	if !gm.Time.Equal(wm.Time) {
		t.Errorf("%s(%s): metadata time %v, want %v", what, want.ID, gm.Time, wm.Time)
	}
	gm.Time, wm.Time = time.Time{}, time.Time{}
	if !equalJSON(gm, wm) {
		t.Errorf("%s(%s): metadata\n got  %s\n want %s", what, want.ID, js(gm), js(wm))
	}
}

func equalJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		return false
	}
	// Compare decoded forms so key order and number spelling (2 vs 2.0) do
	// not matter.
	var va, vb any
	if json.Unmarshal(ja, &va) != nil || json.Unmarshal(jb, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	if len(b) > 600 {
		return string(b[:600]) + "…"
	}
	return string(b)
}

// checkPlain fails when v holds a type outside the JSON data model as
// lgrun represents it (nil, bool, int, float64, string, []any,
// map[string]any).
func checkPlain(t *testing.T, where string, v any) {
	t.Helper()
	switch x := v.(type) {
	case nil, bool, int, float64, string:
	case []any:
		for i, e := range x {
			checkPlain(t, fmt.Sprintf("%s[%d]", where, i), e)
		}
	case map[string]any:
		for k, e := range x {
			checkPlain(t, where+"."+k, e)
		}
	default:
		t.Errorf("%s is a %T (%v); savers must return plain values (int, float64, string, bool, nil, []any, map[string]any)", where, v, v)
	}
}

func msg(id, content string) map[string]any {
	return map[string]any{"id": id, "role": "user", "content": content}
}

func set(v any) runtime.Op { return runtime.Op{Kind: runtime.OpSet, Value: v} }

func first() runtime.Delta {
	return runtime.Delta{
		"count":    set(0),
		"ratio":    set(1.5),
		"name":     set("start"),
		"log":      set([]any{}),
		"messages": set([]any{}),
		"meta":     set(map[string]any{"a": 1}),
		"nothing":  set(nil),
	}
}

func second[T any](_ T, err error) error { return err }

func mustList(t *testing.T, s runtime.Saver, thread string) []*runtime.Checkpoint {
	t.Helper()
	l, err := s.List(bg, thread, 0)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
