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
// the row's full checksum covers too. The rows written while the thread's
// row follows carry them (only they can be its greatest checkpoint then);
// the others are rows of layout 4, and a row whose head is pinned (follow
// NULL) keeps its own head, time and count, as in layout 4.
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
// grow) compares the head (as the writer knows it, or as it reads it in
// the transaction) and writes the thread's row: following when the thread
// runs on and its ids grow past every id of the thread, pinned otherwise.
// A thread the writer does not know is written as in layout 4, pinned (a
// new thread's insert, or one UPDATE that checks the head), so that short
// runs pay no extra statement; its next commit reads its greatest id and
// makes it follow (see [SQLite.moveThread]). A run's last commit (done)
// and a status mark (interrupted, failed) pin the head, so a thread at
// rest has its head in its row, and a lost head checkpoint is reported as
// in layout 4.
//
// While a thread runs, its head is found as its greatest checkpoint.
// Damage to that row that leaves its key is reported as that checkpoint's
// (its live_sum, or its full checksum): the head never falls back a step
// silently. Losing the row entirely (its key damaged, or the row deleted)
// makes the head its parent, as a power loss of the last commits would;
// never earlier than the head the thread's row names, whose loss is
// reported.

// liveJoin joins a threads row t to its greatest checkpoint l when the row
// follows it (and the checkpoint is not older than the row's head, which
// is then missing: reads report it as in layout 4). The greatest id is
// looked up only for a row that follows (the CASE), so that reading a
// pinned row costs what it did in layout 4.
const liveJoin = `LEFT JOIN checkpoints l ON l.thread = t.id
	AND l.id = CASE WHEN t.follow = 1 THEN (SELECT max(m.id) FROM checkpoints m WHERE m.thread = t.id) END AND l.id >= t.head`

// liveColumns are the columns of l that [liveRow.scanArgs] reads.
const liveColumns = `l.id, l.time + l.updated_off, l.pending, l.live_sum`

// threadLiveSQL reads the threads rows and their live state.
const threadLiveSQL = `SELECT ` + threadColumns + `, ` + liveColumns + ` FROM threads t ` + liveJoin

// threadByIDSQL reads the threads row of the thread ?1 and its live
// state. The id comes in through a subquery: with WHERE t.id = ?1, SQLite
// would carry the bound value into the join's terms (l.thread = t.id) and
// prepare the statement again at every use, at four times the cost of the
// read (see BENCHMARKS.md, i16-onepage and i16-follow).
const threadByIDSQL = `SELECT ` + threadColumns + `, ` + liveColumns + ` FROM (SELECT ?1 AS id) k JOIN threads t ON t.id = k.id ` + liveJoin

// liveUpdatedSQL is a thread's updated time in threadLiveSQL (unverified:
// for ordering and selecting only).
const liveUpdatedSQL = `COALESCE(l.time + l.updated_off, t.updated)`

// liveRow is the state of a thread held by its greatest checkpoint.
type liveRow struct {
	id                    sql.NullString
	updated, pending, sum sql.NullInt64
}

func (l *liveRow) scanArgs() []any { return []any{&l.id, &l.updated, &l.pending, &l.sum} }

// liveSum is the checksum of a checkpoint row's thread state (column
// live_sum): the thread, the checkpoint's id, the thread's updated time
// (the row's time plus updated_off) and its pending-write count, so that
// reading a thread's state from its greatest checkpoint verifies it
// without reading the whole row. Stored as a signed 32-bit value, as
// [linkSum].
func liveSum(thread, id string, updated int64, pending sql.NullInt64) int64 {
	var s summer
	s.str("live/5")
	s.str(thread)
	s.str(id)
	s.int(updated)
	s.nullInt(pending)
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
	if !l.sum.Valid || !l.updated.Valid || l.sum.Int64 != liveSum(r.id, l.id.String, l.updated.Int64, l.pending) {
		return &runtime.CorruptError{Thread: r.id, Checkpoint: l.id.String, Err: fmt.Errorf("the thread's state in its row fails its check: %w", errChecksum)}
	}
	// The row now stands for the pinned row of that state, sealed as
	// such (it is verified: later checks of it must pass).
	r.head, r.pending, r.updated, r.follow = l.id.String, l.pending, l.updated.Int64, sql.NullInt64{}
	if r.sum.Valid {
		r.sum.Int64 = r.checksum()
	}
	return nil
}

