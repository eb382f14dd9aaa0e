package runtime

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// stepLimit is the effective superstep limit.
func (rn *run) stepLimit() int {
	if rn.cfg.StepLimit > 0 {
		return rn.cfg.StepLimit
	}
	return rn.r.Graph.StepLimit()
}

// limits returns the effective budgets: the run's, else the graph's;
// zero means unlimited.
func (rn *run) limits() (calls, tokens int, cost float64) {
	l := rn.r.Graph.Limits
	calls, tokens, cost = l.LLMCalls, l.Tokens, l.CostUSD
	if rn.cfg.LLMCalls > 0 {
		calls = rn.cfg.LLMCalls
	}
	if rn.cfg.Tokens > 0 {
		tokens = rn.cfg.Tokens
	}
	if rn.cfg.CostUSD > 0 {
		cost = rn.cfg.CostUSD
	}
	return calls, tokens, cost
}

// runLimits returns the effective budgets as [Limits]: a limit that is
// set neither for the run nor by the graph is no limit.
func (rn *run) runLimits() Limits {
	calls, tokens, cost := rn.limits()
	l := NoLimits
	if calls > 0 {
		l.LLMCalls = calls
	}
	if tokens > 0 {
		l.Tokens = tokens
	}
	if cost > 0 {
		l.CostUSD = cost
	}
	return l
}

func (rn *run) timeout() time.Duration {
	if rn.cfg.Timeout > 0 {
		return time.Duration(rn.cfg.Timeout)
	}
	return rn.r.Graph.Limits.Timeout
}

type taskOut struct {
	node string
	res  *NodeResult
	err  error
}

