package checkpoint

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"

	"github.com/lgrun/lgrun/runtime"
)

// graphID returns the id of the graphs row of m's graph, inserting it if
// needed. The caller caches it under key once the transaction commits: a
// row inserted by a transaction that rolls back does not exist.
func (s *SQLite) graphID(ctx context.Context, tx *wtx, m runtime.Metadata) (id int64, key string, err error) {
	s.mu.Lock()
	if g := s.lastGraph; g.ok && g.name == m.Graph && g.hash == m.GraphHash && g.version == m.Version {
		s.mu.Unlock()
		return g.id, "", nil
	}
	key = m.Graph + "\x00" + m.GraphHash + "\x00" + m.Version
	id, ok := s.graphs[key]
	if ok {
		s.lastGraph = graphRef{m.Graph, m.GraphHash, m.Version, id, true}
	}
	s.mu.Unlock()
	if ok {
		return id, "", nil
	}
	if id, err = s.lookupGraph(ctx, tx, m); err != nil {
		return 0, "", err
	}
	return id, key, nil
}

// lookupGraph finds or inserts the graphs row of m's graph in tx.
func (s *SQLite) lookupGraph(ctx context.Context, tx *wtx, m runtime.Metadata) (id int64, err error) {
	err = tx.StmtContext(ctx, s.stmtGraph).QueryRowContext(ctx, m.Graph, m.GraphHash, m.Version).Scan(&id)
	return id, err
}

// graphRef is the graphs row a commit of this handle last used.
type graphRef struct {
	name, hash, version string
	id                  int64
	ok                  bool
}

// Commit implements runtime.Saver: one immediate transaction that checks
// the head, inserts the checkpoint, moves the head and stores writes.
func (s *SQLite) Commit(ctx context.Context, c *runtime.Commit) error {
	return s.commit(ctx, c, "")
}

var _ runtime.ChainCommitter = (*SQLite)(nil)

// CommitChain implements runtime.ChainCommitter: the commits are made, in
// order, in one immediate transaction, each as [SQLite.Commit] makes it,
// and the transaction rolls back when any of them fails. With lock, the
// lease of cs[0]'s thread is taken first in the same transaction, as
// [SQLite.CommitLocked] takes it.
func (s *SQLite) CommitChain(ctx context.Context, cs []*runtime.Commit, lock bool) (func(), error) {
	if !lock {
		return nil, s.commitChain(ctx, cs, "")
	}
	if len(cs) == 0 {
		return nil, errors.New("commit: no checkpoints")
	}
	token := newLeaseToken()
	if err := s.commitChain(ctx, cs, token); err != nil {
		return nil, err
	}
	return s.hold(cs[0].Thread.ID, token), nil
}

// commit is Commit; with a lease token it also takes the thread's lease
// with it in the transaction (see [SQLite.CommitLocked]).
func (s *SQLite) commit(ctx context.Context, c *runtime.Commit, lease string) error {
	return s.commitChain(ctx, []*runtime.Commit{c}, lease)
}

// encodedCommit is a commit's columns, encoded before its transaction.
type encodedCommit struct {
	delta        []byte
	next, config string
	// The optional JSON columns: a string, or nil for NULL.
	waiting, writes, usage, totals, records any
}

func (s *SQLite) encodeCommit(c *runtime.Commit, e *encodedCommit) error {
	cp := c.Checkpoint
	delta, err := marshal(cp.Delta)
	if err != nil {
		return fmt.Errorf("encode delta: %w", err)
	}
	m := cp.Metadata
	next, writes, err := s.encCache.encode(cp.Next, m.Writes)
	if err != nil {
		return err
	}
	// The optional columns are encoded only when set: boxing an empty
	// value for nullJSON would cost an allocation a column.
	var waiting, usage, totals, records any
	var err1, err3, err4, err5 error
	if len(cp.Waiting) > 0 {
		waiting, err1 = nullJSON(cp.Waiting, false)
	}
	if len(m.Usage) > 0 {
		usage, err3 = nullJSON(m.Usage, false)
	}
	if m.Totals != (runtime.Totals{}) {
		totals, err4 = nullJSON(m.Totals, false)
	}
	if len(m.Records) > 0 {
		records, err5 = nullJSON(m.Records, false)
	}
	config, err6 := configJSON(&c.Thread.Config)
	if err := errors.Join(err1, err3, err4, err5, err6); err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	*e = encodedCommit{delta: delta, next: next, waiting: waiting, writes: writes, usage: usage,
		totals: totals, records: records, config: config}
	return nil
}

