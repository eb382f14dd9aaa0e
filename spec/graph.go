package spec

import (
	"fmt"
	"time"

	"github.com/expr-lang/expr/vm"
)

// Reserved node names.
const (
	Start = "START"
	End   = "END"
)

// DefaultStepLimit is the number of supersteps a turn may take when neither
// the graph nor the run sets one.
const DefaultStepLimit = 25

// Graph is a checked, compiled graph. It is immutable once [Check] returns
// it and safe for concurrent use by many runs.
type Graph struct {
	File        string
	Hash        string // sha256 of the file's bytes, hex
	Version     int
	Name        string
	Description string

	Fields     []*Field // in file order
	fieldIndex map[string]*Field

	Nodes     map[string]*Node
	NodeOrder []string // in file order

	Edges      []*Edge
	Interrupts Interrupts
	Limits     Limits
	Models     map[string]*Model
	Tools      map[string]*Tool

	// Subgraphs holds the checked child graphs of subgraph and map nodes, by graph path.
	Subgraphs map[string]*Graph

	out   map[string][]*Edge // non-join edges by source
	joins []*Join
}

// Field is a declared state field.
type Field struct {
	Name        string
	Pos         Pos
	Type        Type
	Default     any // canonical, nil only for type any or an optional field
	Enum        []any
	Description string
	Reducer     Reducer
	// Optional fields may hold null; without a default they start as null.
	Optional bool
}

// Coerce checks that v fits the field (its type, or null when the field is
// optional) and returns it in canonical form (see [Type.Coerce]).
func (f *Field) Coerce(v any) (any, error) {
	if v == nil {
		switch {
		case f.Optional || f.Type.Kind == KindAny:
			return nil, nil
		case f.Type.Kind != "":
			return nil, fmt.Errorf("null is not a %s, and field %q is not optional (declare it optional: true to allow null)", f.Type, f.Name)
		}
	}
	return f.Type.Coerce(v)
}

// ReducerKind names how writes to a field merge.
type ReducerKind string

// Reducer kinds.
const (
	ReduceReplace  ReducerKind = "replace"
	ReduceAppend   ReducerKind = "append"
	ReduceAdd      ReducerKind = "add"
	ReduceMerge    ReducerKind = "merge"
	ReduceMessages ReducerKind = "messages"
	ReduceCustom   ReducerKind = "custom"
)

// Reducer is a field's reducer. Custom holds the expression over
// `current` and `update` for ReduceCustom.
type Reducer struct {
	Kind   ReducerKind
	Custom *Expr
}

// Expr is a compiled expression and where it was written.
type Expr struct {
	Src     string
	Pos     Pos
	Program *vm.Program
	// flat, when not nil, makes on first use Program compiled to run with
	// the state map itself as its environment (see [flatProgram]).
	flat *flatProgram
}

// NameRef is a reference to a node (or model, tool) by name, with its position.
type NameRef struct {
	Name string
	Pos  Pos
}

// Assign is one "field: expression" entry of a set node, a structured
// output mapping or a subgraph input mapping.
type Assign struct {
	Field string
	Pos   Pos // of the key
	Expr  *Expr
}

