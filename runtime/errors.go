package runtime

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lgrun/lgrun/spec"
)

// StepLimitError stops a run that reached its superstep limit.
type StepLimitError struct {
	Limit int
	Step  int
	Nodes []string // the nodes that would have run next
}

func (e *StepLimitError) Error() string {
	return fmt.Sprintf("step limit of %d reached at step %d (nodes still scheduled: %s); the state is saved", e.Limit, e.Step, strings.Join(e.Nodes, ", "))
}

// BudgetError stops a run that reached a budget (LLM calls, tokens, cost, time).
type BudgetError struct {
	What  string // "llm_calls", "tokens", "cost_usd", "timeout"
	Limit string
	Used  string
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("budget %s reached (limit %s, used %s); the state is saved: resume with a raised limit", e.What, e.Limit, e.Used)
}

// PausedError refuses new input to a thread that waits at an interrupt.
type PausedError struct {
	Thread     string
	Interrupts []Interrupt
}

func (e *PausedError) Error() string {
	var nodes []string
	for _, in := range e.Interrupts {
		nodes = append(nodes, in.Node)
	}
	return fmt.Sprintf("thread %q is paused at %s: new input would drop the pending step", e.Thread, strings.Join(nodes, ", "))
}

// UnfinishedError refuses new input to a thread whose last run did not
// finish. It is an [ErrUnfinished].
type UnfinishedError struct {
	Thread string
	Status Status
	Next   []string // the nodes the thread would run next
}

func (e *UnfinishedError) Error() string {
	return fmt.Sprintf("thread %q (status %s, next %v): %v", e.Thread, e.Status, e.Next, ErrUnfinished)
}

// Unwrap makes an UnfinishedError an ErrUnfinished.
func (e *UnfinishedError) Unwrap() error { return ErrUnfinished }

// DoneError refuses to resume a thread whose turn is done. It is an
// [ErrNothingToResume]; a new turn starts with [Runner.Run].
type DoneError struct {
	Thread string
}

func (e *DoneError) Error() string {
	return fmt.Sprintf("thread %q is done: %v", e.Thread, ErrNothingToResume)
}

// Unwrap makes a DoneError an ErrNothingToResume.
func (e *DoneError) Unwrap() error { return ErrNothingToResume }

// NeedValueError refuses to resume a thread that waits at an interrupt
// node without a value to answer it. It is an [ErrNeedValue].
type NeedValueError struct {
	Thread string
	Node   string
}

func (e *NeedValueError) Error() string {
	return fmt.Sprintf("thread %q waits at interrupt node %s: %v", e.Thread, e.Node, ErrNeedValue)
}

// Unwrap makes a NeedValueError an ErrNeedValue.
func (e *NeedValueError) Unwrap() error { return ErrNeedValue }

// ErrNotRecorded is a replay that reuses recorded results (see
// [Runner.ReuseRecords]) reaching a model call or tool call the original
// run did not record.
var ErrNotRecorded = errors.New("no recorded result to reuse")

// CommitConflictError is a commit that lost the race for the thread head:
// another process committed a newer checkpoint, or is running the thread.
// It wraps the saver's error (an [ErrConflict]).
type CommitConflictError struct {
	Thread string
	Err    error
}

func (e *CommitConflictError) Error() string {
	return fmt.Sprintf("%v: another process committed a newer checkpoint of thread %q (or is running it now)", e.Err, e.Thread)
}

// Unwrap returns the saver's error.
func (e *CommitConflictError) Unwrap() error { return e.Err }

// StepError is a failure of a superstep as a whole (merging its writes,
// committing its checkpoint) rather than of one of its nodes.
type StepError struct {
	Step int
	Err  error
}

func (e *StepError) Error() string { return spec.FormatChain(e) }

// Unwrap returns the underlying error.
func (e *StepError) Unwrap() error { return e.Err }

// ErrorFrame implements [spec.Frame].
func (e *StepError) ErrorFrame() (spec.Pos, string, error) {
	return spec.Pos{}, fmt.Sprintf("step %d", e.Step), e.Err
}

// EdgeError is a conditional edge whose expression failed at run time.
type EdgeError struct {
	From string   // the source node
	Pos  spec.Pos // the edge
	Err  error
}

func (e *EdgeError) Error() string { return spec.FormatChain(e) }

// Unwrap returns the underlying error.
func (e *EdgeError) Unwrap() error { return e.Err }

// ErrorFrame implements [spec.Frame].
func (e *EdgeError) ErrorFrame() (spec.Pos, string, error) {
	return e.Pos, fmt.Sprintf("edge from %q", e.From), e.Err
}

// ChildError is the failure of a child run: a subgraph, or one item of a
// map over a graph.
type ChildError struct {
	Graph string // the child graph's name
	Run   string // the child run's thread id
	Err   error
}

func (e *ChildError) Error() string { return spec.FormatChain(e) }

// Unwrap returns the underlying error.
func (e *ChildError) Unwrap() error { return e.Err }

// ErrorFrame implements [spec.Frame]. A node of the child run is named
// with the child's step in parentheses, so the parent's "step N:" stays
// the only one.
func (e *ChildError) ErrorFrame() (spec.Pos, string, error) {
	text := fmt.Sprintf("subgraph %s (run %s)", e.Graph, e.Run)
	if ne, ok := e.Err.(*NodeError); ok {
		return ne.frame(fmt.Sprintf("%s: node %q (step %d)", text, ne.Node, ne.Step))
	}
	return spec.Pos{}, text, e.Err
}

// ItemError is the failure of one item of a map node.
type ItemError struct {
	Index int
	Err   error
}

func (e *ItemError) Error() string { return spec.FormatChain(e) }

// Unwrap returns the underlying error.
func (e *ItemError) Unwrap() error { return e.Err }

// ErrorFrame implements [spec.Frame].
func (e *ItemError) ErrorFrame() (spec.Pos, string, error) {
	return spec.Pos{}, fmt.Sprintf("item %d", e.Index), e.Err
}

// ErrUnfinished refuses new input to a thread whose last run did not finish.
var ErrUnfinished = errors.New("thread has an unfinished run")

// ErrNothingToResume is returned when a thread has nothing left to run.
var ErrNothingToResume = errors.New("nothing to resume")

// ErrNeedValue is returned when resuming an interrupt node without a value.
var ErrNeedValue = errors.New("resume value needed")

// ErrValueNotNeeded is returned when a resume value is given to a thread
// that waits at no interrupt node.
var ErrValueNotNeeded = errors.New("the resume value has nothing to answer")

// ErrGraphChanged is returned in strict mode when a thread was created by a
// different version of the graph.
var ErrGraphChanged = errors.New("graph changed since the thread was created")
