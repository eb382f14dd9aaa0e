package runtime_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
)

// invocationForms runs the node "work" (settings given by the test) once
// as a node of a superstep and once as the single item of a map node in
// node form. Both must behave the same: they share one invocation path.
func invocationForms(work, extraNodes, extraState string) map[string]string {
	state := "version: 1\nname: inv\nstate:\n  doc: {type: int}\n  docs: {type: list, items: int, default: [7]}\n  out: {type: list, items: string, reducer: append}\n" + extraState
	return map[string]string{
		"superstep": state + "nodes:\n  work: " + work + "\n" + extraNodes +
			"edges:\n  - {from: START, to: work}\n  - {from: work, to: END}\n",
		"map item": state + "nodes:\n  fan: {kind: map, over: state.docs, node: work, item_as: doc}\n  work: " + work + "\n" + extraNodes +
			"edges:\n  - {from: START, to: fan}\n  - {from: fan, to: END}\n",
	}
}

func TestInvokeTimeoutSameForMapItems(t *testing.T) {
	for form, src := range invocationForms("{kind: noop, timeout: 30ms}", "", "") {
		t.Run(form, func(t *testing.T) {
			h := newHarness(t, src, nil)
			h.fk.on("work", func(ctx context.Context, _ *runtime.NodeCall) (*runtime.NodeResult, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			})
			_, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
			if err == nil || !strings.Contains(err.Error(), `node "work" timed out after 30ms`) {
				t.Fatalf("error %v, want the node's timeout named", err)
			}
		})
	}
}

func TestInvokeRetryBackoffAndEventsSameForMapItems(t *testing.T) {
	for form, src := range invocationForms("{kind: noop, retry: {max_attempts: 3, initial_backoff: 40ms, max_backoff: 40ms}}", "", "") {
		t.Run(form, func(t *testing.T) {
			h := newHarness(t, src, nil)
			var mu sync.Mutex
			var times []time.Time
			h.fk.on("work", func(context.Context, *runtime.NodeCall) (*runtime.NodeResult, error) {
				mu.Lock()
				defer mu.Unlock()
				times = append(times, time.Now())
				if len(times) < 3 {
					return nil, errors.New("flaky")
				}
				return &runtime.NodeResult{Writes: []runtime.Write{w("out", "ok")}}, nil
			})
			cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
			wantValues(t, cp.Values, map[string]any{"out": []any{"ok"}})
			if len(times) != 3 {
				t.Fatalf("%d attempts, want 3", len(times))
			}
			for i := 1; i < 3; i++ {
				// Jittered backoff waits at least half the backoff.
				if d := times[i].Sub(times[i-1]); d < 20*time.Millisecond {
					t.Errorf("attempt %d came %s after the one before, want a backoff of at least 20ms", i+1, d)
				}
			}
			var retries, starts, ends int
			for _, e := range h.rec.all() {
				if e.Node != "work" {
					continue
				}
				switch e.Kind {
				case runtime.EvMessage:
					if strings.Contains(e.Message, "of 3 failed: flaky; retrying") {
						retries++
					}
				case runtime.EvNodeStart:
					starts++
				case runtime.EvNodeEnd:
					ends++
				}
			}
			if retries != 2 || starts != 1 || ends != 1 {
				t.Errorf("work emitted %d retry messages, %d node_start, %d node_end; want 2, 1, 1", retries, starts, ends)
			}
		})
	}
}

func TestInvokeUsageOfFailedAttemptsSameForMapItems(t *testing.T) {
	for form, src := range invocationForms("{kind: noop, retry: {max_attempts: 2, initial_backoff: 1ms}}", "", "") {
		t.Run(form, func(t *testing.T) {
			h := newHarness(t, src, nil)
			n := 0
			h.fk.on("work", func(context.Context, *runtime.NodeCall) (*runtime.NodeResult, error) {
				n++
				u := []runtime.Usage{{Node: "work", Model: "m", InputTokens: 10 * n, OutputTokens: 1}}
				if n == 1 {
					return &runtime.NodeResult{Usage: u}, errors.New("bad reply")
				}
				return &runtime.NodeResult{Usage: u}, nil
			})
			cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
			in := 0
			for _, u := range cp.Metadata.Usage {
				in += u.InputTokens
			}
			if in != 30 {
				t.Errorf("step usage %+v: %d input tokens, want 30 (both attempts)", cp.Metadata.Usage, in)
			}
		})
	}
}

func TestInvokeGotoSameForMapItems(t *testing.T) {
	forms := invocationForms(`{kind: noop, goto: '"b"', goto_paths: [b]}`,
		"  b: {kind: set, set: {went: '\"b\"'}}\n", "  went: {type: string}\n")
	for form, src := range forms {
		t.Run(form, func(t *testing.T) {
			h := newHarness(t, src, nil)
			cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
			wantValues(t, cp.Values, map[string]any{"went": "b"})
		})
	}
}
