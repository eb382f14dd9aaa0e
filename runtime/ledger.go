package runtime

import (
	"fmt"
	"strconv"
	"sync"
)

// Ledger is the budget the nodes of one superstep share. A node kind that
// spends (llm) reserves each model call before making it and reports what
// the call used, so nodes running in parallel cannot together pass a
// limit that each of them alone would respect.
type Ledger struct {
	mu     sync.Mutex
	left   Budget // at the start of the step; -1 means unlimited
	used   Totals // the thread's usage at the start of the step
	calls  int    // reserved in this step
	tokens int    // used in this step
	cost   float64
}

// NewLedger returns a ledger for a step that starts with budget left
// after the thread used used.
func NewLedger(left Budget, used Totals) *Ledger {
	return &Ledger{left: left, used: used}
}

// Reserve takes one model call from the budget, or returns a *BudgetError
// when the step has used up the calls, tokens or cost left.
func (l *Ledger) Reserve() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, u := l.left, l.used
	switch {
	case b.LLMCalls >= 0 && l.calls >= b.LLMCalls:
		return &BudgetError{What: "llm_calls", Limit: strconv.Itoa(u.LLMCalls + b.LLMCalls), Used: strconv.Itoa(u.LLMCalls + l.calls)}
	case b.Tokens >= 0 && l.tokens >= b.Tokens:
		t := u.InputTokens + u.OutputTokens
		return &BudgetError{What: "tokens", Limit: strconv.Itoa(t + b.Tokens), Used: strconv.Itoa(t + l.tokens)}
	case b.CostUSD >= 0 && l.cost >= b.CostUSD:
		return &BudgetError{What: "cost_usd", Limit: fmt.Sprintf("$%.4f", u.CostUSD+b.CostUSD), Used: fmt.Sprintf("$%.4f", u.CostUSD+l.cost)}
	}
	l.calls++
	return nil
}

// Spend records what a reserved call used.
func (l *Ledger) Spend(tokens int, cost float64) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tokens += tokens
	l.cost += cost
}

// Left returns what remains of the budget now (-1: unlimited).
func (l *Ledger) Left() Budget {
	if l == nil {
		return Budget{LLMCalls: -1, Tokens: -1, CostUSD: -1}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.left
	if b.LLMCalls >= 0 {
		b.LLMCalls = max(b.LLMCalls-l.calls, 0)
	}
	if b.Tokens >= 0 {
		b.Tokens = max(b.Tokens-l.tokens, 0)
	}
	if b.CostUSD >= 0 {
		b.CostUSD = max(b.CostUSD-l.cost, 0)
	}
	return b
}
