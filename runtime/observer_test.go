package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// pathObserver records each hook with the path of the spans around it,
// which it carries in the context like a tracer does.
type pathObserver struct {
	mu    sync.Mutex
	log   []string
	links []string // prev values LinkRun was given
	n     int
}

type pathKey struct{}

func pathOf(ctx context.Context) string { s, _ := ctx.Value(pathKey{}).(string); return s }

func (o *pathObserver) add(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.log = append(o.log, s)
}

func (o *pathObserver) StartRun(ctx context.Context, info runtime.RunInfo) context.Context {
	p := fmt.Sprintf("%s/%s:%s", pathOf(ctx), info.Op, info.Graph)
	if info.Child {
		p += "(child)"
	}
	o.add("start " + p)
	return context.WithValue(ctx, pathKey{}, p)
}

func (o *pathObserver) LinkRun(ctx context.Context, prev string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.links = append(o.links, prev)
	o.n++
	return fmt.Sprintf("ref-%d", o.n)
}

func (o *pathObserver) EndRun(ctx context.Context, info runtime.RunInfo, res *runtime.Result, err error) {
	st := ""
	if res != nil {
		st = string(res.Status)
	}
	o.add(fmt.Sprintf("end %s %s %v", pathOf(ctx), st, err != nil))
}

func (o *pathObserver) StartStep(ctx context.Context, info runtime.RunInfo, step int, next []string) context.Context {
	p := fmt.Sprintf("%s/step%d", pathOf(ctx), step)
	o.add("start " + p)
	return context.WithValue(ctx, pathKey{}, p)
}

func (o *pathObserver) EndStep(ctx context.Context, cp *runtime.Checkpoint, err error) {
	o.add(fmt.Sprintf("end %s %v %v", pathOf(ctx), cp != nil, err != nil))
}

func (o *pathObserver) StartNode(ctx context.Context, call *runtime.NodeCall) context.Context {
	p := pathOf(ctx) + "/" + call.Node.Name
	o.add("start " + p)
	return context.WithValue(ctx, pathKey{}, p)
}

func (o *pathObserver) NodeRetry(ctx context.Context, attempt, of int, err error) {
	o.add(fmt.Sprintf("retry %s %d/%d", pathOf(ctx), attempt, of))
}

func (o *pathObserver) EndNode(ctx context.Context, call *runtime.NodeCall, res *runtime.NodeResult, err error) {
	o.add(fmt.Sprintf("end %s %v", pathOf(ctx), err != nil))
}

func (o *pathObserver) Committed(ctx context.Context, d time.Duration, err error) {}

func (o *pathObserver) has(t *testing.T, lines ...string) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	all := strings.Join(o.log, "\n")
	for _, l := range lines {
		found := false
		for _, x := range o.log {
			found = found || x == l
		}
		if !found {
			t.Errorf("no hook %q in:\n%s", l, all)
		}
	}
}

// TestObserverNesting: child runs of subgraph nodes are observed inside
// their node, inside its step, inside the parent run.
func TestObserverNesting(t *testing.T) {
	g := writeGraphs(t, map[string]string{
		"main.yaml": `
version: 1
name: outer
state:
  log: {type: list, items: string, reducer: append}
nodes:
  begin: {kind: set, set: {log: '"outer"'}}
  middle: {kind: subgraph, graph: middle.yaml}
edges:
  - {from: START, to: begin}
  - {from: begin, to: middle}
  - {from: middle, to: END}
`,
		"middle.yaml": `
version: 1
name: middle
state:
  log: {type: list, items: string, reducer: append}
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
nodes:
  i1: {kind: set, set: {log: '"inner"'}}
edges:
  - {from: START, to: i1}
  - {from: i1, to: END}
`,
	})
	obs := &pathObserver{}
	r := &runtime.Runner{Graph: g, Saver: openSQLite(t, t.TempDir()), Observer: obs}
	mustDone(t)(r.Run(context.Background(), runtime.RunOptions{Thread: "n"}))
	obs.has(t,
		"start /run:outer/step2/middle/run:middle(child)/step2/inner/run:inner(child)/step1/i1",
		"end /run:outer/step2/middle/run:middle(child) done false",
		"end /run:outer/step2/middle false",
		"end /run:outer/step2 true false",
		"end /run:outer done false",
	)
}

