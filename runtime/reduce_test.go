package runtime_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// reducerGraph has one field f declared as decl and one node a whose
// writes the test chooses.
func reducerGraph(decl string) string {
	return `
version: 1
name: reducers
state:
  f: ` + decl + `
nodes:
  a: {kind: noop}
edges:
  - {from: START, to: a}
  - {from: a, to: END}
`
}

func msg(id, role, content string) map[string]any {
	return map[string]any{"id": id, "role": role, "content": content}
}

// Each reducer, given the field's value before the step and node a's
// writes, yields the value after the step or fails the step. Values are
// also read back from the saver, which rebuilds them from deltas.
func TestReducers(t *testing.T) {
	tests := []struct {
		name   string
		decl   string
		input  any // written at input, through the reducer, when not nil
		writes []runtime.Write
		want   any
		errMsg string // the step fails with an error containing this
	}{
		{name: "replace", decl: `{type: string, default: old}`,
			writes: []runtime.Write{w("f", "new")}, want: "new"},
		{name: "replace coerces whole floats to int", decl: `{type: int}`,
			writes: []runtime.Write{w("f", 3.0)}, want: 3},
		{name: "replace type error", decl: `{type: int}`,
			writes: []runtime.Write{w("f", "three")}, errMsg: `write to "f": want int, got string`},
		{name: "replace enum violation", decl: `{type: string, enum: [happy, sad]}`,
			writes: []runtime.Write{w("f", "angry")}, errMsg: "value angry is not one of the field's enum values"},
		{name: "replace enum ok", decl: `{type: string, enum: [happy, sad]}`,
			writes: []runtime.Write{w("f", "sad")}, want: "sad"},
		{name: "replace object is checked whole", decl: `{type: object, default: {a: 1}}`,
			writes: []runtime.Write{w("f", map[string]any{"b": 2})}, want: map[string]any{"b": 2}},

		{name: "append item", decl: `{type: list, items: string, reducer: append, default: [a]}`,
			writes: []runtime.Write{w("f", "b")}, want: []any{"a", "b"}},
		{name: "append list extends", decl: `{type: list, items: string, reducer: append, default: [a]}`,
			writes: []runtime.Write{w("f", []any{"b", "c"}), w("f", "d")}, want: []any{"a", "b", "c", "d"}},
		{name: "append wrapped list is one item", decl: `{type: list, reducer: append}`,
			writes: []runtime.Write{w("f", []any{[]any{1, 2}})}, want: []any{[]any{1, 2}}},
		{name: "append item type error", decl: `{type: list, items: int, reducer: append}`,
			writes: []runtime.Write{w("f", []any{1, "x"})}, errMsg: "item 1: want int, got string"},
		{name: "append empty list", decl: `{type: list, items: string, reducer: append, default: [a]}`,
			writes: []runtime.Write{w("f", []any{}), w("f", []any{})}, want: []any{"a"}},
		{name: "append after input", decl: `{type: list, items: int, reducer: append}`, input: []any{1},
			writes: []runtime.Write{w("f", 2)}, want: []any{1, 2}},

		{name: "add int", decl: `{type: int, reducer: add, default: 5}`,
			writes: []runtime.Write{w("f", 3), w("f", -1)}, want: 7},
		{name: "add int rejects fractions", decl: `{type: int, reducer: add}`,
			writes: []runtime.Write{w("f", 1.5)}, errMsg: "want int, got float"},
		{name: "add float", decl: `{type: float, reducer: add, default: 1.5}`,
			writes: []runtime.Write{w("f", 2.25), w("f", 1)}, want: 4.75},
		{name: "add string", decl: `{type: string, reducer: add, default: ab}`,
			writes: []runtime.Write{w("f", "cd")}, want: "abcd"},
		{name: "add string type error", decl: `{type: string, reducer: add}`,
			writes: []runtime.Write{w("f", 1)}, errMsg: "add to a string needs a string, got int"},
		{name: "add list", decl: `{type: list, items: int, reducer: add, default: [1]}`,
			writes: []runtime.Write{w("f", []any{2, 3})}, want: []any{1, 2, 3}},
		{name: "add empty list", decl: `{type: list, items: int, reducer: add, default: [1]}`,
			writes: []runtime.Write{w("f", []any{})}, want: []any{1}},
		{name: "add list needs a list", decl: `{type: list, items: int, reducer: add}`,
			writes: []runtime.Write{w("f", 2)}, errMsg: "add to a list needs a list, got int"},

		{name: "merge is shallow", decl: `{type: object, reducer: merge, default: {a: 1, b: {x: 1}}}`,
			writes: []runtime.Write{w("f", map[string]any{"b": map[string]any{"y": 2}}), w("f", map[string]any{"c": 3})},
			want:   map[string]any{"a": 1, "b": map[string]any{"y": 2}, "c": 3}},
		{name: "merge needs an object", decl: `{type: object, reducer: merge}`,
			writes: []runtime.Write{w("f", []any{1})}, errMsg: "merge needs an object, got list"},

		{name: "messages append with deterministic ids", decl: `{type: messages}`,
			input:  []any{map[string]any{"role": "user", "content": "hi"}},
			writes: []runtime.Write{w("f", map[string]any{"role": "assistant", "content": "hello"}), w("f", []any{map[string]any{"role": "user", "content": "more"}})},
			want: []any{
				msg("0.__input__.0", "user", "hi"),
				msg("1.a.0", "assistant", "hello"),
				msg("1.a.1", "user", "more"),
			}},
		{name: "messages same id replaces in place", decl: `{type: messages}`,
			input:  []any{msg("m1", "user", "hi"), msg("m2", "assistant", "old")},
			writes: []runtime.Write{w("f", msg("m2", "assistant", "new")), w("f", msg("m3", "user", "bye"))},
			want:   []any{msg("m1", "user", "hi"), msg("m2", "assistant", "new"), msg("m3", "user", "bye")}},
		{name: "messages remove", decl: `{type: messages}`,
			input:  []any{msg("m1", "user", "hi"), msg("m2", "assistant", "old")},
			writes: []runtime.Write{w("f", map[string]any{"id": "m1", "remove": true})},
			want:   []any{msg("m2", "assistant", "old")}},
		{name: "messages remove then re-add", decl: `{type: messages}`,
			input:  []any{msg("m1", "user", "hi")},
			writes: []runtime.Write{w("f", []any{map[string]any{"id": "m1", "remove": true}, msg("m1", "user", "again")})},
			want:   []any{msg("m1", "user", "again")}},
		{name: "messages remove and re-add in one write keeps the place", decl: `{type: messages}`,
			input:  []any{msg("m1", "user", "hi"), msg("m2", "assistant", "old")},
			writes: []runtime.Write{w("f", []any{map[string]any{"id": "m1", "remove": true}, msg("m1", "user", "again")})},
			want:   []any{msg("m1", "user", "again"), msg("m2", "assistant", "old")}},
		{name: "messages remove, then re-add in another write appends", decl: `{type: messages}`,
			input:  []any{msg("m1", "user", "hi"), msg("m2", "assistant", "old")},
			writes: []runtime.Write{w("f", map[string]any{"id": "m1", "remove": true}), w("f", msg("m1", "user", "again"))},
			want:   []any{msg("m2", "assistant", "old"), msg("m1", "user", "again")}},
		{name: "messages replace, then remove in one write removes", decl: `{type: messages}`,
			input:  []any{msg("m1", "user", "hi"), msg("m2", "assistant", "old")},
			writes: []runtime.Write{w("f", []any{msg("m2", "assistant", "new"), map[string]any{"id": "m2", "remove": true}})},
			want:   []any{msg("m1", "user", "hi")}},
		{name: "messages add and remove a new id in one write", decl: `{type: messages}`,
			input:  []any{msg("m1", "user", "hi")},
			writes: []runtime.Write{w("f", []any{msg("m3", "user", "x"), msg("m4", "user", "y"), map[string]any{"id": "m3", "remove": true}})},
			want:   []any{msg("m1", "user", "hi"), msg("m4", "user", "y")}},
		{name: "messages remove all", decl: `{type: messages}`,
			input:  []any{msg("m1", "user", "hi"), msg("m2", "assistant", "old")},
			writes: []runtime.Write{w("f", map[string]any{"id": runtime.RemoveAllMessages, "remove": true})},
			want:   []any{}},
		{name: "messages remove all, then the new list", decl: `{type: messages}`,
			input: []any{msg("m1", "user", "hi"), msg("m2", "assistant", "old")},
			writes: []runtime.Write{w("f", []any{msg("m0", "user", "dropped"), map[string]any{"id": "__remove_all__", "remove": true},
				map[string]any{"role": "system", "content": "summary"}, msg("m2", "assistant", "kept")})},
			want: []any{msg("1.a.0", "system", "summary"), msg("m2", "assistant", "kept")}},
		{name: "messages remove after remove all", decl: `{type: messages}`,
			input:  []any{msg("m1", "user", "hi")},
			writes: []runtime.Write{w("f", []any{map[string]any{"id": "__remove_all__", "remove": true}, map[string]any{"id": "m1", "remove": true}})},
			errMsg: `cannot remove message "m1": no message has that id`},
		{name: "messages empty write", decl: `{type: messages}`,
			input:  []any{msg("m1", "user", "hi")},
			writes: []runtime.Write{w("f", []any{})},
			want:   []any{msg("m1", "user", "hi")}},
		{name: "messages remove unknown id", decl: `{type: messages}`,
			input:  []any{msg("m1", "user", "hi")},
			writes: []runtime.Write{w("f", map[string]any{"id": "nope", "remove": true})},
			errMsg: `cannot remove message "nope": no message has that id`},
		{name: "messages remove needs an id", decl: `{type: messages}`,
			writes: []runtime.Write{w("f", map[string]any{"remove": true})},
			errMsg: "message 0: remove needs an id"},
		{name: "messages bad role", decl: `{type: messages}`,
			writes: []runtime.Write{w("f", map[string]any{"role": "robot"})},
			errMsg: `unknown role "robot"`},

		{name: "custom over current and update", decl: `{type: int, default: 1, reducer: {custom: "current * 10 + update"}}`,
			writes: []runtime.Write{w("f", 2), w("f", 3)}, want: 123},
		{name: "custom string concat", decl: `{type: string, reducer: {custom: "current == '' ? update : current + ',' + update"}}`,
			writes: []runtime.Write{w("f", "x"), w("f", "y")}, want: "x,y"},
		{name: "custom result type error", decl: `{type: int, reducer: {custom: update}}`,
			writes: []runtime.Write{w("f", "x")}, errMsg: "custom reducer result: want int, got string"},
		{name: "custom expression error", decl: `{type: int, reducer: {custom: "current + update"}}`,
			writes: []runtime.Write{w("f", "x")}, errMsg: "custom reducer:"},

		{name: "unknown field", decl: `{type: int}`,
			writes: []runtime.Write{w("g", 1)}, errMsg: `write to "g": no such state field`},
	}
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					saver, _ := sk.open(t)
					h := newHarness(t, reducerGraph(tt.decl), saver)
					h.fk.writes("a", tt.writes...)
					var input map[string]any
					if tt.input != nil {
						input = map[string]any{"f": tt.input}
					}
					res, err := h.Run(bg, runtime.RunOptions{Thread: "t", Input: input})
					if tt.errMsg != "" {
						checkCleanWriteFailure(t, saver, res, err, tt.errMsg)
						return
					}
					cp := mustDone(t)(res, err)
					if !reflect.DeepEqual(cp.Values["f"], tt.want) {
						t.Fatalf("f = %#v, want %#v", cp.Values["f"], tt.want)
					}
					_, stored := head(t, saver, "t")
					if !reflect.DeepEqual(stored.Values["f"], tt.want) {
						t.Fatalf("stored f = %#v, want %#v", stored.Values["f"], tt.want)
					}
				})
			}
		})
	}
}

