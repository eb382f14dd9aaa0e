package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/expr-lang/expr/types"
	"gopkg.in/yaml.v3"
)

// checker decodes a schema-valid YAML tree into a Graph and checks it.
type checker struct {
	loader *loader
	reg    *Registry // custom kinds, nil for none
	file   string
	dir    string
	errs   *ErrorList
	ec     *exprCompiler
	g      *Graph
	env    types.Map // {state}

	// edgesKey is the "edges" key, where graph-level edge problems point.
	edgesKey *yaml.Node
	// nodesBad is set when nodes is not a mapping: node references are
	// then not checked, as every one would be unknown.
	nodesBad bool
}

func (c *checker) pos(n *yaml.Node) Pos { return nodePos(c.file, n) }

func (c *checker) check(root *yaml.Node) {
	m := asMapping(root)
	g := c.g
	if n := m.get("version"); n != nil {
		var v int
		_ = n.Decode(&v)
		g.Version = v
		if v != 1 {
			c.errs.Add(c.pos(n), "unsupported version %d (this lgrun reads version 1)", v)
		}
	}
	g.Name = scalar(m.get("name"))
	g.Description = scalar(m.get("description"))
	c.decodeState(m.get("state"))
	c.env = stateEnv(g.Fields)
	c.decodeModels(m.get("models"))
	c.decodeTools(m.get("tools"))
	c.edgesKey = m.kpos["edges"]
	c.nodesBad = m.get("nodes") == nil || m.get("nodes").Kind != yaml.MappingNode
	c.decodeNodes(m.get("nodes"))
	c.decodeEdges(m.get("edges"))
	c.decodeInterrupts(m.get("interrupts"))
	c.decodeLimits(m.get("limits"))
	if c.errs.HasErrors() {
		return
	}
	c.analyze()
}

func scalar(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	return n.Value
}

func (c *checker) decodeState(n *yaml.Node) {
	m := asMapping(n)
	for _, k := range m.keys {
		name := k.Value
		fm := asMapping(m.get(name))
		f := &Field{Name: name, Pos: c.pos(k), Description: scalar(fm.get("description"))}
		f.Type = Type{Kind: Kind(scalar(fm.get("type")))}
		if it := fm.get("items"); it != nil {
			if f.Type.Kind != KindList {
				c.errs.Add(c.pos(fm.kpos["items"]), "state.%s: items is only for type list", name)
			}
			f.Type.Items = Kind(it.Value)
			if f.Type.Items == KindMessages || f.Type.Items == KindList {
				c.errs.Add(c.pos(it), "state.%s: items must be a scalar, object or any type", name)
			}
		}
		c.decodeReducer(f, fm)
		if o := fm.get("optional"); o != nil {
			_ = o.Decode(&f.Optional)
		}
		if d := fm.get("default"); d != nil {
			var conv valueConv
			conv.file, conv.errs = c.file, c.errs
			dv := conv.value(d)
			v, err := f.Coerce(dv)
			if err != nil && dv != nil {
				c.errs.Add(c.pos(badItem(d, f.Type)), "state.%s: default does not match type %s: %v", name, f.Type, err)
			} else if err != nil {
				c.errs.Add(c.pos(d), "state.%s: default is null, but the field is not optional (declare it optional: true, or drop the default)", name)
			}
			f.Default = v
		} else if !f.Optional {
			f.Default = f.Type.Zero()
		}
		if en := fm.get("enum"); en != nil {
			var conv valueConv
			conv.file, conv.errs = c.file, c.errs
			vals, _ := conv.value(en).([]any)
			for i, v := range vals {
				cv, err := f.Type.Coerce(v)
				if err != nil {
					c.errs.Add(c.pos(en.Content[i]), "state.%s: enum value does not match type %s: %v", name, f.Type, err)
					continue
				}
				f.Enum = append(f.Enum, cv)
			}
			if fm.get("default") != nil && !f.InEnum(f.Default) {
				c.errs.Add(c.pos(fm.get("default")), "state.%s: default %s is not one of the enum values (%s)", name, jsonValue(f.Default), enumList(f.Enum))
			}
			if fm.get("default") == nil && len(f.Enum) > 0 && !f.Optional {
				f.Default = f.Enum[0]
			}
		}
		c.g.Fields = append(c.g.Fields, f)
		c.g.fieldIndex[name] = f
	}
}

