package runtime

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// Checkpoint is the state of a thread after a superstep (or after input, an
// update or a fork). Checkpoints are immutable once committed.
type Checkpoint struct {
	Thread   string
	ID       string // monotonic along a chain and sortable: 16 hex digits
	ParentID string // "" for the first checkpoint of a thread
	Step     int
	// TurnStep is the step of the input checkpoint that began the current
	// turn, moved forward by one for each update or fork in the turn; the
	// step limit counts the supersteps after it.
	TurnStep int
	// Values is the full state. Savers may store it as deltas but must
	// return it whole from Get.
	Values map[string]any
	// Delta is the change from the parent's values, per field.
	Delta Delta
	// Next lists the nodes the next superstep runs, sorted.
	Next []string
	// Waiting records, per join target, the sources that have finished.
	Waiting  map[string][]string
	Metadata Metadata
	// Pending holds the writes, interrupts and errors recorded against this
	// checkpoint by a step that did not complete. Filled by Saver.Get.
	Pending []PendingWrite

	// size is the state's measured size, once this process committed it.
	size *stateSize
}

// Source tells what created a checkpoint.
type Source string

// Checkpoint sources.
const (
	SourceInput  Source = "input"
	SourceLoop   Source = "loop"
	SourceUpdate Source = "update"
	SourceFork   Source = "fork"
)

// Metadata describes how a checkpoint came to be.
type Metadata struct {
	Source    Source              `json:"source"`
	Writes    map[string][]string `json:"writes,omitempty"` // node → fields it wrote
	Graph     string              `json:"graph"`
	GraphHash string              `json:"graph_hash"`
	Version   string              `json:"lgrun"`
	Time      time.Time           `json:"time"`
	// Usage lists the model calls made in this step.
	Usage []Usage `json:"usage,omitempty"`
	// Totals is the thread's cumulative usage up to and including this checkpoint.
	Totals Totals `json:"totals"`
	// Records holds, per node, the model replies and tool results it
	// recorded in this step, so a replay can reuse them.
	Records map[string][]any `json:"records,omitempty"`
}

// Usage is the accounting of one model call.
type Usage struct {
	Node         string  `json:"node"`
	Model        string  `json:"model"`
	InputTokens  int     `json:"in"`
	OutputTokens int     `json:"out"`
	CostUSD      float64 `json:"cost,omitempty"`
	// Estimated is set when the server reported no usage and the token
	// counts were estimated from the text.
	Estimated bool `json:"estimated,omitempty"`
	// ID identifies the call (see [Reservation.Settle]), so a call recorded
	// both by a failed step and by the child run that made it counts once.
	ID string `json:"id,omitempty"`
}

// Totals is cumulative usage.
type Totals struct {
	LLMCalls     int     `json:"llm_calls,omitempty"`
	InputTokens  int     `json:"in,omitempty"`
	OutputTokens int     `json:"out,omitempty"`
	CostUSD      float64 `json:"cost,omitempty"`
}

// Add returns t plus u.
func (t Totals) Add(us []Usage) Totals {
	for _, u := range us {
		t.LLMCalls++
		t.InputTokens += u.InputTokens
		t.OutputTokens += u.OutputTokens
		t.CostUSD += u.CostUSD
	}
	return t
}

// PendingKind tells what a pending write records.
type PendingKind string

// Pending write kinds.
const (
	// PendingWrites holds a node's successful result, to reuse on resume.
	PendingWrites PendingKind = "writes"
	// PendingInterrupt holds an interrupt waiting for the human.
	PendingInterrupt PendingKind = "interrupt"
	// PendingError holds a node's failure.
	PendingError PendingKind = "error"
	// PendingUsage holds the model usage of the attempts at this step that
	// did not commit (failed, stopped or paused, with their child runs'),
	// which counts against budgets and is recorded by the next commit.
	PendingUsage PendingKind = "usage"
	// PendingPartial holds the records of the finished parts of a failed
	// node (the items of a map), so a retry redoes only the rest.
	PendingPartial PendingKind = "partial"
)

