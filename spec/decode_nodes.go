package spec

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/expr-lang/expr/types"
	"gopkg.in/yaml.v3"
)

func declKeys(decls []NodeKindDecl) map[string][]string {
	out := map[string][]string{}
	for _, d := range decls {
		out[d.Name] = []string{}
		for _, s := range d.Settings {
			out[d.Name] = append(out[d.Name], s.Name)
		}
	}
	return out
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
		decl, known := builtinNodeDecl(node.Kind)
		if !known {
			decl, known = c.reg.nodeKind(node.Kind)
		}
		var keys []string
		for _, s := range decl.Settings {
			keys = append(keys, s.Name)
		}
		for _, key := range nm.keys {
			if contains(commonNodeKeys, key.Value) || contains(keys, key.Value) {
				continue
			}
			msg := fmt.Sprintf("%s: key %q is not used by kind %s", path, key.Value, node.Kind)
			if s := suggest(key.Value, append(append([]string{}, commonNodeKeys...), keys...)); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			c.errs.Add(c.pos(key), "%s", msg)
		}
		node.Timeout = c.duration(nm.get("timeout"), path+".timeout")
		node.Retry = c.retry(nm.get("retry"), path+".retry")
		node.Goto = c.ec.compile(nm.get("goto"), path+".goto", c.env, wantRoute)
		node.GotoPaths = nameRefs(c.file, nm.get("goto_paths"))
		c.checkRouteValues(node.Goto, node.GotoPaths, path+".goto")
		if node.Goto != nil && len(node.GotoPaths) == 0 {
			c.errs.Add(c.pos(nm.kpos["goto"]), "%s: goto needs goto_paths, the list of nodes it may go to", path)
		}
		if node.Goto == nil && nm.get("goto_paths") != nil && nm.get("goto") == nil {
			c.errs.Add(c.pos(nm.kpos["goto_paths"]), "%s: goto_paths without goto", path)
		}
		switch {
		case decl.decode != nil:
			decl.decode(c, node, nm, path)
		case known:
			c.decodeCustom(node, decl, nm, path)
		}
		c.g.Nodes[name] = node
		c.g.NodeOrder = append(c.g.NodeOrder, name)
	}
}

// decodeInterrupt decodes an interrupt node.
func (c *checker) decodeInterrupt(node *Node, nm *mapping, path string) {
	cfg := &InterruptConfig{Payload: c.ec.compile(nm.get("payload"), path+".payload", c.env, nil)}
	node.Config = cfg
	if r := nm.get("resume"); r != nil {
		cfg.Resume = r.Value
		if c.fieldRef(r, path+".resume") != nil {
			node.Writes = append(node.Writes, r.Value)
		}
	}
}

// decodeCustom decodes the settings of a node of a registered kind.
func (c *checker) decodeCustom(node *Node, d NodeKindDecl, nm *mapping, path string) {
	settings, ok := c.decodeSettings(node.Pos, path, d.Name, d.Settings, nm)
	cfg := &CustomConfig{Settings: settings}
	node.Config = cfg
	for _, f := range d.Writes {
		if c.g.Field(f) == nil {
			c.unknownField(node.Pos, path, f)
			continue
		}
		node.Writes = append(node.Writes, f)
	}
	if ok && d.Check != nil {
		c.settingErrors(d.Check(cfg.Settings, c.g.Field), node.Pos, path, nm)
	}
}

// decodeSettings decodes the declared settings of a node or tool of a
// registered kind at pos: the values given, the defaults of those not
// given, and an error for each required one missing. ok is false when one
// is missing or does not match its schema (which the validation against
// the graph schema reports): the kind's Check then does not run, so it
// sees only settings of their declared types.
func (c *checker) decodeSettings(pos Pos, path, kind string, decls []Setting, nm *mapping) (settings map[string]any, ok bool) {
	out := map[string]any{}
	ok = true
	for _, s := range decls {
		v := nm.get(s.Name)
		switch {
		case v != nil:
			conv := valueConv{file: c.file, errs: c.errs}
			out[s.Name] = conv.value(v)
			ok = ok && matchesSchema(s.Schema, out[s.Name])
		case s.Required:
			c.errs.Add(pos, "%s: kind %s needs %s", path, kind, s.Name)
			ok = false
		case s.Default != nil:
			out[s.Name] = Normalize(DeepCopy(s.Default))
		}
	}
	return out, ok
}