// badItem returns the first item of the list value n that does not match
// the item type of t, or n itself, for an error position.
func badItem(n *yaml.Node, t Type) *yaml.Node {
	if n.Kind != yaml.SequenceNode || (t.Kind != KindList && t.Kind != KindMessages) {
		return n
	}
	var conv valueConv
	conv.errs = &ErrorList{}
	for _, it := range n.Content {
		v := conv.value(it)
		var err error
		if t.Kind == KindMessages {
			_, err = Message(v)
		} else {
			_, err = t.Item().Coerce(v)
		}
		if err != nil {
			return it
		}
	}
	return n
}

// InEnum reports whether v is one of the field's enum values (or the field has none).
// An optional field's null is always allowed.
func (f *Field) InEnum(v any) bool {
	return len(f.Enum) == 0 || (v == nil && f.Optional) || inEnum(f.Enum, v)
}

func inEnum(enum []any, v any) bool {
	b, _ := json.Marshal(v)
	for _, e := range enum {
		eb, _ := json.Marshal(e)
		if bytes.Equal(b, eb) {
			return true
		}
	}
	return false
}

func (c *checker) decodeReducer(f *Field, fm *mapping) {
	rn := fm.get("reducer")
	kind := ReduceReplace
	if f.Type.Kind == KindMessages {
		kind = ReduceMessages
	}
	if rn != nil {
		if rn.Kind == yaml.MappingNode {
			kind = ReduceCustom
			cn := asMapping(rn).get("custom")
			env := types.Map{"current": f.Type.ExprType(), "update": types.Any}
			f.Reducer.Custom = c.ec.compile(cn, "state."+f.Name+".reducer.custom", env, func(t reflect.Type) string {
				if k := kindOfType(t); k != "" && !compatible(k, f.Type) && !(k == kindNull && f.Optional) {
					return fmt.Sprintf("custom reducer yields %s, but field %q is %s", k, f.Name, f.Type)
				}
				return ""
			})
		} else {
			kind = ReducerKind(rn.Value)
		}
	}
	f.Reducer.Kind = kind
	ok := true
	switch kind {
	case ReduceAppend:
		ok = f.Type.Kind == KindList || f.Type.Kind == KindAny
	case ReduceAdd:
		ok = f.Type.Kind == KindInt || f.Type.Kind == KindFloat || f.Type.Kind == KindList || f.Type.Kind == KindString || f.Type.Kind == KindAny
	case ReduceMerge:
		ok = f.Type.Kind == KindObject || f.Type.Kind == KindAny
	case ReduceMessages:
		ok = f.Type.Kind == KindMessages
	}
	if !ok && rn != nil {
		c.errs.Add(c.pos(rn), "state.%s: reducer %s does not work with type %s%s", f.Name, kind, f.Type, reducerHint(kind))
	}
}

func reducerHint(k ReducerKind) string {
	switch k {
	case ReduceAppend:
		return " (append needs a list)"
	case ReduceAdd:
		return " (add needs int, float, string or list)"
	case ReduceMerge:
		return " (merge needs an object)"
	case ReduceMessages:
		return " (messages needs type messages)"
	}
	return ""
}