// PendingWrite is something recorded against a checkpoint by an incomplete step.
type PendingWrite struct {
	Node string      `json:"node"`
	Kind PendingKind `json:"kind"`
	// Result is the node's result (kind writes).
	Result *NodeResult `json:"result,omitempty"`
	// Interrupt describes the pause (kind interrupt).
	Interrupt *Interrupt `json:"interrupt,omitempty"`
	// Error is the failure message (kind error).
	Error string `json:"error,omitempty"`
}

// InterruptWhen tells why a run paused.
type InterruptWhen string

// Interrupt reasons.
const (
	InterruptBefore InterruptWhen = "before" // static breakpoint before the node
	InterruptAfter  InterruptWhen = "after"  // static breakpoint after the node
	InterruptNode   InterruptWhen = "node"   // an interrupt node waiting for a value
)

// Interrupt is a pause waiting for a human.
type Interrupt struct {
	Node    string        `json:"node"`
	When    InterruptWhen `json:"when"`
	Payload any           `json:"payload,omitempty"`
	// Path locates an interrupt inside subgraphs, e.g. "team@2-a1b2c3/ask".
	Path string `json:"path,omitempty"`
}

// Status is a thread's state.
type Status string

// Thread statuses.
const (
	StatusRunning     Status = "running"
	StatusInterrupted Status = "interrupted"
	StatusDone        Status = "done"
	StatusFailed      Status = "failed"
	StatusBudget      Status = "budget-exceeded"
)

// Thread is a thread's row: its head checkpoint and status.
type Thread struct {
	ID        string
	Head      string // latest checkpoint id
	Status    Status
	Error     string // last failure, when Status is failed or budget-exceeded
	Graph     string // graph name
	GraphHash string
	GraphFile string
	Config    Config // run-time settings kept for resume
	Created   time.Time
	Updated   time.Time
}

// Config holds the settings given at run time that a resume keeps.
type Config struct {
	StepLimit       int      `json:"step_limit,omitempty"`
	InterruptBefore []string `json:"interrupt_before,omitempty"`
	InterruptAfter  []string `json:"interrupt_after,omitempty"`
	Timeout         Duration `json:"timeout,omitempty"`
	LLMCalls        int      `json:"llm_calls,omitempty"`
	Tokens          int      `json:"tokens,omitempty"`
	CostUSD         float64  `json:"cost_usd,omitempty"`
	// StateSize bounds the state of each checkpoint, in bytes of JSON.
	StateSize int64 `json:"state_size,omitempty"`
	// Trace references the trace of the run that last ran the thread (a
	// W3C traceparent, set only when an [Observer] is configured), so the
	// next run links to it.
	Trace string `json:"trace,omitempty"`
}

// Duration is a time.Duration that marshals as a string like "1m30s".
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(time.Duration(d).String())), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// Commit is one atomic saver operation: store a checkpoint, move the
// thread's head and record its status, and optionally pending writes
// against the new checkpoint.
type Commit struct {
	Checkpoint *Checkpoint
	// ExpectHead is the head the thread must still have ("" for a new
	// thread); otherwise the commit fails with ErrConflict.
	ExpectHead string
	Thread     Thread // Head is set from Checkpoint.ID
	Writes     []PendingWrite
}

// Mark records a thread status and pending writes against its current head
// without creating a checkpoint, atomically, if the head is still Head.
type Mark struct {
	Thread Thread // ID, Head (expected and unchanged), Status, Error
	Writes []PendingWrite
	// ClearWrites drops the head's earlier pending writes first.
	ClearWrites bool
}