// settingErrors reports the errors of a kind's Check (several with
// errors.Join): at pos, or a [*SettingError] at the setting's value.
func (c *checker) settingErrors(err error, pos Pos, path string, nm *mapping) {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else if err != nil {
		errs = []error{err}
	}
	for _, e := range errs {
		var se *SettingError
		at, where := pos, path
		if errors.As(e, &se) {
			if v := nm.get(se.Setting); v != nil {
				at, where = c.pos(v), path+"."+se.Setting
			}
			e = se.Err
		}
		c.errs.Add(at, "%s: %v", where, e)
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
	cfg := &SetConfig{}
	node.Config = cfg
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
		cfg.Set = append(cfg.Set, &Assign{Field: k.Value, Pos: c.pos(k), Expr: e})
		node.Writes = append(node.Writes, k.Value)
	}
}

func (c *checker) decodeLLM(node *Node, nm *mapping, path string) {
	// messages field: explicit, or "messages" when declared.
	var messages string
	var tools []NameRef
	if mn := nm.get("messages"); mn != nil {
		if f := c.fieldRef(mn, path+".messages"); f != nil && f.Type.Kind != KindMessages {
			c.errs.Add(c.pos(mn), "%s.messages: field %q is %s, want messages", path, f.Name, f.Type)
		}
		messages = mn.Value
	} else if f := c.g.Field("messages"); f != nil && f.Type.Kind == KindMessages {
		messages = "messages"
	}
	for _, t := range nameRefs(c.file, nm.get("tools")) {
		if c.g.Tools[t.Name] == nil {
			c.unknownRef(t, "tool", SortedKeys(c.g.Tools))
			continue
		}
		tools = append(tools, t)
	}
	if node.Kind == "tools" {
		cfg := &ToolsConfig{Messages: messages, Tools: tools}
		node.Config = cfg
		if cfg.Messages == "" {
			c.errs.Add(node.Pos, "%s: kind tools needs a messages field (declare messages: {type: messages} or set messages:)", path)
		}
		if nm.get("tools") == nil {
			for _, name := range SortedKeys(c.g.Tools) {
				cfg.Tools = append(cfg.Tools, NameRef{Name: name, Pos: node.Pos})
			}
		}
		cfg.Parallel = true
		if v := nm.get("parallel"); v != nil {
			_ = v.Decode(&cfg.Parallel)
		}
		if cfg.Messages != "" {
			node.Writes = append(node.Writes, cfg.Messages)
		}
		return
	}
	cfg := &LLMConfig{Messages: messages, Tools: tools}
	node.Config = cfg
	mn := nm.get("model")
	if mn == nil {
		c.errs.Add(node.Pos, "%s: kind llm needs model", path)
	} else {
		cfg.Model = NameRef{Name: mn.Value, Pos: c.pos(mn)}
		if c.g.Models[mn.Value] == nil {
			c.unknownRef(cfg.Model, "model", SortedKeys(c.g.Models))
		}
	}
	cfg.System = c.ec.compileTemplate(nm.get("system"), path+".system", "system", c.env)
	cfg.Prompt = c.ec.compileTemplate(nm.get("prompt"), path+".prompt", "prompt", c.env)
	if cfg.Messages == "" && nm.get("prompt") == nil {
		c.errs.Add(node.Pos, "%s: kind llm needs a prompt or a messages field", path)
	}
	if sn := nm.get("store"); sn != nil {
		if f := c.fieldRef(sn, path+".store"); f != nil {
			if f.Type.Kind != KindString && f.Type.Kind != KindAny {
				c.errs.Add(c.pos(sn), "%s.store: field %q is %s, want string", path, f.Name, f.Type)
			}
			cfg.Store = sn.Value
			node.Writes = append(node.Writes, sn.Value)
		}
	}
	if tn := nm.get("trim"); tn != nil {
		tm := asMapping(tn)
		if v := tm.get("keep_last"); v != nil {
			_ = v.Decode(&cfg.TrimKeepLast)
		}
		cfg.TrimSystem = true
		if v := tm.get("keep_system"); v != nil {
			_ = v.Decode(&cfg.TrimSystem)
		}
	}
	if on := nm.get("output"); on != nil {
		om := asMapping(on)
		if sn := om.get("schema"); sn != nil {
			var conv valueConv
			conv.file, conv.errs = c.file, c.errs
			cfg.OutputSchema, _ = conv.value(sn).(map[string]any)
			if err := CheckJSONSchema(cfg.OutputSchema); err != nil {
				c.errs.Add(c.pos(sn), "%s.output.schema: not a valid JSON Schema: %v", path, err)
			}
		}
		if v := om.get("strict"); v != nil {
			_ = v.Decode(&cfg.OutputStrict)
		}
		cfg.OutputTries = 2
		if v := om.get("max_attempts"); v != nil {
			_ = v.Decode(&cfg.OutputTries)
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
			cfg.OutputFields = append(cfg.OutputFields, &Assign{Field: k.Value, Pos: c.pos(k), Expr: e})
			node.Writes = append(node.Writes, k.Value)
		}
		if cfg.OutputSchema == nil && len(cfg.OutputFields) > 0 {
			c.errs.Add(c.pos(on), "%s.output: fields need a schema for the reply", path)
		}
	}
	if cfg.Messages != "" {
		node.Writes = append(node.Writes, cfg.Messages)
	}
}

