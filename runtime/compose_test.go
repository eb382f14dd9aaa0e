package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// writeGraphs writes files into a temp dir and loads the one named main.
func writeGraphs(t *testing.T, files map[string]string) *spec.Graph {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g, errs := spec.LoadFile(filepath.Join(dir, "main.yaml"), nil)
	if errs.HasErrors() {
		t.Fatalf("graph does not check:\n%v", errs)
	}
	return g
}

var nested = map[string]string{
	"main.yaml": `
version: 1
name: outer
state:
  log: {type: list, items: string, reducer: append}
  answer: {type: string}
nodes:
  begin: {kind: set, set: {log: '"outer-begin"'}}
  middle: {kind: subgraph, graph: middle.yaml}
  end: {kind: set, set: {log: '"outer-end:" + state.answer'}}
edges:
  - {from: START, to: begin}
  - {from: begin, to: middle}
  - {from: middle, to: end}
  - {from: end, to: END}
`,
	"middle.yaml": `
version: 1
name: middle
state:
  log: {type: list, items: string, reducer: append}
  answer: {type: string}
nodes:
  m1: {kind: set, set: {log: '"middle"'}}
  inner: {kind: subgraph, graph: inner.yaml}
edges:
  - {from: START, to: m1}
  - {from: m1, to: inner}
  - {from: inner, to: END}
`,
	"inner.yaml": `
version: 1
name: inner
state:
  log: {type: list, items: string, reducer: append}
  answer: {type: string}
nodes:
  i1: {kind: set, set: {log: '"inner"'}}
  ask: {kind: interrupt, payload: '{"question": "ok?", "seen": len(state.log)}', resume: answer}
  i2: {kind: set, set: {log: '"inner-after:" + state.answer'}}
edges:
  - {from: START, to: i1}
  - {from: i1, to: ask}
  - {from: ask, to: i2}
  - {from: i2, to: END}
`,
}

