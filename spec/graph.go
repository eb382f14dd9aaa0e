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

// Node is a node of the graph. Which settings are set depends on Kind.
type Node struct {
	Name        string
	Pos         Pos // of the name key
	Kind        string
	Description string
	Timeout     time.Duration
	Retry       Retry
	Goto        *Expr
	GotoPaths   []NameRef

	// kind set
	Set []*Assign
	// kind interrupt
	Payload *Expr
	Resume  string

	// kind llm and tools
	Model        NameRef
	System       *Expr
	Prompt       *Expr
	Messages     string
	Tools        []NameRef
	OutputSchema map[string]any
	OutputFields []*Assign // expressions over `reply`
	OutputStrict bool
	OutputTries  int
	Store        string
	TrimKeepLast int
	TrimSystem   bool
	Parallel     bool

	// kind subgraph and map
	GraphPath string
	Input     []*Assign // child field ← expression over the parent state (and `item`, `index` in map)
	OutputMap map[string]string
	Over      *Expr
	MapNode   NameRef
	MapLimit  int
	ItemAs    string

	// Settings holds the settings of a node of a custom kind (see
	// [Registry]), by key: values as decoded from YAML (see [Normalize]),
	// defaults filled in.
	Settings map[string]any

	// Writes lists the state fields this node may write, for conflict checks and docs.
	Writes []string
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
	Kind           string // expr, http, exec
	Description    string
	Parameters     map[string]any
	Expr           *Expr // over `args`
	Method         string
	URL            *Expr
	Body           *Expr
	HeadersEnv     map[string]string
	AllowHosts     []string
	Command        []string
	Timeout        time.Duration
	MaxOutputBytes int
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
