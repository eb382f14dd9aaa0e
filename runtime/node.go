package runtime

import (
	"context"
	"fmt"

	"github.com/lgrun/lgrun/spec"
)

// NodeResult is what a node produced: writes merged through reducers, an
// optional route (like LangGraph's Command(goto=...)), model usage, and the
// recorded model replies and tool results that make a replay reproducible.
type NodeResult struct {
	Writes []Write  `json:"writes,omitempty"`
	Goto   []string `json:"goto,omitempty"`
	Usage  []Usage  `json:"usage,omitempty"`
	// Records are opaque recordings a node kind keeps for replay.
	Records []any `json:"records,omitempty"`
	// Interrupt, when set, pauses the run at this node; Writes are ignored.
	Interrupt *Interrupt `json:"-"`
}

// NodeCall is the input of one node execution.
type NodeCall struct {
	Graph *spec.Graph
	Node  *spec.Node
	// State is the snapshot of the step. It is shared by the step's nodes
	// and must not be modified.
	State  map[string]any
	Thread string
	Step   int
	// Resume holds the human's answer when HasResume is set (interrupt nodes).
	Resume    any
	HasResume bool
	// Replay holds the records of an earlier execution of this node at this
	// step, when the run replays recorded results (see Runner.ReuseRecords).
	Replay []any
	// ChildTag distinguishes the child runs (subgraphs, map items) of this
	// step from those of another branch of the thread.
	ChildTag string
	// Partial holds the records a failed earlier attempt of this node at
	// this step returned with its error (finished map items).
	Partial []any
	// Emit sends a progress event (tokens, tool calls) to the run's listener.
	Emit func(Event)
	// Runner is the runner executing the graph, for kinds that run children.
	Runner *Runner
	// Ledger is the budget of the step, shared by its nodes and chained to
	// the ledgers of the parent runs: reserve each model call on it before
	// making the call and settle it after (see [Ledger]). A call that
	// would pass a limit fails with a [BudgetError] instead of being made.
	Ledger *Ledger
	// StateSize is the run's state size limit, which child runs inherit.
	StateSize int64
}

// NodeFunc executes one node kind.
type NodeFunc func(ctx context.Context, call *NodeCall) (*NodeResult, error)

// NodeError is a node failure, pointing at the node in the graph file. It
// renders as "file:line:col: step N: node "x": cause" through
// [spec.FormatChain]: when the cause points somewhere more precise (an
// expression, a node of a subgraph), that position replaces the node's.
type NodeError struct {
	Node string
	Pos  spec.Pos
	Step int
	Err  error
}

func (e *NodeError) Error() string { return spec.FormatChain(e) }

// ErrorFrame implements [spec.Frame].
func (e *NodeError) ErrorFrame() (spec.Pos, string, error) {
	return e.frame(fmt.Sprintf("step %d: node %q", e.Step, e.Node))
}

// frame is ErrorFrame with the text naming the node and its step.
func (e *NodeError) frame(text string) (spec.Pos, string, error) {
	if we, ok := e.Err.(*WriteError); ok && we.Node == e.Node {
		// Name the node once.
		return e.Pos, text + fmt.Sprintf(": write to %q", we.Field), we.Err
	}
	return e.Pos, text, e.Err
}

func (e *NodeError) Unwrap() error { return e.Err }

// configOf returns the node's config of type T, or an error for a node
// whose config is not of its kind's type (a graph that did not come from
// spec.Check).
func configOf[T spec.NodeConfig](n *spec.Node) (T, error) {
	c, ok := spec.ConfigOf[T](n)
	if !ok {
		return c, fmt.Errorf("node %q of kind %s has a %T config", n.Name, n.Kind, n.Config)
	}
	return c, nil
}

func runSet(_ context.Context, call *NodeCall) (*NodeResult, error) {
	cfg, err := configOf[*spec.SetConfig](call.Node)
	if err != nil {
		return nil, err
	}
	res := &NodeResult{Writes: make([]Write, 0, len(cfg.Set))}
	for _, a := range cfg.Set {
		v, err := a.Expr.EvalState(call.State)
		if err != nil {
			return nil, fmt.Errorf("set %s: %w", a.Field, err)
		}
		res.Writes = append(res.Writes, Write{Field: a.Field, Value: v})
	}
	return res, nil
}

func runNoop(context.Context, *NodeCall) (*NodeResult, error) { return &NodeResult{}, nil }

func runInterrupt(_ context.Context, call *NodeCall) (*NodeResult, error) {
	cfg, err := configOf[*spec.InterruptConfig](call.Node)
	if err != nil {
		return nil, err
	}
	if !call.HasResume {
		var payload any
		if cfg.Payload != nil {
			v, err := cfg.Payload.EvalState(call.State)
			if err != nil {
				return nil, fmt.Errorf("payload: %w", err)
			}
			payload = v
		}
		return &NodeResult{Interrupt: &Interrupt{Node: call.Node.Name, When: InterruptNode, Payload: payload}}, nil
	}
	res := &NodeResult{}
	if cfg.Resume != "" {
		res.Writes = append(res.Writes, Write{Field: cfg.Resume, Value: spec.Normalize(call.Resume)})
	}
	return res, nil
}
