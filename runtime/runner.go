package runtime

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lgrun/lgrun/spec"
)

// Runner executes one graph against a saver. It is safe for concurrent use
// by runs of different threads.
type Runner struct {
	Graph *spec.Graph
	Saver Saver
	// Kinds executes node kinds beyond set, noop and interrupt, by kind name.
	Kinds map[string]NodeFunc
	// Events receives progress; may be nil. Calls are serialised.
	Events func(Event)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Version is recorded in checkpoint metadata.
	Version string
	// GraphFile is recorded with new threads.
	GraphFile string
	// Strict makes a changed graph an error on resume instead of a warning.
	Strict bool
	// ReuseRecords makes a replay reuse the model replies and tool results
	// recorded by the original run instead of calling again.
	ReuseRecords bool

	emitMu sync.Mutex
}

// Result is the outcome of a run that stopped without an error, or with a
// limit error (then Status says which).
type Result struct {
	Thread     string
	Status     Status
	Checkpoint *Checkpoint // the last committed checkpoint
	Interrupts []Interrupt // when Status is interrupted
	// Goto holds routes to nodes of the parent graph ("^name" targets)
	// that ended a subgraph run.
	Goto []string
}

// RunOptions start a turn.
type RunOptions struct {
	Thread string
	Input  map[string]any
	Config Config
}

// ResumeOptions continue a thread.
type ResumeOptions struct {
	Thread string
	// Value answers the interrupt nodes the thread waits at.
	Value    any
	HasValue bool
	// Set writes these fields (through their reducers) before continuing,
	// as if node AsNode had written them ("" for a human update).
	Set    []Write
	AsNode string
	Config Config
}

// lock takes the thread's lease when the saver supports it.
func (r *Runner) lock(ctx context.Context, thread string) (func(), error) {
	l, ok := r.Saver.(Locker)
	if !ok {
		return func() {}, nil
	}
	unlock, err := l.Lock(ctx, thread)
	if err != nil {
		var be *BusyError
		if errors.As(err, &be) {
			return nil, err
		}
		return nil, fmt.Errorf("lock thread %q: %w", thread, err)
	}
	return unlock, nil
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Runner) emit(e Event) {
	if r.Events == nil {
		return
	}
	r.emitMu.Lock()
	defer r.emitMu.Unlock()
	r.Events(e)
}

// run is the state of one invocation of the superstep loop.
type run struct {
	r      *Runner
	thread *Thread
	cfg    Config // effective
	before map[string]bool
	after  map[string]bool
	// resumeBefore lists nodes whose before-breakpoint already paused this checkpoint.
	resumeBefore map[string]bool
	// resumeValue answers pending interrupt nodes.
	resumeNodes map[string]bool
	resumeValue any
	// records maps step → node → records, for ReuseRecords.
	records map[int]map[string][]any
	// partial maps node → records of the finished parts of its failed
	// previous attempt at this step.
	partial map[string][]any
	// used is the thread's usage when the current step began, including
	// failed attempts not yet committed.
	used Totals
	// ledger is the budget the current step's nodes share.
	ledger *Ledger
	// replayTag gives a replay's first step fresh child runs.
	replayTag string
	started   time.Time
}