func (c *checker) duration(n *yaml.Node, path string) time.Duration {
	if n == nil {
		return 0
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil || d <= 0 {
		c.errs.Add(c.pos(n), "%s: invalid duration %q", path, n.Value)
	}
	return d
}

func (c *checker) retry(n *yaml.Node, path string) Retry {
	m := asMapping(n)
	var r Retry
	if v := m.get("max_attempts"); v != nil {
		_ = v.Decode(&r.MaxAttempts)
	}
	r.InitialBackoff = c.duration(m.get("initial_backoff"), path+".initial_backoff")
	r.MaxBackoff = c.duration(m.get("max_backoff"), path+".max_backoff")
	return r
}

func nameRefs(file string, n *yaml.Node) []NameRef {
	if n == nil {
		return nil
	}
	switch n.Kind {
	case yaml.ScalarNode:
		return []NameRef{{Name: n.Value, Pos: nodePos(file, n)}}
	case yaml.SequenceNode:
		var out []NameRef
		for _, e := range n.Content {
			for e.Kind == yaml.AliasNode {
				e = e.Alias
			}
			if e.Kind == yaml.ScalarNode {
				out = append(out, NameRef{Name: e.Value, Pos: nodePos(file, e)})
			}
		}
		return out
	}
	// Anything else is a schema error, reported there.
	return nil
}

func (c *checker) decodeEdges(n *yaml.Node) {
	if n == nil || n.Kind != yaml.SequenceNode {
		return // a schema error
	}
	for i, en := range n.Content {
		em := asMapping(en)
		path := fmt.Sprintf("edges[%d]", i)
		e := &Edge{Pos: c.pos(en)}
		e.From = nameRefs(c.file, em.get("from"))
		e.To = nameRefs(c.file, em.get("to"))
		e.Else = nameRefs(c.file, em.get("else"))
		e.Default = nameRefs(c.file, em.get("default"))
		e.Paths = nameRefs(c.file, em.get("paths"))
		e.When = c.ec.compile(em.get("when"), path+".when", c.env, wantBool)
		e.Route = c.ec.compile(em.get("route"), path+".route", c.env, wantRoute)
		c.checkRouteValues(e.Route, e.Paths, path+".route")
		if rn := em.get("routes"); rn != nil && rn.Kind == yaml.SequenceNode {
			e.routesPos = c.pos(em.kpos["routes"])
			for j, r := range rn.Content {
				rm := asMapping(r)
				e.Routes = append(e.Routes, &Route{
					Pos:  c.pos(r),
					When: c.ec.compile(rm.get("when"), fmt.Sprintf("%s.routes[%d].when", path, j), c.env, wantBool),
					To:   nameRefs(c.file, rm.get("to")),
				})
			}
		}
		has := func(k string) bool { return em.get(k) != nil }
		var forms []string
		for _, k := range em.keys {
			if k.Value == "to" || k.Value == "routes" || k.Value == "route" {
				forms = append(forms, k.Value)
			}
		}
		switch {
		case len(forms) == 0 && !hasUnknownKey(em, edgeKeys) && !has("when"):
			// With an unknown key (a typo of to?) the schema error says
			// enough, and "when needs to" is more precise.
			c.errs.Add(e.Pos, "%s: edge needs to, routes or route", path)
		case len(forms) > 1:
			c.errs.Add(c.pos(em.kpos[forms[1]]), "%s: %s and %s in one edge; use only one of to, routes and route", path, forms[0], forms[1])
		}
		if has("else") && !has("when") {
			c.errs.Add(c.pos(em.kpos["else"]), "%s: else needs when", path)
		}
		if has("when") && !has("to") {
			c.errs.Add(c.pos(em.kpos["when"]), "%s: when needs to", path)
		}
		if has("default") && !has("routes") {
			c.errs.Add(c.pos(em.kpos["default"]), "%s: default goes with routes", path)
		}
		if has("paths") && !has("route") {
			c.errs.Add(c.pos(em.kpos["paths"]), "%s: paths goes with route", path)
		}
		if has("route") && !has("paths") {
			c.errs.Add(c.pos(em.kpos["route"]), "%s: route needs paths, the list of nodes it may yield", path)
		}
		if len(e.From) > 1 && e.Conditional() {
			at := e.Pos
			for _, k := range em.keys {
				if k.Value == "when" || k.Value == "routes" || k.Value == "route" {
					at = c.pos(k)
					break
				}
			}
			c.errs.Add(at, "%s: a join (from a list) cannot be conditional; join into a node and route from there", path)
		}
		for _, f := range e.From {
			switch {
			case f.Name == End:
				c.errs.Add(f.Pos, "%s: END cannot be an edge source", path)
			case f.Name == Start && len(e.From) > 1:
				c.errs.Add(f.Pos, "%s: START cannot be part of a join", path)
			default:
				c.nodeRef(f, true)
			}
		}
		for _, t := range e.Targets() {
			if t.Name == Start {
				c.errs.Add(t.Pos, "%s: START cannot be an edge target", path)
				continue
			}
			c.nodeRef(t, false)
		}
		c.g.Edges = append(c.g.Edges, e)
	}
	for _, node := range c.g.Nodes {
		for _, t := range node.GotoPaths {
			if parent, ok := strings.CutPrefix(t.Name, "^"); ok {
				// A route to a node of the parent graph; checked by the
				// parent when it loads this graph as a subgraph.
				if parent == "" || parent == Start {
					c.errs.Add(t.Pos, "nodes.%s.goto_paths: %q must name a node of the parent graph after ^", node.Name, t.Name)
				}
				continue
			}
			if t.Name == Start {
				c.errs.Add(t.Pos, "nodes.%s.goto_paths: START cannot be a target", node.Name)
				continue
			}
			c.nodeRef(t, false)
		}
		if node.MappedNode().Name != "" {
			if node.MappedNode().Name == node.Name {
				c.errs.Add(node.MappedNode().Pos, "nodes.%s.node: a map node cannot map itself", node.Name)
			} else {
				c.nodeRef(node.MappedNode(), false)
			}
		}
	}
}

// edgeKeys are the keys of an edge.
var edgeKeys = []string{"from", "to", "when", "else", "routes", "default", "route", "paths"}

func hasUnknownKey(m *mapping, known []string) bool {
	for _, k := range m.keys {
		if !contains(known, k.Value) {
			return true
		}
	}
	return false
}

// nodeRef checks that r names a node, START (sources) or END (targets).
func (c *checker) nodeRef(r NameRef, source bool) bool {
	if (source && r.Name == Start) || (!source && r.Name == End) || c.g.Nodes[r.Name] != nil || c.nodesBad {
		return true
	}
	names := append([]string{}, c.g.NodeOrder...)
	if source {
		names = append(names, Start)
	} else {
		names = append(names, End)
	}
	c.unknownRef(r, "node", names)
	return false
}

func (c *checker) decodeInterrupts(n *yaml.Node) {
	m := asMapping(n)
	c.g.Interrupts.Before = nameRefs(c.file, m.get("before"))
	c.g.Interrupts.After = nameRefs(c.file, m.get("after"))
	for _, list := range [][]NameRef{c.g.Interrupts.Before, c.g.Interrupts.After} {
		seen := map[string]bool{}
		for _, r := range list {
			if r.Name == Start || r.Name == End {
				c.errs.Add(r.Pos, "interrupts: %s cannot be interrupted; name a node", r.Name)
				continue
			}
			if seen[r.Name] {
				c.errs.Add(r.Pos, "interrupts: %q is listed twice", r.Name)
			}
			seen[r.Name] = true
			if c.g.Nodes[r.Name] == nil && !c.nodesBad {
				c.unknownRef(r, "node", c.g.NodeOrder)
			}
		}
	}
}

func (c *checker) decodeLimits(n *yaml.Node) {
	m := asMapping(n)
	l := &c.g.Limits
	if v := m.get("steps"); v != nil {
		_ = v.Decode(&l.Steps)
	}
	l.Timeout = c.duration(m.get("timeout"), "limits.timeout")
	if v := m.get("llm_calls"); v != nil {
		_ = v.Decode(&l.LLMCalls)
	}
	if v := m.get("tokens"); v != nil {
		_ = v.Decode(&l.Tokens)
	}
	if v := m.get("cost_usd"); v != nil {
		_ = v.Decode(&l.CostUSD)
	}
	l.StateSize = c.size(m.get("state_size"), "limits.state_size")
}

// jsonValue renders a canonical value as JSON, for messages.
func jsonValue(v any) string {
	s, err := jsonString(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return describeValue(s)
}

// enumList renders enum values for messages, e.g. "happy", "sad".
func enumList(vals []any) string {
	s := make([]string, len(vals))
	for i, v := range vals {
		s[i] = jsonValue(v)
	}
	return strings.Join(s, ", ")
}

// String renders refs as a comma-separated list of names.
func refNames(refs []NameRef) string {
	s := make([]string, len(refs))
	for i, r := range refs {
		s[i] = r.Name
	}
	return strings.Join(s, ", ")
}
