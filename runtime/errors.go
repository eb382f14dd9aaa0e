package runtime

import (
	"errors"
	"fmt"
	"strings"
)

// StepLimitError stops a run that reached its superstep limit.
type StepLimitError struct {
	Limit int
	Step  int
	Nodes []string // the nodes that would have run next
}

func (e *StepLimitError) Error() string {
	return fmt.Sprintf("step limit of %d reached at step %d (nodes still scheduled: %s); the state is saved: resume with a higher step limit", e.Limit, e.Step, strings.Join(e.Nodes, ", "))
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
	return fmt.Sprintf("thread %q is paused at %s: new input would drop the pending step; continue it with `lgrun resume --thread %s [--value JSON]`, or start over with a new --thread (or `lgrun threads delete %s`)", e.Thread, strings.Join(nodes, ", "), e.Thread, e.Thread)
}

// ErrUnfinished refuses new input to a thread whose last run did not finish.
var ErrUnfinished = errors.New("thread has an unfinished run")

// ErrNothingToResume is returned when a thread has nothing left to run.
var ErrNothingToResume = errors.New("nothing to resume")

// ErrNeedValue is returned when resuming an interrupt node without a value.
var ErrNeedValue = errors.New("resume value needed")

// ErrValueNotNeeded is returned when a resume value is given to a thread
// that waits at no interrupt node.
var ErrValueNotNeeded = errors.New("--value has nothing to answer")

// ErrGraphChanged is returned in strict mode when a thread was created by a
// different version of the graph.
var ErrGraphChanged = errors.New("graph changed since the thread was created")
