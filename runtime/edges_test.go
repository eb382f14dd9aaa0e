package runtime_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// edgeGraph routes from node r, which writes nothing, on the input field
// k, to the nodes x, y and z, which log their names.
func edgeGraph(edge string) string {
	return `
version: 1
name: edges
state:
  k:   {type: int}
  to:  {type: any}
  log: {type: list, items: string, reducer: append}
nodes:
  r: {kind: noop}
  x: {kind: set, set: {log: '"x"'}}
  y: {kind: set, set: {log: '"y"'}}
  z: {kind: set, set: {log: '"z"'}}
edges:
  - {from: START, to: r}
  - ` + edge + `
  - {from: x, to: END}
  - {from: y, to: END}
  - {from: z, to: END}
`
}

// Edges are evaluated on the merged state after a step and schedule the
// next one; the steps that ran and what they logged show where each edge
// led.
func TestEdges(t *testing.T) {
	tests := []struct {
		name   string
		edge   string
		input  map[string]any
		want   []any // log after the run
		errMsg string
	}{
		{name: "plain", edge: `{from: r, to: y}`, want: []any{"y"}},
		{name: "fan-out runs targets in one step, merged by name", edge: `{from: r, to: [z, x, y]}`, want: []any{"x", "y", "z"}},
		{name: "when true", edge: `{from: r, when: state.k > 0, to: x, else: y}`, input: map[string]any{"k": 1}, want: []any{"x"}},
		{name: "when false takes else", edge: `{from: r, when: state.k > 0, to: x, else: y}`, want: []any{"y"}},
		{name: "when false without else ends", edge: `{from: r, when: state.k > 0, to: x}`, want: nil},
		{name: "when to a list fans out", edge: `{from: r, when: state.k == 0, to: [x, z]}`, want: []any{"x", "z"}},
		{name: "routes first match wins", edge: `{from: r, routes: [{when: state.k > 5, to: x}, {when: state.k > 1, to: y}, {when: state.k > 0, to: z}], default: END}`,
			input: map[string]any{"k": 7}, want: []any{"x"}},
		{name: "routes later match", edge: `{from: r, routes: [{when: state.k > 5, to: x}, {when: state.k > 1, to: y}, {when: state.k > 0, to: z}], default: END}`,
			input: map[string]any{"k": 3}, want: []any{"y"}},
		{name: "routes default", edge: `{from: r, routes: [{when: state.k > 5, to: x}], default: [y, z]}`, want: []any{"y", "z"}},
		{name: "routes no match no default ends", edge: `{from: r, routes: [{when: state.k > 5, to: x}]}`, want: nil},
		{name: "route yields a name", edge: `{from: r, route: state.to, paths: [x, y, z]}`, input: map[string]any{"to": "z"}, want: []any{"z"}},
		{name: "route yields a list", edge: `{from: r, route: state.to, paths: [x, y, z]}`, input: map[string]any{"to": []any{"y", "x"}}, want: []any{"x", "y"}},
		{name: "route yields END", edge: `{from: r, route: state.to, paths: [x, END]}`, input: map[string]any{"to": "END"}, want: nil},
		{name: "route yields null: no route", edge: `{from: r, route: state.to, paths: [x]}`, want: nil},
		{name: "route yields an unlisted name", edge: `{from: r, route: state.to, paths: [x, y]}`, input: map[string]any{"to": "z"},
			errMsg: `route "state.to" yielded "z", which is not one of its paths (x, y)`},
		{name: "route yields a non-name", edge: `{from: r, route: state.to, paths: [x, y]}`, input: map[string]any{"to": 3},
			errMsg: "route yielded int, want a node name or a list of names"},
		{name: "route list of non-names", edge: `{from: r, route: state.to, paths: [x, y]}`, input: map[string]any{"to": []any{"x", 1}},
			errMsg: "route list holds int, want node names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newHarness(t, edgeGraph(tt.edge), nil)
			res, err := r.Run(bg, runtime.RunOptions{Thread: "t", Input: tt.input})
			if tt.errMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errMsg) {
					t.Fatalf("error %v, want one containing %q", err, tt.errMsg)
				}
				// The edge is part of the step: the step is not committed.
				mustStatus(t, res, runtime.StatusFailed)
				if res.Checkpoint.Step != 0 || !strings.Contains(err.Error(), "test.yaml:") {
					t.Fatalf("failed at step %d; error %q should point at the edge", res.Checkpoint.Step, err)
				}
				return
			}
			cp := mustDone(t)(res, err)
			if len(tt.want) == 0 {
				tt.want = []any{}
			}
			if !reflect.DeepEqual(cp.Values["log"], tt.want) {
				t.Fatalf("log %v, want %v", cp.Values["log"], tt.want)
			}
			// r ran at step 1; anything it triggered at step 2.
			wantSteps := 1
			if len(tt.want) > 0 {
				wantSteps = 2
			}
			if cp.Step != wantSteps {
				t.Fatalf("finished at step %d, want %d", cp.Step, wantSteps)
			}
		})
	}
}