// verifyLive verifies the row and resolves its live state.
func (r *threadRow) verifyLive(l *liveRow) error {
	if err := r.verify(); err != nil {
		return err
	}
	return r.resolve(l)
}

// decodeLive verifies the row, resolves its live state and decodes it.
func (r *threadRow) decodeLive(l *liveRow) (*runtime.Thread, error) {
	if err := r.verifyLive(l); err != nil {
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
	greatest string // the thread's greatest checkpoint id, if greatestKnown
	// greatestKnown is false for a row written without reading the
	// thread's ids (see moveThread).
	greatestKnown bool
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
// committed since it last read it (SQLite changes the value only for
// other connections' commits). Call it with the write lock held, in a
// transaction.
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
// left it (pending), else as of the last commit if no other connection
// committed since. It reads data_version (see syncStates) the first time
// a transaction (synced) needs it: a transaction that does not use what
// the writer knew need not read it, since what it records is forgotten
// at the next read if another connection had committed meanwhile.
func (s *SQLite) stateOf(ctx context.Context, thread string, pending []pendingState, synced *bool) (threadState, bool, error) {
	for i := len(pending) - 1; i >= 0; i-- {
		if pending[i].thread == thread {
			return pending[i].st, true, nil
		}
	}
	if _, ok := s.states[thread]; !ok {
		return threadState{}, false, nil
	}
	if !*synced {
		if err := s.syncStates(ctx); err != nil {
			return threadState{}, false, err
		}
		*synced = true
	}
	st, ok := s.states[thread]
	return st, ok, nil
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
func (s *SQLite) advance(ctx context.Context, tx *wtx, g []*runtime.Commit, e *encodedCommit, pending []pendingState, synced *bool) (threadState, error) {
	st, known, err := s.stateOf(ctx, g[0].Thread.ID, pending, synced)
	if err != nil {
		return st, err
	}
	last := g[len(g)-1]
	if known && st.continues(g, e.config) {
		st.head, st.greatest = last.Checkpoint.ID, last.Checkpoint.ID
		return st, nil
	}
	return s.moveThread(ctx, tx, g, e, st, known)
}

// moveThread is the head's compare-and-swap in tx for the commits g (see
// advance), on st when known (what the writer knows of the thread), and
// returns the thread's state after it. It writes the thread's row at g's
// last checkpoint with its status, following the thread's greatest
// checkpoint if the thread runs on and g's ids grow past every id of the
// thread, else pinned; it fails with ErrConflict unless the thread's head
// is g's expected head (none for a new thread).
//
// A thread the writer does not know costs what it did in layout 4: a new
// thread's row is inserted, an existing pinned one moved by one UPDATE
// that checks the head, both pinned (the thread's greatest id, which
// following needs, is not known: the thread's next commit reads it). Only
// a row that turns out to follow, or a thread about to follow whose
// greatest id is not known, is read first.
func (s *SQLite) moveThread(ctx context.Context, tx *wtx, g []*runtime.Commit, e *encodedCommit, st threadState, known bool) (threadState, error) {
	first, c := g[0], g[len(g)-1]
	th := c.Thread
	expect := first.ExpectHead
	running := th.Status == runtime.StatusRunning && idsGrow(g)
	if known && (st.head != expect || expect == "") {
		return st, fmt.Errorf("commit to thread %q: %w (head is %s, expected %s)", th.ID, runtime.ErrConflict, orNone(st.head), orNone(expect))
	}
	if known && running && !st.greatestKnown || !known && expect != "" {
		// Read what the thread is, unless a pinned row at expect (the
		// common case) takes the plain compare-and-swap below.
		if !known {
			n, err := s.writeThread(ctx, c, e, false, expect, false)
			if err != nil || n == 1 {
				return s.stateAfter(c, e, g, threadState{}, false), err
			}
		}
		var err error
		if st, err = s.readState(ctx, tx, th.ID); err != nil {
			return st, err
		}
		if st.rowHead == "" || st.head != expect {
			return st, fmt.Errorf("commit to thread %q: %w (head is %s, expected %s)", th.ID, runtime.ErrConflict, orNone(st.head), orNone(expect))
		}
		known = true
	}
	follow := known && running && st.greatestKnown && first.Checkpoint.ID > st.greatest
	n, err := s.writeThread(ctx, c, e, follow, st.rowHead, st.follow)
	if err == nil && n != 1 {
		// Not as read or remembered: another writer got in (it cannot,
		// under BEGIN IMMEDIATE), or the row changed under this handle.
		var head string
		err = tx.StmtContext(ctx, s.stmtHead).QueryRowContext(ctx, th.ID).Scan(&head)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return st, fmt.Errorf("read thread head: %w", s.describe(err))
		}
		return st, fmt.Errorf("commit to thread %q: %w (head is %s, expected %s)", th.ID, runtime.ErrConflict, orNone(head), orNone(expect))
	}
	return s.stateAfter(c, e, g, st, follow), err
}

// readState reads what thread is in tx (see [threadState]); rowHead is ""
// when it has no row. The thread's greatest id is read by a subquery on
// the row read, not on the bound value, which would make SQLite prepare
// the statement again at every use (see BENCHMARKS.md, i16-onepage).
func (s *SQLite) readState(ctx context.Context, tx *wtx, thread string) (threadState, error) {
	var head, greatest sql.NullString
	var follow sql.NullInt64
	if err := tx.StmtContext(ctx, s.stmtState).QueryRowContext(ctx, thread).Scan(&head, &follow, &greatest); err != nil {
		return threadState{}, fmt.Errorf("read thread head: %w", s.describe(err))
	}
	st := threadState{rowHead: head.String, follow: follow.Valid && follow.Int64 == 1, head: head.String,
		greatest: greatest.String, greatestKnown: true}
	if st.follow && greatest.String >= st.rowHead {
		st.head = greatest.String
	}
	return st, nil
}

// writeThread writes the row of c's thread at c's checkpoint, following
// or pinned: a new row when rowHead is "" (if there is none), else the row
// whose head column is rowHead and which follows as rowFollows says. It
// returns how many rows it wrote.
func (s *SQLite) writeThread(ctx context.Context, c *runtime.Commit, e *encodedCommit, follow bool, rowHead string, rowFollows bool) (int64, error) {
	th := c.Thread
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
	// The new row's values and the moved row's, in one order: the
	// columns, the id, then the creation time or the head to move from.
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
	var n int64
	var err error
	if rowHead == "" {
		a.add(created.UnixNano())
		n, err = s.rawExec(ctx, &s.raw.newThread, a.vals)
	} else {
		a.strAs(rowHead, 0) // the head of the commit before, or where the row began to follow
		st := &s.raw.moveHead
		if rowFollows {
			st = &s.raw.moveFollowing
		}
		n, err = s.rawExec(ctx, st, a.vals)
	}
	a.done()
	if err != nil {
		return 0, fmt.Errorf("update thread: %w", s.describe(err))
	}
	return n, nil
}

// stateAfter is the state of the thread of g after moveThread wrote its
// row at c (the last of g), from st, the state before it.
func (s *SQLite) stateAfter(c *runtime.Commit, e *encodedCommit, g []*runtime.Commit, st threadState, follow bool) threadState {
	th := &c.Thread
	out := threadState{rowHead: c.Checkpoint.ID, follow: follow, head: c.Checkpoint.ID, greatestKnown: st.greatestKnown,
		status: string(th.Status), err: th.Error, graph: th.Graph, graphHash: th.GraphHash, graphFile: th.GraphFile, config: e.config}
	if out.greatestKnown {
		out.greatest = st.greatest
		for _, x := range g {
			out.greatest = max(out.greatest, x.Checkpoint.ID)
		}
	}
	return out
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
