package runtime_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// fakes is a test double for node kinds: it replaces the noop kind (the
// only kind the language lets a test node use without settings) with a
// function chosen by node name, and counts executions per node. A node
// without a registered function behaves like noop.
type fakes struct {
	mu    sync.Mutex
	fns   map[string]runtime.NodeFunc
	calls map[string]int
}

func newFakes() *fakes {
	return &fakes{fns: map[string]runtime.NodeFunc{}, calls: map[string]int{}}
}

// on registers fn for the noop node named node.
func (f *fakes) on(node string, fn runtime.NodeFunc) *fakes {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fns[node] = fn
	return f
}

// writes registers a node that always writes ws.
func (f *fakes) writes(node string, ws ...runtime.Write) *fakes {
	return f.on(node, func(context.Context, *runtime.NodeCall) (*runtime.NodeResult, error) {
		return &runtime.NodeResult{Writes: ws}, nil
	})
}

func (f *fakes) run(ctx context.Context, call *runtime.NodeCall) (*runtime.NodeResult, error) {
	f.mu.Lock()
	f.calls[call.Node.Name]++
	fn := f.fns[call.Node.Name]
	f.mu.Unlock()
	if fn == nil {
		return &runtime.NodeResult{}, nil
	}
	return fn(ctx, call)
}

// count returns how many times node was executed.
func (f *fakes) count(node string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[node]
}

func (f *fakes) kinds() map[string]runtime.NodeFunc {
	return map[string]runtime.NodeFunc{"noop": f.run}
}

// recorder collects a runner's events.
type recorder struct {
	mu     sync.Mutex
	events []runtime.Event
}

func (r *recorder) add(e runtime.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) all() []runtime.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]runtime.Event(nil), r.events...)
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = nil
}

// started counts node_start events per node: how many times each node ran.
func (r *recorder) started() map[string]int {
	out := map[string]int{}
	for _, e := range r.all() {
		if e.Kind == runtime.EvNodeStart {
			out[e.Node]++
		}
	}
	return out
}

func (r *recorder) ofKind(k runtime.EventKind) []runtime.Event {
	var out []runtime.Event
	for _, e := range r.all() {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

func mustGraph(t testing.TB, src string) *spec.Graph {
	t.Helper()
	g, errs := spec.Parse("test.yaml", []byte(src), nil)
	if errs.HasErrors() {
		t.Fatalf("graph does not check:\n%v", errs)
	}
	return g
}

func newRunner(t testing.TB, src string) *runtime.Runner {
	return &runtime.Runner{Graph: mustGraph(t, src), Saver: checkpoint.NewMemory(), Version: "test"}
}

// harness is a runner wired to fakes and an event recorder.
type harness struct {
	*runtime.Runner
	fk  *fakes
	rec *recorder
}

func newHarness(t testing.TB, src string, saver runtime.Saver) *harness {
	t.Helper()
	if saver == nil {
		saver = checkpoint.NewMemory()
	}
	h := &harness{fk: newFakes(), rec: &recorder{}}
	h.Runner = &runtime.Runner{Graph: mustGraph(t, src), Saver: saver, Version: "test"}
	h.Kinds = h.fk.kinds()
	h.Events = h.rec.add
	return h
}

// openSQLite opens a saver on a database in dir, closed at the end of the test.
func openSQLite(t testing.TB, dir string) *checkpoint.SQLite {
	t.Helper()
	s, err := checkpoint.OpenSQLite(filepath.Join(dir, "lgrun.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// savers are the implementations durability-relevant tests run against.
// Each call of open returns a saver for a fresh database; reopen returns a
// new handle on the same storage (a new process, for SQLite).
type saverKind struct {
	name string
	open func(t *testing.T) (s runtime.Saver, reopen func() runtime.Saver)
}

var saverKinds = []saverKind{
	{"memory", func(t *testing.T) (runtime.Saver, func() runtime.Saver) {
		m := checkpoint.NewMemory()
		return m, func() runtime.Saver { return m }
	}},
	{"sqlite", func(t *testing.T) (runtime.Saver, func() runtime.Saver) {
		dir := t.TempDir()
		return openSQLite(t, dir), func() runtime.Saver { return openSQLite(t, dir) }
	}},
}

func w(field string, v any) runtime.Write { return runtime.Write{Field: field, Value: v} }

// mustDone checks that a run finished: mustDone(t)(r.Run(...)).
func mustDone(t testing.TB) func(*runtime.Result, error) *runtime.Checkpoint {
	return func(res *runtime.Result, err error) *runtime.Checkpoint {
		t.Helper()
		if err != nil {
			t.Fatalf("run failed: %v", err)
		}
		if res.Status != runtime.StatusDone {
			t.Fatalf("status %s, want done (interrupts %v)", res.Status, res.Interrupts)
		}
		return res.Checkpoint
	}
}

func mustStatus(t testing.TB, res *runtime.Result, want runtime.Status) {
	t.Helper()
	if res == nil {
		t.Fatalf("no result, want status %s", want)
	}
	if res.Status != want {
		t.Fatalf("status %s, want %s", res.Status, want)
	}
}

func wantValues(t testing.TB, got map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("state.%s = %#v, want %#v", k, got[k], v)
		}
	}
}

func wantErrAs[E error](t testing.TB, err error) E {
	t.Helper()
	var e E
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want %T", err, err, e)
	}
	return e
}

// head returns the thread's row and its head checkpoint.
func head(t testing.TB, s runtime.Saver, thread string) (*runtime.Thread, *runtime.Checkpoint) {
	t.Helper()
	ctx := context.Background()
	th, err := s.Thread(ctx, thread)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := s.Get(ctx, thread, "")
	if err != nil {
		t.Fatal(err)
	}
	return th, cp
}

// history returns the thread's checkpoints oldest first.
func history(t testing.TB, s runtime.Saver, thread string) []*runtime.Checkpoint {
	t.Helper()
	list, err := s.List(context.Background(), thread, 0)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	return list
}

var bg = context.Background()

// mustRead returns a file's contents; it panics when the file is missing.
func mustRead(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return string(b)
}
