package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

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
	values, err := s.values(ctx, q, thread, id)
	if err != nil {
		if head && errors.Is(err, runtime.ErrNotFound) {
			return nil, &runtime.CorruptError{Thread: thread, Checkpoint: id, Err: errors.New("the thread's head checkpoint is missing from the database")}
		}
		return nil, err
	}
	cps, bad, err := s.query(ctx, q, `WHERE c.thread = $1 AND c.id = $2`, thread, id)
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		return nil, bad[0]
	}
	if len(cps) == 0 {
		return nil, fmt.Errorf("checkpoint %q of thread %q: %w", id, thread, runtime.ErrNotFound)
	}
	cp := cps[0]
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
	// parent < id: ids grow along a chain, which also keeps a damaged
	// parent column from sending the query round in a cycle.
	rows, err := q.Query(ctx, `
		WITH RECURSIVE chain (id, parent, snapshot, depth) AS (
			SELECT id, parent, snapshot IS NOT NULL, 0 FROM checkpoints WHERE thread = $1 AND id = $2
			UNION ALL
			SELECT c.id, c.parent, c.snapshot IS NOT NULL, chain.depth + 1
			FROM checkpoints c JOIN chain ON c.thread = $1 AND c.id = chain.parent
			WHERE NOT chain.snapshot AND chain.parent < chain.id
		)
		SELECT `+cpColumns+`, c.snapshot
		FROM chain JOIN checkpoints c ON c.thread = $1 AND c.id = chain.id LEFT JOIN graphs g ON g.id = c.graph
		ORDER BY chain.depth DESC`, thread, id)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
	}
	defer rows.Close()
	var chain []checkpoint.Link
	for rows.Next() {
		var l checkpoint.Link
		if err := rows.Scan(append(rowArgs(&l.Row), &l.Snapshot)...); err != nil {
			return nil, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
		}
		chain = append(chain, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
	}
	return checkpoint.Rebuild(thread, id, s.where, chain)
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

// List implements runtime.Saver. Rows that fail their checks are left out
// and reported in the error, one *runtime.CorruptError each (joined).
func (s *Postgres) List(ctx context.Context, thread string, limit int) ([]*runtime.Checkpoint, error) {
	q := `WHERE c.thread = $1 ORDER BY c.id DESC`
	args := []any{thread}
	if limit > 0 {
		q += ` LIMIT $2`
		args = append(args, limit)
	}
	cps, bad, err := s.query(ctx, s.pool, q, args...)
	if err != nil {
		return nil, err
	}
	if len(cps) == 0 && len(bad) == 0 {
		if _, err := s.Thread(ctx, thread); err != nil {
			return nil, err
		}
	}
	return cps, joinCorrupt(bad)
}

func (s *Postgres) query(ctx context.Context, q reader, where string, args ...any) ([]*runtime.Checkpoint, []*runtime.CorruptError, error) {
	rows, err := q.Query(ctx, `SELECT `+cpColumns+` FROM checkpoints c LEFT JOIN graphs g ON g.id = c.graph `+where, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
	}
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
