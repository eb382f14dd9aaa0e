package builtin

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"sync"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Environment is a set of node kinds, tools and model providers, and the
// state they share across the runs that use it: the rate limiters of the
// models (an rpm limit is one budget for every run of the environment) and
// what each server turned out not to support. Two environments share
// nothing, so two engines in one process do not throttle each other.
//
// [NewEnvironment] holds the built-in kinds: the node kinds llm and tools,
// the tool kinds expr, http and exec, and the providers openai, azure and
// mock; [Environment.AddTool], [Environment.AddToolKind],
// [Environment.AddNodeKind] and [Environment.AddProvider] add custom ones
// written in Go. Their
// declarations (names, settings, docs) are kept in a [spec.Registry], so
// loading, validation and the JSON Schema know them ([Environment.Spec]).
//
// Add methods must not be called while the environment is in use; add
// everything first (or [Environment.Clone] and add to the clone).
type Environment struct {
	reg       *spec.Registry
	tools     map[string]ToolFunc
	nodeKinds map[string]runtime.NodeFunc
	// clients makes the client of a model by provider: the built-in
	// providers and those of AddProvider.
	clients map[string]clientMaker
	// toolKinds runs tools by kind: expr, http, exec and go.
	toolKinds map[string]toolRunner
	// bound are the node kinds bound to a graph's models and tools (llm
	// and tools), made per graph by Kinds.
	bound    map[string]func(*engine) runtime.NodeFunc
	builtins bool

	limiters *limiters
	caps     *capsRegistry
	// mcp holds the sessions with the MCP servers of mcp tool sources.
	mcp *mcpPool
}

// clientMaker makes the client of model m for engine e.
type clientMaker func(e *engine, m *spec.Model) (chatClient, error)

// builtinProviders are the providers of the language.
func builtinProviders() map[string]clientMaker {
	openai := func(e *engine, m *spec.Model) (chatClient, error) {
		return newOpenAIClient(m, e.opts, e.env.caps)
	}
	return map[string]clientMaker{
		"openai": openai,
		"azure":  openai,
		"mock": func(e *engine, m *spec.Model) (chatClient, error) {
			fx, err := e.loadFixturesLocked(m.Fixtures)
			if err != nil {
				return nil, err
			}
			return &mockClient{model: m, fx: fx}, nil
		},
	}
}

// ToolFunc is a tool written in Go. args holds the arguments the model
// gave, checked against the tool's parameters schema; the result is sent
// back to the model as text (a string as is, anything else as JSON).
type ToolFunc func(ctx context.Context, args map[string]any) (any, error)

// NewEnvironment returns an environment with every built-in kind.
func NewEnvironment() *Environment {
	e := NewEmptyEnvironment()
	e.builtins = true
	e.clients = builtinProviders()
	e.toolKinds = builtinToolKinds()
	e.bound = map[string]func(*engine) runtime.NodeFunc{
		"llm":   func(en *engine) runtime.NodeFunc { return en.runLLM },
		"tools": func(en *engine) runtime.NodeFunc { return en.runTools },
	}
	return e
}

// NewEmptyEnvironment returns an environment without the llm and tools
// node kinds and without providers: graphs run with it may use only the
// runtime's own kinds (set, noop, interrupt, subgraph, map) and what is
// added to it.
func NewEmptyEnvironment() *Environment {
	return &Environment{
		reg:       spec.NewRegistry(),
		tools:     map[string]ToolFunc{},
		nodeKinds: map[string]runtime.NodeFunc{},
		clients:   map[string]clientMaker{},
		toolKinds: map[string]toolRunner{spec.ToolKindGo: builtinToolKinds()[spec.ToolKindGo]},
		limiters:  newLimiters(),
		caps:      newCapsRegistry(),
		mcp:       newMCPPool(),
	}
}

// Clone returns a copy of e with the same kinds, to add more to. The clone
// has rate limiters, server capabilities and MCP sessions of its own.
func (e *Environment) Clone() *Environment {
	return &Environment{
		reg:       e.reg.Clone(),
		tools:     maps.Clone(e.tools),
		nodeKinds: maps.Clone(e.nodeKinds),
		clients:   maps.Clone(e.clients),
		toolKinds: maps.Clone(e.toolKinds),
		bound:     maps.Clone(e.bound),
		builtins:  e.builtins,
		limiters:  newLimiters(),
		caps:      newCapsRegistry(),
		mcp:       newMCPPool(),
	}
}

// Spec returns the declarations of e's custom kinds, for [spec.Options].
func (e *Environment) Spec() *spec.Registry { return e.reg }

