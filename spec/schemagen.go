package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// The per-kind part of the graph JSON Schema is generated from kind
// declarations: the node kinds' enum and settings ($defs.node), the tool
// kinds' ($defs.tool) and the providers' enum ($defs.model.provider),
// plus, for editors, one if/then rule per kind that allows only the kind's
// own keys (so an editor flags a key of the wrong kind). Everything else
// of the schema is written by hand in schema/graph.schema.json and kept
// as it is, in its order.
//
// The loader validates with the schema without the per-kind rules: the
// decoder reports a key of the wrong kind itself, with a suggestion.

// okv is a JSON object that keeps its key order.
type okv struct {
	keys []string
	vals map[string]any
}

func newOKV() *okv { return &okv{vals: map[string]any{}} }

func (o *okv) get(k string) any { return o.vals[k] }

func (o *okv) set(k string, v any) {
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
}

func (o *okv) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		vb, err := marshalNoEscape(o.vals[k])
		if err != nil {
			return nil, err
		}
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// decodeOrdered parses JSON keeping object key order (objects become *okv).
func decodeOrdered(src []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			o := newOKV()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				o.set(kt.(string), v)
			}
			_, err := dec.Token()
			return o, err
		case '[':
			out := []any{}
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			}
			_, err := dec.Token()
			return out, err
		}
	}
	return tok, nil
}

// toOrdered converts a value of a Go schema literal (maps) to ordered form:
// "type" first, the other keys sorted.
func toOrdered(v any) any {
	switch x := v.(type) {
	case map[string]any:
		o := newOKV()
		if t, ok := x["type"]; ok {
			o.set("type", toOrdered(t))
		}
		for _, k := range SortedKeys(x) {
			o.set(k, toOrdered(x[k]))
		}
		return o
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toOrdered(e)
		}
		return out
	}
	return v
}

// kindSettings is one kind's name and setting keys, for the per-kind rules.
type kindSettings struct {
	name string
	keys []string
}

// setKindPart replaces the per-kind part of def (a $defs entry of node or
// tool kinds): common lists the hand-written keys every kind has.
func setKindPart(def *okv, common []string, kinds []kindSettings, settings map[string][]Setting, order []string, kindDoc string) {
	props := def.get("properties").(*okv)
	kept := newOKV()
	for _, k := range props.keys {
		if slices.Contains(common, k) {
			kept.set(k, props.get(k))
		}
	}
	kind := newOKV()
	if kindDoc != "" {
		kind.set("description", kindDoc)
	}
	var names []any
	for _, k := range kinds {
		names = append(names, k.name)
	}
	kind.set("enum", names)
	kept.set("kind", kind)
	// Keep "kind" where the file has it (first).
	if i := slices.Index(kept.keys, "kind"); i > 0 {
		kept.keys = append([]string{"kind"}, slices.Delete(kept.keys, i, i+1)...)
	}
	for _, key := range order {
		var users, docs []string
		var schema map[string]any
		for _, k := range kinds {
			for _, s := range settings[k.name] {
				if s.Name != key {
					continue
				}
				users = append(users, k.name)
				if !slices.Contains(docs, s.Doc) {
					docs = append(docs, s.Doc)
				}
				schema = s.Schema
			}
		}
		desc := "kind " + strings.Join(users, ", ") + ": " + strings.Join(docs, " ")
		p := newOKV()
		p.set("description", desc)
		if o, ok := toOrdered(schema).(*okv); ok {
			for _, k := range o.keys {
				if k != "description" {
					p.set(k, o.get(k))
				}
			}
		}
		kept.set(key, p)
	}
	def.set("properties", kept)
	var rules []any
	for _, k := range kinds {
		allowed := []any{"kind"}
		for _, c := range common {
			allowed = append(allowed, c)
		}
		for _, key := range k.keys {
			allowed = append(allowed, key)
		}
		cond := newOKV()
		cprops := newOKV()
		ck := newOKV()
		ck.set("const", k.name)
		cprops.set("kind", ck)
		cond.set("properties", cprops)
		cond.set("required", []any{"kind"})
		then := newOKV()
		pn := newOKV()
		pn.set("enum", allowed)
		then.set("propertyNames", pn)
		rule := newOKV()
		rule.set("if", cond)
		rule.set("then", then)
		rules = append(rules, rule)
	}
	def.set("allOf", rules)
}

// generateSchema returns base (a graph JSON Schema) with its per-kind part
// generated from the given declarations.
func generateSchema(base []byte, nodes []NodeKindDecl, tools []ToolKindDecl, providers []ProviderDecl) ([]byte, error) {
	v, err := decodeOrdered(base)
	if err != nil {
		return nil, fmt.Errorf("parse graph schema: %w", err)
	}
	doc, ok := v.(*okv)
	if !ok {
		return nil, fmt.Errorf("graph schema is not an object")
	}
	defs := doc.get("$defs").(*okv)

	var kinds []kindSettings
	settings := map[string][]Setting{}
	var order []string
	var kindDocs []string
	for _, d := range nodes {
		ks := kindSettings{name: d.Name}
		for _, s := range d.Settings {
			ks.keys = append(ks.keys, s.Name)
			if !slices.Contains(order, s.Name) {
				order = append(order, s.Name)
			}
		}
		kinds = append(kinds, ks)
		settings[d.Name] = d.Settings
		kindDocs = append(kindDocs, d.Name+": "+d.Doc)
	}
	setKindPart(defs.get("node").(*okv), commonNodeKeys[1:], kinds, settings, order, "The node's kind. "+strings.Join(kindDocs, " "))

	kinds, order, kindDocs = nil, nil, nil
	settings = map[string][]Setting{}
	for _, d := range tools {
		ks := kindSettings{name: d.Name}
		for _, s := range d.Settings {
			ks.keys = append(ks.keys, s.Name)
			if !slices.Contains(order, s.Name) {
				order = append(order, s.Name)
			}
		}
		kinds = append(kinds, ks)
		settings[d.Name] = d.Settings
		kindDocs = append(kindDocs, d.Name+": "+d.Doc)
	}
	setKindPart(defs.get("tool").(*okv), commonToolKeys[1:], kinds, settings, order, "The tool's kind. "+strings.Join(kindDocs, " "))

	prov := defs.get("model").(*okv).get("properties").(*okv).get("provider").(*okv)
	var names []any
	var docs []string
	for _, p := range providers {
		names = append(names, p.Name)
		docs = append(docs, p.Name+" ("+p.Doc+")")
	}
	prov.set("description", strings.Join(docs, ", ")+".")
	prov.set("enum", names)

	out, err := marshalNoEscape(doc)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := json.Indent(&b, out, "", "  "); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// withoutKindRules removes the per-kind rules from doc, a parsed graph
// schema, for validation by the loader (see the comment at the top of this
// file). It edits the parsed document in place: re-encoding the schema
// without them would cost a process that loads one graph more than the
// compile itself.
func withoutKindRules(doc any) {
	root, _ := doc.(map[string]any)
	defs, _ := root["$defs"].(map[string]any)
	for _, def := range []string{"node", "tool"} {
		if d, ok := defs[def].(map[string]any); ok {
			delete(d, "allOf")
		}
	}
}
