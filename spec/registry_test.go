package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/expr-lang/expr/types"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/lgrun/lgrun/schema"
)

// The committed JSON Schema and the language's kind tables agree: every
// node kind, provider and tool kind the decoder knows is in the schema's
// enums, and the node keys the schema allows are exactly the common keys
// plus the built-in kinds' settings.
func TestSchemaAgreesWithRegistry(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(schema.Graph, &doc); err != nil {
		t.Fatal(err)
	}
	defs := doc["$defs"].(map[string]any)
	props := func(def string) map[string]any {
		return defs[def].(map[string]any)["properties"].(map[string]any)
	}
	enum := func(def, key string) []string {
		var out []string
		for _, v := range props(def)[key].(map[string]any)["enum"].([]any) {
			out = append(out, v.(string))
		}
		return out
	}
	if got := enum("node", "kind"); !reflect.DeepEqual(got, BuiltinNodeKinds()) {
		t.Errorf("schema node kinds %v, registry %v", got, BuiltinNodeKinds())
	}
	if got := SortedKeys(builtins().nodeKeys); !reflect.DeepEqual(got, sorted(BuiltinNodeKinds())) {
		t.Errorf("decoder kinds %v, registry %v", got, BuiltinNodeKinds())
	}
	if got := enum("model", "provider"); !reflect.DeepEqual(got, BuiltinProviders()) {
		t.Errorf("schema providers %v, registry %v", got, BuiltinProviders())
	}
	if got := enum("tool", "kind"); !reflect.DeepEqual(got, []string{"expr", "http", "exec", "mcp"}) {
		t.Errorf("schema tool kinds %v", got)
	}
	want := slices.Clone(commonNodeKeys)
	for _, ks := range builtins().nodeKeys {
		for _, k := range ks {
			if !slices.Contains(want, k) {
				want = append(want, k)
			}
		}
	}
	if got := SortedKeys(props("node")); !reflect.DeepEqual(got, sorted(want)) {
		t.Errorf("schema node keys %v, decoder keys %v", got, sorted(want))
	}
	// A registry with custom kinds extends the schema with exactly them.
	r := NewRegistry()
	if err := r.AddNodeKind(NodeKindDecl{Name: "greet", Doc: "says hello", Settings: []Setting{{Name: "greeting", Doc: "what to say", Schema: map[string]any{"type": "string"}}}}); err != nil {
		t.Fatal(err)
	}
	if err := r.AddProvider(ProviderDecl{Name: "local", Doc: "an in-process model"}); err != nil {
		t.Fatal(err)
	}
	b, err := r.Schema()
	if err != nil {
		t.Fatal(err)
	}
	var ext map[string]any
	if err := json.Unmarshal(b, &ext); err != nil {
		t.Fatal(err)
	}
	doc, defs = ext, ext["$defs"].(map[string]any)
	if got := enum("node", "kind"); !reflect.DeepEqual(got, r.NodeKinds()) {
		t.Errorf("extended schema node kinds %v, registry %v", got, r.NodeKinds())
	}
	if got := enum("model", "provider"); !reflect.DeepEqual(got, r.Providers()) {
		t.Errorf("extended schema providers %v, registry %v", got, r.Providers())
	}
	if p, ok := props("node")["greeting"].(map[string]any); !ok || p["type"] != "string" || !strings.Contains(p["description"].(string), "kind greet: what to say") {
		t.Errorf("extended schema greeting setting: %v", props("node")["greeting"])
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}

const customGraph = `version: 1
name: custom
state:
  messages: {type: messages}
  out: {type: string}
models:
  m: {provider: local}
nodes:
  hello: {kind: greet, greeting: '"hi"'}
  agent: {kind: llm, model: m, tools: [lookup]}
edges:
  - {from: START, to: hello}
  - {from: hello, to: agent}
  - {from: agent, to: END}
`

func customRegistry(t *testing.T) *Registry {
	t.Helper()
	r := NewRegistry()
	for _, err := range []error{
		r.AddNodeKind(NodeKindDecl{Name: "greet", Writes: []string{"out"}, Settings: []Setting{
			{Name: "greeting", Schema: map[string]any{"type": "string"}, Required: true},
			{Name: "times", Schema: map[string]any{"type": "integer"}, Default: 1},
		}}),
		r.AddTool(ToolDecl{Name: "lookup", Description: "looks up", Parameters: map[string]any{"type": "object", "properties": map[string]any{"q": map[string]any{"type": "string"}}}}),
		r.AddProvider(ProviderDecl{Name: "local"}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestRegistryKindsLoad(t *testing.T) {
	g, errs := Parse("g.yaml", []byte(customGraph), &Options{Registry: customRegistry(t)})
	if errs.HasErrors() {
		t.Fatalf("custom kinds rejected:\n%v", errs)
	}
	n := g.Nodes["hello"]
	if !reflect.DeepEqual(n.Settings(), map[string]any{"greeting": `"hi"`, "times": 1}) || !reflect.DeepEqual(n.Writes, []string{"out"}) {
		t.Errorf("greet node settings %v writes %v", n.Settings(), n.Writes)
	}
	tool := g.Tools["lookup"]
	if tool == nil || tool.Kind != ToolKindGo || tool.Description != "looks up" {
		t.Errorf("Go tool lookup: %+v", tool)
	}
	if g.Models["m"].Provider != "local" {
		t.Errorf("provider %q", g.Models["m"].Provider)
	}
	// Without the registry, each custom kind is an error at its place.
	_, errs = Parse("g.yaml", []byte(customGraph), nil)
	text := errs.Error()
	for _, want := range []string{`g.yaml:7:`, `provider`, `g.yaml:9:`, `unknown tool "lookup"`} {
		if !strings.Contains(text, want) {
			t.Errorf("without the registry the errors lack %q:\n%s", want, text)
		}
	}
}

func TestRegistryKindsChecked(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"wrong key", `greeting: '"hi"'`, `greeting: '"hi"', tools: [lookup]`, `key "tools" is not used by kind greet`},
		{"required", `greeting: '"hi"'`, `times: 2`, `kind greet needs greeting`},
		{"wrong type", `greeting: '"hi"'`, `greeting: '"hi"', times: many`, `times: got string, want integer`},
		{"unknown tool", `tools: [lookup]`, `tools: [lookpu, nope]`, `unknown tool "nope" (known tools: lookup)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(customGraph, tc.from, tc.to, 1)
			_, errs := Parse("g.yaml", []byte(src), &Options{Registry: customRegistry(t)})
			if !strings.Contains(errs.Error(), tc.want) {
				t.Fatalf("errors lack %q:\n%v", tc.want, errs)
			}
		})
	}
}

func TestRegistryRejectsClashes(t *testing.T) {
	r := NewRegistry()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{r.AddNodeKind(NodeKindDecl{Name: "llm"}), `node kind "llm" is already registered`},
		{r.AddNodeKind(NodeKindDecl{Name: "x", Settings: []Setting{{Name: "prompt"}}}), `setting "prompt" is a key of the built-in kinds`},
		{r.AddProvider(ProviderDecl{Name: "mock"}), `provider "mock" is already registered`},
		{r.AddTool(ToolDecl{Name: "bad name"}), `not a valid name`},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("error %v, want %q", tc.err, tc.want)
		}
	}
}

// MessageType returns a fresh type: changing one cannot change how every
// graph of the process is checked.
func TestMessageTypeNotShared(t *testing.T) {
	m := MessageType()
	m["content"] = types.Int
	src := `version: 1
name: m
state:
  messages: {type: messages}
  n: {type: int}
nodes:
  a: {kind: set, set: {n: 'len(state.messages[0].content + "x")'}}
edges:
  - {from: START, to: a}
  - {from: a, to: END}
`
	if _, errs := Parse("m.yaml", []byte(src), nil); errs.HasErrors() {
		t.Fatalf("a changed MessageType leaked into checking:\n%v", errs)
	}
}

// The committed schema/graph.schema.json is what the declarations
// generate; regenerate it with `go generate ./schema`.
func TestCommittedSchemaIsGenerated(t *testing.T) {
	got, err := NewRegistry().Schema()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(schema.Graph) {
		t.Fatalf("schema/graph.schema.json is not what the kind declarations generate; run `go generate ./schema`")
	}
}

// An editor validating with the committed schema (per-kind rules
// included) flags a key of the wrong kind; the right keys pass.
func TestSchemaFlagsKeyOfWrongKind(t *testing.T) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema.Graph))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(schema.GraphURL, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(schema.GraphURL)
	if err != nil {
		t.Fatal(err)
	}
	graph := func(node string) any {
		var v any
		src := `{"version": 1, "name": "g", "state": {"n": {"type": "int"}}, "nodes": {"a": ` + node + `}, "edges": [{"from": "START", "to": "a"}, {"from": "a", "to": "END"}]}`
		if err := json.Unmarshal([]byte(src), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := sch.Validate(graph(`{"kind": "set", "set": {"n": "1"}, "timeout": "1s"}`)); err != nil {
		t.Errorf("a set node with its own keys: %v", err)
	}
	if err := sch.Validate(graph(`{"kind": "set", "set": {"n": "1"}, "model": "m"}`)); err == nil {
		t.Errorf("a set node with the llm key model passed the schema")
	}
	if err := sch.Validate(graph(`{"kind": "noop", "over": "state.x"}`)); err == nil {
		t.Errorf("a noop node with the map key over passed the schema")
	}
}

// A kind's Check reports at the setting it names, or at the node.
func TestRegistryKindCheck(t *testing.T) {
	r := NewRegistry()
	err := r.AddNodeKind(NodeKindDecl{Name: "copy", Settings: []Setting{{Name: "from", Required: true}, {Name: "times", Default: 1}}, Check: func(s map[string]any, field func(string) *Field) error {
		var errs []error
		if name, _ := s["from"].(string); field(name) == nil {
			errs = append(errs, &SettingError{Setting: "from", Err: fmt.Errorf("no state field %q", name)})
		}
		if n, _ := s["times"].(int); n > 3 {
			errs = append(errs, fmt.Errorf("at most 3 times, got %d", n))
		}
		return errors.Join(errs...)
	}})
	if err != nil {
		t.Fatal(err)
	}
	src := "version: 1\nname: c\nstate:\n  a: {type: int}\nnodes:\n  x: {kind: copy, from: b, times: 5}\nedges:\n  - {from: START, to: x}\n  - {from: x, to: END}\n"
	_, errs := Parse("c.yaml", []byte(src), &Options{Registry: r})
	got := errs.Error()
	for _, want := range []string{`c.yaml:6:25: error: nodes.x.from: no state field "b"`, `c.yaml:6:3: error: nodes.x: at most 3 times, got 5`} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q:\n%s", want, got)
		}
	}
	if _, errs := Parse("c.yaml", []byte(strings.Replace(src, "from: b, times: 5", "from: a", 1)), &Options{Registry: r}); errs.HasErrors() {
		t.Errorf("valid settings: %v", errs)
	}
}

// A registered tool kind: a graph's tool of the kind is decoded from the
// kind's settings (defaults filled in, required ones needed), an unknown
// key is flagged with a suggestion, the kind's Check reports at the
// setting, and the registry's schema has the kind and its settings in the
// tool's per-kind part (so an editor flags a key of another kind).
func TestRegistryToolKind(t *testing.T) {
	r := NewRegistry()
	err := r.AddToolKind(ToolKindDecl{Name: "lookup", Doc: "Looks a key up.", Settings: []Setting{
		{Name: "table", Doc: "key to value", Schema: map[string]any{"type": "object"}, Required: true},
		{Name: "missing", Doc: "answer for an unknown key", Schema: map[string]any{"type": "string"}, Default: "unknown"},
	}, Check: func(s map[string]any) error {
		if len(s["table"].(map[string]any)) == 0 {
			return &SettingError{Setting: "table", Err: errors.New("the table is empty")}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	src := "version: 1\nname: c\nstate:\n  messages: {type: messages}\nmodels:\n  m: {provider: openai, model: x}\ntools:\n  cap:\n    kind: lookup\n    table: {France: Paris}\nnodes:\n  a: {kind: llm, model: m, tools: [cap]}\nedges:\n  - {from: START, to: a}\n  - {from: a, to: END}\n"
	g, errs := Parse("c.yaml", []byte(src), &Options{Registry: r})
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	tool := g.Tools["cap"]
	if want := map[string]any{"table": map[string]any{"France": "Paris"}, "missing": "unknown"}; tool.Kind != "lookup" || !reflect.DeepEqual(tool.Settings, want) {
		t.Errorf("tool %s settings %v, want %v", tool.Kind, tool.Settings, want)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"    table: {France: Paris}\n", "    tabel: {France: Paris}\n", `c.yaml:10:5: error: unknown key "tabel" in tools.cap; did you mean "table"?`},
		{"    table: {France: Paris}\n", "    table: {France: Paris}\n    url: x\n", `key "url" is not used by tool kind lookup`},
		{"    table: {France: Paris}\n", "    table: {}\n", `c.yaml:10:12: error: tools.cap.table: the table is empty`},
		{"    table: {France: Paris}\n", "    missing: none\n", `c.yaml:8:3: error: tools.cap: kind lookup needs table`},
		{"    table: {France: Paris}\n", "    table: [France]\n", `tools.cap.table`},
	} {
		_, errs := Parse("c.yaml", []byte(strings.Replace(src, tc.from, tc.to, 1)), &Options{Registry: r})
		if got := errs.Error(); !strings.Contains(got, tc.want) {
			t.Errorf("with %q: errors lack %q:\n%s", tc.to, tc.want, got)
		}
	}
	// Without the registry the kind is unknown.
	if _, errs := Parse("c.yaml", []byte(src), nil); !errs.HasErrors() {
		t.Error("a tool of an unregistered kind loaded")
	}

	raw, err := r.Schema()
	if err != nil {
		t.Fatal(err)
	}
	var sc map[string]any
	if err := json.Unmarshal(raw, &sc); err != nil {
		t.Fatal(err)
	}
	tdef := sc["$defs"].(map[string]any)["tool"].(map[string]any)
	props := tdef["properties"].(map[string]any)
	if got := props["kind"].(map[string]any)["enum"]; !reflect.DeepEqual(got, []any{"expr", "http", "exec", "mcp", "lookup"}) {
		t.Errorf("schema tool kinds %v", got)
	}
	if got := props["table"].(map[string]any)["description"]; got != "kind lookup: key to value" {
		t.Errorf("schema table setting: %v", got)
	}
	if !reflect.DeepEqual(r.ToolKinds(), []string{"expr", "http", "exec", "mcp", "lookup"}) {
		t.Errorf("ToolKinds %v", r.ToolKinds())
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(schema.GraphURL, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(schema.GraphURL)
	if err != nil {
		t.Fatal(err)
	}
	graph := func(tool string) any {
		var v any
		js := `{"version": 1, "name": "g", "state": {"n": {"type": "int"}}, "tools": {"t": ` + tool + `}, "nodes": {"a": {"kind": "noop"}}, "edges": [{"from": "START", "to": "a"}, {"from": "a", "to": "END"}]}`
		if err := json.Unmarshal([]byte(js), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := sch.Validate(graph(`{"kind": "lookup", "table": {}, "timeout": "1s"}`)); err != nil {
		t.Errorf("a lookup tool with its own keys: %v", err)
	}
	if err := sch.Validate(graph(`{"kind": "lookup", "table": {}, "url": "http://x"}`)); err == nil {
		t.Error("a lookup tool with the http key url passed the schema")
	}
	if err := sch.Validate(graph(`{"kind": "expr", "expr": "1", "table": {}}`)); err == nil {
		t.Error("an expr tool with the lookup key table passed the schema")
	}
}

func TestRegistryRejectsToolKindClashes(t *testing.T) {
	r := NewRegistry()
	if err := r.AddToolKind(ToolKindDecl{Name: "a", Settings: []Setting{{Name: "s", Schema: map[string]any{"type": "string"}}}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{r.AddToolKind(ToolKindDecl{Name: "http"}), `tool kind "http" is already registered`},
		{r.AddToolKind(ToolKindDecl{Name: ToolKindGo}), `tool kind "go" is already registered`},
		{r.AddToolKind(ToolKindDecl{Name: "a"}), `tool kind "a" is already registered`},
		{r.AddToolKind(ToolKindDecl{Name: "x", Settings: []Setting{{Name: "url"}}}), `setting "url" is a key of the built-in kinds`},
		{r.AddToolKind(ToolKindDecl{Name: "x", Settings: []Setting{{Name: "parameters"}}}), `setting "parameters" is a key of the built-in kinds`},
		{r.AddToolKind(ToolKindDecl{Name: "x", Settings: []Setting{{Name: "s", Schema: map[string]any{"type": "integer"}}}}), `setting "s" is declared by kind "a" with another schema`},
		{r.AddToolKind(ToolKindDecl{Name: "bad name"}), `not a valid name`},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("error %v, want %q", tc.err, tc.want)
		}
	}
}
