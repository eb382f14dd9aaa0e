package spec

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/expr-lang/expr/types"
	"gopkg.in/yaml.v3"
)

// TestFile is a checked graph test file: cases that run a graph with
// scripted model replies and tool results and check the outcome.
// By convention x.test.yaml tests x.yaml in the same directory.
type TestFile struct {
	File  string
	Graph *Graph
	Cases []*TestCase

	src  []byte
	root *yaml.Node
}

// TestCase is one case of a test file.
type TestCase struct {
	Name        string
	Pos         Pos
	Description string
	// Turns run on the same thread before the case's own input.
	Turns  []TestTurn
	Input  map[string]any
	Resume []any
	// Models holds scripted replies per llm node, in call order, as written
	// (see package builtin for their meaning).
	Models map[string][]any
	// Tools holds scripted results per tool, in call order.
	Tools  map[string][]any
	Limits Limits
	Expect Expect

	node *yaml.Node
}

// TestTurn is an earlier turn of a case's thread.
type TestTurn struct {
	Input  map[string]any
	Resume []any
}

// Expect is what a case checks. Nil pointers and empty strings mean "not checked".
type Expect struct {
	Status     string
	State      map[string]any // canonical values of the listed fields
	StatePos   map[string]Pos
	Asserts    []*Expr
	Path       []string
	HasPath    bool
	Interrupts []ExpectInterrupt
	HasInts    bool
	LLMCalls   *int
	Tokens     *int
	CostUSD    *float64
	Error      *regexp.Regexp
	Pos        Pos
	// HasState is set when the case lists expect.state, even empty.
	HasState bool
}

// ExpectInterrupt is an expected interrupt.
type ExpectInterrupt struct {
	Node       string
	When       string
	Payload    any
	HasPayload bool
}

// IsTestFile reports whether path is named like a graph test file.
func IsTestFile(path string) bool {
	base := filepath.Base(path)
	return strings.HasSuffix(base, ".test.yaml") || strings.HasSuffix(base, ".test.yml")
}

// GraphOfTest returns the graph file a test file tests by name: x.yaml for
// x.test.yaml (and x.yml for x.test.yml) in the same directory.
func GraphOfTest(path string) string {
	for _, ext := range []string{".yaml", ".yml"} {
		if strings.HasSuffix(path, ".test"+ext) {
			return strings.TrimSuffix(path, ".test"+ext) + ext
		}
	}
	return path
}

// LoadTestFile reads and checks a graph test file and the graph it tests.
// Graph errors are reported too (at the graph's own positions).
func LoadTestFile(path string, opts *Options) (*TestFile, ErrorList) {
	read := os.ReadFile
	if opts != nil && opts.ReadFile != nil {
		read = opts.ReadFile
	}
	src, err := read(path)
	if err != nil {
		return nil, ErrorList{{Pos: Pos{File: path}, Msg: fmt.Sprintf("read test file: %v", unwrapPathErr(err))}}
	}
	var errs ErrorList
	root := parseYAML(path, src, &errs)
	if root == nil {
		// parseYAML words its messages for graph files.
		for i := range errs {
			errs[i].Msg = strings.Replace(errs[i].Msg, "graph file", "test file", 1)
		}
		errs.Sort()
		return nil, errs
	}
	conv := &valueConv{file: path, errs: &errs}
	v := conv.value(root)
	if !errs.HasErrors() {
		validateWith(testSchema, path, root, v, &errs)
	}
	if errs.HasErrors() {
		errs.Sort()
		return nil, errs
	}
	m := asMapping(root)
	gpath := GraphOfTest(path)
	gpos := Pos{File: path, Line: 1, Col: 1}
	named := m.get("graph")
	if named != nil {
		gpath = named.Value
		if !filepath.IsAbs(gpath) {
			gpath = filepath.Join(filepath.Dir(path), gpath)
		}
		gpos = nodePos(path, named)
	}
	g, gerrs := LoadFile(gpath, opts)
	if g == nil {
		if len(gerrs) == 1 && gerrs[0].Pos.Line == 0 {
			msg := fmt.Sprintf("graph under test %s: %s", gpath, strings.TrimPrefix(gerrs[0].Msg, "read graph: "))
			if named == nil {
				msg += fmt.Sprintf(" (%s tests %s by its name; set graph: to test another file)", filepath.Base(path), filepath.Base(gpath))
			}
			errs.Add(gpos, "%s", msg)
		} else {
			errs = append(errs, gerrs.Errors()...)
			errs.Add(gpos, "graph under test %s has errors", gpath)
		}
		errs.Sort()
		return nil, errs
	}
	tf := &TestFile{File: path, Graph: g, src: src, root: root}
	tc := &testChecker{file: path, g: g, errs: &errs, ec: &exprCompiler{file: path, src: splitLines(src), errs: &errs}}
	names := map[string]Pos{}
	for i, cn := range nodeList(m.get("cases")) {
		c := tc.testCase(cn, fmt.Sprintf("cases[%d]", i))
		if first, dup := names[c.Name]; dup {
			errs.Add(c.Pos, "duplicate case name %q (first at line %d)", c.Name, first.Line)
		} else {
			names[c.Name] = c.Pos
		}
		tf.Cases = append(tf.Cases, c)
	}
	errs.Sort()
	if errs.HasErrors() {
		return nil, errs
	}
	return tf, errs
}

