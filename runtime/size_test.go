package runtime_test

import (
	"encoding/json"
	"errors"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// growGraph doubles the string s every step until it is 4 MiB long: with
// the default limits it would end; with a state size limit it stops.
const growGraph = `
version: 1
name: grow
state:
  s: {type: string, default: "12345678"}
  n: {type: int}
nodes:
  double: {kind: set, set: {s: state.s + state.s, n: state.n + 1}}
edges:
  - {from: START, to: double}
  - {from: double, when: len(state.s) < 4194304, to: double}
limits: {steps: 1000, state_size: 64KiB}
`

// jsonLen is the size of v encoded as JSON.
func jsonLen(t *testing.T, v any) int64 {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(b))
}

// A state that grows past the state size limit stops the run before the
// checkpoint that would hold it: a StateSizeError names the limit, the
// step, the size and the fields that grew; the thread stays at its last
// good checkpoint (loadable, in another process too) with status
// budget-exceeded; memory stays bounded by the limit; a resume with a
// higher limit goes on.
func TestStateSizeLimit(t *testing.T) {
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			h := newHarness(t, growGraph, saver)
			var before, after goruntime.MemStats
			goruntime.ReadMemStats(&before)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
			goruntime.ReadMemStats(&after)
			se := wantErrAs[*runtime.StateSizeError](t, err)
			mustStatus(t, res, runtime.StatusBudget)
			// 8 bytes doubled 13 times is 64 KiB: step 13 is refused.
			refused := map[string]any{"s": strings.Repeat("12345678", 1<<13), "n": 13}
			if se.Limit != 64<<10 || se.Step != 13 || se.Size != jsonLen(t, refused) {
				t.Fatalf("error %+v, want limit 65536 at step 13, size %d", se, jsonLen(t, refused))
			}
			if len(se.Fields) != 2 || se.Fields[0] != (runtime.FieldSize{Field: "s", Size: 65538}) || se.Fields[1] != (runtime.FieldSize{Field: "n", Size: 2}) {
				t.Fatalf("fields %+v, want s then n", se.Fields)
			}
			const msg = "state size limit of 64 KiB exceeded at step 13: the state would be 64.0 KiB (changed: s 64.0 KiB, n 2 B); the state is saved"
			if err.Error() != msg {
				t.Fatalf("error %q, want %q", err, msg)
			}
			// Bounded: the run never went past the step it refused. Going
			// on to the 4 MiB the graph aims at would build strings of
			// 128 KiB … 4 MiB, 8 MiB in all before any copy; the refused
			// run allocates about 1 MiB, 2–3.5 MiB under the race detector
			// (which drops pooled encode buffers at random).
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
				t.Errorf("the run allocated %d bytes, want less than 4 MiB (the strings the graph aims at alone are 8 MiB)", alloc)
			}

			h = newHarness(t, growGraph, reopen())
			th, cp := head(t, h.Saver, "t")
			if th.Status != runtime.StatusBudget || th.Error != msg {
				t.Fatalf("thread %s %q", th.Status, th.Error)
			}
			if cp.Step != 12 || len(cp.Values["s"].(string)) != 32<<10 || cp.Values["n"] != 12 || !equalStrings(cp.Next, "double") {
				t.Fatalf("head at step %d n %v len(s) %d next %v", cp.Step, cp.Values["n"], len(cp.Values["s"].(string)), cp.Next)
			}
			// The stored limit holds: resuming as is stops at once.
			_, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t"})
			if se := wantErrAs[*runtime.StateSizeError](t, err); se.Step != 13 {
				t.Fatalf("resume stopped at step %d", se.Step)
			}
			// A higher limit is kept with the thread and lets it grow on.
			res, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t", Config: runtime.Config{StateSize: 1 << 20}})
			if se := wantErrAs[*runtime.StateSizeError](t, err); se.Step != 17 || se.Limit != 1<<20 {
				t.Fatalf("error %+v, want limit 1 MiB at step 17", se)
			}
			if th, cp := head(t, h.Saver, "t"); cp.Step != 16 || th.Config.StateSize != 1<<20 {
				t.Fatalf("head at step %d, stored limit %d", cp.Step, th.Config.StateSize)
			}
			mustStatus(t, res, runtime.StatusBudget)
		})
	}
}

