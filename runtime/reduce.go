package runtime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"

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
// delta decoded from JSON with json.Number applies like the original. An
// append or messages op whose value is null (as older versions stored an
// empty write) changes nothing.
//
// The merge of a step computes its values with the same code from the
// delta it makes, so applying a checkpoint's delta to its parent's values
// gives the checkpoint's values.
func ApplyDelta(values map[string]any, d Delta) error {
	return applyDelta(values, d, nil, false)
}

// applyDelta is ApplyDelta whose appends share structure with the lists
// own made (see [owner]); own nil copies. decoded tells that the values of
// d are canonical already (see [Applier.Decoded]).
func applyDelta(values map[string]any, d Delta, own *owner, decoded bool) error {
	var buf [8]string
	for _, f := range appendSortedFields(buf[:0], d) {
		op := d[f]
		if own == nil || !decoded && !isPlain(op.Value) {
			// An Applier's values may share the delta's.
			op.Value = spec.Normalize(op.Value)
		}
		switch op.Kind {
		case OpSet:
			values[f] = op.Value
		case OpAppend:
			items, ok := op.Value.([]any)
			if !ok && op.Value != nil {
				return fmt.Errorf("field %q: append delta is %s, want list", f, spec.TypeName(op.Value))
			}
			cur, _ := values[f].([]any)
			values[f] = own.appendList(f, cur, items)
		case OpMerge:
			patch, ok := op.Value.(map[string]any)
			if !ok {
				return fmt.Errorf("field %q: merge delta is %s, want object", f, spec.TypeName(op.Value))
			}
			cur, _ := values[f].(map[string]any)
			values[f] = mergeObject(cur, patch)
		case OpMessages:
			items, ok := op.Value.([]any)
			if !ok && op.Value != nil {
				return fmt.Errorf("field %q: messages delta is %s, want list", f, spec.TypeName(op.Value))
			}
			cur, _ := values[f].([]any)
			ml := newMessageList(cur, own.take(f, cur), own.tip(f, cur))
			if err := ml.apply(items); err != nil {
				return fmt.Errorf("field %q: %w", f, err)
			}
			list := ml.done()
			values[f] = list
			own.keepMessages(f, ml, list)
		default:
			return fmt.Errorf("field %q: unknown delta op %q", f, op.Kind)
		}
	}
	return nil
}

// mergeObject returns a new object of cur's keys replaced by patch's.
func mergeObject(cur, patch map[string]any) map[string]any {
	out := make(map[string]any, len(cur)+len(patch))
	for k, v := range cur {
		out[k] = v
	}
	for k, v := range patch {
		out[k] = v
	}
	return out
}