// TestObserverRetryFailResume: retries are reported on the node, a
// failure ends its step and run with an error, and the run's trace
// reference is kept with the thread, so the resume is told it.
func TestObserverRetryFailResume(t *testing.T) {
	const src = `
version: 1
name: flaky
state:
  x: {type: int}
nodes:
  work:
    kind: noop
    retry: {max_attempts: 2, initial_backoff: 1ms, max_backoff: 1ms}
edges:
  - {from: START, to: work}
  - {from: work, to: END}
`
	saver := openSQLite(t, t.TempDir())
	h := newHarness(t, src, saver)
	obs := &pathObserver{}
	h.Observer = obs
	fail := true
	h.fk.on("work", func(context.Context, *runtime.NodeCall) (*runtime.NodeResult, error) {
		if fail {
			return nil, errors.New("flaky")
		}
		return &runtime.NodeResult{}, nil
	})
	ctx := context.Background()
	res, err := h.Run(ctx, runtime.RunOptions{Thread: "f"})
	if err == nil || res.Status != runtime.StatusFailed {
		t.Fatalf("run: %v %v", res, err)
	}
	obs.has(t,
		"retry /run:flaky/step1/work 1/2",
		"end /run:flaky/step1/work true",
		"end /run:flaky/step1 false true",
		"end /run:flaky failed true",
	)
	th, err := saver.Thread(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if th.Config.Trace != "ref-1" {
		t.Fatalf("thread config trace %q, want ref-1", th.Config.Trace)
	}
	fail = false
	mustDone(t)(h.Resume(ctx, runtime.ResumeOptions{Thread: "f"}))
	obs.has(t, "end /resume:flaky done false")
	if len(obs.links) != 2 || obs.links[0] != "" || obs.links[1] != "ref-1" {
		t.Errorf("LinkRun was given %q, want the new thread's \"\" then ref-1", obs.links)
	}
	if th, _ := saver.Thread(ctx, "f"); th.Config.Trace != "ref-2" {
		t.Errorf("after the resume the thread keeps trace %q, want ref-2", th.Config.Trace)
	}
}

// commitObserver counts the Committed hooks, failed and not.
type commitObserver struct {
	*pathObserver
	mu         sync.Mutex
	ok, failed int
}

func (o *commitObserver) Committed(ctx context.Context, d time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		o.failed++
	} else {
		o.ok++
	}
}

// lateThread hides the thread from the first Thread call, as if another
// process created it between that read and the run's input commit.
type lateThread struct {
	*checkpoint.SQLite
	hidden bool
}

func (s *lateThread) Thread(ctx context.Context, id string) (*runtime.Thread, error) {
	if !s.hidden {
		s.hidden = true
		return nil, runtime.ErrNotFound
	}
	return s.SQLite.Thread(ctx, id)
}

// TestObserverCommitsOnLeaseFallback: a run of a new thread commits its
// input with its lease (runtime.LockingCommitter); when the thread turns
// out to exist, the run takes the lease first and commits again. The
// refused first try is no failed commit: the observer sees each commit
// once, none failed.
func TestObserverCommitsOnLeaseFallback(t *testing.T) {
	g := mustGraph(t, `
version: 1
name: two
state:
  n: {type: int}
nodes:
  a: {kind: set, set: {n: state.n + 1}}
edges:
  - {from: START, to: a}
  - {from: a, to: END}
`)
	s := openSQLite(t, t.TempDir())
	ctx := context.Background()
	if _, err := (&runtime.Runner{Graph: g, Saver: s}).Run(ctx, runtime.RunOptions{Thread: "t"}); err != nil {
		t.Fatal(err)
	}
	var saver runtime.Saver = &lateThread{SQLite: s}
	if _, ok := saver.(runtime.LockingCommitter); !ok {
		t.Fatal("the wrapper must keep the lease-in-commit path")
	}
	obs := &commitObserver{pathObserver: &pathObserver{}}
	res, err := (&runtime.Runner{Graph: g, Saver: saver, Observer: obs}).Run(ctx, runtime.RunOptions{Thread: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Checkpoint.Values["n"] != 2 {
		t.Fatalf("n = %v, want 2 (the second turn)", res.Checkpoint.Values["n"])
	}
	// The input commit and the step's (which also marks the run done).
	if obs.ok != 2 || obs.failed != 0 {
		t.Fatalf("observer saw %d commits and %d failed, want 2 and 0", obs.ok, obs.failed)
	}
}