// loop runs supersteps from cp until the graph ends, pauses or fails.
// expectHead is the thread head the first commit must replace.
func (rn *run) loop(ctx context.Context, cp *Checkpoint, expectHead string) (*Result, error) {
	r := rn.r
	th := rn.thread
	if d := rn.timeout(); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, d, &BudgetError{What: "timeout", Limit: d.String(), Used: d.String()})
		defer cancel()
	}
	// A child run (subgraph, map item) reserves its calls on the ledger of
	// the parent step that runs it too.
	parentLedger, prefix := parentLedgerOf(ctx)
	for {
		// Usage of attempts at this step that did not commit counts like
		// committed usage.
		rn.spent = nil
		for _, p := range cp.Pending {
			if p.Kind == PendingUsage && p.Result != nil {
				rn.spent = append(rn.spent, p.Result.Usage...)
			}
		}
		rn.used = cp.Metadata.Totals.Add(rn.spent)
		rn.ledger = NewLedger(parentLedger, prefix, rn.runLimits(), rn.used)
		if len(cp.Next) == 0 {
			// A last step that passed a budget (tokens or cost of the calls
			// in flight) ends budget-exceeded, not done.
			if be := rn.ledger.Passed(); be != nil {
				return rn.stop(ctx, cp, StatusBudget, be, nil)
			}
			return r.finish(ctx, rn, cp)
		}
		if n := cp.Step - cp.TurnStep; n >= rn.stepLimit() {
			err := &StepLimitError{Limit: rn.stepLimit(), Step: cp.Step, Nodes: cp.Next}
			return rn.stop(ctx, cp, StatusBudget, err, nil)
		}
		if be := rn.ledger.Exhausted(); be != nil {
			return rn.stop(ctx, cp, StatusBudget, be, nil)
		}
		if err := context.Cause(ctx); err != nil {
			return rn.cancelled(ctx, cp, err, nil)
		}
		var pending map[string]*NodeResult
		rn.partial = nil
		var keep []PendingWrite
		for _, p := range cp.Pending {
			if p.Kind == PendingWrites && p.Result != nil {
				if pending == nil {
					pending = map[string]*NodeResult{}
				}
				pending[p.Node] = p.Result
				keep = append(keep, p)
			}
			if p.Kind == PendingPartial && p.Result != nil {
				if rn.partial == nil {
					rn.partial = map[string][]any{}
				}
				rn.partial[p.Node] = p.Result.Records
			}
		}
		// Static breakpoints before nodes. A pause lists every breakpoint
		// of the step, including those this resume already answered, so
		// the resume after it runs the step without pausing again.
		var stops []PendingWrite
		stop := false
		for _, n := range cp.Next {
			if rn.before[n] && pending[n] == nil {
				stops = append(stops, PendingWrite{Node: n, Kind: PendingInterrupt, Interrupt: &Interrupt{Node: n, When: InterruptBefore}})
				stop = stop || !rn.resumeBefore[n]
			}
		}
		if stop {
			return rn.pause(ctx, cp, append(keep, stops...))
		}
		if len(rn.resumeBefore) > 0 {
			rn.resumeBefore = nil
		}

		step := cp.Step + 1
		rn.emit(Event{Kind: EvStepStart, Thread: th.ID, Step: step, Next: cp.Next})
		sctx := ctx
		if r.Observer != nil {
			sctx = r.Observer.StartStep(ctx, RunInfo{Op: "step", Graph: r.Graph.Name, Thread: th.ID, Child: r.child}, step, cp.Next)
			rn.stepCtx = sctx
		}
		outs := rn.execute(sctx, cp, step, pending)

		var failed []taskOut
		var paused []PendingWrite
		for _, o := range outs {
			switch {
			case o.err != nil:
				failed = append(failed, o)
			case o.res.Interrupt != nil:
				paused = append(paused, PendingWrite{Node: o.node, Kind: PendingInterrupt, Interrupt: o.res.Interrupt})
			}
		}
		if len(rn.resumeNodes) > 0 {
			rn.resumeNodes = nil
		}
		var done []PendingWrite
		if len(failed) > 0 || len(paused) > 0 {
			for _, o := range outs {
				switch {
				case o.err != nil:
					if o.res != nil && len(o.res.Records) > 0 {
						// Finished parts of a failed node (map items) are kept.
						done = append(done, PendingWrite{Node: o.node, Kind: PendingPartial, Result: o.res})
					}
				case o.res.Interrupt != nil:
				default:
					if pending[o.node] == nil {
						done = append(done, PendingWrite{Node: o.node, Kind: PendingWrites, Result: o.res})
					}
				}
			}
		}
		if len(failed) > 0 {
			writes := append(keep, done...)
			var lost []Usage
			for _, f := range failed {
				writes = append(writes, PendingWrite{Node: f.node, Kind: PendingError, Error: f.err.Error()})
				if f.res != nil {
					lost = append(lost, f.res.Usage...)
				}
			}
			writes = append(writes, PendingWrite{Kind: PendingUsage, Result: &NodeResult{Usage: lost}})
			if cause := context.Cause(ctx); cause != nil {
				return rn.cancelled(ctx, cp, cause, writes)
			}
			f := failed[0]
			nerr := &NodeError{Node: f.node, Pos: r.Graph.Nodes[f.node].Pos, Step: step, Err: f.err}
			var be *BudgetError
			var se *StateSizeError
			if errors.As(f.err, &be) || errors.As(f.err, &se) {
				return rn.stop(ctx, cp, StatusBudget, nerr, writes)
			}
			return rn.stop(ctx, cp, StatusFailed, nerr, writes)
		}
		if len(paused) > 0 {
			return rn.pause(ctx, cp, append(append(keep, done...), paused...))
		}

		// Merge in node-name order.
		nws := make([]NodeWrites, 0, len(outs))
		var stepUsage []Usage
		var records map[string][]any
		for _, o := range outs {
			nws = append(nws, NodeWrites{Node: o.node, Writes: o.res.Writes})
			stepUsage = append(stepUsage, o.res.Usage...)
			if len(o.res.Records) > 0 {
				if records == nil {
					records = map[string][]any{}
				}
				records[o.node] = o.res.Records
			}
		}
		// Every call made in the step counts, also those of failed
		// attempts inside a node that then succeeded (map items).
		stepUsage = mergeUsage(stepUsage, rn.ledger.Usage())
		usage := mergeUsage(rn.spent, stepUsage)
		// A step that fails now keeps no node results, so the usage of all
		// of them is kept with the failure.
		lostAll := func() []PendingWrite {
			return []PendingWrite{{Kind: PendingUsage, Result: &NodeResult{Usage: stepUsage}}}
		}
		values, delta, who, err := merge(r.Graph, r.msgRun, step, cp.Values, nws, rn.own)
		if err != nil {
			return rn.stop(ctx, cp, StatusFailed, rn.mergeError(step, err), lostAll())
		}
		finished := make([]string, 0, len(outs))
		gotos := map[string][]string{}
		var parentGoto []string
		for _, o := range outs {
			finished = append(finished, o.node)
			for _, t := range o.res.Goto {
				if p, ok := strings.CutPrefix(t, "^"); ok {
					parentGoto = append(parentGoto, p)
				} else {
					gotos[o.node] = append(gotos[o.node], t)
				}
			}
		}
		next, waiting, branches, err := r.route(values, finished, gotos, cp.Waiting)
		if err != nil {
			return rn.stop(ctx, cp, StatusFailed, err, lostAll())
		}
		for _, b := range branches {
			rn.emit(Event{Kind: EvRoute, Thread: th.ID, Step: step, Message: b})
		}
		if len(parentGoto) > 0 {
			// A route to the parent graph ends this (sub)graph's run.
			next, waiting = nil, nil
		}
		ncp := &Checkpoint{
			Thread: th.ID, ParentID: cp.ID, Step: step, TurnStep: cp.TurnStep,
			Values: values, Delta: delta, Next: next, Waiting: waiting,
			Metadata: r.meta(SourceLoop, who, usage, cp.Metadata.Totals),
		}
		if len(records) > 0 {
			ncp.Metadata.Records = records
		}
		ncp.ID = r.ids().Next(r.now(), expectHead)
		// A run that ends with this checkpoint (nothing next, no budget
		// passed, or a route to the parent graph) commits it with the
		// thread already done: the status mark finish would write next
		// (done, no pending writes, at this head) rides in the commit's
		// transaction instead of one of its own.
		ends := len(parentGoto) > 0 ||
			len(next) == 0 && NewLedger(nil, "", rn.runLimits(), ncp.Metadata.Totals).Passed() == nil
		t := *th
		t.Status, t.Error = StatusRunning, ""
		if ends {
			t.Status = StatusDone
		}
		if err := rn.commitStep(ctx, &Commit{Checkpoint: ncp, ExpectHead: expectHead, Thread: t}, cp); err != nil {
			var ie *inputError
			if errors.As(err, &ie) {
				rn.endStep(nil, ie.err)
				return nil, err
			}
			if errors.Is(err, ErrConflict) {
				rn.endStep(nil, err)
				return nil, err
			}
			var se *StateSizeError
			if errors.As(err, &se) {
				// The step's model usage still counts.
				var keep []PendingWrite
				if len(usage) > 0 {
					keep = []PendingWrite{{Kind: PendingUsage, Result: &NodeResult{Usage: usage}}}
				}
				return rn.stop(ctx, cp, StatusBudget, err, keep)
			}
			// The step is lost but the thread stays at its last good
			// checkpoint, marked failed with the reason.
			return rn.stop(ctx, cp, StatusFailed, &StepError{Step: step, Err: err}, lostAll())
		}
		// The step's usage is committed: nothing is pending any more.
		rn.spent, rn.ledger = nil, nil
		rn.endStep(ncp, nil)
		th.Head, th.Status, th.Error = ncp.ID, t.Status, ""
		rn.emit(Event{Kind: EvCheckpoint, Thread: th.ID, Step: step, Checkpoint: ncp.ID, Values: values, Next: next})
		cp, expectHead = ncp, ncp.ID
		if ends {
			res := r.done(rn, cp)
			if len(parentGoto) > 0 {
				sort.Strings(parentGoto)
				res.Goto = parentGoto
			}
			return res, nil
		}

		// Static breakpoints after nodes.
		var afters []PendingWrite
		for _, n := range finished {
			if rn.after[n] && len(cp.Next) > 0 {
				afters = append(afters, PendingWrite{Node: n, Kind: PendingInterrupt, Interrupt: &Interrupt{Node: n, When: InterruptAfter}})
			}
		}
		if len(afters) > 0 {
			return rn.pause(ctx, cp, afters)
		}
	}
}

