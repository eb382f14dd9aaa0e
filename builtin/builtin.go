// Package builtin implements the node kinds and tool kinds that talk to the
// outside world: llm (any OpenAI-compatible server, or the offline mock
// provider) and tools (expr, http and exec tools).
//
// [Kinds] binds them to a graph; cmd/lgrun hands the result to
// runtime.Runner. Secrets (API keys, header values) are read through
// [Options].Getenv when a call is made and are never written to the state,
// a record, an event or an error.
package builtin

import (
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Options configure the builtin kinds.
type Options struct {
	// Getenv reads API keys, base URLs, http-tool header values,
	// LGRUN_PROVIDER and the few variables exec tools inherit; required.
	Getenv func(string) string
	// HTTPClient is used for model and http-tool requests; a default
	// client when nil. Its Transport is wrapped, never modified.
	HTTPClient *http.Client
	// Script, when set, answers every model call and non-expr tool call
	// from scripted replies instead (see [Script]); for `lgrun test`.
	Script *Script
	// Observer watches model and tool calls (tracing, metrics); may be nil.
	Observer Observer
}

// EnvProvider names the environment variable that switches every model of
// provider mock to another provider ("openai"), so an example graph runs
// against a real server without editing it.
const EnvProvider = "LGRUN_PROVIDER"

// Kinds returns the node kinds this package implements ("llm" and
// "tools"), bound to the models and tools of g and of its subgraphs. It
// loads and checks every mock fixtures file up front, so a broken fixture
// fails before the run starts.
//
// It is NewEnvironment().Kinds(g, opts): a fresh [Environment] per call,
// so calls share no rate limiters. Programs that run several graphs use
// one Environment (package lgrun does).
func Kinds(g *spec.Graph, opts Options) (map[string]runtime.NodeFunc, error) {
	return NewEnvironment().Kinds(g, opts)
}

// engine holds what the node kinds share across calls: model clients and
// compiled JSON Schemas. Graphs are immutable, so pointers into them are
// stable cache keys.
type engine struct {
	env  *Environment
	opts Options

	mu       sync.Mutex
	clients  map[*spec.Model]chatClient
	fixtures map[string]*fixtures // by file
	schemas  map[any]*jsonschema.Schema
	script   *scripted // nil unless Options.Script
	// offlineFns are the functions of mcp sources made without their
	// servers, by source.
	offlineFns map[*spec.Tool][]*spec.Tool
}

func newEngine(env *Environment, g *spec.Graph, opts Options) (*engine, error) {
	if opts.Getenv == nil {
		return nil, errors.New("builtin: Options.Getenv is nil")
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	e := &engine{
		env:      env,
		opts:     opts,
		clients:  map[*spec.Model]chatClient{},
		fixtures: map[string]*fixtures{},
		schemas:  map[any]*jsonschema.Schema{},
	}
	switch p := opts.Getenv(EnvProvider); p {
	case "", "openai":
	default:
		return nil, fmt.Errorf("%s=%q: the only provider it can switch mock models to is openai", EnvProvider, p)
	}
	if opts.Script != nil {
		sc, err := newScripted(opts.Script)
		if err != nil {
			return nil, err
		}
		e.script = sc
		return e, nil
	}
	var errs []error
	for _, gr := range graphs(g) {
		for _, name := range spec.SortedKeys(gr.Models) {
			m := gr.Models[name]
			if e.provider(m) != "mock" {
				continue
			}
			if _, err := e.loadFixtures(m.Fixtures); err != nil {
				errs = append(errs, fmt.Errorf("%s: models.%s: %w", m.Pos, name, err))
			}
		}
	}
	return e, errors.Join(errs...)
}

// graphs returns g and its subgraphs.
func graphs(g *spec.Graph) []*spec.Graph {
	out := []*spec.Graph{g}
	for _, k := range spec.SortedKeys(g.Subgraphs) {
		out = append(out, g.Subgraphs[k])
	}
	return out
}

// provider is the provider a model runs with, after LGRUN_PROVIDER.
func (e *engine) provider(m *spec.Model) string {
	if m.Provider == "mock" && e.opts.Getenv(EnvProvider) == "openai" {
		return "openai"
	}
	return m.Provider
}

// client returns the (cached) client of model m.
func (e *engine) client(m *spec.Model) (chatClient, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.clients[m]; c != nil {
		return c, nil
	}
	p := e.provider(m)
	mk := e.env.clients[p]
	if mk == nil {
		return nil, fmt.Errorf("unknown provider %q", p)
	}
	c, err := mk(e, m)
	if err != nil {
		return nil, err
	}
	e.clients[m] = c
	return c, nil
}

func (e *engine) loadFixtures(path string) (*fixtures, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.loadFixturesLocked(path)
}

func (e *engine) loadFixturesLocked(path string) (*fixtures, error) {
	if fx := e.fixtures[path]; fx != nil {
		return fx, nil
	}
	fx, err := readFixtures(path)
	if err != nil {
		return nil, err
	}
	e.fixtures[path] = fx
	return fx, nil
}

// emitter returns call.Emit, or a no-op when the runner gave none.
func emitter(call *runtime.NodeCall) func(runtime.Event) {
	if call.Emit == nil {
		return func(runtime.Event) {}
	}
	return call.Emit
}
