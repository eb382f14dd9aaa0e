package runtime_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

const loopGraph = `
version: 1
name: loop
state:
  count: {type: int}
  target: {type: int, default: 3}
  log: {type: list, items: string, reducer: append}
nodes:
  inc:
    kind: set
    set:
      count: state.count + 1
      log: '"c" + string(state.count + 1)'
edges:
  - {from: START, to: inc}
  - {from: inc, when: state.count < state.target, to: inc, else: END}
`

func TestLoopRunsToEnd(t *testing.T) {
	r := newRunner(t, loopGraph)
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != runtime.StatusDone {
		t.Fatalf("status %s", res.Status)
	}
	v := res.Checkpoint.Values
	if v["count"] != 3 || !reflect.DeepEqual(v["log"], []any{"c1", "c2", "c3"}) {
		t.Fatalf("values %v", v)
	}
	if res.Checkpoint.Step != 3 {
		t.Fatalf("step %d, want 3", res.Checkpoint.Step)
	}
}

func TestStepLimitExactlyN(t *testing.T) {
	r := newRunner(t, loopGraph)
	// Three supersteps under a limit of 3 succeed.
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "ok", Config: runtime.Config{StepLimit: 3}})
	if err != nil || res.Status != runtime.StatusDone {
		t.Fatalf("limit 3: %v %v", res, err)
	}
	res, err = r.Run(context.Background(), runtime.RunOptions{Thread: "short", Config: runtime.Config{StepLimit: 2}})
	var sl *runtime.StepLimitError
	if !errors.As(err, &sl) || sl.Limit != 2 || !strings.Contains(err.Error(), "inc") {
		t.Fatalf("limit 2: want StepLimitError naming inc, got %v", err)
	}
	if res.Status != runtime.StatusBudget || res.Checkpoint.Values["count"] != 2 {
		t.Fatalf("limit 2: %s %v", res.Status, res.Checkpoint.Values)
	}
	// Resume with a higher limit finishes.
	res, err = r.Resume(context.Background(), runtime.ResumeOptions{Thread: "short", Config: runtime.Config{StepLimit: 10}})
	if err != nil || res.Checkpoint.Values["count"] != 3 {
		t.Fatalf("resume: %v %v", res, err)
	}
}
