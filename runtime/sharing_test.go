package runtime_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Lists grow by sharing the items of the list they extend (see lists.go).
// These tests check that sharing never shows: every checkpoint's values,
// as the runner reported them and as the saver returns them, stay what
// they were when committed, whatever runs after (more steps, forks from
// old checkpoints, new turns, fan-out branches appending to one list, a
// node appending to a list it read).

const shareGraph = `
version: 1
name: share
state:
  count: {type: int}
  target: {type: int, default: 6}
  log: {type: list, items: string, reducer: append}
  messages: {type: messages}
  other: {type: any}
limits: {steps: 1000}
nodes:
  inc:
    kind: set
    set:
      count: state.count + 1
      log: '"n" + string(state.count + 1)'
      messages: '{role: "user", content: "m" + string(state.count + 1)}'
  peek: {kind: noop}
edges:
  - {from: START, to: inc}
  - {from: inc, to: peek}
  - {from: peek, when: state.count < state.target, to: inc, else: END}
`

const shareFanoutGraph = `
version: 1
name: share-fanout
state:
  count: {type: int, reducer: add}
  log: {type: list, items: string, reducer: append}
limits: {steps: 1000}
nodes:
  a: {kind: set, set: {log: '"a" + string(state.count)', count: '1'}}
  b: {kind: set, set: {log: '["b" + string(state.count), "B" + string(state.count)]', count: '1'}}
edges:
  - {from: START, to: [a, b]}
  - {from: a, when: state.count < 12, to: a, else: END}
  - {from: b, when: state.count < 12, to: b, else: END}
`

// snapshots records the values of every checkpoint a runner reports,
// with their JSON at that moment.
type snapshots struct {
	mu   sync.Mutex
	list []snapshot
}

type snapshot struct {
	thread, id string
	values     map[string]any // the runner's own values, kept
	json       string
}

func (s *snapshots) listen(e runtime.Event) {
	if (e.Kind != runtime.EvCheckpoint && e.Kind != runtime.EvRunStart) || e.Values == nil {
		return
	}
	b, err := json.Marshal(e.Values)
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, snapshot{thread: e.Thread, id: e.Checkpoint, values: e.Values, json: string(b)})
}

// check compares every snapshot with the values kept and with what the
// saver returns now.
func (s *snapshots) check(t *testing.T, saver runtime.Saver) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.list) == 0 {
		t.Fatal("no checkpoints reported")
	}
	for _, sn := range s.list {
		if b, _ := json.Marshal(sn.values); string(b) != sn.json {
			t.Fatalf("values of checkpoint %s changed after it was committed:\n was %s\n now %s", sn.id, sn.json, b)
		}
		cp, err := saver.Get(context.Background(), sn.thread, sn.id)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := json.Marshal(cp.Values); string(b) != sn.json {
			t.Fatalf("saver returns checkpoint %s as\n %s\nwant\n %s", sn.id, b, sn.json)
		}
	}
}