type testChecker struct {
	file string
	g    *Graph
	errs *ErrorList
	ec   *exprCompiler
}

func (tc *testChecker) value(n *yaml.Node) any {
	if n == nil {
		return nil
	}
	conv := &valueConv{file: tc.file, errs: tc.errs}
	return conv.value(n)
}

// stateValues checks an object of field values against the graph's state.
// Input values are writes that go through the fields' reducers (one item
// for a list with the append reducer, one message for a messages field);
// expected values (whole) are complete field values.
func (tc *testChecker) stateValues(n *yaml.Node, path string, whole bool) (map[string]any, map[string]Pos) {
	if n == nil {
		return nil, nil
	}
	m := asMapping(n)
	out := map[string]any{}
	pos := map[string]Pos{}
	for _, k := range m.keys {
		f := tc.g.Field(k.Value)
		if f == nil {
			names := make([]string, 0, len(tc.g.Fields))
			for _, f := range tc.g.Fields {
				names = append(names, f.Name)
			}
			msg := fmt.Sprintf("%s: graph %s has no state field %q", path, tc.g.Name, k.Value)
			if s := suggest(k.Value, names); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			tc.errs.Add(nodePos(tc.file, k), "%s", msg)
			continue
		}
		raw := tc.value(m.get(k.Value))
		var v any
		var err error
		if whole {
			v, err = wholeValue(f, raw)
		} else {
			v, err = writeValue(f, raw)
		}
		if err != nil {
			tc.errs.Add(nodePos(tc.file, m.get(k.Value)), "%s.%s: %v", path, k.Value, err)
			continue
		}
		out[k.Value] = v
		pos[k.Value] = nodePos(tc.file, k)
	}
	return out, pos
}

// writeValue checks an input value written to field f through its reducer
// (as the runtime applies it) and returns the value to write.
func writeValue(f *Field, raw any) (any, error) {
	list := func(v any) []any {
		if l, ok := v.([]any); ok {
			return l
		}
		return []any{v}
	}
	switch f.Reducer.Kind {
	case ReduceMessages:
		// One message or a list of them; {id, remove: true} deletes one.
		for i, x := range list(raw) {
			m, ok := x.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("message %d: want object, got %s", i, TypeName(x))
			}
			if rm, _ := m["remove"].(bool); rm {
				if id, _ := m["id"].(string); id == "" {
					return nil, fmt.Errorf("message %d: remove needs an id", i)
				}
				continue
			}
			if _, err := Message(m); err != nil {
				return nil, fmt.Errorf("message %d: %w", i, err)
			}
		}
		return raw, nil
	case ReduceAppend:
		// One item or a list of them.
		for i, x := range list(raw) {
			if _, err := f.Type.Item().Coerce(x); err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
		}
		return raw, nil
	case ReduceMerge:
		if _, ok := raw.(map[string]any); !ok {
			return nil, fmt.Errorf("merge needs an object, got %s", TypeName(raw))
		}
		return raw, nil
	case ReduceAdd:
		switch f.Type.Kind {
		case KindAny:
			return raw, nil
		case KindList:
			if _, ok := raw.([]any); !ok {
				return nil, fmt.Errorf("add to a list needs a list, got %s", TypeName(raw))
			}
		}
		return f.Type.Coerce(raw)
	case ReduceCustom:
		// The custom reducer decides; the runtime checks its result.
		return raw, nil
	}
	return wholeValue(f, raw)
}

