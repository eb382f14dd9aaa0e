package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"sync"

	"github.com/lgrun/lgrun/schema"
)

// ToolKindGo is the kind of the tools a [Registry] declares: tools written
// in Go and registered by the program that embeds lgrun. A graph cannot
// declare a tool of this kind; it uses one by name.
const ToolKindGo = "go"

// BuiltinNodeKinds are the node kinds of the language.
var BuiltinNodeKinds = []string{"set", "noop", "interrupt", "llm", "tools", "subgraph", "map"}

// BuiltinProviders are the model providers of the language.
var BuiltinProviders = []string{"openai", "azure", "mock"}

// Registry declares what graphs may use beyond the language's own kinds:
// custom node kinds (with their settings), Go tools and model providers.
// It is the declaration side of a kind; the implementations are registered
// with the runtime (package builtin's Environment keeps both in step).
// Loading with [Options].Registry accepts the registry's kinds, checks
// their settings against their declarations, and validates against
// [Registry.Schema], the graph JSON Schema extended with them, so an
// editor using that schema knows them too.
//
// A nil *Registry declares nothing. Add methods must not be called while
// graphs are being loaded with the registry; [Registry.Clone] first.
type Registry struct {
	nodeKinds map[string]NodeKindDecl
	tools     map[string]ToolDecl
	providers map[string]ProviderDecl

	mu     sync.Mutex
	schema *embeddedSchema // built on first use, reset by Add
}

// NodeKindDecl declares a custom node kind.
type NodeKindDecl struct {
	Name string
	// Doc says what the kind does (shown in the JSON Schema).
	Doc string
	// Settings are the keys a node of the kind takes besides the common
	// ones (kind, description, timeout, retry, goto, goto_paths). The
	// decoded values are in [Node].Settings.
	Settings []Setting
	// Writes lists the state fields a node of the kind may write.
	Writes []string
}

// Setting is one key of a custom node kind.
type Setting struct {
	Name string
	Doc  string
	// Schema is the JSON Schema of the value; nil accepts any value.
	Schema map[string]any
	// Required makes a node of the kind without the key an error.
	Required bool
	// Default is the value a node without the key gets in Settings (when
	// not Required); nil for none.
	Default any
}

// ToolDecl declares a Go tool.
type ToolDecl struct {
	Name        string
	Description string
	// Parameters is the JSON Schema of the arguments; nil means none.
	Parameters map[string]any
}

// ProviderDecl declares a custom model provider.
type ProviderDecl struct {
	Name string
	Doc  string
}

// NewRegistry returns a registry that declares nothing beyond the
// language.
func NewRegistry() *Registry {
	return &Registry{nodeKinds: map[string]NodeKindDecl{}, tools: map[string]ToolDecl{}, providers: map[string]ProviderDecl{}}
}

// Clone returns a copy of r to add to.
func (r *Registry) Clone() *Registry {
	if r == nil {
		return NewRegistry()
	}
	return &Registry{nodeKinds: maps.Clone(r.nodeKinds), tools: maps.Clone(r.tools), providers: maps.Clone(r.providers)}
}

func (r *Registry) changed() {
	r.mu.Lock()
	r.schema = nil
	r.mu.Unlock()
}

// commonKeys are the node keys every kind has.
var commonKeys = commonNodeKeys

// AddNodeKind declares a node kind. The name must be new, and each
// setting's name must not be a common node key or a built-in kind's
// setting; two custom kinds may share a setting name only with the same
// schema.
func (r *Registry) AddNodeKind(d NodeKindDecl) error {
	if !validName(d.Name) {
		return fmt.Errorf("node kind %q: not a valid name (letters, digits and _, not starting with a digit)", d.Name)
	}
	if slices.Contains(BuiltinNodeKinds, d.Name) || r.nodeKinds[d.Name].Name != "" {
		return fmt.Errorf("node kind %q is already registered", d.Name)
	}
	builtinKeys := map[string]bool{}
	for _, ks := range kindKeys {
		for _, k := range ks {
			builtinKeys[k] = true
		}
	}
	seen := map[string]bool{}
	for _, s := range d.Settings {
		switch {
		case !validName(s.Name):
			return fmt.Errorf("node kind %q: setting %q is not a valid name", d.Name, s.Name)
		case seen[s.Name]:
			return fmt.Errorf("node kind %q: setting %q is declared twice", d.Name, s.Name)
		case slices.Contains(commonKeys, s.Name) || builtinKeys[s.Name]:
			return fmt.Errorf("node kind %q: setting %q is a key of the built-in kinds; choose another name", d.Name, s.Name)
		}
		seen[s.Name] = true
		if s.Schema != nil {
			if err := CheckJSONSchema(s.Schema); err != nil {
				return fmt.Errorf("node kind %q: setting %q: not a valid JSON Schema: %v", d.Name, s.Name, err)
			}
		}
		for _, o := range r.nodeKinds {
			for _, os := range o.Settings {
				if os.Name == s.Name && !reflect.DeepEqual(os.Schema, s.Schema) {
					return fmt.Errorf("node kind %q: setting %q is declared by kind %q with another schema", d.Name, s.Name, o.Name)
				}
			}
		}
	}
	r.nodeKinds[d.Name] = d
	r.changed()
	return nil
}