func shareSavers(t *testing.T) map[string]runtime.Saver {
	s, err := checkpoint.OpenSQLite(filepath.Join(t.TempDir(), "share.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return map[string]runtime.Saver{"memory": checkpoint.NewMemory(), "sqlite": s}
}

func logOf(t *testing.T, cp *runtime.Checkpoint) []string {
	t.Helper()
	var out []string
	for _, x := range cp.Values["log"].([]any) {
		out = append(out, x.(string))
	}
	return out
}

func wantSeq(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func TestAppendSharingForks(t *testing.T) {
	g, errs := spec.Parse("share.yaml", []byte(shareGraph), nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	for name, saver := range shareSavers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			snaps := &snapshots{}
			var kept [][]any
			f := newFakes().on("peek", func(_ context.Context, call *runtime.NodeCall) (*runtime.NodeResult, error) {
				// A node appending to lists it read, Go style, and keeping
				// the result: the state's lists must not change with it,
				// nor it with the state's.
				log := append(call.State["log"].([]any), "INTRUDER")
				msgs := append(call.State["messages"].([]any), map[string]any{"id": "x", "role": "user", "content": "INTRUDER"})
				kept = append(kept, log, msgs)
				return &runtime.NodeResult{Writes: []runtime.Write{{Field: "other", Value: []any{log, msgs}}}}, nil
			})
			r := &runtime.Runner{Graph: g, Saver: saver, Kinds: map[string]runtime.NodeFunc{"noop": f.run}, Events: snaps.listen}
			res, err := r.Run(ctx, runtime.RunOptions{Thread: "t"})
			if err != nil {
				t.Fatal(err)
			}
			if got := logOf(t, res.Checkpoint); !slices.Equal(got, wantSeq("n", 1, 6)) {
				t.Fatalf("log %q", got)
			}
			snaps.check(t, saver)
			original := res.Checkpoint

			// Fork from the checkpoint after step 3's inc: the fork and,
			// later, the original both append after it.
			list, err := saver.List(ctx, "t", 0)
			if err != nil {
				t.Fatal(err)
			}
			var at string
			for _, c := range list {
				if c.Step == 5 { // input, inc, peek, inc, peek, inc
					at = c.ID
				}
			}
			fork, err := r.Fork(ctx, "t", at, []runtime.Write{{Field: "log", Value: "forked"}}, "", runtime.Config{})
			if err != nil {
				t.Fatal(err)
			}
			want := append(wantSeq("n", 1, 3), "forked")
			want = append(want, wantSeq("n", 4, 6)...)
			if got := logOf(t, fork.Checkpoint); !slices.Equal(got, want) {
				t.Fatalf("fork's log %q, want %q", got, want)
			}
			if got := logOf(t, original); !slices.Equal(got, wantSeq("n", 1, 6)) {
				t.Fatalf("original's log after the fork %q", got)
			}
			snaps.check(t, saver)

			// The original branch continues: a fork from its last
			// checkpoint, with a higher target.
			cont, err := r.Fork(ctx, "t", original.ID, []runtime.Write{{Field: "target", Value: 9}}, "peek", runtime.Config{})
			if err != nil {
				t.Fatal(err)
			}
			if got := logOf(t, cont.Checkpoint); !slices.Equal(got, wantSeq("n", 1, 9)) {
				t.Fatalf("continued original's log %q", got)
			}
			msgs := cont.Checkpoint.Values["messages"].([]any)
			if len(msgs) != 9 || msgs[8].(map[string]any)["content"] != "m9" {
				t.Fatalf("messages %v", msgs)
			}
			// A new turn on the thread, and a second fork from the same
			// old checkpoint as the first.
			if _, err := r.Run(ctx, runtime.RunOptions{Thread: "t", Input: map[string]any{"target": 12}}); err != nil {
				t.Fatal(err)
			}
			again, err := r.Fork(ctx, "t", at, []runtime.Write{{Field: "log", Value: "again"}}, "", runtime.Config{})
			if err != nil {
				t.Fatal(err)
			}
			want = append(wantSeq("n", 1, 3), "again")
			want = append(want, wantSeq("n", 4, 6)...)
			if got := logOf(t, again.Checkpoint); !slices.Equal(got, want) {
				t.Fatalf("second fork's log %q, want %q", got, want)
			}
			snaps.check(t, saver)
			// What the peek node kept is what it made.
			other := cont.Checkpoint.Values["other"].([]any)
			if l := other[0].([]any); len(l) != 10 || l[9] != "INTRUDER" {
				t.Fatalf("node's own list changed: %v", l)
			}
			for _, l := range kept {
				last := l[len(l)-1]
				if m, ok := last.(map[string]any); ok {
					last = m["content"]
				}
				if last != "INTRUDER" {
					t.Fatalf("a list a node made by appending to the state's changed: %v", l)
				}
			}
		})
	}
}

func TestAppendSharingFanout(t *testing.T) {
	g, errs := spec.Parse("share.yaml", []byte(shareFanoutGraph), nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	for name, saver := range shareSavers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			snaps := &snapshots{}
			r := &runtime.Runner{Graph: g, Saver: saver, Events: snaps.listen}
			res, err := r.Run(ctx, runtime.RunOptions{Thread: "f"})
			if err != nil {
				t.Fatal(err)
			}
			// Each superstep: a's item, then b's two (merge in node order).
			var want []string
			for c := 0; c < 12; c += 2 {
				want = append(want, fmt.Sprintf("a%d", c), fmt.Sprintf("b%d", c), fmt.Sprintf("B%d", c))
			}
			if got := logOf(t, res.Checkpoint); !slices.Equal(got, want) {
				t.Fatalf("log %q, want %q", got, want)
			}
			// A fork from step 2 (count 4) with its own fan-out appending:
			// count is an add field, so it goes on at 10.
			list, err := saver.List(ctx, "f", 0)
			if err != nil {
				t.Fatal(err)
			}
			var at string
			for _, c := range list {
				if c.Step == 2 {
					at = c.ID
				}
			}
			fork, err := r.Fork(ctx, "f", at, []runtime.Write{{Field: "count", Value: 6}}, "", runtime.Config{})
			if err != nil {
				t.Fatal(err)
			}
			if got := logOf(t, fork.Checkpoint); !slices.Equal(got, append(want[:6:6], "a10", "b10", "B10")) {
				t.Fatalf("fork's log %q", got)
			}
			snaps.check(t, saver)
		})
	}
}
