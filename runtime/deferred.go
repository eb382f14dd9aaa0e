package runtime

import (
	"context"
	"errors"
)

// A turn's input checkpoint is committed together with its first
// superstep's when that step runs only in-process nodes (see "Durability"
// in the package documentation): the run then makes one transaction less.

// deferredInput is a turn's input commit waiting for the first step's.
type deferredInput struct {
	c      *Commit
	parent *Checkpoint      // the head the input follows, or nil
	lc     LockingCommitter // takes the thread's lease with it; nil when the lease is held (or there is none)
	cc     ChainCommitter
}

// inputError is the failure of a deferred input commit: nothing of the
// turn is committed, and the turn fails with err, as it did when its input
// was committed alone.
type inputError struct{ err error }

func (e *inputError) Error() string { return e.err.Error() }
func (e *inputError) Unwrap() error { return e.err }

// chainCommitter returns the saver as a [ChainCommitter] when the input
// commit of rn's turn, whose first step runs the nodes next, can wait for
// that step's commit, and nil when it cannot.
//
// It can when every node of the step is the runtime's own set or noop
// without timeout, retries or goto ([Runner.quick]) and no breakpoint
// before it pauses the step: such a step neither calls out nor waits, so
// it runs in microseconds and leaves nothing outside the process, and a
// crash while it runs is the same, seen from the database and from
// anything the run touched, as a crash just before the input commit.
// Child runs (subgraphs, map items) and observed runs (an [Observer]'s
// spans follow the commits) commit their input alone as before.
func (r *Runner) chainCommitter(rn *run, next []string) ChainCommitter {
	cc, ok := r.Saver.(ChainCommitter)
	if !ok || r.child || r.Observer != nil || len(next) == 0 {
		return nil
	}
	for _, n := range next {
		if !r.quick(n) || rn.before[n] {
			return nil
		}
	}
	return cc
}

// deferInput keeps the input commit c (whose parent is parent, the head,
// or nil for a new thread) to be made with the first step's commit, after
// checking the state size as the commit would. With lc the lease is taken
// with it. The run's events are held until the commit (so no one hears of
// a checkpoint that is not committed) and dropped if it fails.
func (rn *run) deferInput(c *Commit, parent *Checkpoint, lc LockingCommitter, cc ChainCommitter) error {
	if err := checkStateSize(parent, c.Checkpoint, rn.r.stateSizeLimit(c.Thread.Config)); err != nil {
		return err
	}
	rn.input = &deferredInput{c: c, parent: parent, lc: lc, cc: cc}
	rn.holding = rn.r.Events != nil
	return nil
}

// emit sends e to the runner's listener, or holds it while the run's input
// is not committed.
func (rn *run) emit(e Event) {
	if rn.r.Events == nil {
		return
	}
	if rn.holding {
		rn.held = append(rn.held, e)
		return
	}
	rn.r.emit(e)
}

// deliver sends the held events, once the input is committed.
func (rn *run) deliver() {
	held := rn.held
	rn.holding, rn.held = false, nil
	for _, e := range held {
		rn.r.emit(e)
	}
}

// flush commits the deferred input alone, if there is one: the run stops
// (fails, pauses, is cancelled) before its first step commits, or that
// commit failed otherwise than the input's would have. A failure is an
// *inputError.
func (rn *run) flush(ctx context.Context) error {
	in := rn.input
	if in == nil {
		return nil
	}
	rn.input = nil
	unlock, err := rn.r.commitLocked(ctx, in.c, in.parent, in.lc)
	if err != nil {
		rn.holding, rn.held = false, nil
		return &inputError{err}
	}
	rn.unlock = unlock
	rn.deliver()
	return nil
}

// commitStep commits a superstep's checkpoint c, whose parent is parent,
// with the deferred input commit when there is one, in one transaction.
// When the pair cannot be committed, it fails as the input commit alone
// would have (an *inputError: busy, conflict), or commits the two one
// after the other, as they were committed before, so that every other
// failure leaves what it left then (the input committed, the step not).
func (rn *run) commitStep(ctx context.Context, c *Commit, parent *Checkpoint) error {
	r := rn.r
	in := rn.input
	if in == nil {
		return r.commit(ctx, c, parent)
	}
	if err := checkStateSize(parent, c.Checkpoint, r.stateSizeLimit(c.Thread.Config)); err != nil {
		// The input is committed, the step is not, as before.
		if ferr := rn.flush(ctx); ferr != nil {
			return ferr
		}
		return err
	}
	for _, x := range [...]*Commit{in.c, c} {
		x.Thread.Head = x.Checkpoint.ID
		x.Thread.Updated = r.now()
	}
	unlock, err := in.cc.CommitChain(withoutCancel(ctx), []*Commit{in.c, c}, in.lc != nil)
	if err == nil {
		rn.input, rn.unlock = nil, unlock
		rn.deliver()
		return nil
	}
	if errors.Is(err, ErrConflict) {
		// Busy or a moved head: the input's lease or compare-and-swap (the
		// step follows the input in the same transaction).
		rn.input = nil
		rn.holding, rn.held = false, nil
		return &inputError{commitError(in.c.Thread.ID, err)}
	}
	if ferr := rn.flush(ctx); ferr != nil {
		return ferr
	}
	return r.commit(ctx, c, parent)
}
