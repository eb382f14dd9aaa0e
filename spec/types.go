package spec

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"

	"github.com/expr-lang/expr/types"
)

// Kind is a state field's base type.
type Kind string

// The field kinds of the language.
const (
	KindString   Kind = "string"
	KindInt      Kind = "int"
	KindFloat    Kind = "float"
	KindBool     Kind = "bool"
	KindList     Kind = "list"
	KindObject   Kind = "object"
	KindMessages Kind = "messages"
	KindAny      Kind = "any"
)

// Type is a field type: a kind and, for lists, the item kind.
type Type struct {
	Kind  Kind
	Items Kind // list only; "" means any
}

// String renders t as written in a graph file, e.g. "list of string".
func (t Type) String() string {
	if t.Kind == KindList && t.Items != "" && t.Items != KindAny {
		return "list of " + string(t.Items)
	}
	return string(t.Kind)
}

// Item returns the item type of a list or messages type.
func (t Type) Item() Type {
	switch t.Kind {
	case KindList:
		if t.Items == "" {
			return Type{Kind: KindAny}
		}
		return Type{Kind: t.Items}
	case KindMessages:
		return Type{Kind: KindObject}
	}
	return Type{Kind: KindAny}
}

// Zero returns the value a field of type t starts with when it has no default.
func (t Type) Zero() any {
	switch t.Kind {
	case KindString:
		return ""
	case KindInt:
		return 0
	case KindFloat:
		return 0.0
	case KindBool:
		return false
	case KindList, KindMessages:
		return []any{}
	case KindObject:
		return map[string]any{}
	}
	return nil
}

// MessageType returns the expr type of one chat message. Each call returns
// a new value: there is no package-level type a caller could change under
// every graph of the process.
func MessageType() types.Map {
	return types.Map{
		"id":           types.String,
		"role":         types.String,
		"content":      types.String,
		"name":         types.String,
		"tool_call_id": types.String,
		"tool_calls": types.Array(types.Map{
			"id":        types.String,
			"name":      types.String,
			"arguments": types.String,
		}),
	}
}

// ExprType returns the expr type used to type-check expressions over a value of type t.
func (t Type) ExprType() types.Type {
	switch t.Kind {
	case KindString:
		return types.String
	case KindInt:
		return types.Int
	case KindFloat:
		return types.Float64
	case KindBool:
		return types.Bool
	case KindList:
		return types.Array(Type{Kind: t.Items}.itemExprType())
	case KindObject:
		return types.TypeOf(map[string]any{})
	case KindMessages:
		return types.Array(MessageType())
	}
	return types.Any
}

func (t Type) itemExprType() types.Type {
	if t.Kind == "" {
		return types.Any
	}
	return t.ExprType()
}

// Coerce checks that v (a JSON-like value: nil, bool, numbers, string,
// []any, map[string]any, json.Number) has type t and returns it in canonical
// form: int fields hold int, float fields float64, lists []any, objects
// map[string]any, messages []any of canonical messages (see [Message]).
func (t Type) Coerce(v any) (any, error) {
	switch t.Kind {
	case KindAny, "":
		return Normalize(v), nil
	// A value that already has its kind's Go type is returned as it came:
	// boxing it again would allocate a copy of the same value.
	case KindString:
		if _, ok := v.(string); ok {
			return v, nil
		}
	case KindBool:
		if _, ok := v.(bool); ok {
			return v, nil
		}
	case KindInt:
		if _, ok := v.(int); ok {
			return v, nil
		}
		if n, ok := toInt(v); ok {
			return n, nil
		}
	case KindFloat:
		if _, ok := v.(float64); ok {
			return v, nil
		}
		if f, ok := toFloat(v); ok {
			return f, nil
		}
	case KindList:
		l, ok := toList(v)
		if !ok {
			break
		}
		out := make([]any, len(l))
		it := Type{Kind: t.Items}
		for i, x := range l {
			c, err := it.Coerce(x)
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
			out[i] = c
		}
		return out, nil
	case KindObject:
		if m, ok := toMap(v); ok {
			return Normalize(m), nil
		}
	case KindMessages:
		l, ok := toList(v)
		if !ok {
			break
		}
		out := make([]any, len(l))
		for i, x := range l {
			m, err := Message(x)
			if err != nil {
				return nil, fmt.Errorf("message %d: %w", i, err)
			}
			out[i] = m
		}
		return out, nil
	}
	return nil, fmt.Errorf("want %s, got %s", t, TypeName(v))
}