// Saver stores checkpoints. Implementations must be safe for concurrent use.
type Saver interface {
	// Commit applies c atomically. It returns an error wrapping ErrConflict
	// when the thread's head is not c.ExpectHead.
	Commit(ctx context.Context, c *Commit) error
	// Mark applies m atomically, with the same conflict rule on m.Thread.Head.
	Mark(ctx context.Context, m *Mark) error
	// Get returns a checkpoint with full Values and its Pending writes.
	// An empty id means the thread's head. It returns ErrNotFound when the
	// thread or checkpoint does not exist, and a *[CorruptError] when the
	// checkpoint, or one it is rebuilt from, cannot be read.
	Get(ctx context.Context, thread, id string) (*Checkpoint, error)
	// List returns the thread's checkpoints newest first, without Values
	// (Delta and Metadata are filled). limit <= 0 means all. When some
	// stored checkpoints cannot be read, List returns the others together
	// with an error joining a [CorruptError] for each bad one.
	List(ctx context.Context, thread string, limit int) ([]*Checkpoint, error)
	// Thread returns a thread's row, or ErrNotFound.
	Thread(ctx context.Context, id string) (*Thread, error)
	// Threads lists all threads, most recently updated first. Like List,
	// it returns the readable ones together with a [CorruptError] for
	// each that is not.
	Threads(ctx context.Context) ([]*Thread, error)
	// DeleteThread removes a thread and all its checkpoints.
	DeleteThread(ctx context.Context, id string) error
}

// Errors a Saver reports.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("thread has moved on")
	// ErrFenced is a write refused because the claim it was made under
	// (a run queue's claim on a run, checked in the write's transaction)
	// is no longer held: another worker owns the run now. It wraps
	// ErrConflict, so a runner stops as when it loses the head's
	// compare-and-swap, without writing anything more.
	ErrFenced = fmt.Errorf("%w: the claim it was made under is lost", ErrConflict)
)

// FencedError is a write refused by a fence (see [ErrFenced]), which it
// wraps.
type FencedError struct {
	Claim string // what was claimed, as "run <id>"
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("write refused: the claim on %s is lost (another worker took it over); nothing was written", e.Claim)
}

// Unwrap makes a FencedError an ErrFenced (and an ErrConflict).
func (e *FencedError) Unwrap() error { return ErrFenced }

// CorruptError reports a stored checkpoint that cannot be read back as it
// was written: its row fails its integrity check, is missing from its
// chain, or cannot be decoded or applied. Savers return it from Get (for
// the checkpoint itself or the one of its chain that is bad) and from List
// (see [Saver]); the other checkpoints of the thread stay readable.
type CorruptError struct {
	Thread string
	// Checkpoint is the bad checkpoint, not necessarily the one asked
	// for; "" when the thread's own row is bad.
	Checkpoint string
	Err        error // what is wrong with it
	// LastGood, when set, is the newest checkpoint of the thread older than
	// Checkpoint that loads: a fork from it continues the thread. Filled by
	// [FindLastGood].
	LastGood string
}

func (e *CorruptError) Error() string {
	if e.Checkpoint == "" {
		return fmt.Sprintf("thread %q cannot be read: %v", e.Thread, e.Err)
	}
	msg := fmt.Sprintf("checkpoint %s of thread %q cannot be read: %v", e.Checkpoint, e.Thread, e.Err)
	if e.LastGood != "" {
		msg += fmt.Sprintf("; the last good checkpoint is %s", e.LastGood)
	}
	return msg
}

func (e *CorruptError) Unwrap() error { return e.Err }

// CorruptErrors returns the [CorruptError] values err is made of (one, or
// several joined, as List and Threads return them), and false if err holds
// anything else. A nil err gives none and true.
func CorruptErrors(err error) ([]*CorruptError, bool) {
	if err == nil {
		return nil, true
	}
	if ce, ok := err.(*CorruptError); ok {
		return []*CorruptError{ce}, true
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return nil, false
	}
	var out []*CorruptError
	for _, e := range j.Unwrap() {
		sub, ok := CorruptErrors(e)
		if !ok {
			return nil, false
		}
		out = append(out, sub...)
	}
	return out, true
}

// FindLastGood fills in the LastGood of the [CorruptError] in err, if there
// is one, with the newest checkpoint of its thread older than the bad one
// that s loads (at most a few dozen are tried), and returns err.
func FindLastGood(ctx context.Context, s Saver, err error) error {
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.LastGood != "" || ce.Checkpoint == "" {
		return err
	}
	// List reports corrupt rows besides the good ones; the good ones are
	// what is wanted here.
	cps, _ := s.List(ctx, ce.Thread, 0)
	tries := 0
	for _, cp := range cps { // newest first
		if cp.ID >= ce.Checkpoint {
			continue
		}
		if tries++; tries > 50 {
			break
		}
		if _, gerr := s.Get(ctx, ce.Thread, cp.ID); gerr == nil {
			ce.LastGood = cp.ID
			break
		}
	}
	return err
}