// checkCleanWriteFailure checks that a write of node a failed its step
// cleanly: a NodeError wrapping a WriteError, and the thread failed at its
// input checkpoint with a as the next node.
func checkCleanWriteFailure(t *testing.T, saver runtime.Saver, res *runtime.Result, err error, errMsg string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), errMsg) {
		t.Fatalf("error %v, want one containing %q", err, errMsg)
	}
	ne := wantErrAs[*runtime.NodeError](t, err)
	we := wantErrAs[*runtime.WriteError](t, err)
	if ne.Node != "a" || we.Node != "a" || ne.Step != 1 || ne.Pos.Line == 0 {
		t.Fatalf("node error %+v, write error %+v", ne, we)
	}
	mustStatus(t, res, runtime.StatusFailed)
	th, cp := head(t, saver, "t")
	if th.Status != runtime.StatusFailed || th.Error != err.Error() || cp.Step != 0 || !reflect.DeepEqual(cp.Next, []string{"a"}) {
		t.Fatalf("thread %s %q at step %d next %v", th.Status, th.Error, cp.Step, cp.Next)
	}
}

// A write that fails to merge leaves a thread that can be fixed: the state
// is corrected with Resume{Set} (or a fork) and the run continues.
func TestFailedWriteIsFixable(t *testing.T) {
	const src = `
version: 1
name: mood
state:
  said: {type: string}
  mood: {type: string, enum: [happy, sad]}
  log:  {type: list, items: string, reducer: append}
nodes:
  classify: {kind: set, set: {mood: state.said, log: '"classified"'}}
  reply:    {kind: set, set: {log: '"you are " + state.mood'}}
edges:
  - {from: START, to: classify}
  - {from: classify, to: reply}
  - {from: reply, to: END}
`
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			r := newHarness(t, src, saver)
			_, err := r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"said": "angry"}})
			if we := wantErrAs[*runtime.WriteError](t, err); we.Field != "mood" {
				t.Fatalf("write error %+v", we)
			}
			// A later process fixes the input and resumes.
			r.Saver = reopen()
			cp := mustDone(t)(r.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("said", "sad")}}))
			wantValues(t, cp.Values, map[string]any{"mood": "sad", "log": []any{"classified", "you are sad"}})
			th, _ := head(t, r.Saver, "t")
			if th.Status != runtime.StatusDone || th.Error != "" {
				t.Fatalf("thread %s %q", th.Status, th.Error)
			}
		})
	}
}