// configJSON is the JSON of a thread's run-time settings; most threads
// have none.
func configJSON(c *runtime.Config) (string, error) {
	if reflect.ValueOf(c).Elem().IsZero() {
		return "{}", nil
	}
	b, err := marshal(c)
	return string(b), err
}

// commitChain applies cs in order in one immediate transaction (see
// [SQLite.CommitChain]); with a lease token it takes cs[0]'s thread's
// lease in it first.
func (s *SQLite) commitChain(ctx context.Context, cs []*runtime.Commit, lease string) error {
	if len(cs) == 0 {
		return errors.New("commit: no checkpoints")
	}
	var encBuf [2]encodedCommit
	enc := encBuf[:]
	if len(cs) > len(enc) {
		enc = make([]encodedCommit, len(cs))
	}
	enc = enc[:len(cs)]
	for i, c := range cs {
		if err := s.encodeCommit(c, &enc[i]); err != nil {
			return err
		}
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", s.describe(err))
	}
	defer s.end(tx)
	// The lease first: a thread another process runs is busy, whatever its
	// head.
	if lease != "" {
		if err := s.putLease(ctx, tx, cs[0].Thread.ID, lease); err != nil {
			return err
		}
	}
	// What the writer knows of threads is checked against data_version
	// when a commit uses it (see stateOf), and at the handle's first
	// commit, so that what that one records is checked against a version
	// read with it.
	var stateBuf [2]pendingState
	states, synced := stateBuf[:0], false
	if !s.dvKnown {
		if err := s.syncStates(ctx); err != nil {
			return err
		}
		synced = true
	}
	var chainBuf [2]chainInfo
	chains := chainBuf[:]
	if len(cs) > len(chains) {
		chains = make([]chainInfo, len(cs))
	}
	chains = chains[:len(cs)]
	var newGraphs []string
	var gids []int64
	live := false // the thread of c follows its greatest checkpoint after tx
	for i, c := range cs {
		var prev *chainInfo
		if i > 0 && follows(cs[i-1], c) {
			prev = &chains[i-1]
		} else {
			// The thread's head moves once for the commits of the chain
			// that follow each other: from this one's expected head to
			// the last one's checkpoint, before any checkpoint is
			// inserted (see follow.go).
			last := i
			for last+1 < len(cs) && follows(cs[last], cs[last+1]) {
				last++
			}
			st, err := s.advance(ctx, tx, cs[i:last+1], &enc[last], states, &synced)
			if err != nil {
				return err
			}
			states = append(states, pendingState{c.Thread.ID, st})
			live = st.follow
		}
		// The last commit of its thread in tx extends the thread's run
		// in place once tx commits; the ones before it, copies.
		last := i == len(cs)-1 || !follows(c, cs[i+1])
		gid, newGraph, err := s.insertCheckpoint(ctx, tx, c, &enc[i], prev, &chains[i], last, live)
		if err != nil {
			return err
		}
		if newGraph != "" {
			// A later commit of the chain looks it up again (once per
			// handle): it is cached only once the transaction commits.
			newGraphs, gids = append(newGraphs, newGraph), append(gids, gid)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", s.describe(err))
	}
	s.keepStates(states)
	s.mu.Lock()
	for i, c := range cs {
		ci := chains[i]
		if ci.add != nil {
			ci.run.add(ci.add, len(enc[i].delta))
			ci.add = nil
		}
		s.keepRun(c.Thread.ID, ci.run)
		ci.run = nil // kept in s.runs
		s.chains[c.Thread.ID] = ci
	}
	for i, key := range newGraphs {
		s.graphs[key] = gids[i]
	}
	s.mu.Unlock()
	return nil
}

// follows reports whether commit b continues commit a's checkpoint.
func follows(a, b *runtime.Commit) bool {
	return a.Thread.ID == b.Thread.ID && b.ExpectHead == a.Checkpoint.ID
}

// insertCheckpoint inserts the checkpoint of commit c, encoded as e, and
// its pending writes in tx. prev, when not nil, is the chain state of the
// commit before it in tx (of the same thread); the chain state c leaves
// is stored in out. It returns the graph's row id and, when that row was
// looked up rather than cached, its key (see graphID).
//
// It also plans what becomes of the thread's run (see pack.go), sealing a
// pack in tx when one is due; the run after c is out.run, which c extends
// in place once tx commits when out.add is set (last: no later commit in
// tx builds on c). With live (the thread's row follows its greatest
// checkpoint once tx commits, see follow.go), the row carries the
// thread's state; otherwise it is a row of layout 4, which no read takes
// the thread's state from.
func (s *SQLite) insertCheckpoint(ctx context.Context, tx *wtx, c *runtime.Commit, e *encodedCommit, prev *chainInfo, out *chainInfo, last, live bool) (int64, string, error) {
	cp := c.Checkpoint
	m := cp.Metadata
	delta, next, waiting, writes, usage, totals, records := e.delta, e.next, e.waiting, e.writes, e.usage, e.totals, e.records
	// Snapshot policy.
	chain, baseBytes := 0, 0
	ci, ok := chainInfo{}, false
	if prev != nil {
		ci, ok = *prev, true
	} else {
		s.mu.Lock()
		ci, ok = s.chains[c.Thread.ID]
		ci.run = s.runs[c.Thread.ID]
		s.mu.Unlock()
	}
	if cp.ParentID != "" {
		if ok && ci.id == cp.ParentID {
			chain, baseBytes = ci.chainBytes, ci.baseBytes
		} else {
			c, b, err := s.readParent(ctx, tx, c.Thread.ID, cp.ParentID)
			if err != nil {
				return 0, "", err
			}
			chain, baseBytes = c, b
		}
	}
	chain += len(delta)
	var snapshot any
	var snap []byte
	if SnapshotDue(cp.ParentID == "", chain, baseBytes) {
		js, err := marshal(cp.Values)
		if err != nil {
			return 0, "", fmt.Errorf("encode snapshot: %w", err)
		}
		snap = encodeSnapshot(js)
		snapshot = snap
		chain, baseBytes = 0, len(js)
	}
	plan := s.nextRun(ci, ok, cp, len(delta), snap != nil)
	if plan.seal != nil {
		if err := s.writePack(ctx, tx, c.Thread.ID, plan.sealLast, plan.seal); err != nil {
			return 0, "", err
		}
	}
	run, add := plan.next, (*runtime.Checkpoint)(nil)
	switch {
	case plan.extend && last:
		run, add = ci.run, cp
	case plan.extend:
		run = ci.run.with(cp, len(delta))
	}
	gid, newGraph, err := s.graphID(ctx, tx, m)
	if err != nil {
		return 0, "", fmt.Errorf("record graph: %w", s.describe(err))
	}
	row := cpRow{
		thread: c.Thread.ID, id: cp.ID, parent: cp.ParentID, step: int64(cp.Step), turnStep: int64(cp.TurnStep),
		next: next, waiting: nullString(waiting), source: string(m.Source), writes: nullString(writes),
		graph: m.Graph, graphHash: m.GraphHash, version: m.Version, time: m.Time.UnixNano(),
		usage: nullString(usage), totals: nullString(totals), records: nullString(records),
		delta: delta, snapSum: snapshotSum(snap),
	}
	if live {
		// The thread's state at this checkpoint (see follow.go).
		row.pending = sql.NullInt64{Int64: int64(len(c.Writes)), Valid: true}
		row.updatedOff = sql.NullInt64{Int64: c.Thread.Updated.UnixNano() - row.time, Valid: true}
		row.liveSum = sql.NullInt64{Int64: liveSum(row.thread, row.id, row.time+row.updatedOff.Int64, row.pending), Valid: true}
	}
	a := &s.insertArgs
	a.reset(24)
	a.str(row.thread)
	a.str(row.id)
	a.strAs(row.parent, 1) // the id of the commit before
	a.add(row.step)
	a.add(row.turnStep)
	a.str(row.next)
	a.add(waiting)
	a.str(row.source)
	a.add(writes)
	a.add(gid)
	a.add(row.time)
	a.add(usage)
	a.add(totals)
	a.add(records)
	a.add(row.checksum())
	a.add(nullInt(row.snapSum))
	a.add(linkSum(row.thread, row.id, row.parent, delta, row.snapSum))
	a.add(int64(chain))
	a.add(int64(baseBytes))
	a.add(encodeDelta(delta))
	a.add(snapshot)
	a.add(nullInt(row.pending))
	a.add(nullInt(row.updatedOff))
	a.add(nullInt(row.liveSum))
	err = s.rawRun(ctx, &s.raw.insert, a.vals)
	a.done()
	if err != nil {
		return 0, "", fmt.Errorf("insert checkpoint: %w", s.describe(err))
	}
	if err := s.insertWrites(ctx, tx, c.Thread.ID, cp.ID, 0, c.Writes); err != nil {
		return 0, "", err
	}
	*out = chainInfo{id: cp.ID, chainBytes: chain, baseBytes: baseBytes, run: run, add: add}
	return gid, newGraph, nil
}

// readParent reads the chain state of the parent checkpoint (thread,
// id) in tx, for a commit that does not continue this handle's last one.
func (s *SQLite) readParent(ctx context.Context, tx *wtx, thread, id string) (chain, baseBytes int, err error) {
	if err := tx.StmtContext(ctx, s.stmtParent).QueryRowContext(ctx, thread, id).Scan(&chain, &baseBytes); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return 0, 0, fmt.Errorf("commit to thread %q: parent checkpoint %s: %w", thread, id, runtime.ErrNotFound)
		}
		return 0, 0, fmt.Errorf("read parent checkpoint: %w", s.describe(err))
	}
	return chain, baseBytes, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (s *SQLite) insertWrites(ctx context.Context, tx *wtx, thread, cpID string, seq int, ws []runtime.PendingWrite) error {
	if len(ws) == 0 {
		return nil
	}
	st := tx.StmtContext(ctx, s.stmtWrite)
	for i, w := range ws {
		data, err := marshal(w)
		if err != nil {
			return fmt.Errorf("encode pending write of %q: %w", w.Node, err)
		}
		sum := writeSum(thread, cpID, int64(seq+i), w.Node, string(w.Kind), data)
		if _, err := st.ExecContext(ctx, thread, cpID, seq+i, w.Node, string(w.Kind), data, sum); err != nil {
			return fmt.Errorf("insert pending write: %w", s.describe(err))
		}
	}
	return nil
}

