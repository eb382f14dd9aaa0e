package checkpoint_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// unchained is the SQLite saver without its runtime.ChainCommitter: a
// runner commits a turn's input checkpoint in a transaction of its own,
// as every runner did before the input rode with the first step.
type unchained struct {
	runtime.Saver
	s *checkpoint.SQLite
}

func (u unchained) Lock(ctx context.Context, thread string) (func(), error) {
	return u.s.Lock(ctx, thread)
}

func (u unchained) CommitLocked(ctx context.Context, c *runtime.Commit) (func(), error) {
	return u.s.CommitLocked(ctx, c)
}

var _ runtime.LockingCommitter = unchained{}

// staleRead answers Thread calls for thread "t" with not found, whatever
// is stored, until the runner takes a lease with Lock: as a read racing
// another process's first commit of the thread does.
type staleRead struct {
	runtime.Saver
	locked *atomic.Bool
}

func (s staleRead) Thread(ctx context.Context, id string) (*runtime.Thread, error) {
	if id == "t" && !s.locked.Load() {
		return nil, fmt.Errorf("thread %q: %w", id, runtime.ErrNotFound)
	}
	return s.Saver.Thread(ctx, id)
}

func (s staleRead) Lock(ctx context.Context, thread string) (func(), error) {
	s.locked.Store(true)
	return s.Saver.(runtime.Locker).Lock(ctx, thread)
}

func (s staleRead) CommitLocked(ctx context.Context, c *runtime.Commit) (func(), error) {
	return s.Saver.(runtime.LockingCommitter).CommitLocked(ctx, c)
}

// chainedStaleRead is staleRead over a saver that commits chains.
type chainedStaleRead struct{ staleRead }

func (s chainedStaleRead) CommitChain(ctx context.Context, cs []*runtime.Commit, lock bool) (func(), error) {
	return s.Saver.(runtime.ChainCommitter).CommitChain(ctx, cs, lock)
}

// deferGraph's first step (a, b, c) runs only set nodes; a fails while
// state.broken, b writes a long pad unless state.broken.
const deferGraph = `version: 1
name: deferred
state:
  results: {type: list, items: string, reducer: append}
  items: {type: list, items: string}
  broken: {type: bool, default: false}
  total: {type: int}
  pad: {type: string}
nodes:
  a: {kind: set, set: {results: 'state.broken ? state.items[99] : "a"'}}
  b: {kind: set, set: {results: '"b"', pad: 'state.broken ? "" : "` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `"'}}
  c: {kind: set, set: {results: '"c"'}}
  join: {kind: set, set: {total: len(state.results)}}
edges:
  - {from: START, to: [a, b, c]}
  - {from: [a, b, c], to: join}
  - {from: join, to: END}
`

// slowFirstGraph's first step runs a node with retries: not in-process
// only (a retry waits), so its input is committed alone.
const slowFirstGraph = `version: 1
name: slowfirst
state:
  results: {type: list, items: string, reducer: append}
nodes:
  a: {kind: set, set: {results: '"a"'}, retry: {max_attempts: 2}}
  b: {kind: set, set: {results: '"b"'}}
edges:
  - {from: START, to: a}
  - {from: a, to: b}
  - {from: b, to: END}
`

// storedCheckpoint is a checkpoint as stored, without ids and times.
type storedCheckpoint struct {
	Step, TurnStep int
	Source         runtime.Source
	Next           []string
	Waiting        map[string][]string
	Values         map[string]any
	Writes         map[string][]string
	Pending        []string
	Parent         int // index of the parent in the history, -1 for none
}

// outcome is everything a scenario leaves that a user can see: what the
// calls returned, the events they emitted and what is stored.
type outcome struct {
	Results []string
	Events  []string
	Threads []string
	History map[string][]storedCheckpoint
}

