package checkpoint

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/lgrun/lgrun/runtime"
)

// Following heads (layout version 5).
//
// A step's commit used to rewrite its thread's row (the head, the updated
// time, the pending-write count) besides inserting its checkpoint: one
// more b-tree page written to the WAL per commit, a third of the frames of
// a step (see BENCHMARKS.md, "Why the ratio stays near 1.5"). Now a
// thread's row may follow its greatest checkpoint (threads.follow = 1):
// its head is then the thread's checkpoint with the greatest id, and that
// checkpoint's row holds the thread's pending-write count and updated time
// (checkpoints.pending and updated_off, the nanoseconds after the row's
// time), sealed by a checksum of their own (live_sum, see [liveSum]) that
// the row's full checksum covers too. Every checkpoint row written in
// layout 5 carries them; a row whose head is pinned (follow NULL) keeps
// its own head, time and count, as in layout 4.
//
// The compare-and-swap of the head runs in Go, on what the writer
// connection knows (see [threadState]): a commit's transaction is BEGIN
// IMMEDIATE, so no other connection writes while it runs, and PRAGMA
// data_version, read in the transaction, tells whether any other
// connection committed since this one last looked. When none did, the
// writer knows each thread it committed to as it left it. A commit whose
// thread follows, whose expected head is the thread's head, whose ids grow
// past the thread's greatest checkpoint, and whose thread status and
// settings are what the row holds, inserts its checkpoint only. Any other
// commit (another connection committed, a new thread or one this handle
// has not written, a status or settings change, a fork whose id does not
// grow) reads the thread's head in the transaction, compares it, and
// writes the thread's row: following when the thread runs on and its ids
// grow, pinned otherwise. A run's last commit (done) and a status mark
// (interrupted, failed) pin the head, so a thread at rest has its head in
// its row, and a lost head checkpoint is reported as in layout 4. While a
// thread runs, its head is found as its greatest checkpoint; losing that
// row entirely (its key damaged, or the row deleted) makes the head its
// parent, as a power loss of the last commits would (never earlier than
// the head the row names, whose loss is reported); damage to the row that
// leaves its key is reported as that checkpoint's.

// liveJoin joins a threads row t to its greatest checkpoint l when the row
// follows it (and the checkpoint is not older than the row's head, which
// is then missing: reads report it as in layout 4).
const liveJoin = `LEFT JOIN checkpoints l ON t.follow = 1 AND l.thread = t.id
	AND l.id = (SELECT max(m.id) FROM checkpoints m WHERE m.thread = t.id) AND l.id >= t.head`

// liveColumns are the columns of l that [liveRow.scanArgs] reads.
const liveColumns = `l.id, l.time, l.pending, l.updated_off, l.live_sum`

// threadLiveSQL reads a threads row and its live state.
const threadLiveSQL = `SELECT ` + threadColumns + `, ` + liveColumns + ` FROM threads t ` + liveJoin

// liveUpdatedSQL is a thread's updated time in threadLiveSQL (unverified:
// for ordering and selecting only).
const liveUpdatedSQL = `COALESCE(l.time + l.updated_off, t.updated)`

// liveRow is the state of a thread held by its greatest checkpoint.
type liveRow struct {
	id                   sql.NullString
	time                 sql.NullInt64
	pending, off, sum    sql.NullInt64
}

func (l *liveRow) scanArgs() []any { return []any{&l.id, &l.time, &l.pending, &l.off, &l.sum} }

// liveSum is the checksum of a checkpoint row's thread state (column
// live_sum): the thread, the checkpoint's id and time, the pending-write
// count and the updated time's offset, so that reading a thread's state
// from its greatest checkpoint verifies those columns without reading the
// whole row. Stored as a signed 32-bit value, as [linkSum].
func liveSum(thread, id string, time int64, pending, off sql.NullInt64) int64 {
	var s summer
	s.str("live/5")
	s.str(thread)
	s.str(id)
	s.int(time)
	s.nullInt(pending)
	s.nullInt(off)
	return int64(int32(s.crc))
}

// resolve makes a verified threads row that follows its greatest
// checkpoint hold that checkpoint's state (head, pending count, updated
// time), as the pinned row of that state would, checksum included. A state that fails its checksum is a *runtime.CorruptError naming
// that checkpoint: the head must not silently fall back a step.
func (r *threadRow) resolve(l *liveRow) error {
	if !r.follow.Valid {
		return nil
	}
	if r.follow.Int64 != 1 {
		return &runtime.CorruptError{Thread: r.id, Err: fmt.Errorf("its row has an unknown head mode %d", r.follow.Int64)}
	}
	if !l.id.Valid {
		return nil // the head the row names is missing, reported where it is read
	}
	if !l.sum.Valid || !l.time.Valid || l.sum.Int64 != liveSum(r.id, l.id.String, l.time.Int64, l.pending, l.off) {
		return &runtime.CorruptError{Thread: r.id, Checkpoint: l.id.String, Err: fmt.Errorf("the thread's state in its row fails its check: %w", errChecksum)}
	}
	// The row now stands for the pinned row of that state, sealed as
	// such (it is verified: later checks of it must pass).
	r.head, r.pending, r.updated, r.follow = l.id.String, l.pending, l.time.Int64+l.off.Int64, sql.NullInt64{}
	if r.sum.Valid {
		r.sum.Int64 = r.checksum()
	}
	return nil
}