// Run starts a turn on a thread: a new thread, or a new turn on a finished
// one (multi-turn). Input is merged through the reducers as the turn's
// input checkpoint.
func (r *Runner) Run(ctx context.Context, opts RunOptions) (*Result, error) {
	if opts.Thread == "" {
		return nil, fmt.Errorf("run: no thread id")
	}
	unlock, err := r.lock(ctx, opts.Thread)
	if err != nil {
		return nil, err
	}
	defer unlock()
	th, err := r.Saver.Thread(ctx, opts.Thread)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("load thread %q: %w", opts.Thread, err)
	}
	var head *Checkpoint
	base := r.Graph.Defaults()
	step := 0
	totals := Totals{}
	if th != nil {
		head, err = r.get(ctx, th.ID, "")
		if err != nil {
			return nil, err
		}
		if ints := interruptsOf(head.Pending); len(ints) > 0 {
			return nil, &PausedError{Thread: th.ID, Interrupts: ints}
		}
		if th.Status != StatusDone && len(head.Next) > 0 {
			return nil, fmt.Errorf("thread %q (status %s, next %v): %w; resume it with `lgrun resume --thread %s`, or start over with a new --thread", th.ID, th.Status, head.Next, ErrUnfinished, th.ID)
		}
		if err := r.checkGraph(th, head); err != nil {
			return nil, err
		}
		base = head.Values
		step = head.Step + 1
		totals = head.Metadata.Totals
	} else {
		th = &Thread{ID: opts.Thread, Created: r.now(), GraphFile: r.GraphFile}
	}
	th.Graph, th.GraphHash = r.Graph.Name, r.Graph.Hash
	th.Config = mergeConfig(th.Config, opts.Config)

	var writes []Write
	for _, k := range spec.SortedKeys(opts.Input) {
		if r.Graph.Field(k) == nil {
			return nil, fmt.Errorf("input: %w", &WriteError{Field: k, Err: fmt.Errorf("no such state field")})
		}
		writes = append(writes, Write{Field: k, Value: spec.Normalize(opts.Input[k])})
	}
	values, delta, who, err := Merge(r.Graph, step, base, []NodeWrites{{Node: "__input__", Writes: writes}})
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	if head == nil {
		// The first checkpoint stores every field, defaults included.
		delta = Delta{}
		for k, v := range values {
			delta[k] = Op{Kind: OpSet, Value: v}
		}
	}
	rn := r.newRun(th)
	next, waiting, branches, err := r.route(values, []string{spec.Start}, nil, nil)
	if err != nil {
		return nil, err
	}
	cp := &Checkpoint{
		Thread: th.ID, Step: step, TurnStep: step, Values: values, Delta: delta,
		Next: next, Waiting: waiting,
		Metadata: r.meta(SourceInput, who, nil, totals),
	}
	expect := ""
	if head != nil {
		cp.ParentID = head.ID
		expect = head.ID
	}
	cp.ID = NewCheckpointID(r.now(), cp.ParentID)
	th.Status = StatusRunning
	th.Error = ""
	if err := r.commit(ctx, &Commit{Checkpoint: cp, ExpectHead: expect, Thread: *th}); err != nil {
		return nil, err
	}
	th.Head = cp.ID
	r.emit(Event{Kind: EvRunStart, Thread: th.ID, Step: step, Checkpoint: cp.ID, Values: values, Next: next})
	for _, b := range branches {
		r.emit(Event{Kind: EvRoute, Thread: th.ID, Step: step, Message: b})
	}
	return rn.loop(ctx, cp, cp.ID)
}

// Resume continues a thread from its head: after an interrupt, a failure,
// a crash or a limit.
func (r *Runner) Resume(ctx context.Context, opts ResumeOptions) (*Result, error) {
	unlock, err := r.lock(ctx, opts.Thread)
	if err != nil {
		return nil, err
	}
	defer unlock()
	th, err := r.Saver.Thread(ctx, opts.Thread)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("thread %q: %w", opts.Thread, ErrNotFound)
		}
		return nil, fmt.Errorf("load thread %q: %w", opts.Thread, err)
	}
	head, err := r.get(ctx, th.ID, "")
	if err != nil {
		return nil, err
	}
	if err := r.checkGraph(th, head); err != nil {
		return nil, err
	}
	th.Config = mergeConfig(th.Config, opts.Config)
	rn := r.newRun(th)
	// Check the answer against the head before writing anything: a refused
	// resume changes nothing. An update as a node replaces the pending step.
	needValue := []string{}
	if opts.AsNode == "" {
		for _, p := range head.Pending {
			if p.Kind != PendingInterrupt {
				continue
			}
			switch p.Interrupt.When {
			case InterruptBefore:
				rn.resumeBefore[p.Node] = true
			case InterruptNode:
				needValue = append(needValue, p.Node)
			}
		}
	}
	if len(needValue) > 0 {
		if !opts.HasValue {
			return nil, fmt.Errorf("thread %q waits at interrupt node %s: %w; pass --value JSON (the answer)", th.ID, needValue[0], ErrNeedValue)
		}
		for _, n := range needValue {
			rn.resumeNodes[n] = true
		}
		rn.resumeValue = opts.Value
	} else if opts.HasValue {
		return nil, fmt.Errorf("thread %q is not waiting at an interrupt node; --value has nothing to answer (use --set field=JSON to change the state)", th.ID)
	}
	cp := head
	if len(opts.Set) > 0 || opts.AsNode != "" {
		cp, err = r.update(ctx, th, head, head, opts.Set, opts.AsNode, SourceUpdate)
		if err != nil {
			return nil, err
		}
	}
	if len(cp.Next) == 0 {
		// A process that died between its last commit and marking the
		// thread done left it "running": finishing it is the resume.
		if len(opts.Set) > 0 || th.Status != StatusDone {
			return r.finish(ctx, rn, cp)
		}
		return nil, fmt.Errorf("thread %q is done: %w; start a new turn with `lgrun run GRAPH --thread %s --input ...`", th.ID, ErrNothingToResume, th.ID)
	}
	return rn.loop(ctx, cp, cp.ID)
}

