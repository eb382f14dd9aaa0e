package runtime_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// A ledger chain: a child's reservation holds at every level, a limit of
// zero refuses (it is not "no limit"), a released call gives its place
// back, and settled usage is recorded at every level with the parent
// node's name in front.
func TestLedgerChain(t *testing.T) {
	root := runtime.NewLedger(nil, "", runtime.Limits{LLMCalls: 3, Tokens: -1, CostUSD: -1}, runtime.Totals{LLMCalls: 1})
	child := runtime.NewLedger(root, "team", runtime.NoLimits, runtime.Totals{})
	grand := runtime.NewLedger(child, "inner", runtime.NoLimits, runtime.Totals{})
	if got := grand.Remaining(); got.LLMCalls != 2 || got.Tokens >= 0 || got.CostUSD >= 0 {
		t.Fatalf("remaining %+v, want 2 calls and no other limit", got)
	}
	a, err := grand.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	b, err := root.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	var be *runtime.BudgetError
	if _, err := child.Reserve(); !errors.As(err, &be) || be.What != "llm_calls" || be.Limit != "3" || be.Used != "3" {
		t.Fatalf("third reservation: %v, want llm_calls (limit 3, used 3)", err)
	}
	b.Release()
	u := a.Settle(runtime.Usage{Node: "ask", Model: "m", InputTokens: 2, OutputTokens: 1})
	if u.ID == "" {
		t.Fatal("settled usage has no id")
	}
	if got := root.Usage(); len(got) != 1 || got[0].Node != "team/inner/ask" || got[0].ID != u.ID {
		t.Fatalf("root usage %+v", got)
	}
	if got := child.Usage(); len(got) != 1 || got[0].Node != "inner/ask" {
		t.Fatalf("child usage %+v", got)
	}
	if got := grand.Remaining().LLMCalls; got != 1 {
		t.Fatalf("remaining calls %d, want 1", got)
	}
	if be := root.Exhausted(); be != nil {
		t.Fatalf("exhausted with a call left: %v", be)
	}

	zero := runtime.NewLedger(nil, "", runtime.Limits{LLMCalls: 0, Tokens: -1, CostUSD: -1}, runtime.Totals{})
	if _, err := runtime.NewLedger(zero, "sub", runtime.NoLimits, runtime.Totals{}).Reserve(); !errors.As(err, &be) {
		t.Fatalf("a child of a ledger with 0 calls left reserved a call: %v", err)
	}
}

// Concurrent children reserving on one parent never pass its limit.
func TestLedgerConcurrentChildren(t *testing.T) {
	root := runtime.NewLedger(nil, "", runtime.Limits{LLMCalls: 5, Tokens: -1, CostUSD: -1}, runtime.Totals{})
	var mu sync.Mutex
	made := 0
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			child := runtime.NewLedger(root, "c", runtime.NoLimits, runtime.Totals{})
			for j := 0; j < 3; j++ {
				r, err := child.Reserve()
				if err != nil {
					return
				}
				mu.Lock()
				made++
				mu.Unlock()
				r.Settle(runtime.Usage{Node: "n"})
			}
		}()
	}
	wg.Wait()
	if made != 5 || len(root.Usage()) != 5 {
		t.Fatalf("%d calls made (%d recorded) under llm_calls: 5", made, len(root.Usage()))
	}
}