// AddTool registers a Go tool by name. A graph's llm and tools nodes use
// it by name in their tools list, like a tool declared under tools:.
// parameters is the JSON Schema of its arguments (an object schema; nil
// means no arguments).
func (e *Environment) AddTool(name, description string, parameters map[string]any, fn ToolFunc) error {
	if fn == nil {
		return fmt.Errorf("tool %q: no function", name)
	}
	if err := e.reg.AddTool(spec.ToolDecl{Name: name, Description: description, Parameters: parameters}); err != nil {
		return err
	}
	e.tools[name] = fn
	return nil
}

// ToolKindFunc runs a tool of a kind written in Go: t is the graph's tool
// (its settings, decoded and checked, in t.Settings), args the arguments
// the model gave, checked against t's parameters schema. The result goes
// back to the model as text (a string as is, anything else as JSON); an
// error is reported to the model as the tool's failure.
type ToolKindFunc func(ctx context.Context, t *spec.Tool, args map[string]any) (any, error)

// AddToolKind registers a tool kind written in Go: decl declares its name
// and settings (see [spec.ToolKindDecl]), so a graph may declare tools of
// the kind under tools:; fn runs them. The built-in expr, http and exec
// kinds are entries of the same table.
func (e *Environment) AddToolKind(decl spec.ToolKindDecl, fn ToolKindFunc) error {
	if fn == nil {
		return fmt.Errorf("tool kind %q: no function", decl.Name)
	}
	if err := e.reg.AddToolKind(decl); err != nil {
		return err
	}
	e.toolKinds[decl.Name] = func(ctx context.Context, _ *engine, _ *spec.Graph, t *spec.Tool, args map[string]any, _ string) (string, error) {
		v, err := fn(ctx, t, args)
		if err != nil {
			return "", err
		}
		return text(v), nil
	}
	return nil
}

// AddNodeKind registers a node kind written in Go: decl declares its name
// and settings (see [spec.NodeKindDecl]); fn runs a node of the kind and
// finds the node's settings in call.Node.Settings().
func (e *Environment) AddNodeKind(decl spec.NodeKindDecl, fn runtime.NodeFunc) error {
	if fn == nil {
		return fmt.Errorf("node kind %q: no function", decl.Name)
	}
	if err := e.reg.AddNodeKind(decl); err != nil {
		return err
	}
	e.nodeKinds[decl.Name] = fn
	return nil
}

// AddProvider registers a model provider: models with `provider: name`
// are answered by the [ChatModel] that p makes for them.
func (e *Environment) AddProvider(name, doc string, p Provider) error {
	if p == nil {
		return fmt.Errorf("provider %q: no constructor", name)
	}
	if err := e.reg.AddProvider(spec.ProviderDecl{Name: name, Doc: doc}); err != nil {
		return err
	}
	e.clients[name] = func(_ *engine, m *spec.Model) (chatClient, error) {
		cm, err := p(m)
		if err != nil {
			return nil, fmt.Errorf("provider %s: %w", name, err)
		}
		if cm == nil {
			return nil, fmt.Errorf("provider %s: no model", name)
		}
		return &customClient{model: cm}, nil
	}
	return nil
}

// Kinds returns the node kinds of e beyond the runtime's own, bound to the
// models and tools of g and of its subgraphs, for [runtime.Runner.Kinds].
// It loads and checks every mock fixtures file up front, so a broken
// fixture fails before the run starts.
func (e *Environment) Kinds(g *spec.Graph, opts Options) (map[string]runtime.NodeFunc, error) {
	out := maps.Clone(e.nodeKinds)
	if len(e.bound) == 0 {
		return out, nil
	}
	en, err := newEngine(e, g, opts)
	if err != nil {
		return nil, err
	}
	for name, mk := range e.bound {
		out[name] = mk(en)
	}
	return out, nil
}

// FixturesChecker returns the check of the mock provider's fixtures files
// for [spec.Options].CheckFixtures (nil when e has no built-in providers).
// Each checker reports a file once, however many graphs use it: use one
// per batch of files loaded together.
func (e *Environment) FixturesChecker() func(path string, src []byte) spec.ErrorList {
	if !e.builtins {
		return nil
	}
	var mu sync.Mutex
	checked := map[string]bool{}
	return func(path string, src []byte) spec.ErrorList {
		key := path
		if abs, err := filepath.Abs(path); err == nil {
			key = abs
		}
		mu.Lock()
		seen := checked[key]
		checked[key] = true
		mu.Unlock()
		if seen {
			return nil
		}
		return CheckFixtures(path, src)
	}
}
