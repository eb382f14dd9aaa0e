package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// tables are the saver's tables, whose sizes Size sums.
var tables = []string{"graphs", "threads", "checkpoints", "writes", "leases"}

// Size returns the bytes the saver's tables take, indexes and TOAST
// included (pg_total_relation_size).
func (s *Postgres) Size(ctx context.Context) (int64, error) {
	var n int64
	for _, t := range tables {
		var b int64
		if err := s.pool.QueryRow(ctx, `SELECT pg_total_relation_size($1::regclass)`, t).Scan(&b); err != nil {
			return 0, fmt.Errorf("read database size: %w", s.describe(err))
		}
		n += b
	}
	return n, nil
}

// GC deletes old threads and old checkpoints without breaking delta
// chains, as [checkpoint.SQLite.GC] does, then VACUUMs the tables. Plain
// VACUUM makes the space reusable by later rows but rarely gives it back
// to the operating system, so BytesAfter may not shrink.
func (s *Postgres) GC(ctx context.Context, o checkpoint.GCOptions) (checkpoint.GCResult, error) {
	var res checkpoint.GCResult
	var err error
	if res.BytesBefore, err = s.Size(ctx); err != nil {
		return res, err
	}
	if !o.Before.IsZero() {
		q := `SELECT id FROM threads WHERE updated < $1`
		args := []any{o.Before.UnixNano()}
		if o.Thread != "" {
			q += ` AND id = $2`
			args = append(args, o.Thread)
		}
		ids, err := s.strings(ctx, q, args...)
		if err != nil {
			return res, err
		}
		for _, id := range ids {
			threads, cps, err := s.deleteThread(ctx, id)
			if errors.Is(err, runtime.ErrNotFound) {
				continue // a child run, deleted with its parent
			}
			if err != nil {
				return res, fmt.Errorf("gc: %w", err)
			}
			res.Threads += threads
			res.Checkpoints += cps
		}
	}
	if o.Keep > 0 {
		q := `SELECT id FROM threads`
		var args []any
		if o.Thread != "" {
			q += ` WHERE id = $1`
			args = append(args, o.Thread)
		}
		ids, err := s.strings(ctx, q, args...)
		if err != nil {
			return res, err
		}
		for _, id := range ids {
			n, err := s.pruneThread(ctx, id, o.Keep)
			if err != nil {
				return res, fmt.Errorf("gc thread %q: %w", id, err)
			}
			res.Checkpoints += n
		}
	}
	for _, t := range []string{"checkpoints", "writes", "threads"} {
		if _, err := s.pool.Exec(ctx, `VACUUM `+pgx.Identifier{t}.Sanitize()); err != nil {
			return res, fmt.Errorf("gc: vacuum %s: %w", t, s.describe(err))
		}
	}
	res.BytesAfter, err = s.Size(ctx)
	return res, err
}

func (s *Postgres) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", s.describe(err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("gc: %w", s.describe(err))
	}
	return ids, nil
}

// pruneThread keeps the latest keep checkpoints of a thread (and always
// its head) and deletes the rest in one transaction, which first locks the
// thread's row: no commit (a fork of a checkpoint about to go, say) can
// slip in between choosing what to delete and deleting it.
func (s *Postgres) pruneThread(ctx context.Context, thread string, keep int) (int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, s.describe(err)
	}
	defer tx.Rollback(context.Background())
	var head string
	if err := tx.QueryRow(ctx, `SELECT head FROM threads WHERE id = $1 FOR UPDATE`, thread).Scan(&head); err != nil {
		if isNoRows(err) {
			return 0, fmt.Errorf("thread %q: %w", thread, runtime.ErrNotFound)
		}
		return 0, s.describe(err)
	}
	all, err := s.List(ctx, thread, 0) // newest first
	if err != nil {
		return 0, err
	}
	if len(all) <= keep {
		return 0, nil
	}
	kept := map[string]bool{head: true}
	for _, cp := range all {
		if len(kept) >= keep && !kept[cp.ID] {
			break
		}
		kept[cp.ID] = true
	}
	// Materialise the values of kept checkpoints whose parent goes, while
	// their chains are still intact.
	for _, cp := range all {
		if !kept[cp.ID] || cp.ParentID == "" || kept[cp.ParentID] {
			continue
		}
		values, err := s.values(ctx, s.pool, thread, cp.ID)
		if err != nil {
			return 0, err
		}
		js, err := checkpoint.Marshal(values)
		if err != nil {
			return 0, err
		}
		b := checkpoint.EncodeSnapshot(js)
		var r checkpoint.Row
		if err := tx.QueryRow(ctx, `SELECT `+cpColumns+` FROM checkpoints c LEFT JOIN graphs g ON g.id = c.graph WHERE c.thread = $1 AND c.id = $2`, thread, cp.ID).Scan(rowArgs(&r)...); err != nil {
			return 0, s.describe(err)
		}
		r.Seal(b) // the row's checksum covers the snapshot's: renew both
		if _, err := tx.Exec(ctx, `UPDATE checkpoints SET snapshot = $1, chain_bytes = 0, base_bytes = $2, sum = $3, snap_sum = $4 WHERE thread = $5 AND id = $6`, b, len(js), r.Sum, r.SnapSum, thread, cp.ID); err != nil {
			return 0, s.describe(err)
		}
	}
	var gone []string
	for _, cp := range all {
		if !kept[cp.ID] {
			gone = append(gone, cp.ID)
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM checkpoints WHERE thread = $1 AND id = ANY($2)`, thread, gone); err != nil {
		return 0, s.describe(err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM writes WHERE thread = $1 AND checkpoint = ANY($2)`, thread, gone); err != nil {
		return 0, s.describe(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, s.describe(err)
	}
	return len(gone), nil
}
