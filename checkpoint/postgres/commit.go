package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

const threadColumns = `id, head, status, error, graph, graph_hash, graph_file, config, created, updated, pending, sum`

func threadArgs(r *checkpoint.ThreadRow) []any {
	return []any{&r.ID, &r.Head, &r.Status, &r.Error, &r.Graph, &r.GraphHash, &r.GraphFile, &r.Config, &r.Created, &r.Updated, &r.Pending, &r.Sum}
}

// Commit implements runtime.Saver: one transaction that moves the head by
// compare-and-swap (an UPDATE … WHERE head = the expected head, or an
// INSERT … ON CONFLICT DO NOTHING for a new thread: of concurrent commits
// on one head, the row lock lets exactly one through), then inserts the
// checkpoint and its pending writes. A [Fence] in ctx is checked in the
// same round trip as the compare-and-swap. Mark and DeleteThread check it
// too.
func (s *Postgres) Commit(ctx context.Context, c *runtime.Commit) error {
	cp := c.Checkpoint
	row, err := checkpoint.EncodeRow(c.Thread.ID, cp, nil)
	if err != nil {
		return err
	}
	tr, err := checkpoint.NewThreadRow(c.Thread, cp.ID, len(c.Writes))
	if err != nil {
		return err
	}
	// Two round trips: BEGIN, the fence, the compare-and-swap and the
	// parent's chain sizes in one pipelined batch; the inserts and COMMIT
	// in the next. (pgx.Tx would add one for BEGIN and one for COMMIT.)
	tx, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", s.describe(err))
	}
	defer endTx(tx)

	// The parent is read after the thread's row is locked, never from a
	// cache: a GC in another process may have pruned it.
	fence := FenceOf(ctx)
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	fence.queue(b)
	if c.ExpectHead == "" {
		b.Queue(`INSERT INTO threads (`+threadColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING`,
			tr.ID, tr.Head, tr.Status, tr.Error, tr.Graph, tr.GraphHash, tr.GraphFile, tr.Config, tr.Created, tr.Updated, tr.Pending, tr.Sum)
	} else {
		b.Queue(`UPDATE threads SET head = $3, status = $4, error = $5, graph = $6, graph_hash = $7, graph_file = $8, config = $9, updated = $10, pending = $11, sum = $12 WHERE id = $1 AND head = $2`,
			tr.ID, c.ExpectHead, tr.Head, tr.Status, tr.Error, tr.Graph, tr.GraphHash, tr.GraphFile, tr.Config, tr.Updated, tr.Pending, tr.Sum)
	}
	// What the commit extends, and where the parent and an existing
	// checkpoint of the new id could be: the thread's open block, the
	// sealed blocks whose range holds either id (ids grow along a chain,
	// so a block's range is its first and last ids), and the checkpoints
	// rows of layout version 2.
	b.Queue(`SELECT `+openColumns+` FROM open_blocks WHERE thread = $1`, c.Thread.ID)
	b.Queue(`SELECT `+sealedColumns+` FROM blocks WHERE thread = $1 AND last >= LEAST($2, $3) AND ((last >= $2 AND first <= $2) OR (last >= $3 AND first <= $3))`, c.Thread.ID, cp.ParentID, cp.ID)
	b.Queue(`SELECT id, chain_bytes, base_bytes FROM checkpoints WHERE thread = $1 AND id IN ($2, $3)`, c.Thread.ID, cp.ParentID, cp.ID)
	br := tx.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return fmt.Errorf("begin: %w", s.describe(err))
	}
	if err := fence.check(br); err != nil {
		br.Close()
		return err
	}
	tag, err := br.Exec()
	if err != nil {
		br.Close()
		return fmt.Errorf("update thread: %w", s.describe(err))
	}
	if tag.RowsAffected() != 1 {
		br.Close()
		var head string
		if err := tx.QueryRow(ctx, `SELECT head FROM threads WHERE id = $1`, c.Thread.ID).Scan(&head); err != nil && !isNoRows(err) {
			return fmt.Errorf("read thread head: %w", s.describe(err))
		}
		return fmt.Errorf("commit to thread %q: %w (head is %s, expected %s)", c.Thread.ID, runtime.ErrConflict, orNone(head), orNone(c.ExpectHead))
	}
	var open *block // nil for none, or for an empty row
	haveOpen := false
	if rows, err := br.Query(); err == nil {
		bs, err := scanBlocks(rows)
		if err != nil {
			br.Close()
			return fmt.Errorf("read open block: %w", s.describe(err))
		}
		if len(bs) > 0 {
			haveOpen = true
			if bs[0].n > 0 {
				open = bs[0]
			}
		}
	} else {
		br.Close()
		return fmt.Errorf("read open block: %w", s.describe(err))
	}
	var sealed []*block
	if rows, err := br.Query(); err == nil {
		if sealed, err = scanBlocks(rows); err != nil {
			br.Close()
			return fmt.Errorf("read blocks: %w", s.describe(err))
		}
	} else {
		br.Close()
		return fmt.Errorf("read blocks: %w", s.describe(err))
	}
	found, parentFound := false, false
	var chain, baseBytes int64
	rows, err := br.Query()
	if err != nil {
		br.Close()
		return fmt.Errorf("read parent checkpoint: %w", s.describe(err))
	}
	for rows.Next() {
		var id string
		var cb, bb int64
		if err := rows.Scan(&id, &cb, &bb); err != nil {
			rows.Close()
			br.Close()
			return fmt.Errorf("read parent checkpoint: %w", s.describe(err))
		}
		if id == cp.ID {
			found = true
		} else {
			parentFound, chain, baseBytes = true, cb, bb
		}
	}
	rows.Close()
	if err := br.Close(); err != nil {
		return fmt.Errorf("read parent checkpoint: %w", s.describe(err))
	}
	var openRecs []record
	var openRaw []byte
	switch {
	case open != nil && open.last == cp.ParentID:
		// The usual commit: the new id sorts after every id of the
		// open block, so only its last record is wanted.
		if openRaw, chain, baseBytes, err = open.tail(c.Thread.ID, s.where); err != nil {
			return err
		}
		parentFound = true
	case open != nil:
		if openRecs, openRaw, err = open.recordsRaw(c.Thread.ID, s.where); err != nil {
			return err
		}
	}
	look := func(recs []record) {
		for i := range recs {
			switch recs[i].row.ID {
			case cp.ID:
				found = true
			case cp.ParentID:
				parentFound, chain, baseBytes = true, recs[i].chain, recs[i].base
			}
		}
	}
	look(openRecs)
	for _, sb := range sealed {
		recs, err := sb.records(c.Thread.ID, s.where)
		if err != nil {
			return err
		}
		look(recs)
	}
	if found {
		return fmt.Errorf("commit to thread %q: checkpoint %s already exists", c.Thread.ID, cp.ID)
	}
	if cp.ParentID != "" && !parentFound {
		return fmt.Errorf("commit to thread %q: parent checkpoint %s: %w", c.Thread.ID, cp.ParentID, runtime.ErrNotFound)
	}
	// Ids grow along a chain: a block's range is its first and last ids.
	if cp.ParentID != "" && cp.ID <= cp.ParentID {
		return fmt.Errorf("commit to thread %q: checkpoint id %s does not sort after its parent's (%s)", c.Thread.ID, cp.ID, cp.ParentID)
	}
	chain += int64(len(row.Delta))
	rec := record{row: row, chain: chain, base: baseBytes}
	var snap []byte
	if checkpoint.SnapshotDue(cp.ParentID == "", int(chain), int(baseBytes)) {
		js, err := checkpoint.Marshal(cp.Values)
		if err != nil {
			return fmt.Errorf("encode snapshot: %w", err)
		}
		// Stored as SQLite stores it (compressed when that is smaller);
		// the snapshot policy counts the JSON's bytes, as SQLite's does.
		snap = checkpoint.EncodeSnapshot(js)
		rec.row.Seal(snap)
		rec.chain, rec.base = 0, int64(len(js))
	}
	b = &pgx.Batch{}
	s.queueBlocks(b, c.Thread.ID, cp.ParentID, haveOpen, open, openRaw, rec, snap)
	if err := queueWrites(b, c.Thread.ID, cp.ID, 0, c.Writes); err != nil {
		return err
	}
	b.Queue(`COMMIT`)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" && (pe.TableName == "blocks" || pe.TableName == "open_blocks") {
			return fmt.Errorf("commit to thread %q: checkpoint %s already exists", c.Thread.ID, cp.ID)
		}
		return fmt.Errorf("insert checkpoint: %w", s.describe(err))
	}
	if st := tx.Conn().PgConn().TxStatus(); st != 'I' {
		return fmt.Errorf("commit: transaction status %q after COMMIT", st)
	}
	return nil
}

// queueBlocks queues the statements that store rec (with its snapshot
// snap, nil for none), a child of parent, given the thread's open block
// (nil for none; haveOpen when the thread has an open_blocks row, maybe
// empty) and its records' raw encoding. The row is emptied rather than
// deleted, so that its next version is a HOT update too.
func (s *Postgres) queueBlocks(b *pgx.Batch, thread, parent string, haveOpen bool, open *block, raw []byte, rec record, snap []byte) {
	extends := open != nil && open.last == parent && !open.full(len(raw))
	const insert = `INSERT INTO blocks (thread, last, first, parent, n, data, snapshot, sum) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	if open != nil && !extends {
		// Sealed as it is: the stored bytes move, in the database.
		b.Queue(`INSERT INTO blocks (thread, last, first, parent, n, data, sum) SELECT thread, last, first, parent, n, data, sum FROM open_blocks WHERE thread = $1 AND n > 0`, thread)
	}
	var nb *block
	if extends {
		nb = rawBlock(thread, open.parent, open.first, rec.row.ID, open.n+1, appendRecord(raw, &rec))
	} else {
		nb = newBlock(thread, parent, []record{rec})
	}
	switch {
	case snap != nil:
		// A snapshot ends its block.
		b.Queue(insert, thread, nb.last, nb.first, nb.parent, nb.n, nb.data, snap, nb.sum)
		if open != nil {
			b.Queue(emptyOpen, thread)
		}
	case haveOpen:
		b.Queue(`UPDATE open_blocks SET last = $2, first = $3, parent = $4, n = $5, data = $6, sum = $7 WHERE thread = $1`,
			thread, nb.last, nb.first, nb.parent, nb.n, nb.data, nb.sum)
	default:
		b.Queue(`INSERT INTO open_blocks (thread, last, first, parent, n, data, sum) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			thread, nb.last, nb.first, nb.parent, nb.n, nb.data, nb.sum)
	}
}

// emptyOpen empties a thread's open_blocks row.
const emptyOpen = `UPDATE open_blocks SET last = '', first = '', parent = '', n = 0, data = '', sum = 0 WHERE thread = $1`

// endTx rolls back the transaction a failed Commit left open on conn,
// then gives conn back to the pool (which closes a connection still in a
// transaction).
func endTx(conn *pgxpool.Conn) {
	if conn.Conn().PgConn().TxStatus() != 'I' {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = conn.Exec(ctx, `ROLLBACK`)
		cancel()
	}
	conn.Release()
}

// querier is a transaction or a connection in one.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// graphID returns the id of the graphs row of m's graph, inserting it if
// needed; the caller caches it under key once the transaction commits.
func (s *Postgres) graphID(ctx context.Context, tx querier, m runtime.Metadata) (id int64, key string, err error) {
	key = m.Graph + "\x00" + m.GraphHash + "\x00" + m.Version
	s.mu.Lock()
	id, ok := s.graphs[key]
	s.mu.Unlock()
	if ok {
		return id, "", nil
	}
	// DO NOTHING then SELECT, rather than DO UPDATE, so as not to lock the
	// row (and queue every other process's commits of the graph) until
	// this transaction ends.
	if _, err := tx.Exec(ctx, `INSERT INTO graphs (name, hash, version) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, m.Graph, m.GraphHash, m.Version); err != nil {
		return 0, "", err
	}
	if err := tx.QueryRow(ctx, `SELECT id FROM graphs WHERE name = $1 AND hash = $2 AND version = $3`, m.Graph, m.GraphHash, m.Version).Scan(&id); err != nil {
		return 0, "", err
	}
	return id, key, nil
}

func queueWrites(b *pgx.Batch, thread, cpID string, seq int, ws []runtime.PendingWrite) error {
	for i, w := range ws {
		data, sum, err := checkpoint.EncodeWrite(thread, cpID, seq+i, w)
		if err != nil {
			return err
		}
		b.Queue(`INSERT INTO writes (thread, checkpoint, seq, node, kind, data, sum) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			thread, cpID, seq+i, w.Node, string(w.Kind), data, sum)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Mark implements runtime.Saver, under the same compare-and-swap as
// Commit (the thread's row is locked while it is rewritten).
func (s *Postgres) Mark(ctx context.Context, mk *runtime.Mark) error {
	th := mk.Thread
	config, err := checkpoint.Marshal(th.Config)
	if err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", s.describe(err))
	}
	defer tx.Rollback(context.Background())
	if err := FenceOf(ctx).hold(ctx, tx); err != nil {
		return err
	}
	var tr checkpoint.ThreadRow
	if err := tx.QueryRow(ctx, `SELECT `+threadColumns+` FROM threads WHERE id = $1 FOR UPDATE`, th.ID).Scan(threadArgs(&tr)...); err != nil {
		if isNoRows(err) {
			return fmt.Errorf("mark thread %q: %w", th.ID, runtime.ErrNotFound)
		}
		return fmt.Errorf("read thread head: %w", s.describe(err))
	}
	// The row is rewritten with a new checksum: check the old one first,
	// so as not to seal damage in.
	if err := tr.Verify(); err != nil {
		return err
	}
	if tr.Head != th.Head {
		return fmt.Errorf("mark thread %q: %w (head is %s, expected %s)", th.ID, runtime.ErrConflict, tr.Head, th.Head)
	}
	seq := 0
	if mk.ClearWrites {
		if _, err := tx.Exec(ctx, `DELETE FROM writes WHERE thread = $1 AND checkpoint = $2`, th.ID, tr.Head); err != nil {
			return fmt.Errorf("clear pending writes: %w", s.describe(err))
		}
	} else if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(seq) + 1, 0) FROM writes WHERE thread = $1 AND checkpoint = $2`, th.ID, tr.Head).Scan(&seq); err != nil {
		return fmt.Errorf("read pending writes: %w", s.describe(err))
	}
	b := &pgx.Batch{}
	if err := queueWrites(b, th.ID, tr.Head, seq, mk.Writes); err != nil {
		return err
	}
	tr.Status, tr.Error, tr.Config, tr.Updated = string(th.Status), th.Error, string(config), th.Updated.UnixNano()
	switch {
	case mk.ClearWrites:
		tr.Pending.Int64, tr.Pending.Valid = int64(len(mk.Writes)), true
	case tr.Pending.Valid:
		tr.Pending.Int64 += int64(len(mk.Writes))
	}
	tr.Reseal()
	b.Queue(`UPDATE threads SET status = $1, error = $2, config = $3, updated = $4, pending = $5, sum = $6 WHERE id = $7`,
		tr.Status, tr.Error, tr.Config, tr.Updated, tr.Pending, tr.Sum, th.ID)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("mark thread %q: %w", th.ID, s.describe(err))
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", s.describe(err))
	}
	return nil
}

// DeleteThread implements runtime.Saver. The thread's child runs
// (subgraphs, map items: "<id>/...") go with it.
func (s *Postgres) DeleteThread(ctx context.Context, id string) error {
	_, _, err := s.deleteThread(ctx, id)
	return err
}

func (s *Postgres) deleteThread(ctx context.Context, id string) (threads, checkpoints int, err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("begin: %w", s.describe(err))
	}
	defer tx.Rollback(context.Background())
	if err := FenceOf(ctx).hold(ctx, tx); err != nil {
		return 0, 0, err
	}
	var head string
	if err := tx.QueryRow(ctx, `SELECT head FROM threads WHERE id = $1 FOR UPDATE`, id).Scan(&head); err != nil {
		if isNoRows(err) {
			return 0, 0, fmt.Errorf("thread %q: %w", id, runtime.ErrNotFound)
		}
		return 0, 0, fmt.Errorf("delete thread: %w", s.describe(err))
	}
	lo, hi := childRange(id)
	n, err := tx.Exec(ctx, `DELETE FROM threads WHERE id = $1 OR (id >= $2 AND id < $3)`, id, lo, hi)
	if err != nil {
		return 0, 0, fmt.Errorf("delete thread: %w", s.describe(err))
	}
	c, err := tx.Exec(ctx, `DELETE FROM checkpoints WHERE thread = $1 OR (thread >= $2 AND thread < $3)`, id, lo, hi)
	if err != nil {
		return 0, 0, fmt.Errorf("delete thread: %w", s.describe(err))
	}
	if _, err := tx.Exec(ctx, `DELETE FROM writes WHERE thread = $1 OR (thread >= $2 AND thread < $3)`, id, lo, hi); err != nil {
		return 0, 0, fmt.Errorf("delete thread: %w", s.describe(err))
	}
	var inBlocks int
	if err := tx.QueryRow(ctx, `WITH b AS (DELETE FROM blocks WHERE thread = $1 OR (thread >= $2 AND thread < $3) RETURNING n),
		o AS (DELETE FROM open_blocks WHERE thread = $1 OR (thread >= $2 AND thread < $3) RETURNING n)
		SELECT COALESCE((SELECT sum(n) FROM b), 0) + COALESCE((SELECT sum(n) FROM o), 0)`, id, lo, hi).Scan(&inBlocks); err != nil {
		return 0, 0, fmt.Errorf("delete thread: %w", s.describe(err))
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, fmt.Errorf("commit: %w", s.describe(err))
	}
	return int(n.RowsAffected()), int(c.RowsAffected()) + inBlocks, nil
}

// childRange returns the bounds of the ids of id's child threads
// ("<id>/..."), compared bytewise (the id columns collate as "C").
func childRange(id string) (lo, hi string) {
	return id + runtime.ChildSep, id + string(runtime.ChildSep[0]+1)
}
