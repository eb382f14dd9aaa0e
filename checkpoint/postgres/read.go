package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// cpColumns are the columns of a checkpoints row c with its graph g by
// value, in the order of rowArgs.
const cpColumns = `c.thread, c.id, c.parent, c.step, c.turn_step, c.next, c.waiting, c.source, c.writes,
	COALESCE(g.name, ''), COALESCE(g.hash, ''), COALESCE(g.version, ''), c.time, c.usage, c.totals, c.records,
	c.delta, c.sum, c.snap_sum`

func rowArgs(r *checkpoint.Row) []any {
	return []any{&r.Thread, &r.ID, &r.Parent, &r.Step, &r.TurnStep, &r.Next, &r.Waiting, &r.Source, &r.Writes,
		&r.Graph, &r.GraphHash, &r.Version, &r.Time, &r.Usage, &r.Totals, &r.Records,
		deltaColumn{&r.Delta}, &r.Sum, &r.SnapSum}
}

// Get implements runtime.Saver: the checkpoint's chain back to the nearest
// snapshot in one query, verified row by row and applied forward.
//
// Its statements run on the pool, each on its own snapshot, which is cheap
// and almost always consistent. When they disagree (a write to the thread
// landed between them, so the checks report damage), Get reads again in
// one repeatable-read transaction and believes that.
func (s *Postgres) Get(ctx context.Context, thread, id string) (*runtime.Checkpoint, error) {
	cp, err := s.get(ctx, s.pool, thread, id)
	var bad *runtime.CorruptError
	if err == nil || !errors.As(err, &bad) {
		return cp, err
	}
	tx, terr := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if terr != nil {
		return nil, fmt.Errorf("read checkpoint: %w", s.describe(terr))
	}
	defer tx.Rollback(ctx)
	return s.get(ctx, tx, thread, id)
}

// reader is what reads run on: the pool or a transaction.
type reader interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (s *Postgres) get(ctx context.Context, q reader, thread, id string) (*runtime.Checkpoint, error) {
	var tr checkpoint.ThreadRow
	err := q.QueryRow(ctx, `SELECT `+threadColumns+` FROM threads WHERE id = $1`, thread).Scan(threadArgs(&tr)...)
	switch {
	case isNoRows(err):
		tr = checkpoint.ThreadRow{}
		if id == "" {
			return nil, fmt.Errorf("thread %q: %w", thread, runtime.ErrNotFound)
		}
	case err != nil:
		return nil, fmt.Errorf("read thread: %w", s.describe(err))
	default:
		if err := tr.Verify(); err != nil {
			return nil, err
		}
	}
	head := id == ""
	if head {
		id = tr.Head
	}
	values, cp, err := s.load(ctx, q, thread, id)
	if err != nil {
		if head && errors.Is(err, runtime.ErrNotFound) {
			return nil, &runtime.CorruptError{Thread: thread, Checkpoint: id, Err: errors.New("the thread's head checkpoint is missing from the database")}
		}
		return nil, err
	}
	cp.Values = values
	if cp.Pending, err = s.pending(ctx, q, thread, id); err != nil {
		return nil, err
	}
	if id == tr.Head && tr.Pending.Valid && int64(len(cp.Pending)) != tr.Pending.Int64 {
		return nil, &runtime.CorruptError{Thread: thread, Checkpoint: id, Err: fmt.Errorf("it has %d pending writes, where the thread's row records %d (database %s damaged)", len(cp.Pending), tr.Pending.Int64, s.where)}
	}
	return cp, nil
}

// values rebuilds a checkpoint's values from its chain.
func (s *Postgres) values(ctx context.Context, q reader, thread, id string) (map[string]any, error) {
	values, _, err := s.load(ctx, q, thread, id)
	return values, err
}

