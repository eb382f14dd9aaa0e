package runtime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/lgrun/lgrun/spec"
)

// Write is one value a node writes to a field. It merges into the state
// through the field's reducer.
type Write struct {
	Field string `json:"field"`
	Value any    `json:"value"`
}

// OpKind is how a delta changes a field.
type OpKind string

// Delta operations. Applying them needs no reducer code or expressions, so
// a saver can rebuild state from deltas on its own.
const (
	OpSet      OpKind = "set"      // Value is the new whole value
	OpAppend   OpKind = "append"   // Value is a list of items to append
	OpMerge    OpKind = "merge"    // Value is an object whose keys replace the current ones
	OpMessages OpKind = "messages" // Value is a list of messages to upsert by id, or {id, remove: true}
)

// Op is one field's change in a delta.
type Op struct {
	Kind  OpKind `json:"op"`
	Value any    `json:"v"`
}

// Delta is the change a checkpoint makes to its parent's values, by field.
type Delta map[string]Op

// ApplyDelta applies d to values in place. values must be owned by the
// caller. Delta values are copied and normalized (see spec.Normalize), so a
// delta decoded from JSON with json.Number applies like the original.
func ApplyDelta(values map[string]any, d Delta) error {
	for _, f := range sortedFields(d) {
		op := d[f]
		op.Value = spec.Normalize(op.Value)
		switch op.Kind {
		case OpSet:
			values[f] = op.Value
		case OpAppend:
			items, ok := op.Value.([]any)
			if !ok {
				return fmt.Errorf("field %q: append delta is %s, want list", f, spec.TypeName(op.Value))
			}
			cur, _ := values[f].([]any)
			values[f] = append(append(make([]any, 0, len(cur)+len(items)), cur...), items...)
		case OpMerge:
			patch, ok := op.Value.(map[string]any)
			if !ok {
				return fmt.Errorf("field %q: merge delta is %s, want object", f, spec.TypeName(op.Value))
			}
			cur, _ := values[f].(map[string]any)
			out := make(map[string]any, len(cur)+len(patch))
			for k, v := range cur {
				out[k] = v
			}
			for k, v := range patch {
				out[k] = v
			}
			values[f] = out
		case OpMessages:
			items, ok := op.Value.([]any)
			if !ok {
				return fmt.Errorf("field %q: messages delta is %s, want list", f, spec.TypeName(op.Value))
			}
			cur, _ := values[f].([]any)
			next, err := upsertMessages(cur, items, "")
			if err != nil {
				return fmt.Errorf("field %q: %w", f, err)
			}
			values[f] = next
		default:
			return fmt.Errorf("field %q: unknown delta op %q", f, op.Kind)
		}
	}
	return nil
}

func sortedFields(d Delta) []string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// upsertMessages applies messages (with ids) to cur: a message whose id
// exists replaces it, {id, remove: true} deletes it, others append.
//
// fresh, when not empty, is the id prefix of messages made in the current
// step ("<step>."): such ids cannot be in cur already, so only when another
// id comes along is cur indexed — a step that appends new messages costs
// O(new), not O(len(cur)).
func upsertMessages(cur, items []any, fresh string) ([]any, error) {
	out := make([]any, len(cur), len(cur)+len(items))
	copy(out, cur)
	var index map[string]int // ids of out; built on first need
	added := map[string]int{}
	lookup := func(id string) (int, bool) {
		if i, ok := added[id]; ok {
			return i, true
		}
		if fresh != "" && strings.HasPrefix(id, fresh) {
			return 0, false
		}
		if index == nil {
			index = make(map[string]int, len(cur))
			for i, m := range cur {
				if mm, ok := m.(map[string]any); ok {
					if id, _ := mm["id"].(string); id != "" {
						index[id] = i
					}
				}
			}
		}
		i, ok := index[id]
		return i, ok && out[i] != nil
	}
	removed := false
	for _, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("message is %s, want object", spec.TypeName(it))
		}
		id, _ := m["id"].(string)
		if rm, _ := m["remove"].(bool); rm {
			i, ok := lookup(id)
			if !ok || out[i] == nil {
				return nil, fmt.Errorf("cannot remove message %q: no message has that id", id)
			}
			out[i] = nil
			delete(added, id)
			removed = true
			continue
		}
		if id != "" {
			if i, ok := lookup(id); ok && out[i] != nil {
				out[i] = spec.DeepCopy(m)
				continue
			}
			added[id] = len(out)
		}
		out = append(out, spec.DeepCopy(m))
	}
	if removed {
		kept := out[:0]
		for _, m := range out {
			if m != nil {
				kept = append(kept, m)
			}
		}
		out = kept
	}
	return out, nil
}

// WriteError is a write that could not be merged into the state.
type WriteError struct {
	Node  string
	Field string
	Err   error
}

