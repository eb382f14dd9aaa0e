package spec

import (
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

// BuiltinNodeKinds returns the node kinds of the language.
func BuiltinNodeKinds() []string {
	var out []string
	for _, d := range builtins().nodes {
		out = append(out, d.Name)
	}
	return out
}

// BuiltinProviders returns the model providers of the language.
func BuiltinProviders() []string {
	var out []string
	for _, d := range builtinProviderDecls {
		out = append(out, d.Name)
	}
	return out
}

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
	toolKinds map[string]ToolKindDecl
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
	// Check, when set, checks a node's settings beyond their schemas once
	// they are decoded (defaults filled in; it runs only when every
	// required setting is given and each matches its schema); field looks
	// up the graph's declared state fields (nil for an undeclared one).
	// Each error it returns (several with errors.Join) is reported at the
	// node, a [*SettingError] at the setting's value.
	Check func(settings map[string]any, field func(name string) *Field) error

	// decode decodes a node of a built-in kind (custom kinds have none and
	// are decoded from their settings, see decodeCustom).
	decode func(c *checker, node *Node, nm *mapping, path string)
}

// SettingError is an error of one setting of a node, for
// [NodeKindDecl].Check.
type SettingError struct {
	Setting string
	Err     error
}

func (e *SettingError) Error() string { return e.Setting + ": " + e.Err.Error() }
func (e *SettingError) Unwrap() error { return e.Err }

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

// ToolKindDecl declares a tool kind: the language's expr, http and exec,
// or a custom one ([Registry.AddToolKind]). A graph declares a tool of a
// custom kind under tools: with `kind: <Name>` and the kind's settings
// besides the common keys (kind, description, parameters, timeout); the
// decoded values are in [Tool].Settings.
type ToolKindDecl struct {
	Name     string
	Doc      string
	Settings []Setting
	// Check, when set, checks a tool's settings beyond their schemas once
	// they are decoded (defaults filled in; it runs only when every
	// required setting is given and each matches its schema). Each error
	// it returns (several with errors.Join) is reported at the tool, a
	// [*SettingError] at the setting's value.
	Check func(settings map[string]any) error

	// decode decodes a tool of a built-in kind (custom kinds are decoded
	// from their settings).
	decode func(c *checker, t *Tool, tm *mapping, path string)
}

// ProviderDecl declares a custom model provider.
type ProviderDecl struct {
	Name string
	Doc  string
}

// NewRegistry returns a registry that declares nothing beyond the
// language.
func NewRegistry() *Registry {
	return &Registry{nodeKinds: map[string]NodeKindDecl{}, toolKinds: map[string]ToolKindDecl{}, tools: map[string]ToolDecl{}, providers: map[string]ProviderDecl{}}
}

// Clone returns a copy of r to add to.
func (r *Registry) Clone() *Registry {
	if r == nil {
		return NewRegistry()
	}
	return &Registry{nodeKinds: maps.Clone(r.nodeKinds), toolKinds: maps.Clone(r.toolKinds), tools: maps.Clone(r.tools), providers: maps.Clone(r.providers)}
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
	if slices.Contains(BuiltinNodeKinds(), d.Name) || r.nodeKinds[d.Name].Name != "" {
		return fmt.Errorf("node kind %q is already registered", d.Name)
	}
	builtinKeys := map[string]bool{}
	for _, ks := range builtins().nodeKeys {
		for _, k := range ks {
			builtinKeys[k] = true
		}
	}
	others := map[string][]Setting{}
	for _, o := range r.nodeKinds {
		others[o.Name] = o.Settings
	}
	if err := checkSettings("node kind", d.Name, d.Settings, commonKeys, builtinKeys, others); err != nil {
		return err
	}
	r.nodeKinds[d.Name] = d
	r.changed()
	return nil
}