// Fork writes a new checkpoint branching from checkpoint id with the given
// writes (as if node asNode had written them) and continues from it. The
// original history stays.
func (r *Runner) Fork(ctx context.Context, thread, id string, set []Write, asNode string, cfg Config) (*Result, error) {
	unlock, err := r.lock(ctx, thread)
	if err != nil {
		return nil, err
	}
	defer unlock()
	th, base, err := r.loadAt(ctx, thread, id)
	if err != nil {
		return nil, err
	}
	th.Config = mergeConfig(th.Config, cfg)
	cp, err := r.update(ctx, th, base, nil, set, asNode, SourceFork)
	if err != nil {
		return nil, err
	}
	rn := r.newRun(th)
	if len(cp.Next) == 0 {
		return r.finish(ctx, rn, cp)
	}
	return rn.loop(ctx, cp, cp.ID)
}

// Replay re-executes the thread from checkpoint id as a new branch; the
// original history stays. With ReuseRecords, recorded model replies and tool
// results of the original branch are reused.
func (r *Runner) Replay(ctx context.Context, thread, id string, cfg Config) (*Result, error) {
	unlock, err := r.lock(ctx, thread)
	if err != nil {
		return nil, err
	}
	defer unlock()
	th, base, err := r.loadAt(ctx, thread, id)
	if err != nil {
		return nil, err
	}
	th.Config = mergeConfig(th.Config, cfg)
	rn := r.newRun(th)
	if r.ReuseRecords {
		if rn.records, err = r.branchRecords(ctx, th, base); err != nil {
			return nil, err
		}
	}
	if len(base.Next) == 0 {
		return nil, fmt.Errorf("checkpoint %s has no next nodes: %w", id, ErrNothingToResume)
	}
	base.Pending = nil
	rn.replayTag = "r" + NewCheckpointID(r.now(), "")[10:]
	return rn.loop(ctx, base, th.Head)
}

// branchRecords collects the node records of the checkpoints after base on
// the thread's current branch, by step and node.
func (r *Runner) branchRecords(ctx context.Context, th *Thread, base *Checkpoint) (map[int]map[string][]any, error) {
	list, err := r.Saver.List(ctx, th.ID, 0)
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	byID := map[string]*Checkpoint{}
	for _, c := range list {
		byID[c.ID] = c
	}
	out := map[int]map[string][]any{}
	for c := byID[th.Head]; c != nil && c.ID != base.ID; c = byID[c.ParentID] {
		if c.Step <= base.Step {
			break
		}
		for node, recs := range c.Metadata.Records {
			if out[c.Step] == nil {
				out[c.Step] = map[string][]any{}
			}
			out[c.Step][node] = recs
		}
	}
	return out, nil
}

func (r *Runner) loadAt(ctx context.Context, thread, id string) (*Thread, *Checkpoint, error) {
	th, err := r.Saver.Thread(ctx, thread)
	if err != nil {
		return nil, nil, fmt.Errorf("thread %q: %w", thread, err)
	}
	cp, err := r.get(ctx, thread, id)
	if err != nil {
		return nil, nil, err
	}
	if err := r.checkGraph(th, cp); err != nil {
		return nil, nil, err
	}
	return th, cp, nil
}

// update commits a checkpoint that applies set to base as node asNode.
// keepFrom, when not nil, carries its pending node writes over.
func (r *Runner) update(ctx context.Context, th *Thread, base, keepFrom *Checkpoint, set []Write, asNode string, src Source) (*Checkpoint, error) {
	node := asNode
	if node == "" {
		node = "__human__"
	} else if r.Graph.Nodes[asNode] == nil {
		return nil, fmt.Errorf("--as-node: graph %q has no node %q", r.Graph.Name, asNode)
	}
	values, delta, who, err := Merge(r.Graph, base.Step+1, base.Values, []NodeWrites{{Node: node, Writes: set}})
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	next, waiting := base.Next, base.Waiting
	if asNode != "" {
		next, waiting, err = r.nextNodes(values, []string{asNode}, nil, base.Waiting)
		if err != nil {
			return nil, err
		}
	}
	cp := &Checkpoint{
		Thread: th.ID, ParentID: base.ID, Step: base.Step + 1, TurnStep: base.TurnStep + 1,
		Values: values, Delta: delta, Next: next, Waiting: waiting,
		Metadata: r.meta(src, who, nil, base.Metadata.Totals),
	}
	cp.ID = NewCheckpointID(r.now(), th.Head)
	var keep []PendingWrite
	if keepFrom != nil && asNode == "" {
		for _, p := range keepFrom.Pending {
			if p.Kind == PendingWrites || p.Kind == PendingPartial || (p.Kind == PendingInterrupt && p.Interrupt.When == InterruptNode) {
				keep = append(keep, p)
			}
		}
		cp.Pending = keep
	}
	t := *th
	t.Status = StatusRunning
	if err := r.commit(ctx, &Commit{Checkpoint: cp, ExpectHead: th.Head, Thread: t, Writes: keep}); err != nil {
		return nil, err
	}
	th.Head = cp.ID
	r.emit(Event{Kind: EvCheckpoint, Thread: th.ID, Step: cp.Step, Checkpoint: cp.ID, Values: values, Next: next, Node: node})
	return cp, nil
}

