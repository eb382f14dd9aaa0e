package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
)

// Limits are budgets in absolute terms: how many calls, tokens and dollars
// a run's totals may reach. A negative field means no limit; zero is a
// limit of zero. [NoLimits] has none.
type Limits struct {
	LLMCalls int
	Tokens   int
	CostUSD  float64
}

// NoLimits is a [Limits] without any limit.
var NoLimits = Limits{LLMCalls: -1, Tokens: -1, CostUSD: -1}

// Ledger is the budget of one superstep of one run. Ledgers form a chain
// like context deadlines: the ledger of a child run's step (a subgraph or
// a map item) has the ledger of the parent step that runs it as its
// parent, to any depth. A node kind that spends (llm) reserves each model
// call before making it; the reservation holds at every level of the
// chain, so parallel nodes and concurrent children cannot together pass a
// limit of any ancestor. The call is then settled with its usage, which
// every level records, or released when it was not made.
//
// A Ledger is safe for concurrent use. The zero value is not usable; a nil
// *Ledger tracks nothing and refuses nothing.
type Ledger struct {
	mu     *sync.Mutex // shared by the whole chain
	ownMu  sync.Mutex  // mu of the root of a chain
	parent *Ledger
	prefix string // prepended to usage node names on the way to parent
	limits Limits
	base   Totals // the run's usage before this step
	// In this step, at this level and below:
	reserved int     // calls reserved and not yet settled
	used     Totals  // settled calls
	usage    []Usage // settled calls, node names relative to this run
}

// NewLedger returns the ledger of a step of a run that has used base and
// may use up to limits. A non-nil parent is the ledger of the parent step
// whose node runs this child run; prefix (the parent node's name) is put
// before the node names of the usage it records there.
func NewLedger(parent *Ledger, prefix string, limits Limits, base Totals) *Ledger {
	l := &Ledger{parent: parent, prefix: prefix, limits: limits, base: base}
	if parent != nil {
		l.mu = parent.mu
	} else {
		l.mu = &l.ownMu
	}
	return l
}

// Reservation is one model call reserved on a ledger chain. Settle or
// Release it exactly once.
type Reservation struct {
	l    *Ledger
	done bool
}

