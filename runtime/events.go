package runtime

import "time"

// EventKind names a run event.
type EventKind string

// Run events, in the order a step produces them.
const (
	EvRunStart   EventKind = "run_start"
	EvStepStart  EventKind = "step_start"
	EvNodeStart  EventKind = "node_start"
	EvNodeEnd    EventKind = "node_end"
	EvNodeError  EventKind = "node_error"
	EvCheckpoint EventKind = "checkpoint"
	EvInterrupt  EventKind = "interrupt"
	EvDone       EventKind = "done"
	EvError      EventKind = "error"
	EvWarning    EventKind = "warning"
	// EvToken carries streamed model output (Token) for `--stream messages`.
	EvToken EventKind = "token"
	// EvTokenReset voids the tokens Node streamed so far in this step: the
	// model call they came from failed, and a retry or fallback streams its
	// reply anew (or the node fails). Message says why.
	EvTokenReset EventKind = "token_reset"
	// EvRoute reports a conditional branch taken; Message holds its
	// spec.Branch ID.
	EvRoute EventKind = "route"
	// EvMessage carries a progress note from a node kind (a tool call, a retry).
	EvMessage EventKind = "message"
)

// Event is one progress report of a run. Listeners must not modify it.
type Event struct {
	Kind   EventKind `json:"event"`
	Thread string    `json:"thread"`
	// Namespace is the path of the subgraph run that produced the event,
	// e.g. "research@3" or "team@2/coder@1"; empty for the top graph.
	Namespace  string         `json:"namespace,omitempty"`
	Step       int            `json:"step"`
	Node       string         `json:"node,omitempty"`
	Checkpoint string         `json:"checkpoint,omitempty"`
	Writes     []Write        `json:"writes,omitempty"`
	Values     map[string]any `json:"values,omitempty"`
	Next       []string       `json:"next,omitempty"`
	Interrupt  *Interrupt     `json:"interrupt,omitempty"`
	Duration   time.Duration  `json:"duration_ns,omitempty"`
	Error      string         `json:"error,omitempty"`
	Token      string         `json:"token,omitempty"`
	Message    string         `json:"message,omitempty"`
}