func (r *Runner) newRun(th *Thread) *run {
	rn := &run{
		r: r, thread: th, cfg: th.Config,
		before: map[string]bool{}, after: map[string]bool{},
		resumeBefore: map[string]bool{}, resumeNodes: map[string]bool{},
		started: r.now(),
	}
	for _, n := range r.Graph.Interrupts.Before {
		rn.before[n.Name] = true
	}
	for _, n := range r.Graph.Interrupts.After {
		rn.after[n.Name] = true
	}
	for _, n := range th.Config.InterruptBefore {
		rn.before[n] = true
	}
	for _, n := range th.Config.InterruptAfter {
		rn.after[n] = true
	}
	return rn
}

// checkGraph compares the graph that made checkpoint cp (the thread's, for
// checkpoints that do not record it) with the runner's graph. A changed
// graph is a warning, or an error in strict mode; next nodes that no longer
// exist are an error. Checkpoints made from now on record the new graph,
// so continuing them does not warn again.
func (r *Runner) checkGraph(th *Thread, cp *Checkpoint) error {
	hash, name := cp.Metadata.GraphHash, cp.Metadata.Graph
	if hash == "" {
		hash, name = th.GraphHash, th.Graph
	}
	if hash == "" || hash == r.Graph.Hash {
		return nil
	}
	for _, n := range cp.Next {
		if r.Graph.Nodes[n] == nil {
			return fmt.Errorf("thread %q was made by another version of graph %q and its next node %q no longer exists: %w", th.ID, name, n, ErrGraphChanged)
		}
	}
	if r.Strict {
		return fmt.Errorf("checkpoint %s of thread %q was made by another version of graph %q (hash %.12s, now %.12s): %w", cp.ID, th.ID, name, hash, r.Graph.Hash, ErrGraphChanged)
	}
	r.emit(Event{Kind: EvWarning, Thread: th.ID, Message: fmt.Sprintf("graph %q changed since thread %q was created (hash %.12s, now %.12s); continuing with the current graph", name, th.ID, hash, r.Graph.Hash)})
	th.Graph, th.GraphHash = r.Graph.Name, r.Graph.Hash
	return nil
}

// get loads a checkpoint and fits its values to the graph.
func (r *Runner) get(ctx context.Context, thread, id string) (*Checkpoint, error) {
	cp, err := r.Saver.Get(ctx, thread, id)
	if err != nil {
		if id == "" {
			return nil, fmt.Errorf("load thread %q: %w", thread, err)
		}
		return nil, fmt.Errorf("load checkpoint %s of thread %q: %w", id, thread, err)
	}
	cp.Values = r.upgradeValues(thread, cp.Values)
	return cp, nil
}

// upgradeValues fits stored values to the current graph: new fields get
// their defaults; values of removed fields are dropped.
func (r *Runner) upgradeValues(thread string, old map[string]any) map[string]any {
	out := make(map[string]any, len(r.Graph.Fields))
	for _, f := range r.Graph.Fields {
		if v, ok := old[f.Name]; ok {
			c, err := f.Type.Coerce(v)
			if err == nil {
				out[f.Name] = c
				continue
			}
			// The field's type changed since the value was stored.
			r.emit(Event{Kind: EvWarning, Thread: thread, Message: fmt.Sprintf("stored value of field %q does not fit its type %s any more (%v); using the default (the old value stays in the earlier checkpoints)", f.Name, f.Type, err)})
		}
		out[f.Name] = spec.DeepCopy(f.Default)
	}
	return out
}