func (rn *run) mergeError(step int, err error) error {
	var we *WriteError
	if errors.As(err, &we) && we.Node != "" {
		if n := rn.r.Graph.Nodes[we.Node]; n != nil {
			return &NodeError{Node: we.Node, Pos: n.Pos, Step: step, Err: err}
		}
	}
	if errors.As(err, new(*ConflictError)) {
		return err // it names its step
	}
	return &StepError{Step: step, Err: err}
}

// withUsage returns writes with one PendingUsage entry that holds every
// call of the step not committed: the usage entries of writes, the
// earlier attempts' (rn.spent) and the calls settled on the step's ledger,
// each call once.
func (rn *run) withUsage(writes []PendingWrite) []PendingWrite {
	lists := [][]Usage{rn.spent}
	out := make([]PendingWrite, 0, len(writes)+1)
	for _, w := range writes {
		if w.Kind == PendingUsage {
			if w.Result != nil {
				lists = append(lists, w.Result.Usage)
			}
			continue
		}
		out = append(out, w)
	}
	lists = append(lists, rn.ledger.Usage())
	if u := mergeUsage(lists...); len(u) > 0 {
		out = append(out, PendingWrite{Kind: PendingUsage, Result: &NodeResult{Usage: u}})
	}
	return out
}

// pause marks the thread interrupted at cp with the given pending writes
// (and the step's usage).
func (rn *run) pause(ctx context.Context, cp *Checkpoint, writes []PendingWrite) (*Result, error) {
	r := rn.r
	rn.endStep(nil, nil)
	if err := rn.flush(ctx); err != nil {
		return nil, err
	}
	writes = rn.withUsage(writes)
	cp, err := rn.branchAt(ctx, cp)
	if err != nil {
		return nil, err
	}
	if err := r.mark(ctx, rn.thread, StatusInterrupted, "", writes); err != nil {
		return nil, err
	}
	cp.Pending = writes
	ints := interruptsOf(writes)
	for i := range ints {
		rn.emit(Event{Kind: EvInterrupt, Thread: rn.thread.ID, Step: cp.Step, Checkpoint: cp.ID, Node: ints[i].Node, Interrupt: &ints[i]})
	}
	return &Result{Thread: rn.thread.ID, Status: StatusInterrupted, Checkpoint: cp, Interrupts: ints}, nil
}

