package runtime_test

import (
	"context"
	"errors"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Model calls made by a node that then fails still count: against budgets
// right away, and in the totals of the next committed step.
func TestFailedAttemptsUsageCounts(t *testing.T) {
	src := `
version: 1
name: spend
state:
  x: {type: int}
nodes:
  ask:
    kind: noop
    retry: {max_attempts: 2, initial_backoff: 1ms}
edges:
  - {from: START, to: ask}
  - {from: ask, to: END}
`
	g, errs := spec.Parse("u.yaml", []byte(src), nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	fail := true
	var budgets []runtime.Limits
	kind := func(_ context.Context, call *runtime.NodeCall) (*runtime.NodeResult, error) {
		budgets = append(budgets, call.Ledger.Remaining())
		u := []runtime.Usage{{Node: "ask", Model: "m", InputTokens: 10, OutputTokens: 5}}
		if fail {
			return &runtime.NodeResult{Usage: u}, errors.New("model reply was unusable")
		}
		return &runtime.NodeResult{Usage: u, Writes: []runtime.Write{{Field: "x", Value: 1}}}, nil
	}
	ctx := context.Background()
	r := &runtime.Runner{Graph: g, Saver: checkpoint.NewMemory(), Kinds: map[string]runtime.NodeFunc{"noop": kind}}
	if _, err := r.Run(ctx, runtime.RunOptions{Thread: "u", Config: runtime.Config{LLMCalls: 10}}); err == nil {
		t.Fatal("want the node to fail")
	}
	// Budgets are computed when the step begins: both attempts saw 10.
	if len(budgets) != 2 || budgets[0].LLMCalls != 10 {
		t.Fatalf("budgets seen %+v", budgets)
	}
	// Resume: the step begins with the two failed calls counted.
	fail = false
	res, err := r.Resume(ctx, runtime.ResumeOptions{Thread: "u"})
	if err != nil {
		t.Fatal(err)
	}
	if got := budgets[2].LLMCalls; got != 8 {
		t.Fatalf("remaining calls after two failed attempts: %d, want 8", got)
	}
	tot := res.Checkpoint.Metadata.Totals
	if tot.LLMCalls != 3 || tot.InputTokens != 30 || tot.OutputTokens != 15 {
		t.Fatalf("totals %+v, want 3 calls, 30 in, 15 out", tot)
	}
	// A budget the failed calls already used up stops the next attempt.
	fail = true
	budgets = nil
	r2 := &runtime.Runner{Graph: g, Saver: checkpoint.NewMemory(), Kinds: map[string]runtime.NodeFunc{"noop": kind}}
	_, _ = r2.Run(ctx, runtime.RunOptions{Thread: "v", Config: runtime.Config{LLMCalls: 2}})
	res, err = r2.Resume(ctx, runtime.ResumeOptions{Thread: "v"})
	var be *runtime.BudgetError
	if !errors.As(err, &be) || be.What != "llm_calls" || res.Status != runtime.StatusBudget {
		t.Fatalf("want the llm_calls budget to stop the resume, got %v", err)
	}
	if len(budgets) != 2 {
		t.Fatalf("the node ran %d times, want 2 (none after the budget was spent)", len(budgets))
	}
}

// A fork or a replay of a step whose attempts failed starts a branch
// without their writes, but with their usage: what the failed calls spent
// counts against the branch's budgets and in its totals, so a budget
// cannot be reset by branching from the checkpoint where it stopped.
func TestBranchKeepsFailedAttemptsUsage(t *testing.T) {
	src := `
version: 1
name: spend
state:
  x: {type: int}
nodes:
  ask:
    kind: noop
    retry: {max_attempts: 2, initial_backoff: 1ms}
edges:
  - {from: START, to: ask}
  - {from: ask, to: END}
`
	g, errs := spec.Parse("u.yaml", []byte(src), nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	for _, branch := range []string{"fork", "replay"} {
		t.Run(branch, func(t *testing.T) {
			fail := true
			var budgets []runtime.Limits
			kind := func(_ context.Context, call *runtime.NodeCall) (*runtime.NodeResult, error) {
				budgets = append(budgets, call.Ledger.Remaining())
				u := []runtime.Usage{{Node: "ask", Model: "m", InputTokens: 10, OutputTokens: 5}}
				if fail {
					return &runtime.NodeResult{Usage: u}, errors.New("model reply was unusable")
				}
				return &runtime.NodeResult{Usage: u, Writes: []runtime.Write{{Field: "x", Value: 1}}}, nil
			}
			ctx := context.Background()
			r := &runtime.Runner{Graph: g, Saver: checkpoint.NewMemory(), Kinds: map[string]runtime.NodeFunc{"noop": kind}}
			res, err := r.Run(ctx, runtime.RunOptions{Thread: "u", Config: runtime.Config{LLMCalls: 10}})
			if err == nil {
				t.Fatal("want the node to fail")
			}
			failedAt := res.Checkpoint.ID
			fail = false
			if branch == "fork" {
				res, err = r.Fork(ctx, "u", failedAt, []runtime.Write{{Field: "x", Value: 0}}, "", runtime.Config{})
			} else {
				res, err = r.Replay(ctx, "u", failedAt, runtime.Config{})
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(budgets) != 3 {
				t.Fatalf("the node ran %d times, want 3", len(budgets))
			}
			if got := budgets[2].LLMCalls; got != 8 {
				t.Fatalf("remaining calls on the %s after two failed attempts: %d, want 8", branch, got)
			}
			tot := res.Checkpoint.Metadata.Totals
			if tot.LLMCalls != 3 || tot.InputTokens != 30 || tot.OutputTokens != 15 {
				t.Fatalf("totals of the %s %+v, want 3 calls, 30 in, 15 out", branch, tot)
			}
		})
	}
}