func equalStrings(got []string, want ...string) bool {
	return strings.Join(got, "\x00") == strings.Join(want, "\x00")
}

// The state size is measured from each step's delta: an append adds its
// items' size, and merge and messages deltas (which may replace what they
// add) are measured exactly when their estimate passes the limit. The
// refused size is always the state's exact size as JSON.
func TestStateSizeIsExact(t *testing.T) {
	const src = `
version: 1
name: sizes
state:
  log:  {type: list, items: string, reducer: append}
  msgs: {type: messages}
  meta: {type: object, reducer: merge}
  n:    {type: int}
nodes:
  step:
    kind: set
    set:
      n: state.n + 1
      meta: '{"last": state.n, "tag": "x"}'
      msgs: '{"id": "m1", "role": "assistant", "content": "always the same message " + string(state.n % 10)}'
      log: '"entry " + string(state.n)'
edges:
  - {from: START, to: step}
  - {from: step, when: state.n < 400, to: step}
limits: {steps: 1000, state_size: 4KiB}
`
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, _ := sk.open(t)
			h := newHarness(t, src, saver)
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
			se := wantErrAs[*runtime.StateSizeError](t, err)
			mustStatus(t, res, runtime.StatusBudget)
			// The last good state fits; one more entry does not.
			_, cp := head(t, h.Saver, "t")
			if got := jsonLen(t, cp.Values); got > se.Limit {
				t.Fatalf("last good state is %d bytes, over the limit %d", got, se.Limit)
			}
			n := cp.Values["n"].(int)
			log := append(append([]any{}, cp.Values["log"].([]any)...), "entry "+itoa(n))
			msg := map[string]any{"id": "m1", "role": "assistant", "content": "always the same message " + itoa(n%10)}
			refused := map[string]any{"n": n + 1, "log": log, "msgs": []any{msg}, "meta": map[string]any{"last": n, "tag": "x"}}
			if want := jsonLen(t, refused); se.Size != want || se.Step != cp.Step+1 {
				t.Fatalf("refused step %d size %d, want step %d size %d", se.Step, se.Size, cp.Step+1, want)
			}
			if se.Fields[0].Field != "log" {
				t.Fatalf("largest changed field %+v, want log", se.Fields)
			}
		})
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// Input and updates that would make the state too large are refused with
// a StateSizeError and write nothing.
func TestStateSizeRefusesInputAndUpdates(t *testing.T) {
	h := newHarness(t, abcGraph("limits: {state_size: 1KiB}"), nil)
	big := strings.Repeat("x", 2000)
	_, err := h.Run(bg, runtime.RunOptions{Thread: "new", Input: map[string]any{"log": []any{big}}})
	if se := wantErrAs[*runtime.StateSizeError](t, err); se.Step != 0 || se.Fields[0].Field != "log" {
		t.Fatalf("input refused as %+v", se)
	}
	if _, err := h.Saver.Thread(bg, "new"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("refused input left a thread: %v", err)
	}
	res, err := h.Run(bg, runtime.RunOptions{Thread: "t", Config: runtime.Config{InterruptBefore: []string{"b"}}})
	wantPaused(t, res, err, runtime.Interrupt{Node: "b", When: runtime.InterruptBefore})
	n := len(history(t, h.Saver, "t"))
	_, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("log", big)}})
	wantErrAs[*runtime.StateSizeError](t, err)
	_, err = h.Fork(bg, "t", res.Checkpoint.ID, []runtime.Write{w("log", big)}, "", runtime.Config{})
	wantErrAs[*runtime.StateSizeError](t, err)
	if th, _ := head(t, h.Saver, "t"); len(history(t, h.Saver, "t")) != n || th.Status != runtime.StatusInterrupted {
		t.Fatalf("refused updates changed the thread: %d checkpoints (was %d), status %s", len(history(t, h.Saver, "t")), n, th.Status)
	}
	mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t"}))
}