// chainQuery reads a checkpoint's chain back to the nearest snapshot in
// one statement: each step finds the unit holding the id it needs (a
// checkpoints row of layout version 2, the sealed block whose range starts
// at or before it, or the open block) and continues at that unit's
// parent, until a unit holds a snapshot of the id needed. A sealed block
// is found as the first by last id at or after the id: ranges of one
// thread's blocks do not overlap unless ids were made by clocks that
// disagree, and the walk in Go checks that every id it needs is in the
// units read (see load). parent < first: ids grow along a chain, which
// also keeps damage from sending the query round in a cycle.
const chainQuery = `
	WITH RECURSIVE chain (kind, key, parent, first, stop, depth) AS (
		SELECT u.kind, u.key, u.parent, u.first, u.stop, 0 FROM (
			SELECT 0 AS kind, id AS key, parent, id AS first, snapshot IS NOT NULL AS stop FROM checkpoints WHERE thread = $1 AND id = $2
			UNION ALL
			(SELECT 1, last, parent, first, snapshot IS NOT NULL AND last = $2 FROM blocks WHERE thread = $1 AND last >= $2 ORDER BY last LIMIT 1)
			UNION ALL
			SELECT 2, last, parent, first, false FROM open_blocks WHERE thread = $1 AND last >= $2
		) u WHERE u.first <= $2
		UNION ALL
		SELECT u.kind, u.key, u.parent, u.first, u.stop, chain.depth + 1 FROM chain CROSS JOIN LATERAL (
			SELECT 0 AS kind, id AS key, parent, id AS first, snapshot IS NOT NULL AS stop FROM checkpoints WHERE thread = $1 AND id = chain.parent
			UNION ALL
			(SELECT 1, last, parent, first, snapshot IS NOT NULL AND last = chain.parent FROM blocks WHERE thread = $1 AND last >= chain.parent ORDER BY last LIMIT 1)
			UNION ALL
			SELECT 2, last, parent, first, false FROM open_blocks WHERE thread = $1 AND last >= chain.parent
		) u
		WHERE NOT chain.stop AND chain.parent <> '' AND chain.parent < chain.first AND u.first <= chain.parent
	)
	SELECT chain.kind, chain.stop,
		` + cpColumns + `, CASE WHEN chain.stop THEN c.snapshot END,
		COALESCE(b.sum, o.sum), COALESCE(b.n, o.n), COALESCE(b.last, o.last), COALESCE(b.first, o.first), COALESCE(b.parent, o.parent),
		COALESCE(b.data, o.data), CASE WHEN chain.stop THEN b.snapshot END
	FROM chain
	LEFT JOIN checkpoints c ON chain.kind = 0 AND c.thread = $1 AND c.id = chain.key LEFT JOIN graphs g ON g.id = c.graph
	LEFT JOIN blocks b ON chain.kind = 1 AND b.thread = $1 AND b.last = chain.key
	LEFT JOIN open_blocks o ON chain.kind = 2 AND o.thread = $1
	ORDER BY chain.depth`

// candidatesQuery reads every unit that may hold an id, for a walk whose
// units did not hold one it needed.
const candidatesQuery = `
	SELECT 0, c.snapshot IS NOT NULL, ` + cpColumns + `, c.snapshot,
		NULL::bigint, NULL::int, NULL::text, NULL::text, NULL::text, NULL::bytea, NULL::bytea
	FROM checkpoints c LEFT JOIN graphs g ON g.id = c.graph WHERE c.thread = $1 AND c.id = $2
	UNION ALL
	SELECT 1, b.snapshot IS NOT NULL, ` + nullColumns + `, NULL, b.sum, b.n, b.last, b.first, b.parent, b.data, b.snapshot
	FROM blocks b WHERE b.thread = $1 AND b.last >= $2 AND b.first <= $2
	UNION ALL
	SELECT 2, false, ` + nullColumns + `, NULL, o.sum, o.n, o.last, o.first, o.parent, o.data, NULL
	FROM open_blocks o WHERE o.thread = $1 AND o.last >= $2 AND o.first <= $2`