// Reserve takes one model call from every level of the chain, or returns
// a *BudgetError naming the first level's limit the call would pass: its
// calls, or the tokens or cost it has already used up (a call's tokens are
// known only once it is made, so the calls in flight when such a limit is
// reached may pass it).
func (l *Ledger) Reserve() (*Reservation, error) {
	if l == nil {
		return &Reservation{}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for x := l; x != nil; x = x.parent {
		if be := x.check(1); be != nil {
			return nil, be
		}
	}
	for x := l; x != nil; x = x.parent {
		x.reserved++
	}
	return &Reservation{l: l}, nil
}

// check reports the limit of this level that n more calls would pass.
// Callers hold mu.
func (l *Ledger) check(n int) *BudgetError {
	b, u := l.limits, l.base.add(l.used)
	switch {
	case b.LLMCalls >= 0 && u.LLMCalls+l.reserved+n > b.LLMCalls:
		return &BudgetError{What: "llm_calls", Limit: strconv.Itoa(b.LLMCalls), Used: strconv.Itoa(u.LLMCalls + l.reserved)}
	case b.Tokens >= 0 && u.InputTokens+u.OutputTokens >= b.Tokens:
		return &BudgetError{What: "tokens", Limit: strconv.Itoa(b.Tokens), Used: strconv.Itoa(u.InputTokens + u.OutputTokens)}
	case b.CostUSD >= 0 && u.CostUSD >= b.CostUSD:
		return &BudgetError{What: "cost_usd", Limit: fmt.Sprintf("$%.4f", b.CostUSD), Used: fmt.Sprintf("$%.4f", u.CostUSD)}
	}
	return nil
}

// Exhausted returns a *BudgetError when some level of the chain has no
// call left (or has used up its tokens or cost), counting the calls in
// flight; nil otherwise.
func (l *Ledger) Exhausted() *BudgetError {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for x := l; x != nil; x = x.parent {
		if be := x.check(1); be != nil {
			return be
		}
	}
	return nil
}

// Passed returns a *BudgetError when the run's settled usage is over one
// of this level's limits (reaching a limit is not passing it); nil
// otherwise.
func (l *Ledger) Passed() *BudgetError {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, u := l.limits, l.base.add(l.used)
	switch {
	case b.LLMCalls >= 0 && u.LLMCalls > b.LLMCalls:
		return &BudgetError{What: "llm_calls", Limit: strconv.Itoa(b.LLMCalls), Used: strconv.Itoa(u.LLMCalls)}
	case b.Tokens >= 0 && u.InputTokens+u.OutputTokens > b.Tokens:
		return &BudgetError{What: "tokens", Limit: strconv.Itoa(b.Tokens), Used: strconv.Itoa(u.InputTokens + u.OutputTokens)}
	case b.CostUSD >= 0 && u.CostUSD > b.CostUSD:
		return &BudgetError{What: "cost_usd", Limit: fmt.Sprintf("$%.4f", b.CostUSD), Used: fmt.Sprintf("$%.4f", u.CostUSD)}
	}
	return nil
}

// Settle records the usage of the reserved call, which was made, at every
// level of the chain, and returns it with a fresh ID that identifies the
// call wherever it is recorded (so a call counted both by a failed step
// and by the child run that made it is counted once).
func (r *Reservation) Settle(u Usage) Usage {
	if u.ID == "" {
		u.ID = newUsageID()
	}
	if r == nil || r.done || r.l == nil {
		return u
	}
	r.done = true
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	x := u
	for lv := l; lv != nil; lv = lv.parent {
		lv.reserved--
		lv.used = lv.used.Add([]Usage{x})
		lv.usage = append(lv.usage, x)
		if lv.prefix != "" {
			x.Node = lv.prefix + ChildSep + x.Node
		}
	}
	return u
}

// Release gives back a reserved call that was not made, or that the
// server did not answer with a 2xx status (so it was not billed).
func (r *Reservation) Release() {
	if r == nil || r.done || r.l == nil {
		return
	}
	r.done = true
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	for lv := r.l; lv != nil; lv = lv.parent {
		lv.reserved--
	}
}

// Remaining returns what is left of the chain's limits: the least any
// level has left (negative fields: no limit at any level).
func (l *Ledger) Remaining() Limits {
	out := NoLimits
	if l == nil {
		return out
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for x := l; x != nil; x = x.parent {
		b, u := x.limits, x.base.add(x.used)
		if b.LLMCalls >= 0 {
			left := max(b.LLMCalls-u.LLMCalls-x.reserved, 0)
			if out.LLMCalls < 0 || left < out.LLMCalls {
				out.LLMCalls = left
			}
		}
		if b.Tokens >= 0 {
			left := max(b.Tokens-u.InputTokens-u.OutputTokens, 0)
			if out.Tokens < 0 || left < out.Tokens {
				out.Tokens = left
			}
		}
		if b.CostUSD >= 0 {
			left := max(b.CostUSD-u.CostUSD, 0)
			if out.CostUSD < 0 || left < out.CostUSD {
				out.CostUSD = left
			}
		}
	}
	return out
}

// Usage returns the calls settled on this ledger in its step, at this
// level and below (node names relative to this ledger's run).
func (l *Ledger) Usage() []Usage {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Usage(nil), l.usage...)
}

func newUsageID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// mergeUsage concatenates usage lists, keeping one entry per call ID
// (entries without an ID are all kept).
func mergeUsage(lists ...[]Usage) []Usage {
	var out []Usage
	seen := map[string]bool{}
	for _, l := range lists {
		for _, u := range l {
			if u.ID != "" {
				if seen[u.ID] {
					continue
				}
				seen[u.ID] = true
			}
			out = append(out, u)
		}
	}
	return out
}

// parentLedgerKey carries the ledger of the parent step into a child run.
type parentLedgerKey struct{}

type parentLedger struct {
	l      *Ledger
	prefix string
}

// withParentLedger returns ctx carrying l as the parent ledger of the
// child run it starts, which records its usage under prefix there.
func withParentLedger(ctx context.Context, l *Ledger, prefix string) context.Context {
	return context.WithValue(ctx, parentLedgerKey{}, parentLedger{l: l, prefix: prefix})
}

func parentLedgerOf(ctx context.Context) (*Ledger, string) {
	p, _ := ctx.Value(parentLedgerKey{}).(parentLedger)
	return p.l, p.prefix
}

func (t Totals) add(u Totals) Totals {
	t.LLMCalls += u.LLMCalls
	t.InputTokens += u.InputTokens
	t.OutputTokens += u.OutputTokens
	t.CostUSD += u.CostUSD
	return t
}
