package spec

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/expr-lang/expr/types"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/lgrun/lgrun/schema"
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
}

// ExpectInterrupt is an expected interrupt.
type ExpectInterrupt struct {
	Node       string
	When       string
	Payload    any
	HasPayload bool
}

var (
	testSchemaOnce sync.Once
	testSchemaVal  *jsonschema.Schema
	testSchemaDoc  any
	testSchemaErr  error
)

func testSchema() (*jsonschema.Schema, error) {
	testSchemaOnce.Do(func() {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema.Test))
		if err != nil {
			testSchemaErr = fmt.Errorf("parse embedded test schema: %w", err)
			return
		}
		testSchemaDoc = doc
		c := jsonschema.NewCompiler()
		if err := c.AddResource(schema.TestURL, doc); err != nil {
			testSchemaErr = err
			return
		}
		testSchemaVal, testSchemaErr = c.Compile(schema.TestURL)
	})
	return testSchemaVal, testSchemaErr
}

// IsTestFile reports whether path is named like a graph test file.
func IsTestFile(path string) bool {
	base := filepath.Base(path)
	return strings.HasSuffix(base, ".test.yaml") || strings.HasSuffix(base, ".test.yml")
}

// GraphOfTest returns the graph file a test file tests by name.
func GraphOfTest(path string) string {
	return strings.Replace(path, ".test.", ".", 1)
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
	if gn := m.get("graph"); gn != nil {
		gpath = filepath.Join(filepath.Dir(path), gn.Value)
		gpos = nodePos(path, gn)
	}
	g, gerrs := LoadFile(gpath, opts)
	if g == nil {
		if len(gerrs) == 1 && gerrs[0].Pos.Line == 0 {
			errs.Add(gpos, "graph under test: %s", gerrs[0].Msg)
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
	for i, cn := range m.get("cases").Content {
		c := tc.testCase(cn, fmt.Sprintf("cases[%d]", i))
		if first, dup := names[c.Name]; dup {
			errs.Add(c.Pos, "duplicate case name %q (first at line %d)", c.Name, first.Line)
		}
		names[c.Name] = c.Pos
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
func (tc *testChecker) stateValues(n *yaml.Node, path string) (map[string]any, map[string]Pos) {
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
		v, err := f.Type.Coerce(raw)
		if err != nil && f.Reducer.Kind != ReduceReplace && f.Reducer.Kind != ReduceCustom {
			// Inputs go through reducers: one item of a list is fine too.
			if _, ierr := f.Type.Item().Coerce(raw); ierr == nil || f.Reducer.Kind == ReduceMessages {
				v, err = raw, nil
			}
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

func (tc *testChecker) testCase(n *yaml.Node, path string) *TestCase {
	m := asMapping(n)
	c := &TestCase{Name: scalar(m.get("name")), Pos: nodePos(tc.file, n), Description: scalar(m.get("description")), node: n}
	path = fmt.Sprintf("%s (%s)", path, c.Name)
	for i, tn := range nodeList(m.get("turns")) {
		tm := asMapping(tn)
		in, _ := tc.stateValues(tm.get("input"), fmt.Sprintf("%s.turns[%d].input", path, i))
		res, _ := tc.value(tm.get("resume")).([]any)
		c.Turns = append(c.Turns, TestTurn{Input: in, Resume: res})
	}
	c.Input, _ = tc.stateValues(m.get("input"), path+".input")
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
			c.Models[k.Value], _ = tc.value(mm.get(k.Value)).([]any)
		}
	}
	if tn := m.get("tools"); tn != nil {
		c.Tools = map[string][]any{}
		tm := asMapping(tn)
		for _, k := range tm.keys {
			found := false
			for _, g := range append([]*Graph{tc.g}, subgraphList(tc.g)...) {
				found = found || g.Tools[k.Value] != nil
			}
			if !found {
				msg := fmt.Sprintf("%s.tools: graph %s has no tool %q", path, tc.g.Name, k.Value)
				if s := suggest(k.Value, SortedKeys(tc.g.Tools)); s != "" {
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

func nodeList(n *yaml.Node) []*yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	return n.Content
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
		e.State, e.StatePos = tc.stateValues(sn, path+".state")
		// Expected values are whole field values, compared exactly.
		for k, v := range e.State {
			if f := tc.g.Field(k); f != nil {
				if cv, err := f.Type.Coerce(v); err == nil {
					e.State[k] = cv
				}
			}
		}
	}
	env := types.Map{"state": stateEnv(tc.g.Fields)["state"]}
	for i, an := range nodeList(m.get("assert")) {
		if x := tc.ec.compile(an, fmt.Sprintf("%s.assert[%d]", path, i), env, wantBool); x != nil {
			e.Asserts = append(e.Asserts, x)
		}
	}
	if pn := m.get("path"); pn != nil {
		e.HasPath = true
		for _, p := range pn.Content {
			if tc.g.Nodes[p.Value] == nil {
				msg := fmt.Sprintf("%s.path: graph %s has no node %q", path, tc.g.Name, p.Value)
				if s := suggest(p.Value, tc.g.NodeOrder); s != "" {
					msg += fmt.Sprintf("; did you mean %q?", s)
				}
				tc.errs.Add(nodePos(tc.file, p), "%s", msg)
			}
			e.Path = append(e.Path, p.Value)
		}
	}
	if in := m.get("interrupts"); in != nil {
		e.HasInts = true
		for _, x := range in.Content {
			xm := asMapping(x)
			ei := ExpectInterrupt{Node: scalar(xm.get("node")), When: scalar(xm.get("when"))}
			if tc.g.Nodes[ei.Node] == nil {
				tc.errs.Add(nodePos(tc.file, xm.get("node")), "%s.interrupts: graph %s has no node %q", path, tc.g.Name, ei.Node)
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

// WithStates returns the test file's source with expect.state of each case
// in states (by case index) replaced by the given values, keeping the rest
// of the file (comments included) as it was.
func (tf *TestFile) WithStates(states map[int]map[string]any) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(tf.src, &doc); err != nil {
		return nil, err
	}
	root := doc.Content[0]
	cases := asMapping(root).get("cases")
	for i, st := range states {
		if cases == nil || i >= len(cases.Content) {
			continue
		}
		cn := cases.Content[i]
		var stateNode yaml.Node
		if err := stateNode.Encode(st); err != nil {
			return nil, fmt.Errorf("encode state of case %d: %w", i, err)
		}
		setKey(setKey(cn, "expect", &yaml.Node{Kind: yaml.MappingNode}), "state", &stateNode)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// setKey sets key in mapping m: replacing the value of an existing key when
// val is not a mapping placeholder, and returns the key's value node.
func setKey(m *yaml.Node, key string, val *yaml.Node) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			if val.Kind == yaml.MappingNode && len(val.Content) == 0 && m.Content[i+1].Kind == yaml.MappingNode {
				return m.Content[i+1]
			}
			m.Content[i+1] = val
			return val
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key, Tag: "!!str"}, val)
	return val
}

// subgraphList returns the graphs g uses as subgraphs, in path order.
func subgraphList(g *Graph) []*Graph {
	var out []*Graph
	for _, p := range SortedKeys(g.Subgraphs) {
		out = append(out, g.Subgraphs[p])
	}
	return out
}