// checkSettings checks the settings of a new kind of what ("node kind",
// "tool kind"): valid names, each once, none a common key or a built-in
// kind's setting, and a setting name shared with another custom kind
// (others) only with the same schema.
func checkSettings(what, kind string, settings []Setting, common []string, builtinKeys map[string]bool, others map[string][]Setting) error {
	seen := map[string]bool{}
	for _, s := range settings {
		switch {
		case !validName(s.Name):
			return fmt.Errorf("%s %q: setting %q is not a valid name", what, kind, s.Name)
		case seen[s.Name]:
			return fmt.Errorf("%s %q: setting %q is declared twice", what, kind, s.Name)
		case slices.Contains(common, s.Name) || builtinKeys[s.Name]:
			return fmt.Errorf("%s %q: setting %q is a key of the built-in kinds; choose another name", what, kind, s.Name)
		}
		seen[s.Name] = true
		if s.Schema != nil {
			if err := CheckJSONSchema(s.Schema); err != nil {
				return fmt.Errorf("%s %q: setting %q: not a valid JSON Schema: %v", what, kind, s.Name, err)
			}
		}
		for _, o := range SortedKeys(others) {
			for _, os := range others[o] {
				if os.Name == s.Name && !reflect.DeepEqual(os.Schema, s.Schema) {
					return fmt.Errorf("%s %q: setting %q is declared by kind %q with another schema", what, kind, s.Name, o)
				}
			}
		}
	}
	return nil
}

// AddToolKind declares a tool kind. The name must be new (not expr, http,
// exec or go), and the settings follow the rules of [Registry.AddNodeKind]
// against the common tool keys and the built-in tool kinds' settings.
func (r *Registry) AddToolKind(d ToolKindDecl) error {
	if !validName(d.Name) {
		return fmt.Errorf("tool kind %q: not a valid name (letters, digits and _, not starting with a digit)", d.Name)
	}
	if _, builtin := builtinToolDecl(d.Name); builtin || d.Name == ToolKindGo || r.toolKinds[d.Name].Name != "" {
		return fmt.Errorf("tool kind %q is already registered", d.Name)
	}
	builtinKeys := map[string]bool{}
	for _, ks := range toolKindKeys() {
		for _, k := range ks {
			builtinKeys[k] = true
		}
	}
	others := map[string][]Setting{}
	for _, o := range r.toolKinds {
		others[o.Name] = o.Settings
	}
	if err := checkSettings("tool kind", d.Name, d.Settings, commonToolKeys, builtinKeys, others); err != nil {
		return err
	}
	d.decode = nil
	r.toolKinds[d.Name] = d
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
	if slices.Contains(BuiltinProviders(), d.Name) || r.providers[d.Name].Name != "" {
		return fmt.Errorf("provider %q is already registered", d.Name)
	}
	r.providers[d.Name] = d
	r.changed()
	return nil
}

// NodeKinds lists every node kind a graph may use, built-in ones first.
func (r *Registry) NodeKinds() []string {
	out := BuiltinNodeKinds()
	if r != nil {
		out = append(out, SortedKeys(r.nodeKinds)...)
	}
	return out
}

// Providers lists every model provider, built-in ones first.
func (r *Registry) Providers() []string {
	out := BuiltinProviders()
	if r != nil {
		out = append(out, SortedKeys(r.providers)...)
	}
	return out
}

// ToolKinds lists every tool kind a graph may declare a tool of,
// built-in ones first.
func (r *Registry) ToolKinds() []string {
	var out []string
	for _, d := range builtins().tools {
		out = append(out, d.Name)
	}
	if r != nil {
		out = append(out, SortedKeys(r.toolKinds)...)
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

func (r *Registry) toolKind(name string) (ToolKindDecl, bool) {
	if r == nil {
		return ToolKindDecl{}, false
	}
	d, ok := r.toolKinds[name]
	return d, ok
}

func (r *Registry) provider(name string) bool {
	return r != nil && r.providers[name].Name != ""
}

func (r *Registry) empty() bool {
	return r == nil || len(r.nodeKinds)+len(r.toolKinds)+len(r.tools)+len(r.providers) == 0
}

// Schema returns the JSON Schema of graph files that may use r's kinds:
// the language's schema with its per-kind part generated from the
// built-in declarations plus r's node kinds (and their settings) and
// providers. For a registry that declares nothing it is
// schema/graph.schema.json as committed (TestCommittedSchemaIsGenerated).
func (r *Registry) Schema() ([]byte, error) {
	nodes := slices.Clone(builtins().nodes)
	tools := slices.Clone(builtins().tools)
	providers := slices.Clone(builtinProviderDecls)
	if r != nil {
		for _, name := range SortedKeys(r.nodeKinds) {
			nodes = append(nodes, r.nodeKinds[name])
		}
		for _, name := range SortedKeys(r.toolKinds) {
			tools = append(tools, r.toolKinds[name])
		}
		for _, name := range SortedKeys(r.providers) {
			providers = append(providers, r.providers[name])
		}
	}
	return generateSchema(schema.Graph, nodes, tools, providers)
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
		r.schema = &embeddedSchema{url: schema.GraphURL, what: "graph", src: src, prep: withoutKindRules, docErr: err}
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