func (e *WriteError) Error() string {
	if e.Node == "" {
		return fmt.Sprintf("write to %q: %v", e.Field, e.Err)
	}
	return fmt.Sprintf("node %q: write to %q: %v", e.Node, e.Field, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// ConflictError is two nodes of one superstep writing the same replace field.
type ConflictError struct {
	Field string
	Nodes []string
	Step  int
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("step %d: nodes %q and %q both wrote replace field %q in the same superstep; give the field a reducer (append, add, merge, custom) or order the nodes", e.Step, e.Nodes[0], e.Nodes[1], e.Field)
}

// NodeWrites is the writes of one node, merged as a unit.
type NodeWrites struct {
	Node   string
	Writes []Write
}

// merger applies a step's writes to a copy of the state and builds the delta.
type merger struct {
	g      *spec.Graph
	step   int
	values map[string]any // copy-on-write: fields replaced, never mutated
	delta  Delta
	writer map[string]string // replace field → node that wrote it
	nmsg   int
}

// Merge applies the writes of one step to base through the reducers, in
// the order given (callers sort by node name). It returns the new values
// (base is not modified), the delta and which node wrote which fields.
func Merge(g *spec.Graph, step int, base map[string]any, writes []NodeWrites) (map[string]any, Delta, map[string][]string, error) {
	m := &merger{g: g, step: step, values: make(map[string]any, len(base)), delta: Delta{}, writer: map[string]string{}}
	for k, v := range base {
		m.values[k] = v
	}
	who := map[string][]string{}
	for _, nw := range writes {
		seen := map[string]bool{}
		for _, w := range nw.Writes {
			if err := m.apply(nw.Node, w); err != nil {
				return nil, nil, nil, err
			}
			if !seen[w.Field] {
				seen[w.Field] = true
				who[nw.Node] = append(who[nw.Node], w.Field)
			}
		}
	}
	return m.values, m.delta, who, nil
}

func (m *merger) apply(node string, w Write) error {
	f := m.g.Field(w.Field)
	if f == nil {
		return &WriteError{Node: node, Field: w.Field, Err: fmt.Errorf("no such state field")}
	}
	fail := func(err error) error { return &WriteError{Node: node, Field: w.Field, Err: err} }
	pv, err := plainJSON(w.Value)
	if err != nil {
		return fail(err)
	}
	w.Value = pv
	cur := m.values[w.Field]
	if f.Optional && f.Reducer.Kind != spec.ReduceReplace && f.Reducer.Kind != spec.ReduceCustom {
		if w.Value == nil {
			// Null clears an optional field, whatever its reducer.
			m.values[w.Field] = nil
			m.delta[w.Field] = Op{Kind: OpSet, Value: nil}
			return nil
		}
		if cur == nil {
			cur = f.Type.Zero() // the reducers build on the zero value
		}
	}
	switch f.Reducer.Kind {
	case spec.ReduceReplace:
		if prev, ok := m.writer[w.Field]; ok && prev != node {
			return &ConflictError{Field: w.Field, Nodes: []string{prev, node}, Step: m.step}
		}
		m.writer[w.Field] = node
		v, err := f.Coerce(w.Value)
		if err != nil {
			return fail(err)
		}
		if !f.InEnum(v) {
			return fail(fmt.Errorf("value %v is not one of the field's enum values", v))
		}
		m.values[w.Field] = v
		m.delta[w.Field] = Op{Kind: OpSet, Value: v}
	case spec.ReduceAppend:
		items, err := appendItems(f, w.Value)
		if err != nil {
			return fail(err)
		}
		m.appendItems(w.Field, cur, items)
	case spec.ReduceAdd:
		switch f.Type.Kind {
		case spec.KindList, spec.KindAny:
			if items, ok := w.Value.([]any); ok || f.Type.Kind == spec.KindList {
				if !ok {
					return fail(fmt.Errorf("add to a list needs a list, got %s", spec.TypeName(w.Value)))
				}
				items, err := appendItems(f, items)
				if err != nil {
					return fail(err)
				}
				m.appendItems(w.Field, cur, items)
				return nil
			}
			fallthrough
		default:
			v, err := add(f.Type, cur, w.Value)
			if err != nil {
				return fail(err)
			}
			m.values[w.Field] = v
			m.delta[w.Field] = Op{Kind: OpSet, Value: v}
		}
	case spec.ReduceMerge:
		patch, ok := w.Value.(map[string]any)
		if !ok {
			return fail(fmt.Errorf("merge needs an object, got %s", spec.TypeName(w.Value)))
		}
		patch = spec.Normalize(patch).(map[string]any)
		curMap, _ := cur.(map[string]any)
		out := make(map[string]any, len(curMap)+len(patch))
		for k, v := range curMap {
			out[k] = v
		}
		for k, v := range patch {
			out[k] = v
		}
		m.values[w.Field] = out
		op := m.delta[w.Field]
		acc, _ := op.Value.(map[string]any)
		if op.Kind != OpMerge {
			acc = map[string]any{}
		}
		for k, v := range patch {
			acc[k] = v
		}
		m.delta[w.Field] = Op{Kind: OpMerge, Value: acc}
	case spec.ReduceMessages:
		items, err := m.messageItems(node, w.Value)
		if err != nil {
			return fail(err)
		}
		curList, _ := cur.([]any)
		next, err := upsertMessages(curList, items, fmt.Sprintf("%d.", m.step))
		if err != nil {
			return fail(err)
		}
		m.values[w.Field] = next
		op := m.delta[w.Field]
		acc, _ := op.Value.([]any)
		m.delta[w.Field] = Op{Kind: OpMessages, Value: append(acc, items...)}
	case spec.ReduceCustom:
		v, err := f.Reducer.Custom.Eval(map[string]any{"current": cur, "update": w.Value})
		if err != nil {
			return fail(fmt.Errorf("custom reducer: %w", err))
		}
		v, err = f.Coerce(v)
		if err != nil {
			return fail(fmt.Errorf("custom reducer result: %w", err))
		}
		m.values[w.Field] = v
		m.delta[w.Field] = Op{Kind: OpSet, Value: v}
	default:
		return fail(fmt.Errorf("unknown reducer %q", f.Reducer.Kind))
	}
	return nil
}

// appendItems accepts one item or a list of items (a list always extends;
// wrap a list in another to append it as one item), each checked against
// the item type.
func appendItems(f *spec.Field, v any) ([]any, error) {
	item := f.Type.Item()
	in, ok := v.([]any)
	if !ok {
		in = []any{v}
	}
	out := make([]any, len(in))
	for i, x := range in {
		c, err := item.Coerce(x)
		if err != nil {
			return nil, fmt.Errorf("item %d: %w", i, err)
		}
		out[i] = c
	}
	return out, nil
}

func (m *merger) appendItems(field string, cur any, items []any) {
	curList, _ := cur.([]any)
	m.values[field] = append(append(make([]any, 0, len(curList)+len(items)), curList...), items...)
	op := m.delta[field]
	if op.Kind == OpSet {
		// Field was replaced earlier in this step: keep a whole value.
		m.delta[field] = Op{Kind: OpSet, Value: m.values[field]}
		return
	}
	acc, _ := op.Value.([]any)
	m.delta[field] = Op{Kind: OpAppend, Value: append(acc, items...)}
}

// messageItems canonicalises a messages update (one message or a list),
// assigning deterministic ids to messages without one.
func (m *merger) messageItems(node string, v any) ([]any, error) {
	var in []any
	if l, ok := v.([]any); ok {
		in = l
	} else {
		in = []any{v}
	}
	out := make([]any, 0, len(in))
	for i, x := range in {
		raw, ok := x.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("message %d: want object, got %s", i, spec.TypeName(x))
		}
		if rm, _ := raw["remove"].(bool); rm {
			id, _ := raw["id"].(string)
			if id == "" {
				return nil, fmt.Errorf("message %d: remove needs an id", i)
			}
			out = append(out, map[string]any{"id": id, "remove": true})
			continue
		}
		msg, err := spec.Message(raw)
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", i, err)
		}
		if msg["id"] == "" {
			msg["id"] = fmt.Sprintf("%d.%s.%d", m.step, node, m.nmsg)
			m.nmsg++
		}
		out = append(out, msg)
	}
	return out, nil
}