// stop marks the thread failed (or budget-exceeded) at cp and returns err.
// The usage of the step's calls is kept with the mark (see withUsage).
func (rn *run) stop(ctx context.Context, cp *Checkpoint, status Status, err error, writes []PendingWrite) (*Result, error) {
	r := rn.r
	rn.endStep(nil, err)
	if ferr := rn.flush(ctx); ferr != nil {
		return nil, ferr
	}
	writes = rn.withUsage(writes)
	cp, berr := rn.branchAt(ctx, cp)
	if berr != nil {
		return nil, errors.Join(err, berr)
	}
	if merr := r.mark(ctx, rn.thread, status, err.Error(), writes); merr != nil {
		return nil, errors.Join(err, merr)
	}
	rn.emit(Event{Kind: EvError, Thread: rn.thread.ID, Step: cp.Step, Checkpoint: cp.ID, Error: err.Error()})
	return &Result{Thread: rn.thread.ID, Status: status, Checkpoint: cp}, err
}

func (rn *run) cancelled(ctx context.Context, cp *Checkpoint, cause error, writes []PendingWrite) (*Result, error) {
	var be *BudgetError
	if errors.As(cause, &be) {
		return rn.stop(ctx, cp, StatusBudget, be, writes)
	}
	return rn.stop(ctx, cp, StatusFailed, fmt.Errorf("run cancelled: %w", cause), writes)
}