// A join runs once, in the step after the last of its sources finished,
// even when its branches take different numbers of steps.
func TestJoinUnequalBranches(t *testing.T) {
	const src = `
version: 1
name: join
state:
  log: {type: list, items: string, reducer: append}
nodes:
  split: {kind: set, set: {log: '"split"'}}
  a1: {kind: set, set: {log: '"a1"'}}
  a2: {kind: set, set: {log: '"a2"'}}
  a3: {kind: set, set: {log: '"a3"'}}
  b:  {kind: set, set: {log: '"b"'}}
  c1: {kind: set, set: {log: '"c1"'}}
  c2: {kind: set, set: {log: '"c2"'}}
  merge: {kind: set, set: {log: '"merge"'}}
edges:
  - {from: START, to: split}
  - {from: split, to: [a1, b, c1]}
  - {from: a1, to: a2}
  - {from: a2, to: a3}
  - {from: c1, to: c2}
  - {from: [a3, b, c2], to: merge}
  - {from: merge, to: END}
`
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, _ := sk.open(t)
			h := newHarness(t, src, saver)
			cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
			want := []any{"split", "a1", "b", "c1", "a2", "c2", "a3", "merge"}
			if !reflect.DeepEqual(cp.Values["log"], want) {
				t.Fatalf("log %v, want %v", cp.Values["log"], want)
			}
			if got := h.rec.started()["merge"]; got != 1 {
				t.Fatalf("merge ran %d times", got)
			}
			// The join's bookkeeping, step by step.
			var waits []map[string][]string
			for _, c := range history(t, saver, "t") {
				waits = append(waits, c.Waiting)
			}
			wantWaits := []map[string][]string{
				nil,                    // input
				nil,                    // split
				{"merge": {"b"}},       // a1 b c1
				{"merge": {"b", "c2"}}, // a2 c2
				nil,                    // a3: merge fires
				nil,                    // merge
			}
			if !reflect.DeepEqual(waits, wantWaits) {
				t.Fatalf("waiting per checkpoint %v, want %v", waits, wantWaits)
			}
		})
	}
}

// The join's waiting state is part of the checkpoint: a run paused between
// the branches' ends and resumed by another process still runs the join
// once, when the last branch finishes.
func TestJoinWaitingSurvivesResume(t *testing.T) {
	const src = `
version: 1
name: join
state:
  log: {type: list, items: string, reducer: append}
nodes:
  a1: {kind: set, set: {log: '"a1"'}}
  a2: {kind: set, set: {log: '"a2"'}}
  b:  {kind: set, set: {log: '"b"'}}
  merge: {kind: set, set: {log: '"merge"'}}
edges:
  - {from: START, to: [a1, b]}
  - {from: a1, to: a2}
  - {from: [a2, b], to: merge}
  - {from: merge, to: END}
`
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			h := newHarness(t, src, saver)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{InterruptBefore: []string{"a2"}}})
			if err != nil {
				t.Fatal(err)
			}
			mustStatus(t, res, runtime.StatusInterrupted)
			_, cp := head(t, saver, "t")
			if !reflect.DeepEqual(cp.Waiting, map[string][]string{"merge": {"b"}}) || !reflect.DeepEqual(cp.Next, []string{"a2"}) {
				t.Fatalf("paused with waiting %v next %v", cp.Waiting, cp.Next)
			}
			h2 := newHarness(t, src, reopen())
			cp = mustDone(t)(h2.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
			if want := []any{"a1", "b", "a2", "merge"}; !reflect.DeepEqual(cp.Values["log"], want) {
				t.Fatalf("log %v, want %v", cp.Values["log"], want)
			}
			if n := h2.rec.started(); n["merge"] != 1 || n["b"] != 0 || n["a2"] != 1 {
				t.Fatalf("after resume ran %v", n)
			}
		})
	}
}