// Removing an unknown message id fails the step; the thread can then be
// resumed with a fixed state, or forked.
func TestRemoveUnknownMessageIsResumable(t *testing.T) {
	const src = `
version: 1
name: forget
state:
  messages: {type: messages}
  forget: {type: string, default: m9}
nodes:
  drop: {kind: set, set: {messages: '{"id": state.forget, "remove": true}'}}
edges:
  - {from: START, to: drop}
  - {from: drop, to: END}
`
	start := []any{msg("m1", "user", "a"), msg("m2", "user", "b")}
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, _ := sk.open(t)
			r := newHarness(t, src, saver)
			res, err := r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"messages": start}})
			if err == nil || !strings.Contains(err.Error(), `cannot remove message "m9"`) {
				t.Fatalf("error %v", err)
			}
			mustStatus(t, res, runtime.StatusFailed)
			failedAt := res.Checkpoint.ID

			// Resume with the field fixed.
			cp := mustDone(t)(r.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("forget", "m1")}}))
			wantValues(t, cp.Values, map[string]any{"messages": []any{msg("m2", "user", "b")}})

			// Or fork the failed checkpoint with another id.
			cp = mustDone(t)(r.Fork(bg, "t", failedAt, []runtime.Write{w("forget", "m2")}, "", runtime.Config{}))
			wantValues(t, cp.Values, map[string]any{"messages": []any{msg("m1", "user", "a")}})
		})
	}
}