func observe(t *testing.T, s runtime.Saver, results, events []string) outcome {
	t.Helper()
	ctx := context.Background()
	o := outcome{Results: results, Events: events, History: map[string][]storedCheckpoint{}}
	ths, err := s.Threads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, th := range ths {
		o.Threads = append(o.Threads, untimed(fmt.Sprintf("%s %s %q %+v", th.ID, th.Status, th.Error, th.Config)))
		list := history(t, s, th.ID)
		index := map[string]int{}
		for i, c := range list {
			index[c.ID] = i
		}
		if list[len(list)-1].ID != th.Head {
			t.Fatalf("thread %s: head %s is not its newest checkpoint", th.ID, th.Head)
		}
		for _, c := range list {
			full, err := s.Get(ctx, th.ID, c.ID)
			if err != nil {
				t.Fatal(err)
			}
			sc := storedCheckpoint{Step: full.Step, TurnStep: full.TurnStep, Source: full.Metadata.Source, Next: full.Next,
				Waiting: full.Waiting, Values: full.Values, Writes: full.Metadata.Writes, Parent: -1}
			if p, ok := index[full.ParentID]; ok {
				sc.Parent = p
			}
			for _, p := range full.Pending {
				sc.Pending = append(sc.Pending, fmt.Sprintf("%s %s %s", p.Node, p.Kind, p.Error))
			}
			o.History[th.ID] = append(o.History[th.ID], sc)
		}
	}
	return o
}

// history returns the thread's checkpoints oldest first.
func history(t *testing.T, s runtime.Saver, thread string) []*runtime.Checkpoint {
	t.Helper()
	list, err := s.List(context.Background(), thread, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, j := 0, len(list)-1; i < j; i, j = i+1, j-1 {
		list[i], list[j] = list[j], list[i]
	}
	return list
}

type scenario struct {
	name  string
	graph string
	// deferred counts the turns whose input rides with their first step,
	// run on a saver without leases: one write transaction less each than
	// committing it alone.
	deferred int
	// other, when set, is a second handle on the database, for a lease
	// held elsewhere.
	do func(t *testing.T, r *runtime.Runner, other *checkpoint.SQLite) []string
}

func res(r *runtime.Result, err error) string {
	s := "<nil>"
	if r != nil {
		s = fmt.Sprintf("%s step %d %v", r.Status, r.Checkpoint.Step, r.Checkpoint.Values)
	}
	if err != nil {
		s += " error: " + err.Error()
	}
	return untimed(s)
}

// sinceRE matches the time a BusyError gives, to the second: two runs of
// a scenario compared may straddle a second.
var sinceRE = regexp.MustCompile(`since \d{4}-\d\d-\d\dT[^;]*;`)

// untimed is s with the times of BusyErrors taken out.
func untimed(s string) string { return sinceRE.ReplaceAllString(s, "since (time);") }

var deferScenarios = []scenario{
	{name: "done", graph: deferGraph, deferred: 1, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		return []string{res(r.Run(bg, runtime.RunOptions{Thread: "t"}))}
	}},
	{name: "second turn", graph: deferGraph, deferred: 2, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		return []string{res(r.Run(bg, runtime.RunOptions{Thread: "t"})), res(r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"results": []any{"x"}}}))}
	}},
	{name: "first step fails, resumed", graph: deferGraph, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		return []string{res(r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"broken": true}})),
			res(r.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{{Field: "broken", Value: false}}}))}
	}},
	{name: "first step too big", graph: deferGraph, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		return []string{res(r.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{StateSize: 120}}))}
	}},
	{name: "input too big", graph: deferGraph, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		return []string{res(r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"pad": strings.Repeat("x", 200)}, Config: runtime.Config{StateSize: 120}}))}
	}},
	{name: "interrupt before the first node", graph: deferGraph, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		return []string{res(r.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{InterruptBefore: []string{"b"}}})),
			res(r.Resume(bg, runtime.ResumeOptions{Thread: "t"}))}
	}},
	{name: "interrupt after the first node", graph: deferGraph, deferred: 1, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		return []string{res(r.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{InterruptAfter: []string{"b"}}})),
			res(r.Resume(bg, runtime.ResumeOptions{Thread: "t"}))}
	}},
	{name: "step limit after the first step", graph: deferGraph, deferred: 1, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		return []string{res(r.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{StepLimit: 1}})),
			res(r.Resume(bg, runtime.ResumeOptions{Thread: "t", Config: runtime.Config{StepLimit: 10}}))}
	}},
	{name: "timed out before the first step", graph: deferGraph, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		// Stopped before the first step: the input is committed alone
		// with the stop, as before.
		return []string{res(r.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{Timeout: 1}})),
			res(r.Resume(bg, runtime.ResumeOptions{Thread: "t", Config: runtime.Config{Timeout: runtime.Duration(time.Hour)}}))}
	}},
	{name: "cancelled before it starts", graph: deferGraph, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		ctx, cancel := context.WithCancel(bg)
		cancel()
		return []string{res(r.Run(ctx, runtime.RunOptions{Thread: "t"}))}
	}},
	{name: "bad input", graph: deferGraph, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		return []string{res(r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"nope": 1}})),
			res(r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"total": "x"}}))}
	}},
	{name: "existing thread, failing second turn", graph: deferGraph, deferred: 1, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		first := res(r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"items": []any{"x"}}}))
		return []string{first, res(r.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"broken": true}}))}
	}},
	{name: "fork and replay", graph: deferGraph, deferred: 1, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		out := []string{res(r.Run(bg, runtime.RunOptions{Thread: "t"}))}
		first := history(t, r.Saver, "t")[0].ID
		out = append(out, res(r.Fork(bg, "t", first, []runtime.Write{{Field: "results", Value: "f"}}, "", runtime.Config{})))
		return append(out, res(r.Replay(bg, "t", first, runtime.Config{})))
	}},
	{name: "first node has retries", graph: slowFirstGraph, do: func(t *testing.T, r *runtime.Runner, _ *checkpoint.SQLite) []string {
		return []string{res(r.Run(bg, runtime.RunOptions{Thread: "t"}))}
	}},
	{name: "lease held elsewhere", graph: deferGraph, deferred: 2, do: func(t *testing.T, r *runtime.Runner, other *checkpoint.SQLite) []string {
		unlock, err := other.Lock(bg, "t")
		if err != nil {
			t.Fatal(err)
		}
		out := res(r.Run(bg, runtime.RunOptions{Thread: "t"}))
		unlock()
		// The error names this process as the holder.
		return []string{out, res(r.Run(bg, runtime.RunOptions{Thread: "t"}))}
	}},
}