// wholeValue checks a complete value of field f (its type and enum).
func wholeValue(f *Field, raw any) (any, error) {
	v, err := f.Type.Coerce(raw)
	if err != nil {
		return nil, err
	}
	if !f.InEnum(v) {
		return nil, fmt.Errorf("%s is not one of the enum values (%s)", jsonValue(v), enumList(f.Enum))
	}
	return v, nil
}

func (tc *testChecker) testCase(n *yaml.Node, path string) *TestCase {
	m := asMapping(n)
	c := &TestCase{Name: scalar(m.get("name")), Pos: nodePos(tc.file, n), Description: scalar(m.get("description")), node: n}
	path = fmt.Sprintf("%s (%s)", path, c.Name)
	for i, tn := range nodeList(m.get("turns")) {
		tm := asMapping(tn)
		in, _ := tc.stateValues(tm.get("input"), fmt.Sprintf("%s.turns[%d].input", path, i), false)
		res, _ := tc.value(tm.get("resume")).([]any)
		c.Turns = append(c.Turns, TestTurn{Input: in, Resume: res})
	}
	c.Input, _ = tc.stateValues(m.get("input"), path+".input", false)
	c.Resume, _ = tc.value(m.get("resume")).([]any)
	if mn := m.get("models"); mn != nil {
		c.Models = map[string][]any{}
		mm := asMapping(mn)
		for _, k := range mm.keys {
			// llm nodes of subgraphs are scripted by name too.
			var node *Node
			var names []string
			for _, g := range append([]*Graph{tc.g}, subgraphList(tc.g)...) {
				names = append(names, g.NodeOrder...)
				if n := g.Nodes[k.Value]; n != nil && (node == nil || n.Kind == "llm") {
					node = n
				}
			}
			switch {
			case node == nil:
				msg := fmt.Sprintf("%s.models: graph %s (and its subgraphs) has no node %q", path, tc.g.Name, k.Value)
				if s := suggest(k.Value, names); s != "" {
					msg += fmt.Sprintf("; did you mean %q?", s)
				}
				tc.errs.Add(nodePos(tc.file, k), "%s", msg)
				continue
			case node.Kind != "llm":
				tc.errs.Add(nodePos(tc.file, k), "%s.models: node %q is kind %s; scripted replies are for llm nodes", path, k.Value, node.Kind)
				continue
			}
			for i, rn := range nodeList(mm.get(k.Value)) {
				tc.reply(rn, fmt.Sprintf("%s.models.%s[%d]", path, k.Value, i))
			}
			c.Models[k.Value], _ = tc.value(mm.get(k.Value)).([]any)
		}
	}
	if tn := m.get("tools"); tn != nil {
		c.Tools = map[string][]any{}
		tm := asMapping(tn)
		for _, k := range tm.keys {
			found := false
			var names []string
			for _, g := range append([]*Graph{tc.g}, subgraphList(tc.g)...) {
				found = found || g.Tools[k.Value] != nil || g.mcpFunction(k.Value)
				names = append(names, SortedKeys(g.Tools)...)
			}
			if !found {
				msg := fmt.Sprintf("%s.tools: graph %s (and its subgraphs) has no tool %q", path, tc.g.Name, k.Value)
				if s := suggest(k.Value, names); s != "" {
					msg += fmt.Sprintf("; did you mean %q?", s)
				}
				tc.errs.Add(nodePos(tc.file, k), "%s", msg)
				continue
			}
			c.Tools[k.Value], _ = tc.value(tm.get(k.Value)).([]any)
		}
	}
	lm := asMapping(m.get("limits"))
	for key, dst := range map[string]*int{"steps": &c.Limits.Steps, "llm_calls": &c.Limits.LLMCalls, "tokens": &c.Limits.Tokens} {
		if v := lm.get(key); v != nil {
			_ = v.Decode(dst)
		}
	}
	if v := lm.get("cost_usd"); v != nil {
		_ = v.Decode(&c.Limits.CostUSD)
	}
	tc.expect(c, m.get("expect"), path+".expect")
	return c
}