// Retry configures retries of a node or model call.
type Retry struct {
	MaxAttempts    int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// Node is a node of the graph: the settings every kind has, and in Config
// the part only its kind has (see [NodeConfig]).
type Node struct {
	Name        string
	Pos         Pos // of the name key
	Kind        string
	Description string
	Timeout     time.Duration
	Retry       Retry
	Goto        *Expr
	GotoPaths   []NameRef

	// Config is the part of the node only its kind has (nil for noop).
	Config NodeConfig

	// Writes lists the state fields this node may write, for conflict checks and docs.
	Writes []string
}

// NodeConfig is the part of a [Node] only its kind has: *SetConfig (set),
// *InterruptConfig (interrupt), *LLMConfig (llm), *ToolsConfig (tools),
// *SubgraphConfig (subgraph), *MapConfig (map) or *CustomConfig (a kind
// of a [Registry]). The noop kind has none. A checked graph's nodes always
// carry the type of their kind.
type NodeConfig interface{ nodeConfig() }

// SetConfig is the config of a set node.
type SetConfig struct {
	Set []*Assign
}

// InterruptConfig is the config of an interrupt node.
type InterruptConfig struct {
	Payload *Expr
	Resume  string // field that receives the answer; "" for none
}

// LLMConfig is the config of an llm node.
type LLMConfig struct {
	Model        NameRef
	System       *Template
	Prompt       *Template
	Messages     string // the messages field; "" for none
	Tools        []NameRef
	OutputSchema map[string]any
	OutputFields []*Assign // expressions over `reply`
	OutputStrict bool
	OutputTries  int
	Store        string
	TrimKeepLast int
	TrimSystem   bool
}

// ToolsConfig is the config of a tools node.
type ToolsConfig struct {
	Messages string
	Tools    []NameRef
	Parallel bool
}

// ChildConfig is what subgraph and map nodes share: the child graph and
// how state goes in and out of it.
type ChildConfig struct {
	GraphPath string    // absolute; "" for a map over a node
	Input     []*Assign // child field ← expression over the parent state (and `item`, `index` in map)
	OutputMap map[string]string
}

// SubgraphConfig is the config of a subgraph node.
type SubgraphConfig struct {
	ChildConfig
}

// MapConfig is the config of a map node.
type MapConfig struct {
	ChildConfig
	Over     *Expr
	MapNode  NameRef // the node run per item, in node form
	MapLimit int
	ItemAs   string
}

// CustomConfig is the config of a node of a kind declared in a
// [Registry]: its settings by key, values as decoded from YAML (see
// [Normalize]), defaults filled in.
type CustomConfig struct {
	Settings map[string]any
}

func (*SetConfig) nodeConfig()       {}
func (*InterruptConfig) nodeConfig() {}
func (*LLMConfig) nodeConfig()       {}
func (*ToolsConfig) nodeConfig()     {}
func (*SubgraphConfig) nodeConfig()  {}
func (*MapConfig) nodeConfig()       {}
func (*CustomConfig) nodeConfig()    {}

// ConfigOf returns n's config as a T, and whether it is one.
func ConfigOf[T NodeConfig](n *Node) (T, bool) {
	c, ok := n.Config.(T)
	return c, ok
}

// Child returns the child-graph part of a subgraph or map node (nil for
// other nodes).
func (n *Node) Child() *ChildConfig {
	switch c := n.Config.(type) {
	case *SubgraphConfig:
		return &c.ChildConfig
	case *MapConfig:
		return &c.ChildConfig
	}
	return nil
}

// ChildGraph returns the path of the graph a subgraph or map node runs
// ("" for none).
func (n *Node) ChildGraph() string {
	if c := n.Child(); c != nil {
		return c.GraphPath
	}
	return ""
}

// MappedNode returns the node a map node in node form runs per item (the
// zero NameRef for other nodes).
func (n *Node) MappedNode() NameRef {
	if c, ok := n.Config.(*MapConfig); ok {
		return c.MapNode
	}
	return NameRef{}
}

// Settings returns the settings of a node of a custom kind (nil for the
// language's kinds).
func (n *Node) Settings() map[string]any {
	if c, ok := n.Config.(*CustomConfig); ok {
		return c.Settings
	}
	return nil
}

// Edge is one entry of the edges list.
type Edge struct {
	Pos     Pos
	From    []NameRef // more than one: a join
	To      []NameRef
	When    *Expr
	Else    []NameRef
	Routes  []*Route
	Default []NameRef
	Route   *Expr
	Paths   []NameRef

	routesPos Pos // of the routes key
}

// Route is one conditional branch of an edge.
type Route struct {
	Pos  Pos
	When *Expr
	To   []NameRef
}

// Join is a node that runs once all of Sources have finished.
type Join struct {
	Target  string
	Sources []string
	Edge    *Edge
}

// Conditional reports whether the edge's targets depend on the state.
func (e *Edge) Conditional() bool {
	return e.When != nil || e.Routes != nil || e.Route != nil
}

// Targets lists every node the edge may lead to, in order, without duplicates.
func (e *Edge) Targets() []NameRef {
	var out []NameRef
	seen := map[string]bool{}
	add := func(refs []NameRef) {
		for _, r := range refs {
			if !seen[r.Name] {
				seen[r.Name] = true
				out = append(out, r)
			}
		}
	}
	add(e.To)
	add(e.Else)
	for _, r := range e.Routes {
		add(r.To)
	}
	add(e.Default)
	add(e.Paths)
	return out
}

// Interrupts are static breakpoints.
type Interrupts struct {
	Before []NameRef
	After  []NameRef
}

// Limits bound a run. Zero means unlimited, except Steps (see
// [DefaultStepLimit]) and StateSize (zero means the runtime's default).
type Limits struct {
	Steps    int
	Timeout  time.Duration
	LLMCalls int
	Tokens   int
	CostUSD  float64
	// StateSize bounds the state of each checkpoint, in bytes of JSON.
	StateSize int64
}

// Model is a named model.
type Model struct {
	Name        string
	Pos         Pos
	Provider    string // "openai", "azure" or "mock"
	APIVersion  string // azure only
	BaseURL     string
	Model       string
	APIKeyEnv   string
	Temperature *float64
	MaxTokens   int
	Timeout     time.Duration
	PriceIn     float64 // USD per million input tokens
	PriceOut    float64 // USD per million output tokens
	RPM         int
	Retry       Retry
	Fallbacks   []NameRef
	Fixtures    string // absolute path for the mock provider
	// Stream asks the server to stream the reply (tokens reach
	// `--stream messages` as they arrive); nil means the default, true.
	Stream *bool
}

// Tool is a named tool.
type Tool struct {
	Name           string
	Pos            Pos
	Kind           string // expr, http, exec, go or a registered kind
	Description    string
	Parameters     map[string]any
	Expr           *Expr // over `args`
	Method         string
	URL            *Template // over `args`
	Body           *Expr
	HeadersEnv     map[string]string
	AllowHosts     []string
	Command        []string
	Timeout        time.Duration
	MaxOutputBytes int
	// MCP is the server of an mcp tool source (nil for other kinds).
	MCP *MCPSource
	// Settings are the decoded settings of a tool of a registered kind
	// ([Registry.AddToolKind]), defaults filled in.
	Settings map[string]any
}

// MCPSource is an mcp tool entry: the server (Command, with Env, for
// stdio; URL, with the tool's HeadersEnv and AllowHosts, for streamable
// HTTP) and which of its tools become functions.
type MCPSource struct {
	Env    []string
	URL    string
	Tools  []string // empty: all the server's tools
	Prefix string
	// ToolPos are the positions of Tools in the file.
	ToolPos []Pos
}

// Function returns the model's function name of the server's tool name.
func (m *MCPSource) Function(name string) string { return m.Prefix + name }

// mcpFunction reports whether name is a function an mcp source of g lists.
func (g *Graph) mcpFunction(name string) bool {
	for _, t := range g.Tools {
		if t.MCP != nil {
			for _, tool := range t.MCP.Tools {
				if t.MCP.Function(tool) == name {
					return true
				}
			}
		}
	}
	return false
}

// Field returns the field named name, or nil.
func (g *Graph) Field(name string) *Field { return g.fieldIndex[name] }

// Outgoing returns the non-join edges leaving node (which may be [Start]).
func (g *Graph) Outgoing(node string) []*Edge { return g.out[node] }

// Joins returns the graph's join edges.
func (g *Graph) Joins() []*Join { return g.joins }

// StepLimit returns the graph's step limit or the default.
func (g *Graph) StepLimit() int {
	if g.Limits.Steps > 0 {
		return g.Limits.Steps
	}
	return DefaultStepLimit
}

// Defaults returns a fresh state holding every field's default value.
func (g *Graph) Defaults() map[string]any {
	s := make(map[string]any, len(g.Fields))
	for _, f := range g.Fields {
		s[f.Name] = DeepCopy(f.Default)
	}
	return s
}

// DeepCopy copies a canonical value so the copy shares no maps or slices.
func DeepCopy(v any) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = DeepCopy(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = DeepCopy(e)
		}
		return out
	}
	return v
}

