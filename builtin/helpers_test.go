package builtin

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// testKey is the API key the tests configure; nothing may ever show it.
const testKey = "sk-test-SECRET-0123456789abcdef"

// mustGraph writes src (and files, e.g. fixtures) into a temp dir and
// loads it; the graph must check without errors.
func mustGraph(t testing.TB, src string, files map[string]string) *spec.Graph {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "graph.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	g, diags := spec.LoadFile(path, nil)
	if diags.HasErrors() {
		t.Fatalf("graph does not check:\n%v", diags)
	}
	return g
}

// envOf returns a Getenv over the given pairs.
func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// events collects a run's events.
type events struct {
	mu  sync.Mutex
	all []runtime.Event
}

func (e *events) add(ev runtime.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *events) list() []runtime.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]runtime.Event(nil), e.all...)
}

func (e *events) tokens() string {
	var b strings.Builder
	for _, ev := range e.list() {
		if ev.Kind == runtime.EvToken {
			b.WriteString(ev.Token)
		}
	}
	return b.String()
}

func (e *events) messages() string {
	var b strings.Builder
	for _, ev := range e.list() {
		if ev.Kind == runtime.EvMessage {
			b.WriteString(ev.Message + "\n")
		}
	}
	return b.String()
}

// newRunner returns a runner for g with the builtin kinds on an in-memory saver.
func newRunner(t testing.TB, g *spec.Graph, opts Options) (*runtime.Runner, *events) {
	t.Helper()
	return newRunnerIn(t, NewEnvironment(), g, opts)
}

// newRunnerIn is newRunner with the kinds of env.
func newRunnerIn(t testing.TB, env *Environment, g *spec.Graph, opts Options) (*runtime.Runner, *events) {
	t.Helper()
	if opts.Getenv == nil {
		opts.Getenv = envOf()
	}
	kinds, err := env.Kinds(g, opts)
	if err != nil {
		t.Fatalf("Kinds: %v", err)
	}
	ev := &events{}
	return &runtime.Runner{Graph: g, Saver: checkpoint.NewMemory(), Kinds: kinds, Events: ev.add, Version: "test"}, ev
}

// runGraph runs one turn and fails the test on an error.
func runGraph(t testing.TB, r *runtime.Runner, thread string, input map[string]any) *runtime.Result {
	t.Helper()
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: thread, Input: input})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return res
}

// callNode runs one node kind directly, as the runner would.
func callNode(t testing.TB, g *spec.Graph, opts Options, node string, state map[string]any) (*runtime.NodeResult, *events, error) {
	t.Helper()
	return callNodeIn(t, NewEnvironment(), g, opts, node, state)
}

// callNodeIn is callNode with the kinds of env.
func callNodeIn(t testing.TB, env *Environment, g *spec.Graph, opts Options, node string, state map[string]any) (*runtime.NodeResult, *events, error) {
	t.Helper()
	if opts.Getenv == nil {
		opts.Getenv = envOf()
	}
	kinds, err := env.Kinds(g, opts)
	if err != nil {
		t.Fatalf("Kinds: %v", err)
	}
	n := g.Nodes[node]
	st := g.Defaults()
	for k, v := range state {
		st[k] = spec.Normalize(v)
	}
	ev := &events{}
	call := &runtime.NodeCall{Graph: g, Node: n, State: st, Thread: "t", Step: 1, Emit: ev.add}
	res, err := kinds[n.Kind](context.Background(), call)
	return res, ev, err
}

// jsonOf renders v for assertions and leak checks.
func jsonOf(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lastMessage returns the last message of the messages field.
func lastMessage(t testing.TB, values map[string]any) map[string]any {
	t.Helper()
	l, _ := values["messages"].([]any)
	if len(l) == 0 {
		t.Fatal("no messages")
	}
	return l[len(l)-1].(map[string]any)
}

// userMsg is a canonical user message.
func userMsg(s string) map[string]any { return map[string]any{"role": "user", "content": s} }