// A join whose sources finish in the same step fires in the next step.
func TestJoinSourcesFinishTogether(t *testing.T) {
	const src = `
version: 1
name: join
state:
  log: {type: list, items: string, reducer: append}
nodes:
  a: {kind: set, set: {log: '"a"'}}
  b: {kind: set, set: {log: '"b"'}}
  m: {kind: set, set: {log: '"m"'}}
edges:
  - {from: START, to: [a, b]}
  - {from: [a, b], to: m}
  - {from: m, to: END}
`
	h := newHarness(t, src, nil)
	cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
	if want := []any{"a", "b", "m"}; !reflect.DeepEqual(cp.Values["log"], want) || cp.Step != 2 {
		t.Fatalf("log %v at step %d", cp.Values["log"], cp.Step)
	}
}

// A node triggered by two sources in one step runs once in the next step.
func TestTargetsAreDeduplicated(t *testing.T) {
	const src = `
version: 1
name: dedupe
state:
  log: {type: list, items: string, reducer: append}
nodes:
  a: {kind: set, set: {log: '"a"'}}
  b: {kind: set, set: {log: '"b"'}}
  m: {kind: set, set: {log: '"m"'}}
edges:
  - {from: START, to: [a, b]}
  - {from: a, to: m}
  - {from: b, to: m}
  - {from: m, to: END}
`
	h := newHarness(t, src, nil)
	cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
	if want := []any{"a", "b", "m"}; !reflect.DeepEqual(cp.Values["log"], want) {
		t.Fatalf("log %v", cp.Values["log"])
	}
}

// A run ends when nothing is scheduled: every branch reached END, or a
// node has no edges out.
func TestEndWhenNothingScheduled(t *testing.T) {
	const src = `
version: 1
name: end
state:
  log: {type: list, items: string, reducer: append}
nodes:
  a: {kind: set, set: {log: '"a"'}}
  b: {kind: set, set: {log: '"b"'}}
  b2: {kind: set, set: {log: '"b2"'}}
edges:
  - {from: START, to: [a, b]}
  - {from: a, to: END}
  - {from: b, to: b2}
`
	h := newHarness(t, src, nil)
	res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
	cp := mustDone(t)(res, err)
	if want := []any{"a", "b", "b2"}; !reflect.DeepEqual(cp.Values["log"], want) || cp.Step != 2 || len(cp.Next) != 0 {
		t.Fatalf("log %v at step %d next %v", cp.Values["log"], cp.Step, cp.Next)
	}
	if len(h.rec.ofKind(runtime.EvDone)) != 1 {
		t.Fatalf("events %v", h.rec.all())
	}
}

// Without a join, a node reached by branches of unequal length runs once
// per branch, in different steps (Check warns about this shape).
func TestWithoutJoinTargetRunsPerBranch(t *testing.T) {
	const src = `
version: 1
name: nojoin
state:
  log: {type: list, items: string, reducer: append}
nodes:
  a: {kind: set, set: {log: '"a"'}}
  b: {kind: set, set: {log: '"b"'}}
  b2: {kind: set, set: {log: '"b2"'}}
  m: {kind: set, set: {log: '"m"'}}
edges:
  - {from: START, to: [a, b]}
  - {from: a, to: m}
  - {from: b, to: b2}
  - {from: b2, to: m}
  - {from: m, to: END}
`
	h := newHarness(t, src, nil)
	cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
	if want := []any{"a", "b", "b2", "m", "m"}; !reflect.DeepEqual(cp.Values["log"], want) {
		t.Fatalf("log %v, want %v", cp.Values["log"], want)
	}
}