const nullColumns = `NULL::text, NULL::text, NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text,
	NULL::text, NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bytea, NULL::bigint, NULL::bigint`

// unit is a row of chainQuery or candidatesQuery: a checkpoints row or a
// block.
type unit struct {
	kind  int
	stop  bool
	row   checkpoint.Row
	snap  []byte
	block block
	bsnap []byte
}

// scanUnits reads the rows of chainQuery or candidatesQuery.
func scanUnits(rows pgx.Rows) ([]*unit, error) {
	defer rows.Close()
	var out []*unit
	for rows.Next() {
		u := &unit{}
		var r nullRow
		var bsum sql.NullInt64
		var bn sql.NullInt32
		var blast, bfirst, bparent sql.NullString
		args := append([]any{&u.kind, &u.stop}, r.args()...)
		args = append(args, &u.snap, &bsum, &bn, &blast, &bfirst, &bparent, &u.block.data, &u.bsnap)
		if err := rows.Scan(args...); err != nil {
			return nil, err
		}
		if u.kind == 0 {
			u.row = r.row()
		} else {
			u.block.open = u.kind == 2
			u.block.sum, u.block.n = bsum.Int64, int(bn.Int32)
			u.block.last, u.block.first, u.block.parent = blast.String, bfirst.String, bparent.String
			u.block.snapshot, u.block.hasSnap = u.bsnap, u.bsnap != nil
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// nullRow scans the columns of a checkpoints row that may all be NULL.
type nullRow struct {
	thread, id, parent                                       sql.NullString
	step, turnStep                                           sql.NullInt64
	next, waiting, source, writes, graph, graphHash, version sql.NullString
	time                                                     sql.NullInt64
	usage, totals, records                                   sql.NullString
	delta                                                    []byte
	sum, snapSum                                             sql.NullInt64
}

func (r *nullRow) args() []any {
	return []any{&r.thread, &r.id, &r.parent, &r.step, &r.turnStep, &r.next, &r.waiting, &r.source, &r.writes,
		&r.graph, &r.graphHash, &r.version, &r.time, &r.usage, &r.totals, &r.records, deltaColumn{&r.delta}, &r.sum, &r.snapSum}
}

func (r *nullRow) row() checkpoint.Row {
	return checkpoint.Row{Thread: r.thread.String, ID: r.id.String, Parent: r.parent.String, Step: r.step.Int64, TurnStep: r.turnStep.Int64,
		Next: r.next.String, Waiting: r.waiting, Source: r.source.String, Writes: r.writes,
		Graph: r.graph.String, GraphHash: r.graphHash.String, Version: r.version.String, Time: r.time.Int64,
		Usage: r.usage, Totals: r.totals, Records: r.records, Delta: r.delta, Sum: r.sum, SnapSum: r.snapSum}
}

// walkLink is a checkpoint found in the units a chain read returned.
type walkLink struct {
	row  checkpoint.Row
	snap []byte // its snapshot, nil when it has none or it was not read
	has  bool   // it has a snapshot
}

// load rebuilds checkpoint id's values from its chain and decodes its
// row.
func (s *Postgres) load(ctx context.Context, q reader, thread, id string) (map[string]any, *runtime.Checkpoint, error) {
	rows, err := q.Query(ctx, chainQuery, thread, id)
	if err != nil {
		return nil, nil, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
	}
	units, err := scanUnits(rows)
	if err != nil {
		return nil, nil, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
	}
	found := map[string]walkLink{}
	add := func(us []*unit) error {
		for _, u := range us {
			if u.kind == 0 {
				found[u.row.ID] = walkLink{row: u.row, snap: u.snap, has: u.stop}
				continue
			}
			recs, err := u.block.records(thread, s.where)
			if err != nil {
				return err
			}
			for i, r := range recs {
				l := walkLink{row: r.row}
				if i == len(recs)-1 && u.block.hasSnap {
					l.snap, l.has = u.block.snapshot, true
				}
				if _, dup := found[r.row.ID]; !dup || l.has {
					found[r.row.ID] = l
				}
			}
		}
		return nil
	}
	if err := add(units); err != nil {
		return nil, nil, err
	}
	// Walk back from id to the snapshot.
	var chain []checkpoint.Link
	need, tried := id, map[string]bool{}
	for {
		l, ok := found[need]
		if !ok && !tried[need] {
			tried[need] = true
			rows, err := q.Query(ctx, candidatesQuery, thread, need)
			if err != nil {
				return nil, nil, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
			}
			us, err := scanUnits(rows)
			if err != nil {
				return nil, nil, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
			}
			if err := add(us); err != nil {
				return nil, nil, err
			}
			l, ok = found[need]
		}
		if !ok {
			if need == id {
				return nil, nil, fmt.Errorf("checkpoint %q of thread %q: %w", id, thread, runtime.ErrNotFound)
			}
			break // Rebuild reports the chain broken
		}
		if l.has && l.snap == nil {
			// A snapshot the chain query did not read: the block was
			// found by the candidates query without it, or ends past id.
			var snap []byte
			if err := q.QueryRow(ctx, `SELECT COALESCE((SELECT snapshot FROM blocks WHERE thread = $1 AND last = $2), (SELECT snapshot FROM checkpoints WHERE thread = $1 AND id = $2))`, thread, need).Scan(&snap); err != nil {
				return nil, nil, fmt.Errorf("read snapshot: %w", s.describe(err))
			}
			l.snap = snap
		}
		chain = append(chain, checkpoint.Link{Row: l.row, Snapshot: l.snap})
		if l.has || l.row.Parent == "" || l.row.Parent >= l.row.ID || len(chain) > len(found) {
			break
		}
		need = l.row.Parent
	}
	for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
		chain[i], chain[j] = chain[j], chain[i]
	}
	values, err := checkpoint.Rebuild(thread, id, s.where, chain)
	if err != nil {
		return nil, nil, err
	}
	last := chain[len(chain)-1].Row
	cp, err := last.Decode()
	if err != nil {
		return nil, nil, err
	}
	return values, cp, nil
}

func (s *Postgres) pending(ctx context.Context, q reader, thread, id string) ([]runtime.PendingWrite, error) {
	rows, err := q.Query(ctx, `SELECT seq, node, kind, data, sum FROM writes WHERE thread = $1 AND checkpoint = $2 ORDER BY seq`, thread, id)
	if err != nil {
		return nil, fmt.Errorf("read pending writes: %w", s.describe(err))
	}
	defer rows.Close()
	var out []runtime.PendingWrite
	for rows.Next() {
		var seq int64
		var node, kind string
		var data []byte
		var sum sql.NullInt64
		if err := rows.Scan(&seq, &node, &kind, &data, &sum); err != nil {
			return nil, fmt.Errorf("read pending writes: %w", s.describe(err))
		}
		w, err := checkpoint.DecodeWrite(thread, id, seq, node, kind, data, sum)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending writes: %w", s.describe(err))
	}
	return out, nil
}

// List implements runtime.Saver. Rows and blocks that fail their checks
// are left out and reported in the error, one *runtime.CorruptError each
// (joined). The rows and the blocks are read on one snapshot, in one
// round trip.
func (s *Postgres) List(ctx context.Context, thread string, limit int) ([]*runtime.Checkpoint, error) {
	var lim any
	if limit > 0 {
		lim = limit
	}
	b := &pgx.Batch{}
	b.Queue(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`)
	b.Queue(`SELECT `+cpColumns+` FROM checkpoints c LEFT JOIN graphs g ON g.id = c.graph WHERE c.thread = $1 ORDER BY c.id DESC LIMIT $2`, thread, lim)
	// The newest limit checkpoints are in the limit blocks of the newest
	// last ids (each of those holds a newer checkpoint than any other).
	b.Queue(`(SELECT `+sealedColumns+` FROM blocks WHERE thread = $1 ORDER BY last DESC LIMIT $2)
		UNION ALL SELECT `+openColumns+` FROM open_blocks WHERE thread = $1 AND n > 0`, thread, lim)
	b.Queue(`COMMIT`)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
	}
	cps, bad, err := s.scanCheckpoints(rows)
	if err != nil {
		return nil, err
	}
	if rows, err = br.Query(); err != nil {
		return nil, fmt.Errorf("read blocks: %w", s.describe(err))
	}
	blocks, err := scanBlocks(rows)
	if err != nil {
		return nil, fmt.Errorf("read blocks: %w", s.describe(err))
	}
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
	}
	for _, bl := range blocks {
		recs, err := bl.records(thread, s.where)
		if err != nil {
			bad = append(bad, err.(*runtime.CorruptError))
			continue
		}
		for i := range recs {
			cp, err := recs[i].row.Decode()
			if err != nil {
				bad = append(bad, err.(*runtime.CorruptError))
				continue
			}
			cps = append(cps, cp)
		}
	}
	if len(blocks) > 0 {
		slices.SortFunc(cps, func(a, b *runtime.Checkpoint) int { return strings.Compare(b.ID, a.ID) })
		if limit > 0 && len(cps) > limit {
			cps = cps[:limit]
		}
	}
	if len(cps) == 0 && len(bad) == 0 {
		if _, err := s.Thread(ctx, thread); err != nil {
			return nil, err
		}
	}
	return cps, joinCorrupt(bad)
}

// scanCheckpoints decodes rows of cpColumns; rows that fail their checks
// are returned apart.
func (s *Postgres) scanCheckpoints(rows pgx.Rows) ([]*runtime.Checkpoint, []*runtime.CorruptError, error) {
	defer rows.Close()
	var out []*runtime.Checkpoint
	var bad []*runtime.CorruptError
	for rows.Next() {
		var r checkpoint.Row
		if err := rows.Scan(rowArgs(&r)...); err != nil {
			return nil, nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
		}
		cp, err := r.Decode()
		if err != nil {
			bad = append(bad, err.(*runtime.CorruptError))
			continue
		}
		out = append(out, cp)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
	}
	return out, bad, nil
}

// Thread implements runtime.Saver.
func (s *Postgres) Thread(ctx context.Context, id string) (*runtime.Thread, error) {
	ts, bad, err := s.threads(ctx, `WHERE id = $1`, id)
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		return nil, bad[0]
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("thread %q: %w", id, runtime.ErrNotFound)
	}
	return ts[0], nil
}

// Threads implements runtime.Saver.
func (s *Postgres) Threads(ctx context.Context) ([]*runtime.Thread, error) {
	ts, bad, err := s.threads(ctx, `ORDER BY updated DESC, id`)
	if err != nil {
		return nil, err
	}
	return ts, joinCorrupt(bad)
}

func (s *Postgres) threads(ctx context.Context, where string, args ...any) ([]*runtime.Thread, []*runtime.CorruptError, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+threadColumns+` FROM threads `+where, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("read threads: %w", s.describe(err))
	}
	defer rows.Close()
	var out []*runtime.Thread
	var bad []*runtime.CorruptError
	for rows.Next() {
		var r checkpoint.ThreadRow
		if err := rows.Scan(threadArgs(&r)...); err != nil {
			return nil, nil, fmt.Errorf("read threads: %w", s.describe(err))
		}
		t, err := r.Decode()
		if err != nil {
			bad = append(bad, err.(*runtime.CorruptError))
			continue
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read threads: %w", s.describe(err))
	}
	return out, bad, nil
}

func joinCorrupt(errs []*runtime.CorruptError) error {
	if len(errs) == 0 {
		return nil
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}
