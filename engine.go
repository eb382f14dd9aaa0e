package lgrun

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"

	"github.com/lgrun/lgrun/builtin"
	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Engine loads and runs graphs with one environment of kinds. It is safe
// for concurrent use once made; runs of different threads may go on at
// the same time.
type Engine struct {
	env     *builtin.Environment
	getenv  func(string) string
	http    *http.Client
	version string
	read    func(string) ([]byte, error)
	ids     *runtime.IDClock
	obs     Observer
}

// Option configures an [Engine].
type Option func(*Engine) error

// New returns an engine with the built-in kinds and those the options add.
// A registration that clashes (a name taken, an invalid schema) is an
// error.
func New(opts ...Option) (*Engine, error) {
	e := &Engine{
		env:     builtin.NewEnvironment(),
		getenv:  func(string) string { return "" },
		version: "dev",
		ids:     &runtime.IDClock{},
	}
	for _, o := range opts {
		if err := o(e); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// WithEnvironment makes the engine use a clone of env instead of the
// default environment (for example [builtin.NewEmptyEnvironment] and
// only custom kinds). Options after it add to the clone.
func WithEnvironment(env *builtin.Environment) Option {
	return func(e *Engine) error {
		e.env = env.Clone()
		return nil
	}
}

// WithTool registers a Go tool: graphs use it by name in an llm or tools
// node's tools list, like a tool declared under tools:. parameters is the
// JSON Schema of its arguments (nil: none); the model's arguments are
// checked against it before fn is called. fn's result goes back to the
// model as text (a string as is, anything else as JSON); its error is
// reported to the model as the tool's failure.
func WithTool(name, description string, parameters map[string]any, fn builtin.ToolFunc) Option {
	return func(e *Engine) error { return e.env.AddTool(name, description, parameters, fn) }
}

// WithToolKind registers a tool kind: a graph declares tools with `kind:
// <decl.Name>` under tools:, with the settings decl declares (checked when
// the graph loads, and listed in [Engine.Schema]); fn runs a call of such
// a tool and finds the tool's settings in t.Settings. The tool's
// parameters, timeout and description work as for every tool kind.
func WithToolKind(decl spec.ToolKindDecl, fn builtin.ToolKindFunc) Option {
	return func(e *Engine) error { return e.env.AddToolKind(decl, fn) }
}

// WithNodeKind registers a node kind: nodes with `kind: <decl.Name>` take
// the settings decl declares (checked when the graph loads, and listed in
// [Engine.Schema]) and run fn, which finds them in call.Node.Settings(). fn
// runs like any node: under the node's timeout and retry policy, its
// writes merged through the reducers.
func WithNodeKind(decl spec.NodeKindDecl, fn runtime.NodeFunc) Option {
	return func(e *Engine) error { return e.env.AddNodeKind(decl, fn) }
}

// WithProvider registers a model provider: models declared with
// `provider: <name>` are answered by the [builtin.ChatModel] p makes.
func WithProvider(name, doc string, p builtin.Provider) Option {
	return func(e *Engine) error { return e.env.AddProvider(name, doc, p) }
}

// WithGetenv sets how the engine reads environment variables (API keys,
// base URLs, http-tool headers, LGRUN_PROVIDER). Without it the engine
// reads none; pass os.Getenv to read the process's.
func WithGetenv(getenv func(string) string) Option {
	return func(e *Engine) error {
		if getenv == nil {
			return errors.New("WithGetenv: nil function")
		}
		e.getenv = getenv
		return nil
	}
}

// Observer watches runs, steps and nodes, and the model and tool calls of
// the built-in kinds: package observe implements it with OpenTelemetry.
type Observer interface {
	runtime.Observer
	builtin.Observer
}

// WithObserver makes every runner of the engine report to o (nil: none,
// the default).
func WithObserver(o Observer) Option {
	return func(e *Engine) error {
		e.obs = o
		return nil
	}
}

// WithHTTPClient sets the client of model and http-tool requests.
func WithHTTPClient(c *http.Client) Option {
	return func(e *Engine) error {
		e.http = c
		return nil
	}
}

// WithVersion sets the version recorded in checkpoint metadata ("dev" by
// default).
func WithVersion(v string) Option {
	return func(e *Engine) error {
		e.version = v
		return nil
	}
}

// WithReadFile sets how graph, subgraph, fixture and test files are read
// (os.ReadFile by default).
func WithReadFile(read func(path string) ([]byte, error)) Option {
	return func(e *Engine) error {
		e.read = read
		return nil
	}
}

// Environment returns the engine's environment of kinds. Do not add to it
// while the engine is in use.
func (e *Engine) Environment() *builtin.Environment { return e.env }

// SpecOptions returns new options to load graphs with: the engine's
// registry of custom kinds, its file reader, and the mock provider's check
// of fixtures files (which reports each file once per options value: load
// a batch of files with one).
func (e *Engine) SpecOptions() *spec.Options {
	return &spec.Options{ReadFile: e.read, Registry: e.env.Spec(), CheckFixtures: e.env.FixturesChecker()}
}

// Load reads, validates and compiles the graph file at path, knowing the
// engine's custom kinds. It returns the graph (nil when there are errors)
// and every diagnostic, warnings included, sorted.
func (e *Engine) Load(path string) (*spec.Graph, spec.ErrorList) {
	return spec.LoadFile(path, e.SpecOptions())
}

// Parse is [Engine.Load] for a graph in memory; file names it in
// diagnostics and anchors relative paths (subgraphs, fixtures).
func (e *Engine) Parse(file string, src []byte) (*spec.Graph, spec.ErrorList) {
	return spec.Parse(file, src, e.SpecOptions())
}

// LoadTestFile loads a graph test file (*.test.yaml) and its graph.
func (e *Engine) LoadTestFile(path string) (*spec.TestFile, spec.ErrorList) {
	return spec.LoadTestFile(path, e.SpecOptions())
}

// Schema returns the JSON Schema of graph files for this engine: the
// language's, with the engine's custom node kinds, tool kinds and
// providers.
func (e *Engine) Schema() ([]byte, error) { return e.env.Spec().Schema() }

// RunnerOptions configure [Engine.Runner].
type RunnerOptions struct {
	// GraphFile is recorded with new threads (so a resume can find the
	// graph again).
	GraphFile string
	// Strict makes a changed graph an error on resume instead of a warning.
	Strict bool
	// Events receives the run's progress; calls are serialised.
	Events func(runtime.Event)
	// ReuseRecords makes a replay reuse recorded model replies and tool
	// results.
	ReuseRecords bool
	// Script answers model and tool calls from scripted replies (`lgrun
	// test`).
	Script *builtin.Script
}

// Runner returns a runner of g on saver with the engine's kinds and id
// clock: the low-level handle for Fork, Replay and run configuration
// ([runtime.Config]). Mock fixture files are loaded and checked now.
func (e *Engine) Runner(g *spec.Graph, saver runtime.Saver, o RunnerOptions) (*runtime.Runner, error) {
	if g == nil {
		return nil, errors.New("lgrun: no graph")
	}
	if saver == nil {
		return nil, errors.New("lgrun: no saver")
	}
	bo := builtin.Options{Getenv: e.getenv, HTTPClient: e.http, Script: o.Script}
	if e.obs != nil {
		bo.Observer = e.obs
	}
	kinds, err := e.env.Kinds(g, bo)
	if err != nil {
		return nil, err
	}
	r := &runtime.Runner{
		Graph: g, Saver: saver, Kinds: kinds, Events: o.Events, IDs: e.ids,
		Version: e.version, GraphFile: o.GraphFile, Strict: o.Strict, ReuseRecords: o.ReuseRecords,
	}
	if e.obs != nil {
		r.Observer = e.obs
	}
	return r, nil
}

// Run starts a turn of thread on g with input (field values merged
// through their reducers): a new thread, or the next turn of a finished
// one. The thread id must pass [runtime.CheckThreadID]. The result says
// whether the run finished, paused at an interrupt or stopped at a limit.
func (e *Engine) Run(ctx context.Context, g *spec.Graph, saver runtime.Saver, thread string, input map[string]any) (*runtime.Result, error) {
	if err := runtime.CheckThreadID(thread); err != nil {
		return nil, err
	}
	r, err := e.Runner(g, saver, RunnerOptions{GraphFile: g.File})
	if err != nil {
		return nil, err
	}
	return r.Run(ctx, runtime.RunOptions{Thread: thread, Input: input})
}

// Resume continues thread, paused at an interrupt, with value as the
// human's answer (nil for a static breakpoint, which takes none).
func (e *Engine) Resume(ctx context.Context, g *spec.Graph, saver runtime.Saver, thread string, value any) (*runtime.Result, error) {
	if err := runtime.CheckThreadID(thread); err != nil {
		return nil, err
	}
	r, err := e.Runner(g, saver, RunnerOptions{GraphFile: g.File})
	if err != nil {
		return nil, err
	}
	return r.Resume(ctx, runtime.ResumeOptions{Thread: thread, Value: value, HasValue: value != nil})
}

// State returns the thread's current checkpoint: its values, the nodes to
// run next and the interrupts it waits at (Pending).
func State(ctx context.Context, saver runtime.Saver, thread string) (*runtime.Checkpoint, error) {
	cp, err := saver.Get(ctx, thread, "")
	if err != nil {
		return nil, fmt.Errorf("state of thread %q: %w", thread, err)
	}
	return cp, nil
}

// History returns the thread's checkpoints, oldest first, without their
// values ([HistoryValues] reads those too).
func History(ctx context.Context, saver runtime.Saver, thread string) ([]*runtime.Checkpoint, error) {
	cps, err := saver.List(ctx, thread, 0)
	if err != nil {
		return nil, fmt.Errorf("history of thread %q: %w", thread, err)
	}
	sort.Slice(cps, func(i, j int) bool { return cps[i].ID < cps[j].ID })
	return cps, nil
}

// OpenSQLite opens (creating if needed) a SQLite checkpoint database; opts
// may be nil (see [checkpoint.Options] for durability and lease TTL).
func OpenSQLite(path string, opts *checkpoint.Options) (*checkpoint.SQLite, error) {
	return checkpoint.OpenSQLite(path, opts)
}

// NewMemorySaver returns a saver that keeps checkpoints in memory.
func NewMemorySaver() *checkpoint.Memory { return checkpoint.NewMemory() }

// ResolveMCP connects to the MCP servers of g's mcp tool sources (and its
// subgraphs') and reports listed tools the servers lack, servers that
// cannot be reached and function names that clash, at their positions
// (what `lgrun validate --resolve` checks beyond validation).
func (e *Engine) ResolveMCP(ctx context.Context, g *spec.Graph) spec.ErrorList {
	return e.env.ResolveMCP(ctx, g, builtin.Options{Getenv: e.getenv, HTTPClient: e.http})
}

// CloseMCP ends the engine's sessions with MCP servers.
func (e *Engine) CloseMCP() error { return e.env.CloseMCP() }