// ClearList, as the only entry of a breakpoint list given at run time,
// removes the breakpoints stored with the thread.
const ClearList = "none"

func mergeList(stored, given []string) []string {
	switch {
	case len(given) == 1 && given[0] == ClearList:
		return nil
	case len(given) > 0:
		return given
	}
	return stored
}

func mergeConfig(stored, given Config) Config {
	out := stored
	if given.StepLimit > 0 {
		out.StepLimit = given.StepLimit
	}
	out.InterruptBefore = mergeList(stored.InterruptBefore, given.InterruptBefore)
	out.InterruptAfter = mergeList(stored.InterruptAfter, given.InterruptAfter)
	if given.Timeout > 0 {
		out.Timeout = given.Timeout
	}
	if given.LLMCalls > 0 {
		out.LLMCalls = given.LLMCalls
	}
	if given.Tokens > 0 {
		out.Tokens = given.Tokens
	}
	if given.CostUSD > 0 {
		out.CostUSD = given.CostUSD
	}
	return out
}

func (r *Runner) meta(src Source, who map[string][]string, usage []Usage, prev Totals) Metadata {
	return Metadata{
		Source: src, Writes: who, Graph: r.Graph.Name, GraphHash: r.Graph.Hash,
		Version: r.Version, Time: r.now().UTC(), Usage: usage, Totals: prev.Add(usage),
	}
}

func (r *Runner) commit(ctx context.Context, c *Commit) error {
	c.Thread.Head = c.Checkpoint.ID
	c.Thread.Updated = r.now()
	if err := r.Saver.Commit(context.WithoutCancel(ctx), c); err != nil {
		if errors.Is(err, ErrConflict) {
			return fmt.Errorf("%w: another process committed a newer checkpoint (or is running it now); inspect it with `lgrun history --thread %s`", err, c.Thread.ID)
		}
		return fmt.Errorf("save checkpoint: %w", err)
	}
	return nil
}

func (r *Runner) mark(ctx context.Context, th *Thread, status Status, msg string, writes []PendingWrite) error {
	t := *th
	t.Status, t.Error, t.Updated = status, msg, r.now()
	err := r.Saver.Mark(context.WithoutCancel(ctx), &Mark{Thread: t, Writes: writes, ClearWrites: true})
	if err != nil {
		if errors.Is(err, ErrConflict) {
			return fmt.Errorf("%w: another process committed a newer checkpoint", err)
		}
		return fmt.Errorf("save thread status: %w", err)
	}
	th.Status, th.Error = status, msg
	return nil
}

func (r *Runner) finish(ctx context.Context, rn *run, cp *Checkpoint) (*Result, error) {
	if err := r.mark(ctx, rn.thread, StatusDone, "", nil); err != nil {
		return nil, err
	}
	r.emit(Event{Kind: EvDone, Thread: rn.thread.ID, Step: cp.Step, Checkpoint: cp.ID, Values: cp.Values})
	return &Result{Thread: rn.thread.ID, Status: StatusDone, Checkpoint: cp}, nil
}

func interruptsOf(ps []PendingWrite) []Interrupt {
	var out []Interrupt
	for _, p := range ps {
		if p.Kind == PendingInterrupt && p.Interrupt != nil {
			out = append(out, *p.Interrupt)
		}
	}
	return out
}

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

// budget checks the thread's totals against the limits.
func (rn *run) budget(t Totals) *BudgetError {
	calls, tokens, cost := rn.limits()
	switch {
	case calls > 0 && t.LLMCalls >= calls:
		return &BudgetError{What: "llm_calls", Limit: strconv.Itoa(calls), Used: strconv.Itoa(t.LLMCalls)}
	case tokens > 0 && t.InputTokens+t.OutputTokens >= tokens:
		return &BudgetError{What: "tokens", Limit: strconv.Itoa(tokens), Used: strconv.Itoa(t.InputTokens + t.OutputTokens)}
	case cost > 0 && t.CostUSD >= cost:
		return &BudgetError{What: "cost_usd", Limit: fmt.Sprintf("$%.4f", cost), Used: fmt.Sprintf("$%.4f", t.CostUSD)}
	}
	return nil
}