// unknownRef reports a reference to an undeclared node, tool or model,
// with the closest name and the names that would do.
func (c *checker) unknownRef(r NameRef, what string, names []string) {
	msg := fmt.Sprintf("unknown %s %q", what, r.Name)
	if s := suggest(r.Name, names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	if len(names) == 0 {
		msg += fmt.Sprintf(" (no %ss are declared)", what)
	} else {
		msg += fmt.Sprintf(" (known %ss: %s)", what, nameList(names, maxListedNames))
	}
	c.errs.Add(r.Pos, "%s", msg)
}

// maxListedNames bounds the names a diagnostic lists.
const maxListedNames = 12

// nameList joins names with ", ", eliding past max.
func nameList(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:max], ", "), len(names)-max)
}

func (c *checker) decodeComposite(node *Node, nm *mapping, path string) {
	var cc *ChildConfig
	var mc *MapConfig
	if node.Kind == "map" {
		mc = &MapConfig{}
		node.Config, cc = mc, &mc.ChildConfig
	} else {
		sc := &SubgraphConfig{}
		node.Config, cc = sc, &sc.ChildConfig
	}
	if node.Kind == "map" {
		mc.Over = c.ec.compile(nm.get("over"), path+".over", c.env, wantList)
		if nm.get("over") == nil {
			c.errs.Add(node.Pos, "%s: kind map needs over (a list expression)", path)
		}
		mc.MapLimit = 8
		if v := nm.get("concurrency"); v != nil {
			_ = v.Decode(&mc.MapLimit)
		}
		if v := nm.get("node"); v != nil {
			mc.MapNode = NameRef{Name: v.Value, Pos: c.pos(v)}
		}
		mc.ItemAs = scalar(nm.get("item_as"))
		if in := nm.get("item_as"); in != nil && nm.get("node") != nil {
			// node form: the item is written into this graph's field for each run.
			c.fieldRef(in, path+".item_as")
		} else if in == nil && nm.get("node") != nil {
			c.errs.Add(node.Pos, "%s: kind map with node needs item_as (the state field that holds the current item)", path)
		}
		if (nm.get("node") == nil) == (nm.get("graph") == nil) {
			c.errs.Add(node.Pos, "%s: kind map needs exactly one of node or graph", path)
		} else if nm.get("node") != nil {
			// A mapped node runs on this graph's state: nothing to map in or out.
			if k := nm.kpos["input"]; k != nil {
				c.errs.Add(c.pos(k), "%s.input: input is only for a map over a graph; a mapped node reads this graph's state, with the item in item_as", path)
			}
			if k := nm.kpos["output_map"]; k != nil {
				c.errs.Add(c.pos(k), "%s.output_map: output_map is only for a map over a graph; a mapped node writes this graph's state through its reducers", path)
			}
		}
	}
	gn := nm.get("graph")
	if gn == nil {
		if node.Kind == "subgraph" {
			c.errs.Add(node.Pos, "%s: kind subgraph needs graph (a graph file)", path)
		}
	} else {
		cc.GraphPath = c.resolve(gn.Value)
		c.loadChild(cc.GraphPath, gn, path)
	}
	child := c.g.Subgraphs[cc.GraphPath]
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
	if child != nil && node.Kind == "map" && mc.ItemAs != "" && child.Field(mc.ItemAs) == nil {
		c.errs.Add(c.pos(nm.get("item_as")), "%s.item_as: child graph has no field %q", path, mc.ItemAs)
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
		cc.Input = append(cc.Input, &Assign{Field: k.Value, Pos: c.pos(k), Expr: e})
	}
	if on := nm.get("output_map"); on != nil {
		cc.OutputMap = map[string]string{}
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
			cc.OutputMap[k.Value] = v.Value
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
		if k := kindOfType(t); k != "" && !compatible(k, f.Type) && !(k == kindNull && f.Optional) {
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

func (c *checker) loadChild(p string, gn *yaml.Node, path string) {
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
