package server

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// historyJSON gives, byte for byte, what json.Marshal gives for the
// ThreadStates of the checkpoints, whatever their values: messages with
// tool calls, HTML and non-ASCII text, shared between checkpoints or not,
// a nil or non-list messages field, other fields, no values at all and
// checkpoints of a graph the server does not serve.
func TestHistoryJSON(t *testing.T) {
	g, errs := spec.Parse("h.yaml", []byte(`version: 1
name: h
state:
  messages: {type: messages}
  other: {type: messages}
  log: {type: list}
  n: {type: int}
nodes:
  a: {kind: set, set: {n: 1}}
edges:
  - {from: START, to: a}
  - {from: a, to: END}
`), nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	s := &Server{assistants: map[string]*assistant{"h": {Graph: g}}}
	shared := map[string]any{"id": "m1", "role": "user", "content": "<b>a & b</b> ü \u2028"}
	call := map[string]any{"id": "m2", "role": "assistant", "content": "",
		"tool_calls": []any{map[string]any{"id": "c1", "name": "f", "arguments": `{"x": [1, 2]}`}, "odd"}}
	tool := map[string]any{"id": "m3", "role": "tool", "content": "42", "tool_call_id": "c1"}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	cp := func(id, graph string, values map[string]any) *runtime.Checkpoint {
		return &runtime.Checkpoint{Thread: "t", ID: id, ParentID: "p" + id, Step: 3, Values: values, Next: []string{"a"},
			Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: graph, Time: at, Writes: map[string][]string{"a": {"n"}},
				Usage: []runtime.Usage{{Node: "a", Model: "m", InputTokens: 1}}},
			Pending: []runtime.PendingWrite{{Node: "a", Kind: runtime.PendingInterrupt, Interrupt: &runtime.Interrupt{Node: "a", When: runtime.InterruptNode, Payload: "<?>"}}}}
	}
	cps := []*runtime.Checkpoint{
		cp("3", "h", map[string]any{"messages": []any{shared, call, tool}, "other": map[string]any{"role": "user", "content": "one"}, "log": []any{"x", 1.5, nil}, "n": 2}),
		cp("2", "h", map[string]any{"messages": []any{shared, call}, "other": []any(nil), "n": 1}),
		cp("1", "h", map[string]any{"messages": []any{shared, "not a message", nil}, "other": nil}),
		cp("0", "h", map[string]any{}),
		cp("z", "h", nil),
		cp("y", "not served", map[string]any{"messages": []any{shared}}),
	}
	want := []any{}
	for _, c := range cps {
		want = append(want, threadState(s.graph(c.Metadata.Graph), c))
	}
	wb, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.historyJSON(cps)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wb) {
		t.Fatalf("historyJSON:\n got  %s\n want %s", got, wb)
	}
	if got, _ := s.historyJSON(nil); string(got) != "[]" {
		t.Fatalf("historyJSON of none: %s", got)
	}
}