// Branch is one way a conditional edge can go, for coverage reports.
type Branch struct {
	// ID identifies the branch within the graph: "<from>@<line>:<key>",
	// where key is "when", "else", "routes[i]", "default" or "route=<target>".
	ID    string
	From  string
	Label string
}

// BranchID names a branch of edge e taken from node from.
func (e *Edge) BranchID(from, key string) string {
	return fmt.Sprintf("%s@%d:%s", from, e.Pos.Line, key)
}

// Branches lists the branches of every conditional edge and goto, in file order.
func (g *Graph) Branches() []Branch {
	var out []Branch
	for _, e := range g.Edges {
		if !e.Conditional() || len(e.From) != 1 {
			continue
		}
		from := e.From[0].Name
		add := func(key, label string) {
			out = append(out, Branch{ID: e.BranchID(from, key), From: from, Label: label})
		}
		switch {
		case e.When != nil:
			add("when", fmt.Sprintf("%s → %s when %s", from, refNames(e.To), e.When.Src))
			add("else", fmt.Sprintf("%s → %s otherwise", from, orEnd(refNames(e.Else))))
		case e.Routes != nil:
			for i, r := range e.Routes {
				add(fmt.Sprintf("routes[%d]", i), fmt.Sprintf("%s → %s when %s", from, refNames(r.To), r.When.Src))
			}
			add("default", fmt.Sprintf("%s → %s by default", from, orEnd(refNames(e.Default))))
		case e.Route != nil:
			for _, p := range e.Paths {
				add("route="+p.Name, fmt.Sprintf("%s → %s (route %s)", from, p.Name, e.Route.Src))
			}
		}
	}
	for _, name := range g.NodeOrder {
		n := g.Nodes[name]
		for _, p := range n.GotoPaths {
			out = append(out, Branch{ID: fmt.Sprintf("%s@%d:goto=%s", name, n.Pos.Line, p.Name), From: name, Label: fmt.Sprintf("%s → %s (goto)", name, p.Name)})
		}
	}
	return out
}

// GotoBranchID names the goto branch of node n to target.
func (n *Node) GotoBranchID(target string) string {
	return fmt.Sprintf("%s@%d:goto=%s", n.Name, n.Pos.Line, target)
}

func orEnd(s string) string {
	if s == "" {
		return "nowhere (the branch ends)"
	}
	return s
}