// The model usage of a step refused for its state size counts: the resume
// that runs it again adds it to the thread's totals.
func TestStateSizeStopKeepsUsage(t *testing.T) {
	src := strings.Replace(strings.Replace(growGraph, "  - {from: START, to: double}", "  - {from: START, to: [double, spend]}", 1),
		"to: double}", "to: [double, spend]}", 1)
	src = strings.Replace(src, "nodes:\n", "nodes:\n  spend: {kind: noop}\n", 1)
	h := newHarness(t, src, nil)
	spender(h)
	_, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
	wantErrAs[*runtime.StateSizeError](t, err)
	_, cp := head(t, h.Saver, "t")
	if cp.Step != 12 || cp.Metadata.Totals.LLMCalls != 12 || h.fk.count("spend") != 13 {
		t.Fatalf("head at step %d with %d calls; spend ran %d times", cp.Step, cp.Metadata.Totals.LLMCalls, h.fk.count("spend"))
	}
	_, err = h.Resume(bg, runtime.ResumeOptions{Thread: "t", Config: runtime.Config{StateSize: 1 << 20}})
	wantErrAs[*runtime.StateSizeError](t, err)
	// Steps 13 to 16 committed 4 calls, and step 13 also the refused one.
	if _, cp = head(t, h.Saver, "t"); cp.Step != 16 || cp.Metadata.Totals.LLMCalls != 17 {
		t.Fatalf("head at step %d with %d calls, want step 16 with 17", cp.Step, cp.Metadata.Totals.LLMCalls)
	}
}

// Child runs (subgraphs, map items) run under the parent's state size
// limit, whatever their own graph says: a child whose state outgrows it
// stops the parent like a limit (budget-exceeded), and a resume with a
// higher limit resumes the child.
func TestStateSizeLimitCoversChildRuns(t *testing.T) {
	g := writeGraphs(t, map[string]string{
		"main.yaml": `
version: 1
name: parent
state:
  done: {type: bool}
nodes:
  grow: {kind: subgraph, graph: child.yaml}
edges:
  - {from: START, to: grow}
  - {from: grow, to: END}
limits: {state_size: 64KiB}
`,
		"child.yaml": `
version: 1
name: child
state:
  t: {type: string, default: "12345678"}
  done: {type: bool}
nodes:
  double: {kind: set, set: {t: state.t + state.t}}
  finish: {kind: set, set: {done: "true"}}
edges:
  - {from: START, to: double}
  - {from: double, when: len(state.t) < 131072, to: double, else: finish}
  - {from: finish, to: END}
`,
	})
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, _ := sk.open(t)
			r := &runtime.Runner{Graph: g, Saver: saver}
			res, err := r.Run(bg, runtime.RunOptions{Thread: "t"})
			se := wantErrAs[*runtime.StateSizeError](t, err)
			mustStatus(t, res, runtime.StatusBudget)
			if se.Limit != 64<<10 {
				t.Fatalf("child stopped at limit %d, want the parent's 64 KiB", se.Limit)
			}
			if th, cp := head(t, saver, "t"); th.Status != runtime.StatusBudget || cp.Step != 0 {
				t.Fatalf("parent %s at step %d", th.Status, cp.Step)
			}
			cp := mustDone(t)(r.Resume(bg, runtime.ResumeOptions{Thread: "t", Config: runtime.Config{StateSize: 1 << 20}}))
			if cp.Values["done"] != true {
				t.Fatalf("child did not finish: %v", cp.Values)
			}
		})
	}
}
