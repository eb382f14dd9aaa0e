package runtime

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/lgrun/lgrun/spec"
)

// Default retry backoff of a node whose retry policy sets none.
const (
	DefaultInitialBackoff = 200 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
)

// kindFunc returns the implementation of a node kind: the runner's
// [Runner.Kinds] entry, else the runtime's own (set, noop, interrupt,
// subgraph, map).
func (r *Runner) kindFunc(kind string) (NodeFunc, error) {
	if f, ok := r.Kinds[kind]; ok && f != nil {
		return f, nil
	}
	if f := builtinKind(kind); f != nil {
		return f, nil
	}
	return nil, fmt.Errorf("node kind %q is not available in this runner", kind)
}

// invoke executes call.Node: the one invocation path of the runtime, used
// for the nodes of a superstep and for the items of a map node in node form
// alike. It
//
//   - runs each attempt under the node's timeout (the context's cause names
//     the node and the timeout),
//   - retries a failed attempt up to retry.max_attempts times with jittered
//     exponential backoff (never after a budget error or a cancelled
//     context), emitting an [EvMessage] per retry,
//   - emits [EvNodeStart] once, then [EvNodeEnd] or [EvNodeError],
//   - returns the model usage of every attempt, failed ones included,
//   - evaluates the node's goto on the state after its writes and checks
//     every route against its goto_paths,
//   - turns a panic of the kind into an error.
//
// Events go through call.Emit, which stamps thread, step, node and
// namespace.
func (r *Runner) invoke(ctx context.Context, call *NodeCall) (res *NodeResult, err error) {
	node := call.Node
	emit := call.Emit
	if emit == nil {
		emit = func(Event) {}
	}
	fn, err := r.kindFunc(node.Kind)
	if err != nil {
		return nil, err
	}
	attempts := max(node.Retry.MaxAttempts, 1)
	backoff := node.Retry.InitialBackoff
	if backoff == 0 {
		backoff = DefaultInitialBackoff
	}
	maxBackoff := node.Retry.MaxBackoff
	if maxBackoff == 0 {
		maxBackoff = DefaultMaxBackoff
	}
	emit(Event{Kind: EvNodeStart})
	// Durations are only reported in events, which go nowhere without a
	// listener (see [Runner.emit]).
	timed := r.Events != nil
	var start time.Time
	if timed {
		start = r.now()
	}
	since := func() time.Duration {
		if !timed {
			return 0
		}
		return r.now().Sub(start)
	}
	var attemptUsage []Usage
	obs := r.Observer
	if obs != nil {
		ctx = obs.StartNode(ctx, call)
	}
	defer func() {
		if len(attemptUsage) > 0 {
			if res == nil {
				res = &NodeResult{}
			}
			res.Usage = attemptUsage
		}
		if obs != nil {
			obs.EndNode(ctx, call, res, err)
		}
	}()
	for attempt := 1; ; attempt++ {
		res, err = r.callOnce(ctx, fn, call)
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
		emit(Event{Kind: EvMessage, Message: fmt.Sprintf("attempt %d of %d failed: %v; retrying", attempt, attempts, err)})
		if obs != nil {
			obs.NodeRetry(ctx, attempt, attempts, err)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, maxBackoff)
	}
	if err != nil {
		emit(Event{Kind: EvNodeError, Error: err.Error(), Duration: since()})
		return res, err
	}
	if res == nil {
		res = &NodeResult{}
	}
	if err := checkGoto(call.Graph, node, res); err != nil {
		return nil, err
	}
	emit(Event{Kind: EvNodeEnd, Writes: res.Writes, Duration: since(), Interrupt: res.Interrupt})
	return res, nil
}

// callOnce makes one attempt of call under the node's timeout and
// evaluates its goto.
func (r *Runner) callOnce(ctx context.Context, fn NodeFunc, call *NodeCall) (res *NodeResult, err error) {
	node := call.Node
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
		res.Goto, err = evalGoto(call, node, res)
	}
	return res, err
}

// evalGoto evaluates a node's goto expression on the state as it would be
// after the node's own writes.
func evalGoto(call *NodeCall, node *spec.Node, res *NodeResult) ([]string, error) {
	after, _, _, err := merge(call.Graph, call.Runner.msgRun, call.Step, call.State, []NodeWrites{{Node: node.Name, Writes: res.Writes}}, nil)
	if err != nil {
		return nil, err
	}
	v, err := node.Goto.EvalState(after)
	if err != nil {
		return nil, fmt.Errorf("goto: %w", err)
	}
	return routeNames(v)
}

// checkGoto checks the routes of res against the node's goto_paths. A map
// node in node form may also route where its mapped node's goto_paths go:
// the items' routes become the map node's.
func checkGoto(g *spec.Graph, node *spec.Node, res *NodeResult) error {
	paths := node.GotoPaths
	if m := node.MappedNode(); m.Name != "" {
		if t := g.Nodes[m.Name]; t != nil {
			paths = append(append([]spec.NameRef(nil), paths...), t.GotoPaths...)
		}
	}
	for _, to := range res.Goto {
		ok := false
		for _, p := range paths {
			if p.Name == to {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("goto %q is not one of goto_paths (%s)", to, refList(paths))
		}
	}
	return nil
}
