package runtime

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
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
	// IDs makes the checkpoint ids; when nil the runner makes a clock of
	// its own on first use. Runners that share a saver and may write the
	// same threads should share one IDClock (an engine does).
	IDs *IDClock
	// Version is recorded in checkpoint metadata.
	Version string
	// GraphFile is recorded with new threads.
	GraphFile string
	// Strict makes a changed graph an error on resume instead of a warning.
	Strict bool
	// ReuseRecords makes a replay reuse the model replies and tool results
	// recorded by the original run instead of calling again.
	ReuseRecords bool
	// Observer watches runs, steps and nodes (tracing, metrics); may be
	// nil. Child runs share it.
	Observer Observer

	emitMu  sync.Mutex
	idsOnce sync.Once
	// child marks a runner of subgraph and map-item runs: they run under
	// the parent thread's lease and take none of their own.
	child bool
	// msgRun is the message-id prefix of a child run ("" for a thread):
	// see "Message ids" in the package documentation.
	msgRun string
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
	// Goto, when set, names the nodes the next step runs instead of the
	// thread's next nodes; like an update as a node it replaces the
	// pending step, so interrupt nodes then need no value.
	Goto   []string
	Config Config
}

// lock takes the thread's lease when the saver supports it.
func (r *Runner) lock(ctx context.Context, thread string) (func(), error) {
	l, ok := r.Saver.(Locker)
	if !ok || r.child {
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

// ids returns the runner's id clock.
func (r *Runner) ids() *IDClock {
	r.idsOnce.Do(func() {
		if r.IDs == nil {
			r.IDs = &IDClock{}
		}
	})
	return r.IDs
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
	// failed attempts not yet committed (spent).
	used  Totals
	spent []Usage
	// ledger is the budget the current step's nodes share, nil between
	// steps.
	ledger *Ledger
	// replayTag gives a replay's first step fresh child runs.
	replayTag string
	started   time.Time
	// own keeps the spare capacity and id indexes of the lists of the
	// last step's merge for the next (see [owner]).
	own *owner
	// stepCtx is the context of the current step's observation (see
	// [Observer]); nil when there is none.
	stepCtx context.Context
	// input is the turn's input commit while it waits to be made with the
	// first step's (see deferInput); held are the events emitted
	// meanwhile, while holding. unlock releases the lease taken with it.
	input   *deferredInput
	holding bool
	held    []Event
	unlock  func()
}

// Run starts a turn on a thread: a new thread, or a new turn on a finished
// one (multi-turn). Input is merged through the reducers as the turn's
// input checkpoint. A thread id [CheckThreadID] rejects is an error.
func (r *Runner) Run(ctx context.Context, opts RunOptions) (*Result, error) {
	if r.Observer == nil {
		return r.runTurn(ctx, opts)
	}
	ctx, info := r.observeRun(ctx, "run", opts.Thread)
	res, err := r.runTurn(ctx, opts)
	r.Observer.EndRun(ctx, info, res, err)
	return res, err
}

func (r *Runner) runTurn(ctx context.Context, opts RunOptions) (*Result, error) {
	if opts.Thread == "" {
		return nil, fmt.Errorf("run: no thread id")
	}
	if !r.child {
		// Child runs are named under their parent thread, with ChildSep.
		if err := CheckThreadID(opts.Thread); err != nil {
			return nil, err
		}
	}
	if lc, ok := r.Saver.(LockingCommitter); ok && !r.child {
		// A new thread takes its lease with its input commit; a thread
		// that exists (or appeared meanwhile) takes the lease first.
		var res *Result
		err := errReadFirst
		if _, ok := r.Saver.(ChainCommitter); ok && r.Observer == nil {
			res, err = r.turn(ctx, opts, lc, true)
		}
		if errors.Is(err, errReadFirst) {
			res, err = r.turn(ctx, opts, lc, false)
		}
		if !errors.Is(err, errLockFirst) {
			return res, err
		}
	}
	unlock, err := r.lock(ctx, opts.Thread)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return r.turn(ctx, opts, nil, false)
}

// errLockFirst sends a run back to the path that takes its lease before
// it reads the thread; errReadFirst to the path that reads the thread
// before it runs anything.
var (
	errLockFirst = errors.New("take the lease first")
	errReadFirst = errors.New("read the thread first")
)

// turn runs a turn. With lc it runs one only on a thread that does not
// exist, and takes the lease with the input commit; it returns
// errLockFirst, having committed nothing, when the thread exists.
//
// With guess, it does not read the thread but takes it to be new, as a
// run with lc mostly finds it, and goes on only when the input commit
// waits for the first step's (see deferInput): a thread that exists
// after all makes that commit fail as it makes the input commit of a
// thread that appeared meanwhile fail, and the run takes the lease
// first (errLockFirst), having committed nothing and told its listener
// nothing. Whatever keeps it from deferring the input (a done context,
// a bad input, a first step that calls out) returns errReadFirst before
// anything runs, so that the turn is run again with the thread read and
// fails, or goes on, as it always did.
func (r *Runner) turn(ctx context.Context, opts RunOptions, lc LockingCommitter, guess bool) (*Result, error) {
	var th *Thread
	if guess && ctx.Err() != nil {
		return nil, errReadFirst
	}
	if !guess {
		var err error
		th, err = r.Saver.Thread(ctx, opts.Thread)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("load thread %q: %w", opts.Thread, err)
		}
		if lc != nil && th != nil {
			return nil, errLockFirst
		}
	}
	readFirst := func(err error) error {
		if guess {
			return errReadFirst
		}
		return err
	}
	var head *Checkpoint
	base := r.Graph.Defaults()
	step := 0
	totals := Totals{}
	var err error
	if th != nil {
		head, err = r.get(ctx, th.ID, "")
		if err != nil {
			return nil, err
		}
		if ints := interruptsOf(head.Pending); len(ints) > 0 {
			return nil, &PausedError{Thread: th.ID, Interrupts: ints}
		}
		if th.Status != StatusDone && len(head.Next) > 0 {
			return nil, &UnfinishedError{Thread: th.ID, Status: th.Status, Next: head.Next}
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
	r.linkRun(ctx, th)

	var writes []Write
	for _, k := range spec.SortedKeys(opts.Input) {
		if r.Graph.Field(k) == nil {
			return nil, readFirst(fmt.Errorf("input: %w", &WriteError{Field: k, Err: fmt.Errorf("no such state field")}))
		}
		writes = append(writes, Write{Field: k, Value: spec.Normalize(opts.Input[k])})
	}
	values, delta, who, err := merge(r.Graph, r.msgRun, step, base, []NodeWrites{{Node: "__input__", Writes: writes}}, nil)
	if err != nil {
		return nil, readFirst(fmt.Errorf("input: %w", err))
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
		return nil, readFirst(err)
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
	cp.ID = r.ids().Next(r.now(), cp.ParentID)
	th.Status = StatusRunning
	th.Error = ""
	if cc := r.chainCommitter(rn, next); cc != nil {
		// The input is committed with the first step (see deferInput).
		if err := rn.deferInput(&Commit{Checkpoint: cp, ExpectHead: expect, Thread: *th}, head, lc, cc); err != nil {
			return nil, readFirst(err)
		}
	} else if guess {
		return nil, errReadFirst
	} else if lc == nil {
		if err := r.commit(ctx, &Commit{Checkpoint: cp, ExpectHead: expect, Thread: *th}, head); err != nil {
			return nil, err
		}
	} else {
		unlock, err := r.commitLocked(ctx, &Commit{Checkpoint: cp, ExpectHead: expect, Thread: *th}, head, lc)
		if err != nil {
			var ce *CommitConflictError
			if errors.As(err, &ce) {
				// The thread was created meanwhile and is not busy.
				return nil, errLockFirst
			}
			return nil, err
		}
		defer unlock()
	}
	th.Head = cp.ID
	rn.emit(Event{Kind: EvRunStart, Thread: th.ID, Step: step, Checkpoint: cp.ID, Values: values, Next: next})
	for _, b := range branches {
		rn.emit(Event{Kind: EvRoute, Thread: th.ID, Step: step, Message: b})
	}
	defer func() {
		if rn.unlock != nil {
			rn.unlock() // the lease taken with a deferred input commit
		}
	}()
	res, err := rn.loop(ctx, cp, cp.ID)
	var ie *inputError
	if errors.As(err, &ie) {
		// The deferred input commit failed: nothing of the turn is
		// committed, and the turn ends as its input commit's failure
		// ended it.
		if lc != nil && errors.As(ie.err, new(*CommitConflictError)) {
			return nil, errLockFirst
		}
		return nil, ie.err
	}
	return res, err
}

// Resume continues a thread from its head: after an interrupt, a failure,
// a crash or a limit.
func (r *Runner) Resume(ctx context.Context, opts ResumeOptions) (*Result, error) {
	if r.Observer == nil {
		return r.resume(ctx, opts)
	}
	ctx, info := r.observeRun(ctx, "resume", opts.Thread)
	res, err := r.resume(ctx, opts)
	r.Observer.EndRun(ctx, info, res, err)
	return res, err
}

func (r *Runner) resume(ctx context.Context, opts ResumeOptions) (*Result, error) {
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
	r.linkRun(ctx, th)
	rn := r.newRun(th)
	// Check the answer against the head before writing anything: a refused
	// resume changes nothing. Resuming honours the before-breakpoints the
	// thread paused at, however the state is updated first: the next step
	// runs those nodes without pausing again. An update as a node replaces
	// the pending step, so interrupt nodes then need no value.
	needValue := []string{}
	for _, p := range head.Pending {
		if p.Kind != PendingInterrupt || p.Interrupt == nil {
			continue
		}
		switch {
		case p.Interrupt.When == InterruptBefore:
			rn.resumeBefore[p.Node] = true
		case p.Interrupt.When == InterruptNode && opts.AsNode == "" && len(opts.Goto) == 0:
			needValue = append(needValue, p.Node)
		}
	}
	if len(needValue) > 0 {
		if !opts.HasValue {
			return nil, &NeedValueError{Thread: th.ID, Node: needValue[0]}
		}
		for _, n := range needValue {
			rn.resumeNodes[n] = true
		}
		rn.resumeValue = opts.Value
	} else if opts.HasValue {
		return nil, fmt.Errorf("thread %q is not waiting at an interrupt node: %w", th.ID, ErrValueNotNeeded)
	}
	cp := head
	if len(opts.Set) > 0 || opts.AsNode != "" || len(opts.Goto) > 0 {
		cp, err = r.updateNext(ctx, th, head, head, opts.Set, opts.AsNode, opts.Goto, SourceUpdate)
		if err != nil {
			return nil, err
		}
	}
	if len(cp.Next) == 0 {
		// A process that died between its last commit and marking the
		// thread done left it "running": finishing it is the resume.
		if len(opts.Set) > 0 || th.Status != StatusDone {
			return rn.loop(ctx, cp, cp.ID)
		}
		return nil, &DoneError{Thread: th.ID}
	}
	return rn.loop(ctx, cp, cp.ID)
}

// Fork writes a new checkpoint branching from checkpoint id with the given
// writes (as if node asNode had written them) and continues from it. The
// original history stays.
func (r *Runner) Fork(ctx context.Context, thread, id string, set []Write, asNode string, cfg Config) (*Result, error) {
	if r.Observer == nil {
		return r.fork(ctx, thread, id, set, asNode, cfg)
	}
	ctx, info := r.observeRun(ctx, "fork", thread)
	res, err := r.fork(ctx, thread, id, set, asNode, cfg)
	r.Observer.EndRun(ctx, info, res, err)
	return res, err
}

func (r *Runner) fork(ctx context.Context, thread, id string, set []Write, asNode string, cfg Config) (*Result, error) {
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
	r.linkRun(ctx, th)
	// A branch does not reuse the pending writes of the checkpoint it
	// starts from, but the usage of its uncommitted attempts was spent
	// and stays counted against the budgets.
	cp, err := r.update(ctx, th, base, &Checkpoint{Pending: pendingUsage(base.Pending)}, set, asNode, SourceFork)
	if err != nil {
		return nil, err
	}
	return r.newRun(th).loop(ctx, cp, cp.ID)
}

// Replay re-executes the thread from checkpoint id as a new branch; the
// original history stays. With ReuseRecords, recorded model replies and tool
// results of the original branch are reused.
func (r *Runner) Replay(ctx context.Context, thread, id string, cfg Config) (*Result, error) {
	if r.Observer == nil {
		return r.replay(ctx, thread, id, cfg)
	}
	ctx, info := r.observeRun(ctx, "replay", thread)
	res, err := r.replay(ctx, thread, id, cfg)
	r.Observer.EndRun(ctx, info, res, err)
	return res, err
}

func (r *Runner) replay(ctx context.Context, thread, id string, cfg Config) (*Result, error) {
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
	r.linkRun(ctx, th)
	rn := r.newRun(th)
	if r.ReuseRecords {
		if rn.records, err = r.branchRecords(ctx, th, base); err != nil {
			return nil, err
		}
	}
	if len(base.Next) == 0 {
		return nil, fmt.Errorf("checkpoint %s has no next nodes: %w", id, ErrNothingToResume)
	}
	// Re-executed from scratch, but what the attempts spent stays spent.
	base.Pending = pendingUsage(base.Pending)
	rn.replayTag = "r" + r.ids().Next(r.now(), "")[10:]
	return rn.loop(ctx, base, th.Head)
}

// pendingUsage returns the usage entries of pending.
func pendingUsage(pending []PendingWrite) []PendingWrite {
	var out []PendingWrite
	for _, p := range pending {
		if p.Kind == PendingUsage {
			out = append(out, p)
		}
	}
	return out
}

// branchAt returns cp when it is the thread's head. Otherwise cp is the
// checkpoint a replay started from, and the replay stops before its first
// step commits: branchAt commits a copy of cp (source fork) as the head of
// the new branch, so the stop is recorded where a resume finds it and the
// original branch's head is left as it was.
func (rn *run) branchAt(ctx context.Context, cp *Checkpoint) (*Checkpoint, error) {
	if cp.ID == rn.thread.Head {
		return cp, nil
	}
	return rn.r.update(ctx, rn.thread, cp, nil, nil, "", SourceFork)
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
	return r.updateNext(ctx, th, base, keepFrom, set, asNode, nil, src)
}

// updateNext is update whose checkpoint runs the nodes gotoNodes next
// when they are given (the pending step is then replaced, as by asNode).
func (r *Runner) updateNext(ctx context.Context, th *Thread, base, keepFrom *Checkpoint, set []Write, asNode string, gotoNodes []string, src Source) (*Checkpoint, error) {
	for _, n := range gotoNodes {
		if r.Graph.Nodes[n] == nil {
			return nil, fmt.Errorf("goto: graph %q has no node %q", r.Graph.Name, n)
		}
	}
	replace := asNode != "" || len(gotoNodes) > 0
	node := asNode
	if node == "" {
		node = "__human__"
	} else if r.Graph.Nodes[asNode] == nil {
		return nil, fmt.Errorf("update as a node: graph %q has no node %q", r.Graph.Name, asNode)
	}
	values, delta, who, err := merge(r.Graph, r.msgRun, base.Step+1, base.Values, []NodeWrites{{Node: node, Writes: set}}, nil)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if base.ID == "" {
		// The first checkpoint of a thread stores every field.
		delta = Delta{}
		for k, v := range values {
			delta[k] = Op{Kind: OpSet, Value: v}
		}
	}
	next, waiting := base.Next, base.Waiting
	if asNode != "" {
		next, waiting, err = r.nextNodes(values, []string{asNode}, nil, base.Waiting)
		if err != nil {
			return nil, err
		}
	}
	if len(gotoNodes) > 0 {
		next = append([]string(nil), gotoNodes...)
		sort.Strings(next)
		next = slices.Compact(next)
	}
	cp := &Checkpoint{
		Thread: th.ID, ParentID: base.ID, Step: base.Step + 1, TurnStep: base.TurnStep + 1,
		Values: values, Delta: delta, Next: next, Waiting: waiting,
		Metadata: r.meta(src, who, nil, base.Metadata.Totals),
	}
	cp.ID = r.ids().Next(r.now(), th.Head)
	var keep []PendingWrite
	if keepFrom != nil {
		for _, p := range keepFrom.Pending {
			// The usage of uncommitted attempts stays pending, also when an
			// update as a node replaces the step: it was spent.
			if p.Kind == PendingUsage || !replace && (p.Kind == PendingWrites || p.Kind == PendingPartial || (p.Kind == PendingInterrupt && p.Interrupt.When == InterruptNode)) {
				keep = append(keep, p)
			}
		}
		cp.Pending = keep
	}
	t := *th
	t.Status = StatusRunning
	if err := r.commit(ctx, &Commit{Checkpoint: cp, ExpectHead: th.Head, Thread: t, Writes: keep}, base); err != nil {
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
		started: r.now(), own: newOwner(),
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
		err = FindLastGood(ctx, r.Saver, err)
		if id == "" {
			return nil, fmt.Errorf("load thread %q: %w", thread, err)
		}
		return nil, fmt.Errorf("load checkpoint %s of thread %q: %w", id, thread, err)
	}
	cp.Values = r.upgradeValues(thread, cp.Values)
	cp.size = nil // measured again: the values may have been fitted
	return cp, nil
}

// upgradeValues fits stored values to the current graph: new fields get
// their defaults; values of removed fields are dropped.
func (r *Runner) upgradeValues(thread string, old map[string]any) map[string]any {
	out := make(map[string]any, len(r.Graph.Fields))
	for _, f := range r.Graph.Fields {
		if v, ok := old[f.Name]; ok {
			c, err := f.Coerce(v)
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
	if given.StateSize > 0 {
		out.StateSize = given.StateSize
	}
	return out
}

func (r *Runner) meta(src Source, who map[string][]string, usage []Usage, prev Totals) Metadata {
	return Metadata{
		Source: src, Writes: who, Graph: r.Graph.Name, GraphHash: r.Graph.Hash,
		Version: r.Version, Time: r.now().UTC(), Usage: usage, Totals: prev.Add(usage),
	}
}

// withoutCancel is context.WithoutCancel, without a new context when ctx
// cannot be cancelled anyway (then it has no deadline either).
func withoutCancel(ctx context.Context) context.Context {
	if ctx.Done() == nil {
		return ctx
	}
	return context.WithoutCancel(ctx)
}

// commit checks the new checkpoint's state size (measured from parent's,
// the checkpoint it follows, when not nil) and commits c.
func (r *Runner) commit(ctx context.Context, c *Commit, parent *Checkpoint) error {
	_, err := r.commitLocked(ctx, c, parent, nil)
	return err
}

// commitLocked is commit, through lc.CommitLocked when lc is not nil: it
// then returns the unlock of the thread's lease, or a [BusyError].
func (r *Runner) commitLocked(ctx context.Context, c *Commit, parent *Checkpoint, lc LockingCommitter) (func(), error) {
	if err := checkStateSize(parent, c.Checkpoint, r.stateSizeLimit(c.Thread.Config)); err != nil {
		return nil, err
	}
	c.Thread.Head = c.Checkpoint.ID
	c.Thread.Updated = r.now()
	var start time.Time
	if r.Observer != nil {
		start = r.now()
	}
	var unlock func()
	var err error
	if lc != nil {
		unlock, err = lc.CommitLocked(withoutCancel(ctx), c)
	} else {
		err = r.Saver.Commit(withoutCancel(ctx), c)
	}
	var be *BusyError
	busy := err != nil && errors.As(err, &be)
	// CommitLocked refusing a thread that is busy or appeared meanwhile
	// is no failed commit: the run takes the lease first and commits
	// (or is refused as busy) as without lc, and only that is reported.
	fallback := lc != nil && err != nil && (busy || errors.Is(err, ErrConflict))
	if r.Observer != nil && !fallback {
		r.Observer.Committed(ctx, r.now().Sub(start), err)
	}
	if err != nil {
		return nil, commitError(c.Thread.ID, err)
	}
	return unlock, nil
}

// commitError is the error of a run whose commit to thread failed with
// err: a [BusyError] as it is, a conflict as a [CommitConflictError].
func commitError(thread string, err error) error {
	var be *BusyError
	if errors.As(err, &be) {
		return err
	}
	if errors.Is(err, ErrConflict) {
		return &CommitConflictError{Thread: thread, Err: err}
	}
	return fmt.Errorf("save checkpoint: %w", err)
}

func (r *Runner) mark(ctx context.Context, th *Thread, status Status, msg string, writes []PendingWrite) error {
	t := *th
	t.Status, t.Error, t.Updated = status, msg, r.now()
	err := r.Saver.Mark(withoutCancel(ctx), &Mark{Thread: t, Writes: writes, ClearWrites: true})
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
	if err := rn.flush(ctx); err != nil {
		return nil, err
	}
	if err := r.mark(ctx, rn.thread, StatusDone, "", rn.withUsage(nil)); err != nil {
		return nil, err
	}
	return r.done(rn, cp), nil
}

// done reports the end of a run whose thread is marked done at cp.
func (r *Runner) done(rn *run, cp *Checkpoint) *Result {
	r.emit(Event{Kind: EvDone, Thread: rn.thread.ID, Step: cp.Step, Checkpoint: cp.ID, Values: cp.Values})
	return &Result{Thread: rn.thread.ID, Status: StatusDone, Checkpoint: cp}
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

// Update writes set to the thread as if node asNode had written it ("" for
// a human update) and commits the result as a new checkpoint without
// running anything: the next run or resume continues from it. At the head
// (id ""), pending interrupt answers and node results of the paused step
// are kept unless asNode replaces the step; at an older checkpoint id the
// update forks a new branch from it. A thread that does not exist yet gets
// the update, applied to the graph's defaults, as its first checkpoint.
// The thread is left done when nothing is scheduled next, else
// interrupted (waiting to be resumed).
func (r *Runner) Update(ctx context.Context, thread, id string, set []Write, asNode string) (*Checkpoint, error) {
	unlock, err := r.lock(ctx, thread)
	if err != nil {
		return nil, err
	}
	defer unlock()
	th, base, err := r.loadAt(ctx, thread, id)
	if errors.Is(err, ErrNotFound) && id == "" {
		if _, terr := r.Saver.Thread(ctx, thread); errors.Is(terr, ErrNotFound) {
			// A new thread: the update is its first checkpoint, made from
			// the graph's defaults.
			th = &Thread{ID: thread, Created: r.now(), GraphFile: r.GraphFile, Graph: r.Graph.Name, GraphHash: r.Graph.Hash}
			base, err = &Checkpoint{Thread: thread, Step: -1, Values: r.Graph.Defaults()}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	var keepFrom *Checkpoint
	if base.ID != "" && base.ID == th.Head {
		keepFrom = base
	}
	cp, err := r.update(ctx, th, base, keepFrom, set, asNode, SourceUpdate)
	if err != nil {
		return nil, err
	}
	status := StatusInterrupted
	if len(cp.Next) == 0 && len(interruptsOf(cp.Pending)) == 0 {
		status = StatusDone
	}
	if err := r.mark(ctx, th, status, "", cp.Pending); err != nil {
		return nil, err
	}
	return cp, nil
}