// appendSortedFields appends d's fields to keys, sorted.
func appendSortedFields(keys []string, d Delta) []string {
	for k := range d {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// WriteError is a write that could not be merged into the state.
type WriteError struct {
	Node  string
	Field string
	Err   error
}

func (e *WriteError) Error() string { return spec.FormatChain(e) }

// ErrorFrame implements [spec.Frame].
func (e *WriteError) ErrorFrame() (spec.Pos, string, error) {
	if e.Node == "" {
		return spec.Pos{}, fmt.Sprintf("write to %q", e.Field), e.Err
	}
	return spec.Pos{}, fmt.Sprintf("node %q: write to %q", e.Node, e.Field), e.Err
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
	writer []fieldWriter           // replace fields written so far
	lists  map[string]*messageList // messages fields changed so far
	ids    minter
	// own, when not nil, holds the spare capacity and the id indexes of
	// the lists of base the run made (see [owner]) and gets those of the
	// lists made.
	own *owner
}

// Merge applies the writes of one step to base through the reducers, in
// the order given (callers sort by node name). It returns the new values
// (base is not modified), the delta and which node wrote which fields.
// New messages get ids of a thread's own run (see "Message ids" in the
// package documentation).
func Merge(g *spec.Graph, step int, base map[string]any, writes []NodeWrites) (map[string]any, Delta, map[string][]string, error) {
	return merge(g, "", step, base, writes, nil)
}

// merge is Merge in the run whose message ids start with run. Its lists
// share structure with those own made, when own is not nil (see [owner]):
// only the run's own loop passes one, as merges that may run concurrently
// or from another snapshot than the last one must not extend the lists.
func merge(g *spec.Graph, run string, step int, base map[string]any, writes []NodeWrites, own *owner) (map[string]any, Delta, map[string][]string, error) {
	// A clone copies the map's table at once, cheaper than inserting.
	values := maps.Clone(base)
	if values == nil {
		values = map[string]any{}
	}
	m := &merger{g: g, step: step, values: values, delta: Delta{},
		ids: minter{run: run, step: step}, own: own}
	who := map[string][]string{}
	for _, nw := range writes {
		var fields []string
		for _, w := range nw.Writes {
			if err := m.apply(nw.Node, w); err != nil {
				return nil, nil, nil, err
			}
			if !slices.Contains(fields, w.Field) {
				if fields == nil {
					fields = make([]string, 0, len(nw.Writes))
				}
				fields = append(fields, w.Field)
			}
		}
		if fields != nil {
			if prev := who[nw.Node]; prev != nil {
				fields = append(prev, fields...)
			}
			who[nw.Node] = fields
		}
	}
	for f, ml := range m.lists {
		list := ml.done()
		if ml.changed {
			m.values[f] = list
		}
		own.keepMessages(f, ml, list)
	}
	return m.values, m.delta, who, nil
}

// fieldWriter is a replace field and the node that wrote it.
type fieldWriter struct{ field, node string }

// writerOf returns the node that wrote replace field f in this merge.
func (m *merger) writerOf(f string) (string, bool) {
	for _, w := range m.writer {
		if w.field == f {
			return w.node, true
		}
	}
	return "", false
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
		if prev, ok := m.writerOf(w.Field); !ok {
			m.writer = append(m.writer, fieldWriter{field: w.Field, node: node})
		} else if prev != node {
			return &ConflictError{Field: w.Field, Nodes: []string{prev, node}, Step: m.step}
		}
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
		m.values[w.Field] = mergeObject(curMap, patch)
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
		ml := m.lists[w.Field]
		if ml == nil {
			curList, _ := cur.([]any)
			ml = newMessageList(curList, m.own.take(w.Field, curList), m.own.tip(w.Field, curList))
			if m.lists == nil {
				m.lists = map[string]*messageList{}
			}
			m.lists[w.Field] = ml
		}
		items, err := m.messageItems(node, ml, w.Value)
		if err != nil {
			return fail(err)
		}
		items, err = messageWrite(ml, items)
		if err != nil {
			return fail(err)
		}
		if len(items) == 0 {
			return nil
		}
		// The state gets what the delta says, through the code that
		// applies deltas on load.
		if err := ml.apply(spec.DeepCopy(items).([]any)); err != nil {
			return fail(err)
		}
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
		c, err := item.Coerce(v)
		if err != nil {
			return nil, fmt.Errorf("item 0: %w", err)
		}
		return []any{c}, nil
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
	op := m.delta[field]
	if len(items) == 0 {
		// Nothing to append: no delta, unless an earlier write made one.
		return
	}
	curList, _ := cur.([]any)
	m.values[field] = m.own.appendList(field, curList, items)
	if op.Kind == OpSet {
		// Field was replaced earlier in this step: keep a whole value.
		m.delta[field] = Op{Kind: OpSet, Value: m.values[field]}
		return
	}
	acc, _ := op.Value.([]any)
	if acc == nil {
		acc = items // items is the merge's own
	} else {
		acc = append(acc, items...)
	}
	m.delta[field] = Op{Kind: OpAppend, Value: acc}
}

// messageItems canonicalises a messages update (one message or a list) and
// names the new messages without an id (see [minter]): a name is free when
// no message of ml has it and the update does not use it.
func (m *merger) messageItems(node string, ml *messageList, v any) ([]any, error) {
	var in []any
	if l, ok := v.([]any); ok {
		in = l
	} else {
		in = []any{v}
	}
	out := make([]any, 0, len(in))
	used := map[string]bool{}
	unnamed := []map[string]any(nil)
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
		if id, _ := msg["id"].(string); id != "" {
			used[id] = true
		} else {
			unnamed = append(unnamed, msg)
		}
		out = append(out, msg)
	}
	for _, msg := range unnamed {
		id := m.ids.id(node, func(id string) bool { return used[id] || ml.has(id) })
		used[id] = true
		msg["id"] = id
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
	if isPlain(v) {
		return v, nil // canonical already: no copy
	}
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