// AddTool declares a Go tool.
func (r *Registry) AddTool(d ToolDecl) error {
	if !validName(d.Name) {
		return fmt.Errorf("tool %q: not a valid name (letters, digits and _, not starting with a digit)", d.Name)
	}
	if r.tools[d.Name].Name != "" {
		return fmt.Errorf("tool %q is already registered", d.Name)
	}
	if d.Parameters == nil {
		d.Parameters = map[string]any{"type": "object", "properties": map[string]any{}}
	}
	if err := CheckJSONSchema(d.Parameters); err != nil {
		return fmt.Errorf("tool %q: parameters: not a valid JSON Schema: %v", d.Name, err)
	}
	r.tools[d.Name] = d
	r.changed()
	return nil
}

// AddProvider declares a model provider.
func (r *Registry) AddProvider(d ProviderDecl) error {
	if !validName(d.Name) {
		return fmt.Errorf("provider %q: not a valid name", d.Name)
	}
	if slices.Contains(BuiltinProviders, d.Name) || r.providers[d.Name].Name != "" {
		return fmt.Errorf("provider %q is already registered", d.Name)
	}
	r.providers[d.Name] = d
	r.changed()
	return nil
}

// NodeKinds lists every node kind a graph may use, built-in ones first.
func (r *Registry) NodeKinds() []string {
	out := slices.Clone(BuiltinNodeKinds)
	if r != nil {
		out = append(out, SortedKeys(r.nodeKinds)...)
	}
	return out
}

// Providers lists every model provider, built-in ones first.
func (r *Registry) Providers() []string {
	out := slices.Clone(BuiltinProviders)
	if r != nil {
		out = append(out, SortedKeys(r.providers)...)
	}
	return out
}

// Tools lists the declared Go tools by name.
func (r *Registry) Tools() []string {
	if r == nil {
		return nil
	}
	return SortedKeys(r.tools)
}

func (r *Registry) nodeKind(name string) (NodeKindDecl, bool) {
	if r == nil {
		return NodeKindDecl{}, false
	}
	d, ok := r.nodeKinds[name]
	return d, ok
}

func (r *Registry) provider(name string) bool {
	return r != nil && r.providers[name].Name != ""
}

func (r *Registry) empty() bool {
	return r == nil || len(r.nodeKinds)+len(r.tools)+len(r.providers) == 0
}

// Schema returns the JSON Schema of graph files that may use r's kinds:
// the language's schema with r's node kinds (and their settings) and
// providers added. For a registry that declares nothing it is
// schema/graph.schema.json as committed.
func (r *Registry) Schema() ([]byte, error) {
	if r.empty() {
		return schema.Graph, nil
	}
	var doc map[string]any
	if err := json.Unmarshal(schema.Graph, &doc); err != nil {
		return nil, fmt.Errorf("parse embedded graph schema: %w", err)
	}
	defs := doc["$defs"].(map[string]any)
	node := defs["node"].(map[string]any)
	props := node["properties"].(map[string]any)
	kind := props["kind"].(map[string]any)
	for _, name := range SortedKeys(r.nodeKinds) {
		d := r.nodeKinds[name]
		kind["enum"] = append(kind["enum"].([]any), name)
		for _, s := range d.Settings {
			p := map[string]any{}
			if s.Schema != nil {
				p = maps.Clone(s.Schema)
			}
			desc := fmt.Sprintf("kind %s: %s", name, s.Doc)
			if old, ok := props[s.Name].(map[string]any); ok {
				desc = fmt.Sprint(old["description"]) + "; " + desc
			}
			p["description"] = desc
			props[s.Name] = p
		}
	}
	model := defs["model"].(map[string]any)
	prov := model["properties"].(map[string]any)["provider"].(map[string]any)
	for _, name := range SortedKeys(r.providers) {
		prov["enum"] = append(prov["enum"].([]any), name)
		if doc := r.providers[name].Doc; doc != "" {
			prov["description"] = fmt.Sprint(prov["description"]) + " " + name + ": " + doc
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// graphSchema returns the compiled schema graphs are validated with.
func (r *Registry) graphSchema() *embeddedSchema {
	if r.empty() {
		return graphSchema
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.schema == nil {
		src, err := r.Schema()
		r.schema = &embeddedSchema{url: schema.GraphURL, what: "graph", src: src}
		if err != nil {
			r.schema.once.Do(func() { r.schema.err = err })
		}
	}
	return r.schema
}

// goTools returns the registry's tools as graph tools, for the names a
// graph does not declare itself.
func (r *Registry) goTools(declared map[string]*Tool) []*Tool {
	if r == nil {
		return nil
	}
	names := SortedKeys(r.tools)
	sort.Strings(names)
	var out []*Tool
	for _, name := range names {
		if declared[name] != nil {
			continue
		}
		d := r.tools[name]
		out = append(out, &Tool{Name: name, Kind: ToolKindGo, Description: d.Description, Parameters: d.Parameters})
	}
	return out
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
