package builtin

import (
	"context"
	"errors"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// Nodes of one superstep share the thread's budget: with one call left,
// two parallel llm nodes make one call between them, not one each.
func TestParallelNodesShareTheBudget(t *testing.T) {
	src := `
version: 1
name: pair
state:
  a: {type: string}
  b: {type: string}
models:
  gpt: {provider: mock, fixtures: f.yaml}
nodes:
  left: {kind: llm, model: gpt, prompt: left, store: a}
  right: {kind: llm, model: gpt, prompt: right, store: b}
limits: {llm_calls: 1}
edges:
  - {from: START, to: [left, right]}
  - {from: left, to: END}
  - {from: right, to: END}
`
	fixtures := `
replies:
  left: [{text: L, usage: {in: 1, out: 1}}]
  right: [{text: R, usage: {in: 1, out: 1}}]
`
	g := mustGraph(t, src, map[string]string{"f.yaml": fixtures})
	r, _ := newRunner(t, g, Options{})
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t"})
	var be *runtime.BudgetError
	if !errors.As(err, &be) || be.What != "llm_calls" {
		t.Fatalf("want the llm_calls budget to stop the step, got %v", err)
	}
	if res.Status != runtime.StatusBudget {
		t.Fatalf("status %s", res.Status)
	}
	// Exactly one of the two nodes got its call; its usage is kept with
	// the thread (pending) and counts against the budget.
	cp, err := r.Saver.Get(context.Background(), "t", "")
	if err != nil {
		t.Fatal(err)
	}
	calls, failures := 0, 0
	for _, p := range cp.Pending {
		switch p.Kind {
		case runtime.PendingWrites:
			calls += len(p.Result.Usage)
		case runtime.PendingError:
			failures++
		}
	}
	if calls != 1 || failures != 1 {
		t.Fatalf("pending: %d calls made, %d nodes refused; want 1 and 1 (%+v)", calls, failures, cp.Pending)
	}
}
