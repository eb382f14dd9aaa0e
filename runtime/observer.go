package runtime

import (
	"context"
	"time"
)

// Observer watches the work of a run for tracing and metrics: the run, its
// supersteps, its nodes (and, through the nodes, child runs of subgraphs
// and map items, which run under their node's context). [Runner.Observer]
// is nil by default; then no hook is called and nothing is allocated.
//
// Each Start hook returns the context the work below it runs in; the
// matching End hook gets that context back. Hooks are called from the
// goroutines that do the work (nodes of a step run concurrently) and must
// be safe for concurrent use. Package observe implements Observer with
// OpenTelemetry.
type Observer interface {
	// StartRun begins a run: op is "run", "resume", "fork" or "replay".
	StartRun(ctx context.Context, info RunInfo) context.Context
	// LinkRun is told the trace reference the thread's previous run
	// stored (prev, "" for a new thread) and returns the current run's,
	// which the runtime stores in the thread's Config.Trace.
	LinkRun(ctx context.Context, prev string) string
	// EndRun ends a run with its result (nil after some errors) and error.
	EndRun(ctx context.Context, info RunInfo, res *Result, err error)
	// StartStep begins superstep step, which runs nodes next.
	StartStep(ctx context.Context, info RunInfo, step int, next []string) context.Context
	// EndStep ends a superstep; cp is the checkpoint it committed, nil
	// when it committed none (a failure, a pause).
	EndStep(ctx context.Context, cp *Checkpoint, err error)
	// StartNode begins a node's execution (all its attempts).
	StartNode(ctx context.Context, call *NodeCall) context.Context
	// NodeRetry reports a failed attempt that is retried.
	NodeRetry(ctx context.Context, attempt, of int, err error)
	// EndNode ends a node's execution.
	EndNode(ctx context.Context, call *NodeCall, res *NodeResult, err error)
	// Committed reports one checkpoint commit and how long it took.
	Committed(ctx context.Context, d time.Duration, err error)
}

// RunInfo describes a run to an [Observer].
type RunInfo struct {
	Op     string // run, resume, fork or replay
	Graph  string
	Thread string
	// Child is set for the runs of subgraph nodes and map items.
	Child bool
}

// observeRun starts the run span of op when the runner has an observer.
func (r *Runner) observeRun(ctx context.Context, op, thread string) (context.Context, RunInfo) {
	info := RunInfo{Op: op, Graph: r.Graph.Name, Thread: thread, Child: r.child}
	return r.Observer.StartRun(ctx, info), info
}

// linkRun records the current run's trace reference with the thread.
func (r *Runner) linkRun(ctx context.Context, th *Thread) {
	if r.Observer != nil {
		th.Config.Trace = r.Observer.LinkRun(ctx, th.Config.Trace)
	}
}

// endStep ends the current superstep's observation, if any.
func (rn *run) endStep(cp *Checkpoint, err error) {
	if rn.stepCtx != nil {
		rn.r.Observer.EndStep(rn.stepCtx, cp, err)
		rn.stepCtx = nil
	}
}