// nodeList returns the items of a sequence node, aliases resolved.
func nodeList(n *yaml.Node) []*yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, e := range n.Content {
		for e.Kind == yaml.AliasNode {
			e = e.Alias
		}
		out[i] = e
	}
	return out
}

// reply checks one scripted model reply beyond the schema: what it must
// hold and which keys exclude each other (package builtin's rules).
func (tc *testChecker) reply(n *yaml.Node, path string) {
	m := asMapping(n)
	has := func(k string) bool { return m.get(k) != nil }
	switch {
	case has("error"):
		for _, k := range []string{"text", "json", "tool_calls"} {
			if has(k) {
				tc.errs.Add(nodePos(tc.file, m.kpos[k]), "%s: a reply with error has nothing else (%s)", path, k)
			}
		}
	case !has("text") && !has("json") && !has("tool_calls"):
		tc.errs.Add(nodePos(tc.file, n), "%s: a reply needs text, json, tool_calls or error", path)
	case has("text") && has("json"):
		tc.errs.Add(nodePos(tc.file, m.kpos["json"]), "%s: a reply has text or json, not both", path)
	}
}

func (tc *testChecker) expect(c *TestCase, n *yaml.Node, path string) {
	if n == nil {
		return
	}
	e := &c.Expect
	e.Pos = nodePos(tc.file, n)
	m := asMapping(n)
	e.Status = scalar(m.get("status"))
	if sn := m.get("state"); sn != nil {
		// Expected values are whole field values, compared exactly.
		e.State, e.StatePos = tc.stateValues(sn, path+".state", true)
		e.HasState = true
	}
	env := types.Map{"state": stateEnv(tc.g.Fields)["state"]}
	for i, an := range nodeList(m.get("assert")) {
		if x := tc.ec.compile(an, fmt.Sprintf("%s.assert[%d]", path, i), env, wantBool); x != nil {
			e.Asserts = append(e.Asserts, x)
		}
	}
	if pn := m.get("path"); pn != nil {
		e.HasPath = true
		for _, p := range nodeList(pn) {
			if tc.g.Nodes[p.Value] == nil {
				tc.errs.Add(nodePos(tc.file, p), "%s", tc.unknownNode(path+".path", p.Value))
			}
			e.Path = append(e.Path, p.Value)
		}
	}
	if in := m.get("interrupts"); in != nil {
		e.HasInts = true
		for _, x := range nodeList(in) {
			xm := asMapping(x)
			ei := ExpectInterrupt{Node: scalar(xm.get("node")), When: scalar(xm.get("when"))}
			if tc.g.Nodes[ei.Node] == nil {
				tc.errs.Add(nodePos(tc.file, xm.get("node")), "%s", tc.unknownNode(path+".interrupts", ei.Node))
			}
			if p := xm.get("payload"); p != nil {
				ei.Payload, ei.HasPayload = Normalize(tc.value(p)), true
			}
			e.Interrupts = append(e.Interrupts, ei)
		}
	}
	if v := m.get("llm_calls"); v != nil {
		var n int
		_ = v.Decode(&n)
		e.LLMCalls = &n
	}
	if v := m.get("tokens"); v != nil {
		var n int
		_ = v.Decode(&n)
		e.Tokens = &n
	}
	if v := m.get("cost_usd"); v != nil {
		var f float64
		_ = v.Decode(&f)
		e.CostUSD = &f
	}
	if v := m.get("error"); v != nil {
		re, err := regexp.Compile(v.Value)
		if err != nil {
			tc.errs.Add(nodePos(tc.file, v), "%s.error: invalid regular expression: %v", path, err)
		}
		e.Error = re
	}
}