// Merge is the reducer entry point savers and other packages call; it
// must not modify the base state.
func TestMergeDoesNotModifyBase(t *testing.T) {
	g := mustGraph(t, `
version: 1
name: m
state:
  l: {type: list, reducer: append}
  o: {type: object, reducer: merge}
  m: {type: messages}
nodes:
  a: {kind: noop}
edges:
  - {from: START, to: a}
  - {from: a, to: END}
`)
	base := map[string]any{"l": []any{1}, "o": map[string]any{"k": 1}, "m": []any{msg("x", "user", "hi")}}
	before := fmt.Sprint(base)
	_, delta, who, err := runtime.Merge(g, 1, base, []runtime.NodeWrites{{Node: "a", Writes: []runtime.Write{
		w("l", 2), w("o", map[string]any{"k": 2}), w("m", msg("x", "user", "changed")),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(base) != before {
		t.Fatalf("base changed: %v, was %v", base, before)
	}
	if delta["l"].Kind != runtime.OpAppend || delta["o"].Kind != runtime.OpMerge || delta["m"].Kind != runtime.OpMessages {
		t.Fatalf("delta %v", delta)
	}
	if !reflect.DeepEqual(who["a"], []string{"l", "o", "m"}) {
		t.Fatalf("who %v", who)
	}
	_, _, _, err = runtime.Merge(g, 1, base, []runtime.NodeWrites{{Node: "a", Writes: []runtime.Write{w("nope", 1)}}})
	var we *runtime.WriteError
	if !errors.As(err, &we) || we.Field != "nope" {
		t.Fatalf("unknown field: %v", err)
	}
}

// Messages without an id get "<step>.<node>.<n>", n counting the node's
// new messages in the step, so ids never depend on scheduling.
func TestMessageIDsAcrossNodes(t *testing.T) {
	const src = `
version: 1
name: ids
state:
  messages: {type: messages}
nodes:
  b: {kind: set, set: {messages: '[{"role": "user", "content": "b1"}, {"role": "user", "content": "b2"}]'}}
  a: {kind: set, set: {messages: '{"role": "user", "content": "a"}'}}
edges:
  - {from: START, to: [b, a]}
  - {from: [a, b], to: END}
`
	for i := range 10 {
		r := newRunner(t, src)
		cp := mustDone(t)(r.Run(bg, runtime.RunOptions{Thread: "t"}))
		want := []any{msg("1.a.0", "user", "a"), msg("1.b.0", "user", "b1"), msg("1.b.1", "user", "b2")}
		if !reflect.DeepEqual(cp.Values["messages"], want) {
			t.Fatalf("run %d: messages %v", i, cp.Values["messages"])
		}
	}
}

// isPlainJSON reports whether v is made only of the canonical JSON types.
func isPlainJSON(v any) bool {
	switch x := v.(type) {
	case nil, bool, int, float64, string:
		return true
	case []any:
		for _, e := range x {
			if !isPlainJSON(e) {
				return false
			}
		}
		return true
	case map[string]any:
		for _, e := range x {
			if !isPlainJSON(e) {
				return false
			}
		}
		return true
	}
	return false
}

// State is plain JSON: a node kind writing a Go value that is not (a
// struct, here) either has it converted to JSON or has the write refused;
// it never reaches the state as a Go value, whose meaning would change
// when a saver round-trips it through JSON.
func TestStateIsPlainJSON(t *testing.T) {
	type point struct{ X, Y int }
	for _, decl := range []string{`{type: any}`, `{type: object}`, `{type: list, reducer: append}`} {
		t.Run(decl, func(t *testing.T) {
			h := newHarness(t, reducerGraph(decl), nil)
			v := any(map[string]any{"p": point{1, 2}})
			if strings.Contains(decl, "list") {
				v = []any{point{1, 2}}
			}
			h.fk.writes("a", w("f", v))
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
			if err != nil {
				wantErrAs[*runtime.WriteError](t, err)
				return
			}
			cp := mustDone(t)(res, err)
			if !isPlainJSON(cp.Values["f"]) {
				t.Fatalf("state holds a Go value: %#v", cp.Values["f"])
			}
		})
	}
}

// A float write that JSON cannot hold (NaN, ±Inf — e.g. 0.0/0.0) fails
// the step cleanly, with every saver: the thread is marked failed at its
// last good checkpoint, not left "running" by a commit the saver refuses.
func TestNonFiniteFloatFailsStep(t *testing.T) {
	const src = `
version: 1
name: nan
state:
  a: {type: float}
  b: {type: float}
  f: {type: float}
nodes:
  div: {kind: set, set: {f: state.a / state.b}}
edges:
  - {from: START, to: div}
  - {from: div, to: END}
`
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, _ := sk.open(t)
			r := newHarness(t, src, saver)
			res, err := r.Run(bg, runtime.RunOptions{Thread: "t"})
			if err == nil {
				t.Fatalf("0/0 was stored: f = %v", res.Checkpoint.Values["f"])
			}
			th, cp := head(t, saver, "t")
			if th.Status != runtime.StatusFailed || cp.Step != 0 {
				t.Fatalf("error %v; thread %s at step %d, want failed at step 0", err, th.Status, cp.Step)
			}
			mustDone(t)(r.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("b", 2)}}))
		})
	}
}
