package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/expr-lang/expr/types"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// checker decodes a schema-valid YAML tree into a Graph and checks it.
type checker struct {
	loader *loader
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
		if d := fm.get("default"); d != nil {
			var conv valueConv
			conv.file, conv.errs = c.file, c.errs
			v, err := f.Type.Coerce(conv.value(d))
			if err != nil {
				c.errs.Add(c.pos(badItem(d, f.Type)), "state.%s: default does not match type %s: %v", name, f.Type, err)
			}
			f.Default = v
		} else {
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
			if fm.get("default") != nil && !inEnum(f.Enum, f.Default) {
				c.errs.Add(c.pos(fm.get("default")), "state.%s: default %s is not one of the enum values (%s)", name, jsonValue(f.Default), enumList(f.Enum))
			}
			if fm.get("default") == nil && len(f.Enum) > 0 {
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
func (f *Field) InEnum(v any) bool { return len(f.Enum) == 0 || inEnum(f.Enum, v) }

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
				if k := kindOfType(t); k != "" && !compatible(k, f.Type) {
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

func (c *checker) decodeModels(n *yaml.Node) {
	m := asMapping(n)
	for _, k := range m.keys {
		mm := asMapping(m.get(k.Value))
		md := &Model{Name: k.Value, Pos: c.pos(k), Provider: "openai"}
		if v := mm.get("provider"); v != nil {
			md.Provider = v.Value
		}
		md.BaseURL = scalar(mm.get("base_url"))
		md.Model = scalar(mm.get("model"))
		md.APIKeyEnv = scalar(mm.get("api_key_env"))
		if v := mm.get("temperature"); v != nil {
			var t float64
			_ = v.Decode(&t)
			md.Temperature = &t
		}
		if v := mm.get("max_tokens"); v != nil {
			_ = v.Decode(&md.MaxTokens)
		}
		md.Timeout = c.duration(mm.get("timeout"), "models."+k.Value+".timeout")
		pm := asMapping(mm.get("price"))
		if v := pm.get("input_per_million"); v != nil {
			_ = v.Decode(&md.PriceIn)
		}
		if v := pm.get("output_per_million"); v != nil {
			_ = v.Decode(&md.PriceOut)
		}
		if v := mm.get("rpm"); v != nil {
			_ = v.Decode(&md.RPM)
		}
		if v := mm.get("stream"); v != nil {
			var b bool
			_ = v.Decode(&b)
			md.Stream = &b
		}
		md.Retry = c.retry(mm.get("retry"), "models."+k.Value+".retry")
		md.Fallbacks = nameRefs(c.file, mm.get("fallbacks"))
		if v := mm.get("fixtures"); v != nil {
			md.Fixtures = c.resolve(v.Value)
		}
		switch md.Provider {
		case "mock":
			if md.Fixtures == "" {
				c.errs.Add(md.Pos, "models.%s: provider mock needs fixtures (a file of scripted replies)", k.Value)
			} else if _, err := c.loader.read(md.Fixtures); err != nil {
				c.errs.Add(c.pos(mm.get("fixtures")), "models.%s.fixtures: cannot read %q: %v", k.Value, mm.get("fixtures").Value, unwrapPathErr(err))
			}
		case "openai":
			if md.Model == "" {
				c.errs.Add(md.Pos, "models.%s: missing model id (key model)", k.Value)
			}
		case "azure":
			if md.Model == "" {
				c.errs.Add(md.Pos, "models.%s: provider azure needs model (the deployment name)", k.Value)
			}
			if md.BaseURL == "" {
				c.errs.Add(md.Pos, "models.%s: provider azure needs base_url (the resource endpoint, e.g. https://NAME.openai.azure.com)", k.Value)
			}
		}
		if v := mm.get("api_version"); v != nil {
			if md.Provider != "azure" {
				c.errs.Add(c.pos(mm.kpos["api_version"]), "models.%s: api_version is only for provider azure", k.Value)
			}
			md.APIVersion = v.Value
		}
		c.g.Models[k.Value] = md
	}
	for _, md := range c.g.Models {
		for _, f := range md.Fallbacks {
			if f.Name == md.Name {
				c.errs.Add(f.Pos, "models.%s: a model cannot be its own fallback", md.Name)
			} else if c.g.Models[f.Name] == nil {
				c.unknownRef(f, "model", SortedKeys(c.g.Models))
			}
		}
	}
}

// resolve makes a path in the graph file relative to the file's directory.
func (c *checker) resolve(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

func (c *checker) decodeTools(n *yaml.Node) {
	m := asMapping(n)
	for _, k := range m.keys {
		tm := asMapping(m.get(k.Value))
		path := "tools." + k.Value
		t := &Tool{Name: k.Value, Pos: c.pos(k), Kind: scalar(tm.get("kind")), Description: scalar(tm.get("description"))}
		if pn := tm.get("parameters"); pn != nil {
			var conv valueConv
			conv.file, conv.errs = c.file, c.errs
			t.Parameters, _ = conv.value(pn).(map[string]any)
			if err := CheckJSONSchema(t.Parameters); err != nil {
				c.errs.Add(c.pos(pn), "%s.parameters: not a valid JSON Schema: %v", path, err)
			}
		} else {
			t.Parameters = map[string]any{"type": "object", "properties": map[string]any{}}
		}
		argsEnv := types.Map{"args": types.TypeOf(map[string]any{})}
		need := func(key string) {
			if tm.get(key) == nil {
				c.errs.Add(t.Pos, "%s: kind %s needs %s", path, t.Kind, key)
			}
		}
		allowed := map[string][]string{
			"expr": {"expr"},
			"http": {"method", "url", "body", "headers_env", "allow_hosts", "max_output_bytes"},
			"exec": {"command", "max_output_bytes"},
		}[t.Kind]
		for _, key := range tm.keys {
			switch key.Value {
			case "kind", "description", "parameters", "timeout":
				continue
			}
			if !contains(allowed, key.Value) {
				c.errs.Add(c.pos(key), "%s: key %q is not used by tool kind %s", path, key.Value, t.Kind)
			}
		}
		switch t.Kind {
		case "expr":
			need("expr")
			t.Expr = c.ec.compile(tm.get("expr"), path+".expr", argsEnv, nil)
		case "http":
			need("url")
			t.Method = "GET"
			if v := tm.get("method"); v != nil {
				t.Method = v.Value
			}
			t.URL = c.ec.compile(tm.get("url"), path+".url", argsEnv, wantString)
			t.Body = c.ec.compile(tm.get("body"), path+".body", argsEnv, nil)
			if hn := tm.get("headers_env"); hn != nil {
				t.HeadersEnv = map[string]string{}
				_ = hn.Decode(&t.HeadersEnv)
			}
			for _, h := range nameRefs(c.file, tm.get("allow_hosts")) {
				t.AllowHosts = append(t.AllowHosts, h.Name)
			}
			if len(t.AllowHosts) == 0 {
				c.errs.Add(t.Pos, "%s: http tools need allow_hosts (the hosts the tool may call)", path)
			}
		case "exec":
			need("command")
			if cn := tm.get("command"); cn != nil {
				_ = cn.Decode(&t.Command)
			}
		}
		t.Timeout = c.duration(tm.get("timeout"), path+".timeout")
		if v := tm.get("max_output_bytes"); v != nil {
			_ = v.Decode(&t.MaxOutputBytes)
		}
		c.g.Tools[k.Value] = t
	}
}

// CheckJSONSchema reports whether s compiles as a JSON Schema.
func CheckJSONSchema(s map[string]any) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return err
	}
	jc := jsonschema.NewCompiler()
	if err := jc.AddResource("mem:///schema.json", doc); err != nil {
		return err
	}
	_, err = jc.Compile("mem:///schema.json")
	return err
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// kindKeys lists the settings each node kind uses, besides the common ones.
var kindKeys = map[string][]string{
	"set":       {"set"},
	"noop":      {},
	"interrupt": {"payload", "resume"},
	"llm":       {"model", "system", "prompt", "messages", "tools", "output", "store", "trim"},
	"tools":     {"messages", "tools", "parallel"},
	"subgraph":  {"graph", "input", "output_map"},
	"map":       {"over", "node", "graph", "concurrency", "item_as", "input", "output_map"},
}

var commonNodeKeys = []string{"kind", "description", "timeout", "retry", "goto", "goto_paths"}

func (c *checker) decodeNodes(n *yaml.Node) {
	m := asMapping(n)
	for _, k := range m.keys {
		name := k.Value
		nm := asMapping(m.get(name))
		path := "nodes." + name
		if name == Start || name == End {
			c.errs.Add(c.pos(k), "%s: %s is reserved and cannot be a node name", path, name)
			continue
		}
		node := &Node{Name: name, Pos: c.pos(k), Kind: scalar(nm.get("kind")), Description: scalar(nm.get("description"))}
		for _, key := range nm.keys {
			if contains(commonNodeKeys, key.Value) || contains(kindKeys[node.Kind], key.Value) {
				continue
			}
			msg := fmt.Sprintf("%s: key %q is not used by kind %s", path, key.Value, node.Kind)
			if s := suggest(key.Value, append(append([]string{}, commonNodeKeys...), kindKeys[node.Kind]...)); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			c.errs.Add(c.pos(key), "%s", msg)
		}
		node.Timeout = c.duration(nm.get("timeout"), path+".timeout")
		node.Retry = c.retry(nm.get("retry"), path+".retry")
		node.Goto = c.ec.compile(nm.get("goto"), path+".goto", c.env, wantRoute)
		node.GotoPaths = nameRefs(c.file, nm.get("goto_paths"))
		if node.Goto != nil && len(node.GotoPaths) == 0 {
			c.errs.Add(c.pos(nm.kpos["goto"]), "%s: goto needs goto_paths, the list of nodes it may go to", path)
		}
		if node.Goto == nil && nm.get("goto_paths") != nil && nm.get("goto") == nil {
			c.errs.Add(c.pos(nm.kpos["goto_paths"]), "%s: goto_paths without goto", path)
		}
		switch node.Kind {
		case "set":
			c.decodeSet(node, nm, path)
		case "interrupt":
			node.Payload = c.ec.compile(nm.get("payload"), path+".payload", c.env, nil)
			if r := nm.get("resume"); r != nil {
				node.Resume = r.Value
				if c.fieldRef(r, path+".resume") != nil {
					node.Writes = append(node.Writes, r.Value)
				}
			}
		case "llm", "tools":
			c.decodeLLM(node, nm, path)
		case "subgraph", "map":
			c.decodeComposite(node, nm, path)
		}
		c.g.Nodes[name] = node
		c.g.NodeOrder = append(c.g.NodeOrder, name)
	}
}

// fieldRef resolves a field name written in the file, reporting unknown ones.
func (c *checker) fieldRef(n *yaml.Node, path string) *Field {
	f := c.g.Field(n.Value)
	if f == nil {
		c.unknownField(c.pos(n), path, n.Value)
	}
	return f
}

func (c *checker) unknownField(pos Pos, path, name string) {
	names := make([]string, 0, len(c.g.Fields))
	for _, f := range c.g.Fields {
		names = append(names, f.Name)
	}
	msg := fmt.Sprintf("%s: undeclared state field %q", path, name)
	if s := suggest(name, names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	} else {
		msg += " (declare it under state:)"
	}
	c.errs.Add(pos, "%s", msg)
}

func (c *checker) decodeSet(node *Node, nm *mapping, path string) {
	sn := nm.get("set")
	if sn == nil {
		c.errs.Add(node.Pos, "%s: kind set needs set (field: expression)", path)
		return
	}
	sm := asMapping(sn)
	if len(sm.keys) == 0 {
		c.errs.Add(c.pos(sn), "%s.set: no fields to set", path)
	}
	for _, k := range sm.keys {
		f := c.g.Field(k.Value)
		if f == nil {
			c.unknownField(c.pos(k), path+".set", k.Value)
			continue
		}
		e := c.ec.compile(sm.get(k.Value), path+".set."+k.Value, c.env, wantWrite(f))
		node.Set = append(node.Set, &Assign{Field: k.Value, Pos: c.pos(k), Expr: e})
		node.Writes = append(node.Writes, k.Value)
	}
}

func (c *checker) decodeLLM(node *Node, nm *mapping, path string) {
	// messages field: explicit, or "messages" when declared.
	if mn := nm.get("messages"); mn != nil {
		if f := c.fieldRef(mn, path+".messages"); f != nil && f.Type.Kind != KindMessages {
			c.errs.Add(c.pos(mn), "%s.messages: field %q is %s, want messages", path, f.Name, f.Type)
		}
		node.Messages = mn.Value
	} else if f := c.g.Field("messages"); f != nil && f.Type.Kind == KindMessages {
		node.Messages = "messages"
	}
	for _, t := range nameRefs(c.file, nm.get("tools")) {
		if c.g.Tools[t.Name] == nil {
			c.unknownRef(t, "tool", SortedKeys(c.g.Tools))
			continue
		}
		node.Tools = append(node.Tools, t)
	}
	if node.Kind == "tools" {
		if node.Messages == "" {
			c.errs.Add(node.Pos, "%s: kind tools needs a messages field (declare messages: {type: messages} or set messages:)", path)
		}
		if nm.get("tools") == nil {
			for _, name := range SortedKeys(c.g.Tools) {
				node.Tools = append(node.Tools, NameRef{Name: name, Pos: node.Pos})
			}
		}
		node.Parallel = true
		if v := nm.get("parallel"); v != nil {
			_ = v.Decode(&node.Parallel)
		}
		if node.Messages != "" {
			node.Writes = append(node.Writes, node.Messages)
		}
		return
	}
	mn := nm.get("model")
	if mn == nil {
		c.errs.Add(node.Pos, "%s: kind llm needs model", path)
	} else {
		node.Model = NameRef{Name: mn.Value, Pos: c.pos(mn)}
		if c.g.Models[mn.Value] == nil {
			c.unknownRef(node.Model, "model", SortedKeys(c.g.Models))
		}
	}
	node.System = c.ec.compile(nm.get("system"), path+".system", c.env, wantString)
	node.Prompt = c.ec.compile(nm.get("prompt"), path+".prompt", c.env, wantString)
	if node.Messages == "" && node.Prompt == nil {
		c.errs.Add(node.Pos, "%s: kind llm needs a prompt or a messages field", path)
	}
	if sn := nm.get("store"); sn != nil {
		if f := c.fieldRef(sn, path+".store"); f != nil {
			if f.Type.Kind != KindString && f.Type.Kind != KindAny {
				c.errs.Add(c.pos(sn), "%s.store: field %q is %s, want string", path, f.Name, f.Type)
			}
			node.Store = sn.Value
			node.Writes = append(node.Writes, sn.Value)
		}
	}
	if tn := nm.get("trim"); tn != nil {
		tm := asMapping(tn)
		if v := tm.get("keep_last"); v != nil {
			_ = v.Decode(&node.TrimKeepLast)
		}
		node.TrimSystem = true
		if v := tm.get("keep_system"); v != nil {
			_ = v.Decode(&node.TrimSystem)
		}
	}
	if on := nm.get("output"); on != nil {
		om := asMapping(on)
		if sn := om.get("schema"); sn != nil {
			var conv valueConv
			conv.file, conv.errs = c.file, c.errs
			node.OutputSchema, _ = conv.value(sn).(map[string]any)
			if err := CheckJSONSchema(node.OutputSchema); err != nil {
				c.errs.Add(c.pos(sn), "%s.output.schema: not a valid JSON Schema: %v", path, err)
			}
		}
		if v := om.get("strict"); v != nil {
			_ = v.Decode(&node.OutputStrict)
		}
		node.OutputTries = 2
		if v := om.get("max_attempts"); v != nil {
			_ = v.Decode(&node.OutputTries)
		}
		env := types.Map{"state": c.env["state"], "reply": types.Any}
		fm := asMapping(om.get("fields"))
		for _, k := range fm.keys {
			f := c.g.Field(k.Value)
			if f == nil {
				c.unknownField(c.pos(k), path+".output.fields", k.Value)
				continue
			}
			e := c.ec.compile(fm.get(k.Value), path+".output.fields."+k.Value, env, wantWrite(f))
			node.OutputFields = append(node.OutputFields, &Assign{Field: k.Value, Pos: c.pos(k), Expr: e})
			node.Writes = append(node.Writes, k.Value)
		}
		if node.OutputSchema == nil && len(node.OutputFields) > 0 {
			c.errs.Add(c.pos(on), "%s.output: fields need a schema for the reply", path)
		}
	}
	if node.Messages != "" {
		node.Writes = append(node.Writes, node.Messages)
	}
}

func (c *checker) unknownRef(r NameRef, what string, names []string) {
	msg := fmt.Sprintf("unknown %s %q", what, r.Name)
	if s := suggest(r.Name, names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	} else if len(names) == 0 {
		msg += fmt.Sprintf(" (no %ss are declared)", what)
	}
	c.errs.Add(r.Pos, "%s", msg)
}

func (c *checker) decodeComposite(node *Node, nm *mapping, path string) {
	if node.Kind == "map" {
		node.Over = c.ec.compile(nm.get("over"), path+".over", c.env, wantList)
		if nm.get("over") == nil {
			c.errs.Add(node.Pos, "%s: kind map needs over (a list expression)", path)
		}
		node.MapLimit = 8
		if v := nm.get("concurrency"); v != nil {
			_ = v.Decode(&node.MapLimit)
		}
		if v := nm.get("node"); v != nil {
			node.MapNode = NameRef{Name: v.Value, Pos: c.pos(v)}
		}
		node.ItemAs = scalar(nm.get("item_as"))
		if in := nm.get("item_as"); in != nil && nm.get("node") != nil {
			// node form: the item is written into this graph's field for each run.
			c.fieldRef(in, path+".item_as")
		} else if in == nil && nm.get("node") != nil {
			c.errs.Add(node.Pos, "%s: kind map with node needs item_as (the state field that holds the current item)", path)
		}
		if (nm.get("node") == nil) == (nm.get("graph") == nil) {
			c.errs.Add(node.Pos, "%s: kind map needs exactly one of node or graph", path)
		}
	}
	gn := nm.get("graph")
	if gn == nil {
		if node.Kind == "subgraph" {
			c.errs.Add(node.Pos, "%s: kind subgraph needs graph (a graph file)", path)
		}
	} else {
		node.GraphPath = c.resolve(gn.Value)
		c.loadChild(node, gn, path)
	}
	child := c.g.Subgraphs[node.GraphPath]
	if child != nil && node.Kind == "subgraph" {
		// Routes from inside the child to this graph's nodes ("^name")
		// become routes of the subgraph node itself.
		for _, name := range child.NodeOrder {
			for _, t := range child.Nodes[name].GotoPaths {
				if target, ok := strings.CutPrefix(t.Name, "^"); ok && target != "" {
					node.GotoPaths = append(node.GotoPaths, NameRef{Name: target, Pos: c.pos(gn)})
				}
			}
		}
	}
	inEnv := c.env
	if node.Kind == "map" {
		inEnv = types.Map{"state": c.env["state"], "item": types.Any, "index": types.Int}
	}
	if child != nil && node.Kind == "map" && node.ItemAs != "" && child.Field(node.ItemAs) == nil {
		c.errs.Add(c.pos(nm.get("item_as")), "%s.item_as: child graph has no field %q", path, node.ItemAs)
	}
	im := asMapping(nm.get("input"))
	for _, k := range im.keys {
		var want func(reflect.Type) string
		if child != nil {
			cf := child.Field(k.Value)
			if cf == nil {
				c.errs.Add(c.pos(k), "%s.input: child graph %s has no field %q", path, gn.Value, k.Value)
				continue
			}
			want = wantAssign(cf)
		}
		e := c.ec.compile(im.get(k.Value), path+".input."+k.Value, inEnv, want)
		node.Input = append(node.Input, &Assign{Field: k.Value, Pos: c.pos(k), Expr: e})
	}
	if on := nm.get("output_map"); on != nil {
		node.OutputMap = map[string]string{}
		om := asMapping(on)
		for _, k := range om.keys {
			pf := c.g.Field(k.Value)
			if pf == nil {
				c.unknownField(c.pos(k), path+".output_map", k.Value)
				continue
			}
			v := om.get(k.Value)
			if child != nil {
				cf := child.Field(v.Value)
				if cf == nil {
					c.errs.Add(c.pos(v), "%s.output_map.%s: child graph has no field %q", path, k.Value, v.Value)
					continue
				}
				if node.Kind == "subgraph" && !typesAgree(cf.Type, pf.Type) {
					c.errs.Add(c.pos(v), "%s.output_map.%s: child field %q is %s, parent field %q is %s", path, k.Value, v.Value, cf.Type, pf.Name, pf.Type)
				}
			}
			node.OutputMap[k.Value] = v.Value
			node.Writes = append(node.Writes, k.Value)
		}
	} else if child != nil {
		// Shared field names pass through.
		for _, cf := range child.Fields {
			if pf := c.g.Field(cf.Name); pf != nil {
				if !typesAgree(cf.Type, pf.Type) {
					c.errs.Add(node.Pos, "%s: shared field %q is %s in the child graph but %s here; map it explicitly with input/output_map", path, cf.Name, cf.Type, pf.Type)
					continue
				}
				node.Writes = append(node.Writes, cf.Name)
			}
		}
	}
	sort.Strings(node.Writes)
}

func wantAssign(f *Field) func(reflect.Type) string {
	return func(t reflect.Type) string {
		if k := kindOfType(t); k != "" && !compatible(k, f.Type) {
			return fmt.Sprintf("expression yields %s, but child field %q is %s", k, f.Name, f.Type)
		}
		return ""
	}
}

func typesAgree(a, b Type) bool {
	if a.Kind == KindAny || b.Kind == KindAny {
		return true
	}
	if a.Kind != b.Kind {
		return false
	}
	return a.Kind != KindList || a.Items == b.Items || a.Items == "" || b.Items == "" || a.Items == KindAny || b.Items == KindAny
}

func (c *checker) loadChild(node *Node, gn *yaml.Node, path string) {
	p := node.GraphPath
	abs, _ := filepath.Abs(p)
	if c.loader.stack[abs] {
		c.errs.Add(c.pos(gn), "%s.graph: %s includes itself (subgraph cycle)", path, gn.Value)
		return
	}
	if g, ok := c.loader.cache[abs]; ok {
		if g != nil {
			c.g.Subgraphs[p] = g
		}
		return
	}
	src, err := c.loader.read(p)
	if err != nil {
		c.errs.Add(c.pos(gn), "%s.graph: cannot read %q: %v", path, gn.Value, unwrapPathErr(err))
		return
	}
	child, errs := c.loader.parse(p, src)
	c.loader.cache[abs] = child
	for _, e := range errs {
		if e.Severity == SevError {
			c.errs.Add(c.pos(gn), "%s.graph: %s: %s", path, e.Pos, e.Msg)
		}
	}
	if child != nil {
		c.g.Subgraphs[p] = child
		for k, v := range child.Subgraphs {
			c.g.Subgraphs[k] = v
		}
	}
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
		if rn := em.get("routes"); rn != nil && rn.Kind == yaml.SequenceNode {
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
		if node.Kind == "map" && node.MapNode.Name != "" {
			if node.MapNode.Name == node.Name {
				c.errs.Add(node.MapNode.Pos, "nodes.%s.node: a map node cannot map itself", node.Name)
			} else {
				c.nodeRef(node.MapNode, false)
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