// execute runs the step's nodes concurrently on the snapshot cp.Values and
// returns their outcomes sorted by node name. Nodes with a pending result
// are not executed again.
func (rn *run) execute(ctx context.Context, cp *Checkpoint, step int, pending map[string]*NodeResult) []taskOut {
	outs := make([]taskOut, len(cp.Next))
	todo := 0
	for _, name := range cp.Next {
		if pending[name] == nil {
			todo++
		}
	}
	if todo > 1 {
		rn.executeAll(ctx, cp, step, pending, outs)
	} else {
		for i, name := range cp.Next {
			if res := pending[name]; res != nil {
				outs[i] = taskOut{node: name, res: res}
				continue
			}
			// A lone node runs on this goroutine: no scheduling hand-off.
			res, err := rn.runNode(ctx, cp, step, name)
			outs[i] = taskOut{node: name, res: res, err: err}
		}
	}
	if len(outs) > 1 {
		slices.SortFunc(outs, func(a, b taskOut) int { return strings.Compare(a.node, b.node) })
	}
	return outs
}

// executeAll runs the nodes of cp.Next without a pending result in
// goroutines of their own, filling outs.
func (rn *run) executeAll(ctx context.Context, cp *Checkpoint, step int, pending map[string]*NodeResult, outs []taskOut) {
	var wg sync.WaitGroup
	var inline []int
	for i, name := range cp.Next {
		if res := pending[name]; res != nil {
			outs[i] = taskOut{node: name, res: res}
			continue
		}
		if rn.r.quick(name) {
			inline = append(inline, i)
			continue
		}
		wg.Add(1)
		go func(i int, name string) {
			defer wg.Done()
			res, err := rn.runNode(ctx, cp, step, name)
			outs[i] = taskOut{node: name, res: res, err: err}
		}(i, name)
	}
	// Quick nodes run here, while the others run in goroutines: a new
	// goroutine's stack growing to what an expression evaluation needs
	// costs more than the node.
	for _, i := range inline {
		name := cp.Next[i]
		res, err := rn.runNode(ctx, cp, step, name)
		outs[i] = taskOut{node: name, res: res, err: err}
	}
	wg.Wait()
}

// quick reports whether node name is of a kind that only evaluates
// expressions on the state (the runtime's own set and noop, not replaced
// through [Runner.Kinds]) and has no timeout or retries: it neither waits
// nor blocks, so running it on the step's goroutine, after the other
// nodes of the step started, changes nothing but the cost.
func (r *Runner) quick(name string) bool {
	n := r.Graph.Nodes[name]
	if n == nil || n.Timeout > 0 || n.Retry.MaxAttempts > 1 || n.Goto != nil {
		return false
	}
	if n.Kind != "set" && n.Kind != "noop" {
		return false
	}
	return r.Kinds[n.Kind] == nil
}

// runNode runs one node of the step through [Runner.invoke].
func (rn *run) runNode(ctx context.Context, cp *Checkpoint, step int, name string) (res *NodeResult, err error) {
	r := rn.r
	node := r.Graph.Nodes[name]
	if node == nil {
		return nil, fmt.Errorf("graph %q has no node %q", r.Graph.Name, name)
	}
	call := &NodeCall{
		Graph: r.Graph, Node: node, State: cp.Values, Thread: rn.thread.ID, Step: step,
		Runner: r,
		Emit:   nopEmit,
	}
	if r.Events != nil {
		// Events go nowhere else (see [Runner.emit]).
		call.Emit = func(e Event) {
			e.Thread, e.Step, e.Node = rn.thread.ID, step, name
			rn.emit(e)
		}
	}
	if rn.resumeNodes[name] {
		call.Resume, call.HasResume = rn.resumeValue, true
	}
	if rn.records != nil {
		call.Replay = rn.records[step][name]
	}
	call.Partial = rn.partial[name]
	call.Ledger = rn.ledger
	call.StateSize = r.stateSizeLimit(rn.cfg)
	call.ChildTag = cp.ID[max(len(cp.ID)-6, 0):] + rn.replayTag
	return r.invoke(ctx, call)
}

func nopEmit(Event) {}

// builtinKind returns the runtime's own implementation of a node kind.
func builtinKind(kind string) NodeFunc {
	switch kind {
	case "set":
		return runSet
	case "noop":
		return runNoop
	case "interrupt":
		return runInterrupt
	case "subgraph":
		return runSubgraph
	case "map":
		return runMap
	}
	return nil
}