// Budget is what remains of a thread's limits; node kinds that spend
// (llm) check it before each call.
type Budget struct {
	LLMCalls int     // remaining calls, or -1 for unlimited
	Tokens   int     // remaining tokens, or -1
	CostUSD  float64 // remaining cost, or -1
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
	dur  time.Duration
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
	for {
		if len(cp.Next) == 0 {
			return r.finish(ctx, rn, cp)
		}
		if n := cp.Step - cp.TurnStep; n >= rn.stepLimit() {
			err := &StepLimitError{Limit: rn.stepLimit(), Step: cp.Step, Nodes: cp.Next}
			return rn.stop(ctx, cp, StatusBudget, err, nil)
		}
		// Usage of failed attempts at this step counts like committed usage.
		var spent []Usage
		for _, p := range cp.Pending {
			if p.Kind == PendingUsage && p.Result != nil {
				spent = append(spent, p.Result.Usage...)
			}
		}
		rn.used = cp.Metadata.Totals.Add(spent)
		rn.ledger = NewLedger(*rn.remaining(rn.used), rn.used)
		if be := rn.budget(rn.used); be != nil {
			var keep []PendingWrite
			if len(spent) > 0 {
				keep = []PendingWrite{{Kind: PendingUsage, Result: &NodeResult{Usage: spent}}}
			}
			return rn.stop(ctx, cp, StatusBudget, be, keep)
		}
		if err := context.Cause(ctx); err != nil {
			return rn.cancelled(ctx, cp, err, nil)
		}
		pending := map[string]*NodeResult{}
		rn.partial = map[string][]any{}
		var keep []PendingWrite
		for _, p := range cp.Pending {
			if p.Kind == PendingWrites && p.Result != nil {
				pending[p.Node] = p.Result
				keep = append(keep, p)
			}
			if p.Kind == PendingPartial && p.Result != nil {
				rn.partial[p.Node] = p.Result.Records
			}
		}
		// Static breakpoints before nodes.
		var stops []PendingWrite
		for _, n := range cp.Next {
			if rn.before[n] && !rn.resumeBefore[n] && pending[n] == nil {
				stops = append(stops, PendingWrite{Node: n, Kind: PendingInterrupt, Interrupt: &Interrupt{Node: n, When: InterruptBefore}})
			}
		}
		if len(stops) > 0 {
			return rn.pause(ctx, cp, append(keep, stops...))
		}
		rn.resumeBefore = map[string]bool{}

		step := cp.Step + 1
		r.emit(Event{Kind: EvStepStart, Thread: th.ID, Step: step, Next: cp.Next})
		outs := rn.execute(ctx, cp, step, pending)

		var failed []taskOut
		var paused []PendingWrite
		var done []PendingWrite
		for _, o := range outs {
			switch {
			case o.err != nil:
				failed = append(failed, o)
				if o.res != nil && len(o.res.Records) > 0 {
					// Finished parts of a failed node (map items) are kept.
					done = append(done, PendingWrite{Node: o.node, Kind: PendingPartial, Result: o.res})
				}
			case o.res.Interrupt != nil:
				paused = append(paused, PendingWrite{Node: o.node, Kind: PendingInterrupt, Interrupt: o.res.Interrupt})
			default:
				if pending[o.node] == nil {
					done = append(done, PendingWrite{Node: o.node, Kind: PendingWrites, Result: o.res})
				}
			}
		}
		rn.resumeNodes = map[string]bool{}
		if len(failed) > 0 {
			writes := append(keep, done...)
			lost := append([]Usage(nil), spent...)
			for _, f := range failed {
				writes = append(writes, PendingWrite{Node: f.node, Kind: PendingError, Error: f.err.Error()})
				if f.res != nil {
					lost = append(lost, f.res.Usage...)
				}
			}
			if len(lost) > 0 {
				writes = append(writes, PendingWrite{Kind: PendingUsage, Result: &NodeResult{Usage: lost}})
			}
			if cause := context.Cause(ctx); cause != nil {
				return rn.cancelled(ctx, cp, cause, writes)
			}
			f := failed[0]
			nerr := &NodeError{Node: f.node, Pos: r.Graph.Nodes[f.node].Pos, Step: step, Err: f.err}
			var be *BudgetError
			if errors.As(f.err, &be) {
				return rn.stop(ctx, cp, StatusBudget, nerr, writes)
			}
			return rn.stop(ctx, cp, StatusFailed, nerr, writes)
		}
		if len(paused) > 0 {
			writes := append(append(keep, done...), paused...)
			if len(spent) > 0 {
				writes = append(writes, PendingWrite{Kind: PendingUsage, Result: &NodeResult{Usage: spent}})
			}
			return rn.pause(ctx, cp, writes)
		}

		// Merge in node-name order.
		var nws []NodeWrites
		usage := spent
		records := map[string][]any{}
		for _, o := range outs {
			nws = append(nws, NodeWrites{Node: o.node, Writes: o.res.Writes})
			usage = append(usage, o.res.Usage...)
			if len(o.res.Records) > 0 {
				records[o.node] = o.res.Records
			}
		}
		values, delta, who, err := Merge(r.Graph, step, cp.Values, nws)
		if err != nil {
			return rn.stop(ctx, cp, StatusFailed, rn.mergeError(step, err), nil)
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
			return rn.stop(ctx, cp, StatusFailed, err, nil)
		}
		for _, b := range branches {
			r.emit(Event{Kind: EvRoute, Thread: th.ID, Step: step, Message: b})
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
		ncp.ID = NewCheckpointID(r.now(), expectHead)
		t := *th
		t.Status, t.Error = StatusRunning, ""
		if err := r.commit(ctx, &Commit{Checkpoint: ncp, ExpectHead: expectHead, Thread: t}); err != nil {
			if errors.Is(err, ErrConflict) {
				return nil, err
			}
			// The step is lost but the thread stays at its last good
			// checkpoint, marked failed with the reason.
			return rn.stop(ctx, cp, StatusFailed, fmt.Errorf("step %d: %w", step, err), nil)
		}
		th.Head, th.Status, th.Error = ncp.ID, StatusRunning, ""
		r.emit(Event{Kind: EvCheckpoint, Thread: th.ID, Step: step, Checkpoint: ncp.ID, Values: values, Next: next})
		cp, expectHead = ncp, ncp.ID
		if len(parentGoto) > 0 {
			res, err := r.finish(ctx, rn, cp)
			if res != nil {
				sort.Strings(parentGoto)
				res.Goto = parentGoto
			}
			return res, err
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
	return fmt.Errorf("step %d: %w", step, err)
}

// pause marks the thread interrupted at cp with the given pending writes.
func (rn *run) pause(ctx context.Context, cp *Checkpoint, writes []PendingWrite) (*Result, error) {
	r := rn.r
	if err := r.mark(ctx, rn.thread, StatusInterrupted, "", writes); err != nil {
		return nil, err
	}
	cp.Pending = writes
	ints := interruptsOf(writes)
	for i := range ints {
		r.emit(Event{Kind: EvInterrupt, Thread: rn.thread.ID, Step: cp.Step, Checkpoint: cp.ID, Node: ints[i].Node, Interrupt: &ints[i]})
	}
	return &Result{Thread: rn.thread.ID, Status: StatusInterrupted, Checkpoint: cp, Interrupts: ints}, nil
}

// stop marks the thread failed (or budget-exceeded) at cp and returns err.
func (rn *run) stop(ctx context.Context, cp *Checkpoint, status Status, err error, writes []PendingWrite) (*Result, error) {
	r := rn.r
	if merr := r.mark(ctx, rn.thread, status, err.Error(), writes); merr != nil {
		return nil, errors.Join(err, merr)
	}
	r.emit(Event{Kind: EvError, Thread: rn.thread.ID, Step: cp.Step, Checkpoint: cp.ID, Error: err.Error()})
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
	var wg sync.WaitGroup
	for i, name := range cp.Next {
		if res := pending[name]; res == nil && todo == 1 {
			// A lone node runs on this goroutine: no scheduling hand-off.
			start := rn.r.now()
			res, err := rn.runNode(ctx, cp, step, name)
			outs[i] = taskOut{node: name, res: res, err: err, dur: rn.r.now().Sub(start)}
			continue
		}
		if res := pending[name]; res != nil {
			outs[i] = taskOut{node: name, res: res}
			continue
		}
		wg.Add(1)
		go func(i int, name string) {
			defer wg.Done()
			start := rn.r.now()
			res, err := rn.runNode(ctx, cp, step, name)
			outs[i] = taskOut{node: name, res: res, err: err, dur: rn.r.now().Sub(start)}
		}(i, name)
	}
	wg.Wait()
	sort.Slice(outs, func(i, j int) bool { return outs[i].node < outs[j].node })
	return outs
}

// runNode runs one node with its timeout and retry policy.
func (rn *run) runNode(ctx context.Context, cp *Checkpoint, step int, name string) (res *NodeResult, err error) {
	r := rn.r
	node := r.Graph.Nodes[name]
	if node == nil {
		return nil, fmt.Errorf("graph %q has no node %q", r.Graph.Name, name)
	}
	fn := builtinKind(node.Kind)
	if f, ok := r.Kinds[node.Kind]; ok {
		fn = f
	}
	if fn == nil {
		return nil, fmt.Errorf("node kind %q is not available in this runner", node.Kind)
	}
	call := &NodeCall{
		Graph: r.Graph, Node: node, State: cp.Values, Thread: rn.thread.ID, Step: step,
		Runner: r,
		Emit: func(e Event) {
			e.Thread, e.Step, e.Node = rn.thread.ID, step, name
			r.emit(e)
		},
	}
	if rn.resumeNodes[name] {
		call.Resume, call.HasResume = rn.resumeValue, true
	}
	if rn.records != nil {
		call.Replay = rn.records[step][name]
	}
	call.Partial = rn.partial[name]
	call.Budget, call.Used, call.Ledger = rn.remaining(rn.used), rn.used, rn.ledger
	call.ChildTag = cp.ID[max(len(cp.ID)-6, 0):] + rn.replayTag
	attempts := max(node.Retry.MaxAttempts, 1)
	backoff := node.Retry.InitialBackoff
	if backoff == 0 {
		backoff = 200 * time.Millisecond
	}
	maxBackoff := node.Retry.MaxBackoff
	if maxBackoff == 0 {
		maxBackoff = 10 * time.Second
	}
	r.emit(Event{Kind: EvNodeStart, Thread: rn.thread.ID, Step: step, Node: name})
	start := r.now()
	var attemptUsage []Usage
	defer func() {
		if len(attemptUsage) > 0 {
			if res == nil {
				res = &NodeResult{}
			}
			res.Usage = attemptUsage
		}
	}()
	for attempt := 1; ; attempt++ {
		res, err = rn.callOnce(ctx, fn, call, node)
		if res != nil && len(res.Usage) > 0 {
			// Every attempt's model usage counts, not only the last one's.
			attemptUsage = append(attemptUsage, res.Usage...)
		}
		if err == nil || attempt >= attempts || ctx.Err() != nil {
			break
		}
		if res != nil && len(res.Records) > 0 {
			call.Partial = res.Records
		}
		var be *BudgetError
		if errors.As(err, &be) {
			break
		}
		r.emit(Event{Kind: EvMessage, Thread: rn.thread.ID, Step: step, Node: name, Message: fmt.Sprintf("attempt %d of %d failed: %v; retrying", attempt, attempts, err)})
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, maxBackoff)
	}
	if err != nil {
		r.emit(Event{Kind: EvNodeError, Thread: rn.thread.ID, Step: step, Node: name, Error: err.Error(), Duration: r.now().Sub(start)})
		return res, err
	}
	if res == nil {
		res = &NodeResult{}
	}
	if err := rn.checkGoto(node, res); err != nil {
		return nil, err
	}
	r.emit(Event{Kind: EvNodeEnd, Thread: rn.thread.ID, Step: step, Node: name, Writes: res.Writes, Duration: r.now().Sub(start), Interrupt: res.Interrupt})
	return res, nil
}

func (rn *run) callOnce(ctx context.Context, fn NodeFunc, call *NodeCall, node *spec.Node) (res *NodeResult, err error) {
	if node.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, node.Timeout, fmt.Errorf("node %q timed out after %s", node.Name, node.Timeout))
		defer cancel()
	}
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, fmt.Errorf("node kind %s panicked: %v", node.Kind, p)
		}
	}()
	res, err = fn(ctx, call)
	if err != nil && ctx.Err() != nil && context.Cause(ctx) != nil && !errors.Is(err, context.Cause(ctx)) {
		err = fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	}
	if err == nil && node.Goto != nil && res != nil && res.Interrupt == nil && len(res.Goto) == 0 {
		res.Goto, err = rn.evalGoto(call, node, res)
	}
	return res, err
}

// evalGoto evaluates a node's goto expression on the state as it would be
// after the node's own writes.
func (rn *run) evalGoto(call *NodeCall, node *spec.Node, res *NodeResult) ([]string, error) {
	after, _, _, err := Merge(call.Graph, call.Step, call.State, []NodeWrites{{Node: node.Name, Writes: res.Writes}})
	if err != nil {
		return nil, err
	}
	v, err := node.Goto.Eval(stateEnv(after))
	if err != nil {
		return nil, fmt.Errorf("goto: %w", err)
	}
	return routeNames(v)
}

func (rn *run) checkGoto(node *spec.Node, res *NodeResult) error {
	for _, g := range res.Goto {
		ok := false
		for _, p := range node.GotoPaths {
			if p.Name == g {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("goto %q is not one of goto_paths (%s)", g, refList(node.GotoPaths))
		}
	}
	return nil
}

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