// Mark implements runtime.Saver.
func (s *SQLite) Mark(ctx context.Context, mk *runtime.Mark) error {
	th := mk.Thread
	config, err := marshal(th.Config)
	if err != nil {
		return err
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", s.describe(err))
	}
	defer s.end(tx)
	// The row is rewritten (and its head pinned, see follow.go): the
	// writer's knowledge of the thread goes.
	s.forgetStates(th.ID, false)
	// The row is rewritten with a new checksum: check the old one first,
	// so as not to seal damage in.
	var tr threadRow
	var lr liveRow
	if err := tx.QueryRowContext(ctx, threadByIDSQL, th.ID).Scan(append(tr.scanArgs(), lr.scanArgs()...)...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("mark thread %q: %w", th.ID, runtime.ErrNotFound)
		}
		return fmt.Errorf("read thread head: %w", s.describe(err))
	}
	if err := tr.verifyLive(&lr); err != nil {
		return err
	}
	head := tr.head
	if head != th.Head {
		return fmt.Errorf("mark thread %q: %w (head is %s, expected %s)", th.ID, runtime.ErrConflict, head, th.Head)
	}
	seq := 0
	if mk.ClearWrites {
		if _, err := tx.ExecContext(ctx, `DELETE FROM writes WHERE thread = ? AND checkpoint = ?`, th.ID, head); err != nil {
			return fmt.Errorf("clear pending writes: %w", s.describe(err))
		}
	} else if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq) + 1, 0) FROM writes WHERE thread = ? AND checkpoint = ?`, th.ID, head).Scan(&seq); err != nil {
		return fmt.Errorf("read pending writes: %w", s.describe(err))
	}
	if err := s.insertWrites(ctx, tx, th.ID, head, seq, mk.Writes); err != nil {
		return err
	}
	tr.status, tr.error, tr.config, tr.updated, tr.follow = string(th.Status), th.Error, string(config), th.Updated.UnixNano(), sql.NullInt64{}
	switch {
	case mk.ClearWrites:
		tr.pending = sql.NullInt64{Int64: int64(len(mk.Writes)), Valid: true}
	case tr.pending.Valid:
		tr.pending.Int64 += int64(len(mk.Writes))
	}
	sum := sql.NullInt64{}
	if tr.sum.Valid {
		sum = sql.NullInt64{Int64: tr.checksum(), Valid: true}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE threads SET head = ?, status = ?, error = ?, config = ?, updated = ?, pending = ?, sum = ?, follow = NULL WHERE id = ?`,
		tr.head, tr.status, tr.error, tr.config, tr.updated, tr.pending, sum, th.ID); err != nil {
		return fmt.Errorf("update thread: %w", s.describe(err))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", s.describe(err))
	}
	return nil
}