// decodeLive verifies the row, resolves its live state and decodes it.
func (r *threadRow) decodeLive(l *liveRow) (*runtime.Thread, error) {
	if err := r.verify(); err != nil {
		return nil, err
	}
	if err := r.resolve(l); err != nil {
		return nil, err
	}
	return r.decode()
}

// threadState is what the writer connection knows of a thread it
// committed to, as of that commit (see [SQLite.states]).
type threadState struct {
	rowHead  string // the row's head column
	follow   bool   // the row follows its greatest checkpoint
	head     string // the thread's head
	greatest string // the thread's greatest checkpoint id
	// The row's status and settings.
	status, err, graph, graphHash, graphFile, config string
}

// maxStates bounds the threads [SQLite.states] remembers.
const maxStates = 1024

// pendingState is a thread's state as a transaction leaves it, kept in
// [SQLite.states] once it commits.
type pendingState struct {
	thread string
	st     threadState
}

// syncStates reads PRAGMA data_version in the write transaction and
// forgets what the writer knew of every thread if another connection
// committed since (SQLite changes the value only for other connections'
// commits). Call it with the write lock held, in a transaction.
func (s *SQLite) syncStates(ctx context.Context) error {
	dv, err := s.rawInt(ctx, &s.raw.dataVersion)
	if err != nil {
		return fmt.Errorf("read data version: %w", s.describe(err))
	}
	if !s.dvKnown || dv != s.dataVersion {
		clear(s.states)
		s.dataVersion, s.dvKnown = dv, true
	}
	return nil
}

// stateOf returns what the writer knows of thread: as this transaction
// left it (pending), else as of the last commit.
func (s *SQLite) stateOf(thread string, pending []pendingState) (threadState, bool) {
	for i := len(pending) - 1; i >= 0; i-- {
		if pending[i].thread == thread {
			return pending[i].st, true
		}
	}
	st, ok := s.states[thread]
	return st, ok
}

// keepStates records the states a committed transaction left.
func (s *SQLite) keepStates(pending []pendingState) {
	if s.states == nil {
		s.states = make(map[string]threadState, 8)
	}
	for _, p := range pending {
		if _, ok := s.states[p.thread]; !ok && len(s.states) >= maxStates {
			for t := range s.states {
				delete(s.states, t)
				break
			}
		}
		s.states[p.thread] = p.st
	}
}

// forgetStates drops what the writer knows of thread and, with children,
// of its child threads: a transaction that changes them otherwise than a
// commit does. Call it with the write lock held.
func (s *SQLite) forgetStates(thread string, children bool) {
	delete(s.states, thread)
	if !children {
		return
	}
	lo, hi := childRange(thread)
	for t := range s.states {
		if t >= lo && t < hi {
			delete(s.states, t)
		}
	}
}

// continues reports whether the commits g of one thread, each on the one
// before, may insert their checkpoints without writing the thread's row:
// the row follows, g starts on its head, g's ids grow past every id of
// the thread, and the thread runs on with the status and settings of the
// row (config is the last commit's, encoded).
func (st *threadState) continues(g []*runtime.Commit, config string) bool {
	first, last := g[0], g[len(g)-1]
	th := &last.Thread
	if !st.follow || first.ExpectHead == "" || first.ExpectHead != st.head || first.Checkpoint.ID <= st.greatest ||
		th.Status != runtime.StatusRunning || string(th.Status) != st.status || th.Error != st.err ||
		th.Graph != st.graph || th.GraphHash != st.graphHash || th.GraphFile != st.graphFile || config != st.config {
		return false
	}
	return idsGrow(g)
}

// idsGrow reports whether the ids of g grow commit by commit.
func idsGrow(g []*runtime.Commit) bool {
	for k := 1; k < len(g); k++ {
		if g[k].Checkpoint.ID <= g[k-1].Checkpoint.ID {
			return false
		}
	}
	return true
}

// advance moves the head of the thread of g (commits of one thread, each
// on the one before; e is the last one's encoding) in tx, and returns
// the thread's state after it: by inserting the checkpoints only when the
// thread follows and g continues it (see [threadState.continues]), else
// by the compare-and-swap of moveThread.
func (s *SQLite) advance(ctx context.Context, tx *wtx, g []*runtime.Commit, e *encodedCommit, pending []pendingState) (threadState, error) {
	st, known := s.stateOf(g[0].Thread.ID, pending)
	last := g[len(g)-1]
	if known && st.continues(g, e.config) {
		st.head, st.greatest = last.Checkpoint.ID, last.Checkpoint.ID
		return st, nil
	}
	return s.moveThread(ctx, tx, g, e, st, known)
}