func add(t spec.Type, cur, v any) (any, error) {
	switch t.Kind {
	case spec.KindInt:
		a, _ := t.Coerce(cur)
		b, err := t.Coerce(v)
		if err != nil {
			return nil, err
		}
		return a.(int) + b.(int), nil
	case spec.KindFloat:
		a, _ := t.Coerce(cur)
		b, err := t.Coerce(v)
		if err != nil {
			return nil, err
		}
		return a.(float64) + b.(float64), nil
	case spec.KindString:
		b, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("add to a string needs a string, got %s", spec.TypeName(v))
		}
		a, _ := cur.(string)
		return a + b, nil
	case spec.KindAny:
		switch a := cur.(type) {
		case nil:
			return spec.Normalize(v), nil
		case int:
			if b, ok := v.(int); ok {
				return a + b, nil
			}
			if b, ok := v.(float64); ok {
				return float64(a) + b, nil
			}
		case float64:
			if b, ok := v.(float64); ok {
				return a + b, nil
			}
			if b, ok := v.(int); ok {
				return a + float64(b), nil
			}
		case string:
			if b, ok := v.(string); ok {
				return a + b, nil
			}
		}
		return nil, fmt.Errorf("cannot add %s to %s", spec.TypeName(v), spec.TypeName(cur))
	}
	return nil, fmt.Errorf("add does not work with type %s", t)
}

// plainJSON returns v made of canonical JSON values only; Go values of
// other types (structs, typed maps and slices) go through encoding/json.
func plainJSON(v any) (any, error) {
	v = spec.Normalize(v)
	if isPlain(v) {
		return v, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("value is not JSON: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("value is not JSON: %w", err)
	}
	return spec.Normalize(out), nil
}

func isPlain(v any) bool {
	switch x := v.(type) {
	case nil, bool, int, string:
		return true
	case float64:
		return !math.IsNaN(x) && !math.IsInf(x, 0)
	case []any:
		for _, e := range x {
			if !isPlain(e) {
				return false
			}
		}
		return true
	case map[string]any:
		for _, e := range x {
			if !isPlain(e) {
				return false
			}
		}
		return true
	}
	return false
}