// DeleteThread implements runtime.Saver. The thread's child runs
// (subgraphs, map items: "<id>/...") go with it.
func (s *SQLite) DeleteThread(ctx context.Context, id string) error {
	_, _, err := s.deleteThread(ctx, id)
	return err
}

// deleteThread deletes a thread and its children, and counts the threads
// and checkpoints it deleted.
func (s *SQLite) deleteThread(ctx context.Context, id string) (threads, checkpoints int, err error) {
	tx, err := s.begin(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("begin: %w", s.describe(err))
	}
	defer s.end(tx)
	s.forgetStates(id, true)
	var head string
	if err := tx.StmtContext(ctx, s.stmtHead).QueryRowContext(ctx, id).Scan(&head); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return 0, 0, fmt.Errorf("thread %q: %w", id, runtime.ErrNotFound)
		}
		return 0, 0, fmt.Errorf("delete thread: %w", s.describe(err))
	}
	lo, hi := childRange(id)
	res, err := tx.ExecContext(ctx, `DELETE FROM threads WHERE id = ?1 OR (id >= ?2 AND id < ?3)`, id, lo, hi)
	if err != nil {
		return 0, 0, fmt.Errorf("delete thread: %w", s.describe(err))
	}
	n, _ := res.RowsAffected()
	res, err = tx.ExecContext(ctx, `DELETE FROM checkpoints WHERE thread = ?1 OR (thread >= ?2 AND thread < ?3)`, id, lo, hi)
	if err != nil {
		return 0, 0, fmt.Errorf("delete thread: %w", s.describe(err))
	}
	c, _ := res.RowsAffected()
	if _, err := tx.ExecContext(ctx, `DELETE FROM writes WHERE thread = ?1 OR (thread >= ?2 AND thread < ?3)`, id, lo, hi); err != nil {
		return 0, 0, fmt.Errorf("delete thread: %w", s.describe(err))
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM packs WHERE thread = ?1 OR (thread >= ?2 AND thread < ?3)`, id, lo, hi); err != nil {
		return 0, 0, fmt.Errorf("delete thread: %w", s.describe(err))
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, fmt.Errorf("commit: %w", s.describe(err))
	}
	s.mu.Lock()
	for t := range s.chains {
		if t == id || (t >= lo && t < hi) {
			delete(s.chains, t)
			delete(s.runs, t)
		}
	}
	s.mu.Unlock()
	return int(n), int(c), nil
}

// childRange returns the bounds of the ids of id's child threads
// ("<id>/..."): lo <= child < hi, compared bytewise as SQLite compares
// TEXT (LIKE would ignore case).
func childRange(id string) (lo, hi string) {
	return id + runtime.ChildSep, id + string(runtime.ChildSep[0]+1)
}