func TestNestedSubgraphInterruptResumeAndTimeTravel(t *testing.T) {
	ctx := context.Background()
	g := writeGraphs(t, nested)
	saver, err := checkpoint.OpenSQLite(filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer saver.Close()
	r := &runtime.Runner{Graph: g, Saver: saver}
	res, err := r.Run(ctx, runtime.RunOptions{Thread: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != runtime.StatusInterrupted || len(res.Interrupts) != 1 {
		t.Fatalf("want a pause, got %s %v", res.Status, res.Interrupts)
	}
	in := res.Interrupts[0]
	if in.Node != "middle" || in.When != runtime.InterruptNode || !strings.HasSuffix(in.Path, "/ask") || strings.Count(in.Path, "/") != 2 {
		t.Fatalf("interrupt %+v: want node middle, path middle@…/inner@…/ask", in)
	}
	if p, _ := in.Payload.(map[string]any); p["question"] != "ok?" || p["seen"] != 3 {
		t.Fatalf("payload %v", in.Payload)
	}
	if _, err := r.Resume(ctx, runtime.ResumeOptions{Thread: "n"}); !errors.Is(err, runtime.ErrNeedValue) {
		t.Fatalf("resume without value: %v", err)
	} else if nv := wantErrAs[*runtime.NeedValueError](t, err); nv.Thread != "n" || nv.Node != "middle" {
		t.Fatalf("need value error %+v", nv)
	}
	res, err = r.Resume(ctx, runtime.ResumeOptions{Thread: "n", Value: "yes", HasValue: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []any{"outer-begin", "middle", "inner", "inner-after:yes", "outer-end:yes"}
	if res.Status != runtime.StatusDone || !reflect.DeepEqual(res.Checkpoint.Values["log"], want) {
		t.Fatalf("final %s %v, want %v", res.Status, res.Checkpoint.Values["log"], want)
	}
	kids, err := runtime.ChildThreads(ctx, saver, "n")
	if err != nil || len(kids) != 2 {
		t.Fatalf("child threads %v %v", kids, err)
	}
	for _, k := range kids {
		if k.Status != runtime.StatusDone {
			t.Errorf("child %s status %s", k.ID, k.Status)
		}
	}
	// Time travel: fork the outer thread before the subgraph ran with a
	// different answer path; the fork re-runs the nested graphs afresh and
	// pauses again in the innermost graph.
	hist, _ := saver.List(ctx, "n", 0)
	var before string
	for _, cp := range hist {
		if cp.Step == 1 {
			before = cp.ID
		}
	}
	res, err = r.Fork(ctx, "n", before, []runtime.Write{{Field: "log", Value: "forked"}}, "", runtime.Config{})
	if err != nil || res.Status != runtime.StatusInterrupted {
		t.Fatalf("fork: %v %v", res, err)
	}
	res, err = r.Resume(ctx, runtime.ResumeOptions{Thread: "n", Value: "no", HasValue: true})
	if err != nil {
		t.Fatal(err)
	}
	want = []any{"outer-begin", "forked", "middle", "inner", "inner-after:no", "outer-end:no"}
	if !reflect.DeepEqual(res.Checkpoint.Values["log"], want) {
		t.Fatalf("after fork %v, want %v", res.Checkpoint.Values["log"], want)
	}
	// The original branch is still in the history.
	hist2, _ := saver.List(ctx, "n", 0)
	if len(hist2) <= len(hist) {
		t.Fatalf("history shrank: %d then %d", len(hist), len(hist2))
	}
}

func TestMapFailingItemResumesOnlyFailed(t *testing.T) {
	// The mapped node is a counting kind, so the test sees how often each
	// item runs; item "bad" fails until a state update fixes it.
	src := `
version: 1
name: mapper
state:
  docs: {type: list, items: int}
  doc: {type: int}
  bad: {type: int, default: 37}
  out: {type: list, items: string, reducer: append}
nodes:
  fan: {kind: map, over: state.docs, node: work, item_as: doc, concurrency: 8}
  work: {kind: noop}
edges:
  - {from: START, to: fan}
  - {from: fan, to: END}
`
	g, errs := spec.Parse("m.yaml", []byte(src), nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	ctx := context.Background()
	runs := map[int]int{}
	var mu = make(chan struct{}, 1)
	counted := func(_ context.Context, call *runtime.NodeCall) (*runtime.NodeResult, error) {
		doc := call.State["doc"].(int)
		mu <- struct{}{}
		runs[doc]++
		<-mu
		if doc == call.State["bad"].(int) {
			return nil, fmt.Errorf("document %d is broken", doc)
		}
		return &runtime.NodeResult{Writes: []runtime.Write{{Field: "out", Value: fmt.Sprintf("d%d", doc)}}}, nil
	}
	r := &runtime.Runner{Graph: g, Saver: checkpoint.NewMemory(), Kinds: map[string]runtime.NodeFunc{"noop": counted}}
	docs := make([]any, 100)
	for i := range docs {
		docs[i] = i
	}
	_, err := r.Run(ctx, runtime.RunOptions{Thread: "m", Input: map[string]any{"docs": docs}})
	if err == nil || !strings.Contains(err.Error(), "item 37") || !strings.Contains(err.Error(), "document 37 is broken") {
		t.Fatalf("want item 37 to fail, got %v", err)
	}
	for i := range 100 {
		if runs[i] != 1 {
			t.Fatalf("item %d ran %d times", i, runs[i])
		}
	}
	// Fix the cause and resume: only item 37 runs again.
	res, err := r.Resume(ctx, runtime.ResumeOptions{Thread: "m", Set: []runtime.Write{{Field: "bad", Value: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		want := 1
		if i == 37 {
			want = 2
		}
		if runs[i] != want {
			t.Fatalf("item %d ran %d times, want %d", i, runs[i], want)
		}
	}
	out := res.Checkpoint.Values["out"].([]any)
	if len(out) != 100 || out[0] != "d0" || out[37] != "d37" || out[99] != "d99" {
		t.Fatalf("out in item order: %v", out)
	}
}

func TestGotoToParentFromSubgraph(t *testing.T) {
	g := writeGraphs(t, map[string]string{
		"main.yaml": `
version: 1
name: parent
state:
  log: {type: list, items: string, reducer: append}
nodes:
  team: {kind: subgraph, graph: child.yaml}
  writer: {kind: set, set: {log: '"writer"'}}
  other: {kind: set, set: {log: '"other"'}}
edges:
  - {from: START, to: team}
  - {from: writer, to: END}
  - {from: other, to: END}
`,
		"child.yaml": `
version: 1
name: child
state:
  log: {type: list, items: string, reducer: append}
nodes:
  decide:
    kind: set
    set: {log: '"decide"'}
    goto: '"^writer"'
    goto_paths: ["^writer", next]
  next: {kind: set, set: {log: '"never"'}}
edges:
  - {from: START, to: decide}
  - {from: next, to: END}
`,
	})
	if n := g.Nodes["team"]; len(n.GotoPaths) != 1 || n.GotoPaths[0].Name != "writer" {
		t.Fatalf("subgraph node goto paths %v", n.GotoPaths)
	}
	r := &runtime.Runner{Graph: g, Saver: checkpoint.NewMemory()}
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []any{"decide", "writer"}; !reflect.DeepEqual(res.Checkpoint.Values["log"], want) {
		t.Fatalf("log %v, want %v", res.Checkpoint.Values["log"], want)
	}
}

// countingLocker counts the leases runs take.
type countingLocker struct {
	*checkpoint.Memory
	mu    sync.Mutex
	locks []string
}

func (c *countingLocker) Lock(ctx context.Context, thread string) (func(), error) {
	c.mu.Lock()
	c.locks = append(c.locks, thread)
	c.mu.Unlock()
	return c.Memory.Lock(ctx, thread)
}

// Child runs (subgraphs, map items) run under the parent's lease: a
// nested run takes exactly one lease, the parent thread's.
func TestChildRunsTakeNoLease(t *testing.T) {
	ctx := context.Background()
	g := writeGraphs(t, nested)
	saver := &countingLocker{Memory: checkpoint.NewMemory()}
	r := &runtime.Runner{Graph: g, Saver: saver}
	if _, err := r.Run(ctx, runtime.RunOptions{Thread: "n"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resume(ctx, runtime.ResumeOptions{Thread: "n", Value: "ok", HasValue: true}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(saver.locks, []string{"n", "n"}) {
		t.Fatalf("leases taken: %q, want only the parent's (run, resume)", saver.locks)
	}
}