// chainedOnly is the SQLite saver with its ChainCommitter but without
// leases.
type chainedOnly struct {
	runtime.Saver
	s *checkpoint.SQLite
}

func (c chainedOnly) CommitChain(ctx context.Context, cs []*runtime.Commit, lock bool) (func(), error) {
	return c.s.CommitChain(ctx, cs, lock)
}

// TestInputCommittedWithFirstStep runs each scenario on SQLite with the
// saver's ChainCommitter, so that a turn whose first step runs only
// set/noop nodes commits its input in that step's transaction, and
// without, as before. Everything a user can see must be the same: what
// the calls return, the events in order, the threads and every stored
// checkpoint with its pending writes. Only the number of write
// transactions differs, by one per deferred turn; it is counted on
// savers without leases, whose released lease rows would otherwise be
// deleted in a transaction of their own when no other comes soon enough.
func TestInputCommittedWithFirstStep(t *testing.T) {
	for _, sc := range deferScenarios {
		t.Run(sc.name, func(t *testing.T) {
			for _, leases := range []bool{true, false} {
				var outs [2]outcome
				var txns [2]int64
				for i, chained := range []bool{false, true} {
					path := filepath.Join(t.TempDir(), "db")
					s := MustOpenPath(t, path, nil)
					other := MustOpenPath(t, path, nil)
					var saver runtime.Saver
					switch {
					case leases && chained:
						saver = s
					case leases:
						saver = unchained{s, s}
					case chained:
						saver = chainedOnly{s, s}
					default:
						saver = unlocked{s}
					}
					var events []string
					r := &runtime.Runner{Graph: mustParse(t, sc.graph), Saver: saver, Version: "test", Events: func(e runtime.Event) {
						events = append(events, untimed(fmt.Sprintf("%s %d %s %v %v %s %s", e.Kind, e.Step, e.Node, e.Next, e.Values, e.Message, e.Error)))
					}}
					before := checkpoint.WriteTxns(s)
					results := sc.do(t, r, other)
					txns[i] = checkpoint.WriteTxns(s) - before
					outs[i] = observe(t, s, results, events)
				}
				if !reflect.DeepEqual(outs[0], outs[1]) {
					t.Fatalf("leases %v; with the input committed alone:\n%+v\nwith the input in the first step's commit:\n%+v", leases, outs[0], outs[1])
				}
				if leases {
					continue
				}
				if want := txns[0] - int64(sc.deferred); txns[1] != want {
					t.Fatalf("%d write transactions, %d with the input committed alone; want %d", txns[1], txns[0], want)
				}
				t.Logf("%s; write transactions %d → %d", outs[1].Results, txns[0], txns[1])
			}
		})
	}
}