// unknownNode words the error for a node name the graph does not have, in
// a path or an interrupt: a node of a subgraph is reported as the subgraph
// node that runs it.
func (tc *testChecker) unknownNode(path, name string) string {
	msg := fmt.Sprintf("%s: graph %s has no node %q", path, tc.g.Name, name)
	for _, n := range tc.g.NodeOrder {
		if child := tc.g.Subgraphs[tc.g.Nodes[n].ChildGraph()]; child != nil && hasNodeDeep(child, name) {
			return msg + fmt.Sprintf("; it runs inside node %q (a %s), which the case names instead", n, tc.g.Nodes[n].Kind)
		}
	}
	if s := suggest(name, tc.g.NodeOrder); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return msg
}

// hasNodeDeep reports whether g or one of its subgraphs has a node name.
func hasNodeDeep(g *Graph, name string) bool {
	if g.Nodes[name] != nil {
		return true
	}
	for _, c := range g.Subgraphs {
		if c.Nodes[name] != nil {
			return true
		}
	}
	return false
}

// WithStates returns the test file's source with fields of expect.state
// set, per case index, to the given values: fields the mapping lists keep
// their place and style, others are added after them; expect and state are
// created when missing. The rest of the file (comments included) is kept,
// though yaml.v3 re-indents it by two spaces.
func (tf *TestFile) WithStates(states map[int]map[string]any) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(tf.src, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 {
		return nil, fmt.Errorf("no YAML document")
	}
	cases := nodeList(asMapping(doc.Content[0]).get("cases"))
	for _, i := range slices.Sorted(maps.Keys(states)) {
		if i < 0 || i >= len(cases) {
			return nil, fmt.Errorf("no case %d", i)
		}
		exp, err := mappingOf(cases[i], "expect")
		if err != nil {
			return nil, fmt.Errorf("case %q: %w", scalar(asMapping(cases[i]).get("name")), err)
		}
		st, err := mappingOf(exp, "state")
		if err != nil {
			return nil, fmt.Errorf("case %q: expect.%w", scalar(asMapping(cases[i]).get("name")), err)
		}
		if len(st.Content) == 0 {
			st.Style = 0 // a filled `state: {}` becomes a block
		}
		for _, k := range SortedKeys(states[i]) {
			var v yaml.Node
			if err := v.Encode(states[i][k]); err != nil {
				return nil, fmt.Errorf("encode state.%s of case %d: %w", k, i, err)
			}
			if st.Style&yaml.FlowStyle != 0 {
				v.Style |= yaml.FlowStyle
			}
			setKey(st, k, &v)
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// mappingOf returns the mapping under key in mapping m, adding an empty one
// when the key is missing. Aliased values are not changed (that would
// change every place that uses them).
func mappingOf(m *yaml.Node, key string) (*yaml.Node, error) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != key {
			continue
		}
		switch v := m.Content[i+1]; v.Kind {
		case yaml.MappingNode:
			return v, nil
		case yaml.AliasNode:
			return nil, fmt.Errorf("%s is an alias; update it by hand", key)
		default:
			return nil, fmt.Errorf("%s is not a mapping", key)
		}
	}
	v := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	return v, nil
}

// setKey sets key of mapping m to val, in place (keeping the old value's
// comments) or appended.
func setKey(m *yaml.Node, key string, val *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			old := m.Content[i+1]
			val.HeadComment, val.LineComment, val.FootComment = old.HeadComment, old.LineComment, old.FootComment
			m.Content[i+1] = val
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, val)
}

// subgraphList returns the graphs g uses as subgraphs, in path order.
func subgraphList(g *Graph) []*Graph {
	var out []*Graph
	for _, p := range SortedKeys(g.Subgraphs) {
		out = append(out, g.Subgraphs[p])
	}
	return out
}
