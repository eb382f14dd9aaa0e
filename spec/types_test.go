package spec_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/spec"
)

func TestCoerce(t *testing.T) {
	list := func(items spec.Kind) spec.Type { return spec.Type{Kind: spec.KindList, Items: items} }
	tests := []struct {
		name    string
		typ     spec.Type
		in      any
		want    any
		wantErr string
	}{
		{"string", spec.Type{Kind: spec.KindString}, "x", "x", ""},
		{"string from int", spec.Type{Kind: spec.KindString}, 1, nil, "want string, got int"},
		{"bool", spec.Type{Kind: spec.KindBool}, true, true, ""},
		{"bool from string", spec.Type{Kind: spec.KindBool}, "true", nil, "want bool, got string"},
		{"int", spec.Type{Kind: spec.KindInt}, 3, 3, ""},
		{"int from int64", spec.Type{Kind: spec.KindInt}, int64(3), 3, ""},
		{"int from whole float", spec.Type{Kind: spec.KindInt}, 3.0, 3, ""},
		{"int from fraction", spec.Type{Kind: spec.KindInt}, 3.5, nil, "want int, got float"},
		{"int from json number", spec.Type{Kind: spec.KindInt}, json.Number("42"), 42, ""},
		{"int from float beyond 2^53", spec.Type{Kind: spec.KindInt}, 1e17, nil, "want int, got float"},
		{"int from null", spec.Type{Kind: spec.KindInt}, nil, nil, "want int, got null"},
		{"float from int", spec.Type{Kind: spec.KindFloat}, 2, 2.0, ""},
		{"float", spec.Type{Kind: spec.KindFloat}, 0.5, 0.5, ""},
		{"float from json number", spec.Type{Kind: spec.KindFloat}, json.Number("1.5"), 1.5, ""},
		{"float from string", spec.Type{Kind: spec.KindFloat}, "1.5", nil, "want float, got string"},
		{"list any", list(""), []any{1, "a"}, []any{1, "a"}, ""},
		{"list of string", list(spec.KindString), []any{"a", "b"}, []any{"a", "b"}, ""},
		{"list of string from []string", list(spec.KindString), []string{"a"}, []any{"a"}, ""},
		{"list item mismatch", list(spec.KindString), []any{"a", 2}, nil, "item 1: want string, got int"},
		{"list of int from floats", list(spec.KindInt), []any{1.0, 2.0}, []any{1, 2}, ""},
		{"list from object", list(""), map[string]any{}, nil, "want list, got object"},
		{"object", spec.Type{Kind: spec.KindObject}, map[string]any{"a": int64(1)}, map[string]any{"a": 1}, ""},
		{"object from map[string]int", spec.Type{Kind: spec.KindObject}, map[string]int{"a": 1}, map[string]any{"a": 1}, ""},
		{"object from list", spec.Type{Kind: spec.KindObject}, []any{}, nil, "want object, got list"},
		{"any", spec.Type{Kind: spec.KindAny}, []any{int32(1)}, []any{1}, ""},
		{"untyped", spec.Type{}, "x", "x", ""},
		{"messages", spec.Type{Kind: spec.KindMessages},
			[]any{map[string]any{"role": "user", "content": "hi"}},
			[]any{map[string]any{"id": "", "role": "user", "content": "hi"}}, ""},
		{"messages bad item", spec.Type{Kind: spec.KindMessages}, []any{"hi"}, nil, "message 0: want a message object, got string"},
		{"messages from object", spec.Type{Kind: spec.KindMessages}, map[string]any{}, nil, "want messages, got object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.typ.Coerce(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Coerce(%#v) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Coerce(%#v): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Coerce(%#v) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestMessage(t *testing.T) {
	tests := []struct {
		name    string
		in      any
		want    map[string]any
		wantErr string
	}{
		{"user", map[string]any{"role": "user", "content": "hi"},
			map[string]any{"id": "", "role": "user", "content": "hi"}, ""},
		{"keeps id and name", map[string]any{"id": "m1", "role": "tool", "content": "5", "name": "add", "tool_call_id": "c1"},
			map[string]any{"id": "m1", "role": "tool", "content": "5", "name": "add", "tool_call_id": "c1"}, ""},
		{"null content", map[string]any{"role": "assistant", "content": nil},
			map[string]any{"id": "", "role": "assistant", "content": ""}, ""},
		{"tool calls with object arguments", map[string]any{"role": "assistant", "tool_calls": []any{
			map[string]any{"id": "c1", "name": "add", "arguments": map[string]any{"a": 1}},
		}}, map[string]any{"id": "", "role": "assistant", "content": "", "tool_calls": []any{
			map[string]any{"id": "c1", "name": "add", "arguments": `{"a":1}`},
		}}, ""},
		{"tool calls with string arguments", map[string]any{"role": "assistant", "tool_calls": []any{
			map[string]any{"name": "add", "arguments": `{"a":1}`},
		}}, map[string]any{"id": "", "role": "assistant", "content": "", "tool_calls": []any{
			map[string]any{"id": "", "name": "add", "arguments": `{"a":1}`},
		}}, ""},
		{"not an object", "hi", nil, "want a message object, got string"},
		{"no role", map[string]any{"content": "hi"}, nil, "message has no role"},
		{"bad role", map[string]any{"role": "robot"}, nil, `unknown role "robot" (want system, user, assistant or tool)`},
		{"content not string", map[string]any{"role": "user", "content": 3}, nil, "content: want string, got int"},
		{"unknown key", map[string]any{"role": "user", "text": "hi"}, nil, `unknown message key "text"`},
		{"tool calls not list", map[string]any{"role": "assistant", "tool_calls": "x"}, nil, "tool_calls: want list, got string"},
		{"tool call not object", map[string]any{"role": "assistant", "tool_calls": []any{1}}, nil, "tool_calls[0]: want object, got int"},
		{"tool call name not string", map[string]any{"role": "assistant", "tool_calls": []any{map[string]any{"name": 1}}}, nil, "tool_calls[0].name: want string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := spec.Message(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Message(%#v) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Message(%#v): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Message(%#v) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestTypeString(t *testing.T) {
	tests := []struct {
		typ  spec.Type
		want string
	}{
		{spec.Type{Kind: spec.KindInt}, "int"},
		{spec.Type{Kind: spec.KindList}, "list"},
		{spec.Type{Kind: spec.KindList, Items: spec.KindAny}, "list"},
		{spec.Type{Kind: spec.KindList, Items: spec.KindString}, "list of string"},
		{spec.Type{Kind: spec.KindMessages}, "messages"},
	}
	for _, tt := range tests {
		if got := tt.typ.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.typ, got, tt.want)
		}
	}
}

// TestReducerCompatibility checks which reducer a field of each type may
// declare, through the loader.
func TestReducerCompatibility(t *testing.T) {
	types := []string{"string", "int", "float", "bool", "list", "object", "messages", "any"}
	ok := map[string][]string{
		"replace":  types,
		"append":   {"list", "any"},
		"add":      {"string", "int", "float", "list", "any"},
		"merge":    {"object", "any"},
		"messages": {"messages"},
	}
	for reducer, allowed := range ok {
		for _, typ := range types {
			t.Run(reducer+"/"+typ, func(t *testing.T) {
				src := "version: 1\nname: r\nstate:\n  f: {type: " + typ + ", reducer: " + reducer + "}\n" +
					"nodes:\n  a: {kind: noop}\nedges:\n  - {from: START, to: a}\n  - {from: a, to: END}\n"
				_, errs := spec.Parse("r.yaml", []byte(src), nil)
				want := contains(allowed, typ)
				if got := !errs.HasErrors(); got != want {
					t.Fatalf("reducer %s on %s: accepted = %v, want %v\n%v", reducer, typ, got, want, errs)
				}
				if !want {
					e := errs[0]
					if e.Pos.Line != 4 || e.Pos.Col != 24+len(typ) || !strings.Contains(e.Msg, "reducer "+reducer+" does not work with type "+typ) {
						t.Fatalf("got %v", e)
					}
				}
			})
		}
	}
}

func TestDefaultReducer(t *testing.T) {
	src := `version: 1
name: r
state:
  plain: {type: list}
  messages: {type: messages}
  best: {type: int, reducer: {custom: "current + update"}}
nodes:
  a: {kind: noop}
edges:
  - {from: START, to: a}
  - {from: a, to: END}
`
	g, errs := spec.Parse("r.yaml", []byte(src), nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	for name, want := range map[string]spec.ReducerKind{
		"plain":    spec.ReduceReplace,
		"messages": spec.ReduceMessages,
		"best":     spec.ReduceCustom,
	} {
		if got := g.Field(name).Reducer.Kind; got != want {
			t.Errorf("field %s: reducer %s, want %s", name, got, want)
		}
	}
	if g.Field("best").Reducer.Custom == nil {
		t.Error("custom reducer not compiled")
	}
}

// TestWriteThroughReducer checks the type an expression must yield to be
// written to a field through its reducer.
func TestWriteThroughReducer(t *testing.T) {
	tests := []struct {
		field string // field declaration
		expr  string
		ok    bool
	}{
		{"{type: int}", "1", true},
		{"{type: int}", `"1"`, false},
		{"{type: float}", "1", true},
		{"{type: float}", "1.5", true},
		{"{type: int}", "1.5", false},
		{"{type: list, items: string, reducer: append}", `"x"`, true},
		{"{type: list, items: string, reducer: append}", `["x"]`, true},
		{"{type: list, items: string, reducer: append}", "1", false},
		{"{type: list, reducer: append}", "1", true},
		{"{type: messages}", `message("user", "hi")`, true},
		{"{type: messages}", `[message("user", "hi")]`, true},
		{"{type: messages}", `"hi"`, false},
		{"{type: object, reducer: merge}", `{"a": 1}`, true},
		{"{type: object, reducer: merge}", `[1]`, false},
		{"{type: string, reducer: add}", `"x"`, true},
		{"{type: int, reducer: add}", `"x"`, false},
		{"{type: any}", `[1, "x"]`, true},
		{"{type: bool}", "1 > 2", true},
		{"{type: bool}", "1 + 2", false},
	}
	for _, tt := range tests {
		src := "version: 1\nname: w\nstate:\n  f: " + tt.field + "\nnodes:\n  a:\n    kind: set\n    set:\n      f: '" +
			tt.expr + "'\nedges:\n  - {from: START, to: a}\n  - {from: a, to: END}\n"
		_, errs := spec.Parse("w.yaml", []byte(src), nil)
		if got := !errs.HasErrors(); got != tt.ok {
			t.Errorf("write %s to %s: accepted = %v, want %v\n%v", tt.expr, tt.field, got, tt.ok, errs)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