// moveThread is the head's compare-and-swap in tx for the commits g (see
// advance): it reads the thread's head (unless st, known, holds it),
// fails with ErrConflict unless it is g's expected head (none for a new
// thread), and writes the thread's row at g's last checkpoint, with its
// status, following its greatest checkpoint if the thread runs on and g's
// ids grow past every id of the thread, else pinned.
func (s *SQLite) moveThread(ctx context.Context, tx *wtx, g []*runtime.Commit, e *encodedCommit, st threadState, known bool) (threadState, error) {
	first, c := g[0], g[len(g)-1]
	th := c.Thread
	expect := first.ExpectHead
	exists := known
	if !known {
		var head, greatest sql.NullString
		var follow sql.NullInt64
		if err := tx.StmtContext(ctx, s.stmtState).QueryRowContext(ctx, th.ID).Scan(&head, &follow, &greatest); err != nil {
			return st, fmt.Errorf("read thread head: %w", s.describe(err))
		}
		exists = head.Valid
		st = threadState{rowHead: head.String, follow: follow.Valid && follow.Int64 == 1, head: head.String, greatest: greatest.String}
		if st.follow && greatest.String >= st.rowHead {
			st.head = greatest.String
		}
	}
	if exists != (expect != "") || exists && st.head != expect {
		return st, fmt.Errorf("commit to thread %q: %w (head is %s, expected %s)", th.ID, runtime.ErrConflict, orNone(st.head), orNone(expect))
	}
	grows := idsGrow(g) && first.Checkpoint.ID > st.greatest
	follow := grows && th.Status == runtime.StatusRunning
	created := th.Created
	if created.IsZero() {
		created = th.Updated
	}
	tr := threadRow{id: th.ID, head: c.Checkpoint.ID, status: string(th.Status), error: th.Error, graph: th.Graph, graphHash: th.GraphHash,
		graphFile: th.GraphFile, config: e.config, updated: th.Updated.UnixNano(),
		pending: sql.NullInt64{Int64: int64(len(c.Writes)), Valid: true}}
	if follow {
		tr.follow = sql.NullInt64{Int64: 1, Valid: true}
	}
	a := &s.moveArgs
	a.reset(13)
	var n int64
	var err error
	if !exists {
		a.str(tr.id)
		a.str(tr.head)
		a.str(tr.status)
		a.str(tr.error)
		a.str(tr.graph)
		a.str(tr.graphHash)
		a.str(tr.graphFile)
		a.str(tr.config)
		a.add(created.UnixNano())
		a.add(tr.updated)
		a.add(nullInt(tr.pending))
		a.add(tr.checksum())
		a.add(nullInt(tr.follow))
		n, err = s.rawExec(ctx, &s.raw.newThread, a.vals)
	} else {
		a.str(tr.head)
		a.str(tr.status)
		a.str(tr.error)
		a.str(tr.graph)
		a.str(tr.graphHash)
		a.str(tr.graphFile)
		a.str(tr.config)
		a.add(tr.updated)
		a.add(nullInt(tr.pending))
		a.add(tr.checksum())
		a.add(nullInt(tr.follow))
		a.str(tr.id)
		a.strAs(st.rowHead, 0) // the head the row holds: the head of the commit before, or where it began to follow
		n, err = s.rawExec(ctx, &s.raw.moveHead, a.vals)
	}
	a.done()
	if err != nil {
		return st, fmt.Errorf("update thread: %w", s.describe(err))
	}
	if n != 1 {
		// Not as read or remembered: another writer got in (it cannot,
		// under BEGIN IMMEDIATE), or the row changed under this handle.
		var head string
		err := tx.StmtContext(ctx, s.stmtHead).QueryRowContext(ctx, th.ID).Scan(&head)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return st, fmt.Errorf("read thread head: %w", s.describe(err))
		}
		return st, fmt.Errorf("commit to thread %q: %w (head is %s, expected %s)", th.ID, runtime.ErrConflict, orNone(head), orNone(expect))
	}
	greatest := st.greatest
	for _, x := range g {
		greatest = max(greatest, x.Checkpoint.ID)
	}
	return threadState{rowHead: tr.head, follow: follow, head: tr.head, greatest: greatest,
		status: tr.status, err: tr.error, graph: tr.graph, graphHash: tr.graphHash, graphFile: tr.graphFile, config: tr.config}, nil
}

// rawInt runs st, a query of one integer, on the writer connection.
func (s *SQLite) rawInt(ctx context.Context, st *rawStmt) (int64, error) {
	var v int64
	err := s.wconn.Raw(func(any) error {
		if st.st == nil {
			return errRawStmt
		}
		rows, err := st.st.(driver.StmtQueryContext).QueryContext(ctx, nil)
		if err != nil {
			return err
		}
		dest := s.intDest[:]
		if err := rows.Next(dest); err != nil {
			rows.Close()
			return err
		}
		n, ok := dest[0].(int64)
		dest[0] = nil
		if !ok {
			rows.Close()
			return fmt.Errorf("%s: not an integer", st.q)
		}
		v = n
		return rows.Close()
	})
	return v, err
}