// IDClock makes checkpoint ids: 16 hex digits of the clock's nanoseconds,
// each greater than its parent and than every id the clock made before.
// A [Runner] takes its clock from [Runner.IDs]; runners of different
// engines keep separate clocks, so one engine's clock (a test's fixed
// time, say) never moves the other's ids. The zero value is ready to use
// and safe for concurrent use.
type IDClock struct {
	mu   sync.Mutex
	last uint64
}

// Next returns a new id for a checkpoint made at now whose parent is
// parent ("" for none).
func (c *IDClock) Next(now time.Time, parent string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := uint64(now.UnixNano())
	if p, err := strconv.ParseUint(parent, 16, 64); err == nil && n <= p {
		n = p + 1
	}
	if n <= c.last {
		n = c.last + 1
	}
	c.last = n
	var buf [16]byte
	const hex = "0123456789abcdef"
	for i := len(buf) - 1; i >= 0; i-- {
		buf[i] = hex[n&0xf]
		n >>= 4
	}
	return string(buf[:])
}

// Locker is implemented by savers that can keep two processes from running
// one thread at the same time. Runs take the thread's lease before their
// first step, so a second run fails at once with a [BusyError] instead of
// doing the step's work (and spending model calls) only to lose the commit.
// A lease whose owner died or stopped renewing it is taken over. The
// compare-and-swap on the thread head remains the last line of defence.
type Locker interface {
	// Lock takes thread's lease for this process until unlock is called.
	Lock(ctx context.Context, thread string) (unlock func(), err error)
}

// LockingCommitter is implemented by [Locker]s that can take a thread's
// lease in the transaction of a commit. [Runner.Run] uses it for the input
// commit of a thread that does not exist yet, saving the lease its own
// transaction; every other path takes the lease with [Locker.Lock] before
// it reads the thread.
type LockingCommitter interface {
	Locker
	// CommitLocked is Commit that also takes c.Thread.ID's lease, as Lock
	// does, in the same transaction, checked before the head: while another
	// live process holds the lease it fails with a [BusyError] and commits
	// nothing. On success the lease is held (and renewed) until unlock is
	// called; on any error no lease is held.
	CommitLocked(ctx context.Context, c *Commit) (unlock func(), err error)
}

// ChainCommitter is implemented by savers that can commit consecutive
// checkpoints of one thread in one transaction. [Runner.Run] uses it to
// commit a turn's input checkpoint together with the checkpoint of the
// turn's first superstep when that superstep runs only in-process nodes
// (see "Durability" in the package documentation); a saver without it gets
// one commit per checkpoint.
type ChainCommitter interface {
	// CommitChain applies cs in order, atomically: all of them or none.
	// Each commit after the first follows the one before it (its
	// ExpectHead is that one's checkpoint). It fails as the first of them
	// that cannot be applied would fail alone ([ErrConflict] and the
	// rest), and then commits nothing. With lock, the saver is a
	// [LockingCommitter] and CommitChain also takes cs[0].Thread.ID's
	// lease in the same transaction, as CommitLocked does, returning its
	// unlock; without, unlock is nil.
	CommitChain(ctx context.Context, cs []*Commit, lock bool) (unlock func(), err error)
}

// BusyError is returned when another live process holds a thread's lease.
// It wraps ErrConflict.
type BusyError struct {
	Thread string
	Owner  string // host and pid of the holder
	Since  time.Time
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("thread %q is busy: another process (%s) has been running it since %s; wait for it to finish or pause (a holder that dies is taken over)", e.Thread, e.Owner, e.Since.Local().Format(time.RFC3339))
}

// Unwrap makes a BusyError an ErrConflict.
func (e *BusyError) Unwrap() error { return ErrConflict }
