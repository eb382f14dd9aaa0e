package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// tables are the saver's tables, whose sizes Size sums.
var tables = []string{"graphs", "threads", "checkpoints", "blocks", "open_blocks", "writes", "leases"}

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
	return checkpoint.RunGC(ctx, o, checkpoint.GCSteps{
		Size: s.Size,
		Threads: func(ctx context.Context, before time.Time, thread string) ([]string, error) {
			q := `SELECT id FROM threads WHERE true`
			var args []any
			if !before.IsZero() {
				args = append(args, before.UnixNano())
				q += fmt.Sprintf(` AND updated < $%d`, len(args))
			}
			if thread != "" {
				args = append(args, thread)
				q += fmt.Sprintf(` AND id = $%d`, len(args))
			}
			return s.strings(ctx, q, args...)
		},
		Delete: s.deleteThread,
		Prune:  s.pruneThread,
		Reclaim: func(ctx context.Context) error {
			for _, t := range []string{"checkpoints", "blocks", "open_blocks", "writes", "threads"} {
				if _, err := s.pool.Exec(ctx, `VACUUM `+pgx.Identifier{t}.Sanitize()); err != nil {
					return fmt.Errorf("gc: vacuum %s: %w", t, s.describe(err))
				}
			}
			return nil
		},
	})
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
	all, err := s.List(ctx, thread, 0) // newest first (on its own snapshot: the thread's row is locked)
	if err != nil {
		return 0, err
	}
	if len(all) <= keep {
		return 0, nil
	}
	kept := checkpoint.KeptCheckpoints(head, all, keep)
	// Materialise the values of kept checkpoints whose parent goes, while
	// their chains are still intact.
	snaps := map[string][]byte{} // id → stored snapshot
	jsLen := map[string]int{}
	for _, cp := range all {
		if !kept[cp.ID] || cp.ParentID == "" || kept[cp.ParentID] {
			continue
		}
		values, err := s.values(ctx, tx, thread, cp.ID)
		if err != nil {
			return 0, err
		}
		js, err := checkpoint.Marshal(values)
		if err != nil {
			return 0, err
		}
		snaps[cp.ID], jsLen[cp.ID] = checkpoint.EncodeSnapshot(js), len(js)
	}
	var gone []string
	for _, cp := range all {
		if !kept[cp.ID] {
			gone = append(gone, cp.ID)
		}
	}
	// Rows of layout version 2.
	for id, b := range snaps {
		var r checkpoint.Row
		err := tx.QueryRow(ctx, `SELECT `+cpColumns+` FROM checkpoints c LEFT JOIN graphs g ON g.id = c.graph WHERE c.thread = $1 AND c.id = $2`, thread, id).Scan(rowArgs(&r)...)
		if isNoRows(err) {
			continue // in a block
		}
		if err != nil {
			return 0, s.describe(err)
		}
		r.Seal(b) // the row's checksum covers the snapshot's: renew both
		if _, err := tx.Exec(ctx, `UPDATE checkpoints SET snapshot = $1, chain_bytes = 0, base_bytes = $2, sum = $3, snap_sum = $4 WHERE thread = $5 AND id = $6`, b, jsLen[id], r.Sum, r.SnapSum, thread, id); err != nil {
			return 0, s.describe(err)
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM checkpoints WHERE thread = $1 AND id = ANY($2)`, thread, gone); err != nil {
		return 0, s.describe(err)
	}
	// Blocks holding a checkpoint that goes are rewritten: what is kept
	// of each, split into runs of consecutive checkpoints, each run a
	// sealed block (a materialised snapshot ends its own).
	if err := s.pruneBlocks(ctx, tx, thread, kept, snaps, jsLen); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM writes WHERE thread = $1 AND checkpoint = ANY($2)`, thread, gone); err != nil {
		return 0, s.describe(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, s.describe(err)
	}
	return len(gone), nil
}

// pruneBlocks rewrites the blocks of thread that hold checkpoints not in
// kept; snaps are the snapshots to store with kept checkpoints whose
// parent goes (jsLen their JSON sizes).
func (s *Postgres) pruneBlocks(ctx context.Context, tx pgx.Tx, thread string, kept map[string]bool, snaps map[string][]byte, jsLen map[string]int) error {
	rows, err := tx.Query(ctx, `SELECT `+sealedSnapColumns+` FROM blocks WHERE thread = $1
		UNION ALL SELECT `+openColumns+` FROM open_blocks WHERE thread = $1 AND n > 0`, thread)
	if err != nil {
		return s.describe(err)
	}
	all, err := scanBlocks(rows)
	if err != nil {
		return s.describe(err)
	}
	batch := &pgx.Batch{}
	const insert = `INSERT INTO blocks (thread, last, first, parent, n, data, snapshot, sum) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	for _, b := range all {
		recs, err := b.records(thread, s.where)
		if err != nil {
			return err
		}
		whole := true
		for i := range recs {
			_, snapped := snaps[recs[i].row.ID]
			whole = whole && kept[recs[i].row.ID] && !snapped
		}
		if whole {
			continue
		}
		if b.open {
			batch.Queue(emptyOpen, thread)
		} else {
			batch.Queue(`DELETE FROM blocks WHERE thread = $1 AND last = $2`, thread, b.last)
		}
		var run []record
		parent := b.parent
		flush := func(snap []byte) {
			if len(run) == 0 {
				return
			}
			nb := newBlock(thread, parent, run)
			batch.Queue(insert, thread, nb.last, nb.first, nb.parent, nb.n, nb.data, snap, nb.sum)
			parent, run = nb.last, nil
		}
		for i := range recs {
			rec := recs[i]
			if !kept[rec.row.ID] {
				flush(nil)
				parent = rec.row.ID
				continue
			}
			if snap, ok := snaps[rec.row.ID]; ok {
				flush(nil)
				rec.row.Seal(snap)
				rec.chain, rec.base = 0, int64(jsLen[rec.row.ID])
				run = append(run, rec)
				flush(snap)
				continue
			}
			run = append(run, rec)
		}
		if b.hasSnap && len(run) > 0 && run[len(run)-1].row.ID == b.last {
			flush(b.snapshot)
		}
		flush(nil)
	}
	if batch.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return s.describe(err)
	}
	return nil
}