// A run whose thread appears between its read of the thread and its
// commit (another process's first run of the same thread), or that takes
// a thread to be new without reading it (a run whose first step is set
// nodes only), goes back to take the lease first and runs a second turn
// on what it finds, with the input committed alone or with the first
// step alike; its listener hears one turn, not the abandoned one.
func TestInputCommittedWithFirstStepRace(t *testing.T) {
	var outs [2]outcome
	for i, chained := range []bool{false, true} {
		s := MustOpenPath(t, filepath.Join(t.TempDir(), "db"), nil)
		g := mustParse(t, deferGraph)
		first := &runtime.Runner{Graph: g, Saver: s, Version: "test"}
		if _, err := first.Run(bg, runtime.RunOptions{Thread: "t"}); err != nil {
			t.Fatal(err)
		}
		var saver runtime.Saver = staleRead{unchained{s, s}, &atomic.Bool{}}
		if chained {
			saver = chainedStaleRead{staleRead{s, &atomic.Bool{}}}
		}
		var events []string
		r := &runtime.Runner{Graph: g, Saver: saver, Version: "test", Events: func(e runtime.Event) {
			events = append(events, fmt.Sprintf("%s %d %v", e.Kind, e.Step, e.Values))
		}}
		out := res(r.Run(bg, runtime.RunOptions{Thread: "t"}))
		if !strings.HasPrefix(out, "done step 5 ") {
			t.Fatalf("run on the thread that appeared: %s, want a second turn done at step 5", out)
		}
		if n := strings.Count(strings.Join(events, "\n"), string(runtime.EvRunStart)); n != 1 {
			t.Fatalf("%d run_start events, want 1:\n%s", n, strings.Join(events, "\n"))
		}
		outs[i] = observe(t, s, []string{out}, events)
	}
	if !reflect.DeepEqual(outs[0], outs[1]) {
		t.Fatalf("with the input committed alone:\n%+v\nwith the input in the first step's commit:\n%+v", outs[0], outs[1])
	}
}

// CommitChain commits all of its checkpoints or none: a chain whose
// second commit does not follow the first (a wrong expected head) leaves
// nothing, not even the first, and takes no lease.
func TestCommitChainAllOrNothing(t *testing.T) {
	s := MustOpenPath(t, filepath.Join(t.TempDir(), "db"), nil)
	mk := func(id, parent string, step int) *runtime.Commit {
		return &runtime.Commit{
			Checkpoint: &runtime.Checkpoint{Thread: "t", ID: id, ParentID: parent, Step: step,
				Values: map[string]any{"n": step}, Delta: runtime.Delta{"n": {Kind: runtime.OpSet, Value: step}},
				Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g"}},
			ExpectHead: parent,
			Thread:     runtime.Thread{ID: "t", Head: id, Status: runtime.StatusRunning, Graph: "g"},
		}
	}
	bad := mk("0000000000000002", "0000000000000001", 1)
	bad.ExpectHead = "000000000000000f"
	if _, err := s.CommitChain(bg, []*runtime.Commit{mk("0000000000000001", "", 0), bad}, true); !errors.Is(err, runtime.ErrConflict) {
		t.Fatalf("chain with a wrong head: %v, want ErrConflict", err)
	}
	if _, err := s.Thread(bg, "t"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("the failed chain left thread t: %v", err)
	}
	var n int
	if err := s.DB().QueryRow(`SELECT count(*) FROM leases`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("lease rows after the failed chain: %d (%v), want 0", n, err)
	}
	unlock, err := s.CommitChain(bg, []*runtime.Commit{mk("0000000000000001", "", 0), mk("0000000000000002", "0000000000000001", 1)}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	cp, err := MustOpenPath(t, s.Path(), nil).Get(bg, "t", "")
	if err != nil || cp.ID != "0000000000000002" || cp.ParentID != "0000000000000001" || !reflect.DeepEqual(cp.Values, map[string]any{"n": 1}) {
		t.Fatalf("head after the chain: %+v, %v", cp, err)
	}
	if _, err := s.CommitChain(bg, nil, false); err == nil {
		t.Fatal("an empty chain committed")
	}
}

// The JSON of a zero Config is what encoding it gives: the shortcut for
// threads without run-time settings changes no stored byte.
func TestZeroConfigJSON(t *testing.T) {
	want, err := json.Marshal(runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := checkpoint.ConfigJSON(runtime.Config{})
	if err != nil || string(got) != string(want) {
		t.Fatalf("zero config: %s (%v), want %s", got, err, want)
	}
	got, err = checkpoint.ConfigJSON(runtime.Config{InterruptBefore: []string{}, StepLimit: 3})
	if err != nil || string(got) != `{"step_limit":3}` {
		t.Fatalf("config: %s (%v)", got, err)
	}
}