// Message checks one chat message and returns it in canonical form:
// a map with string keys id, role, content and, when present, name,
// tool_call_id and tool_calls (a list of {id, name, arguments}).
// An id may be empty; the messages reducer assigns one.
func Message(v any) (map[string]any, error) {
	m, ok := toMap(v)
	if !ok {
		return nil, fmt.Errorf("want a message object, got %s", TypeName(v))
	}
	out := map[string]any{}
	for k, x := range m {
		switch k {
		case "id", "role", "content", "name", "tool_call_id":
			if x == nil {
				continue
			}
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("%s: want string, got %s", k, TypeName(x))
			}
			out[k] = s
		case "tool_calls":
			if x == nil {
				continue
			}
			l, ok := toList(x)
			if !ok {
				return nil, fmt.Errorf("tool_calls: want list, got %s", TypeName(x))
			}
			calls := make([]any, len(l))
			for i, c := range l {
				cm, ok := toMap(c)
				if !ok {
					return nil, fmt.Errorf("tool_calls[%d]: want object, got %s", i, TypeName(c))
				}
				call := map[string]any{}
				for _, key := range []string{"id", "name", "arguments"} {
					s, _ := cm[key].(string)
					if cm[key] != nil && key != "arguments" {
						if _, ok := cm[key].(string); !ok {
							return nil, fmt.Errorf("tool_calls[%d].%s: want string", i, key)
						}
					}
					if key == "arguments" && cm[key] != nil {
						if _, ok := cm[key].(string); !ok {
							b, err := json.Marshal(cm[key])
							if err != nil {
								return nil, fmt.Errorf("tool_calls[%d].arguments: %w", i, err)
							}
							s = string(b)
						}
					}
					call[key] = s
				}
				calls[i] = call
			}
			out[k] = calls
		default:
			return nil, fmt.Errorf("unknown message key %q", k)
		}
	}
	role, _ := out["role"].(string)
	switch role {
	case "system", "user", "assistant", "tool":
	case "":
		return nil, fmt.Errorf("message has no role")
	default:
		return nil, fmt.Errorf("unknown role %q (want system, user, assistant or tool)", role)
	}
	if _, ok := out["content"]; !ok {
		out["content"] = ""
	}
	if _, ok := out["id"]; !ok {
		out["id"] = ""
	}
	return out, nil
}

// Normalize converts a JSON-like value to canonical form: json.Number and
// whole floats from JSON stay as decoded (json.Number becomes int when
// integral, else float64), other integer types become int, maps become
// map[string]any and slices []any.
func Normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return int(n)
		}
		f, _ := x.Float64()
		return f
	case int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32:
		if n, ok := toInt(x); ok {
			return n
		}
		f, _ := toFloat(x)
		return f
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = Normalize(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = Normalize(e)
		}
		return out
	case nil, bool, string, int, float64:
		return x
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = Normalize(rv.Index(i).Interface())
		}
		return out
	case reflect.Map:
		if rv.Type().Key().Kind() == reflect.String {
			out := make(map[string]any, rv.Len())
			for _, k := range rv.MapKeys() {
				out[k.String()] = Normalize(rv.MapIndex(k).Interface())
			}
			return out
		}
	}
	return v
}

// TypeName names the JSON type of v for error messages.
func TypeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "bool"
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return "int"
	case float32, float64:
		return "float"
	case json.Number:
		if _, err := x.Int64(); err == nil {
			return "int"
		}
		return "float"
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		return "list"
	case reflect.Map:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func toInt(v any) (int, bool) {
	switch x := v.(type) {
	case int:
		return x, true
	case int8:
		return int(x), true
	case int16:
		return int(x), true
	case int32:
		return int(x), true
	case int64:
		return int(x), true
	case uint:
		return int(x), true
	case uint8:
		return int(x), true
	case uint16:
		return int(x), true
	case uint32:
		return int(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int(x), true
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int(x), true
		}
	case float32:
		return toInt(float64(x))
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return int(n), true
		}
		if f, err := x.Float64(); err == nil {
			return toInt(f)
		}
	}
	return 0, false
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	if n, ok := toInt(v); ok {
		return float64(n), true
	}
	return 0, false
}

func toList(v any) ([]any, bool) {
	if l, ok := v.([]any); ok {
		return l, true
	}
	if v == nil {
		return nil, false
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array {
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = rv.Index(i).Interface()
		}
		return out, true
	}
	return nil, false
}

func toMap(v any) (map[string]any, bool) {
	if m, ok := v.(map[string]any); ok {
		return m, true
	}
	if v == nil {
		return nil, false
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Map && rv.Type().Key().Kind() == reflect.String {
		out := make(map[string]any, rv.Len())
		for _, k := range rv.MapKeys() {
			out[k.String()] = rv.MapIndex(k).Interface()
		}
		return out, true
	}
	return nil, false
}

// SortedKeys returns the keys of m in order.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
