package checkpoint

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/lgrun/lgrun/runtime"
)

// GCOptions select what GC deletes.
type GCOptions struct {
	// Keep, when > 0, keeps only the latest Keep checkpoints of each thread.
	Keep int
	// Before, when set, deletes threads last updated before it.
	Before time.Time
	// Thread, when set, limits GC to this thread.
	Thread string
}

// GCResult reports what GC did.
type GCResult struct {
	Threads, Checkpoints    int
	BytesBefore, BytesAfter int64
}

// GCSteps are a saver's parts of a GC, which [RunGC] drives.
type GCSteps struct {
	// Size returns the bytes the saver's storage takes.
	Size func(ctx context.Context) (int64, error)
	// Threads lists the threads last updated before the time it is
	// given (every thread for the zero time), only the one named if a
	// thread is given.
	Threads func(ctx context.Context, before time.Time, thread string) ([]string, error)
	// Delete deletes a thread with its child runs, reporting how many
	// threads and checkpoints went; runtime.ErrNotFound for a thread
	// already gone (a child run deleted with its parent).
	Delete func(ctx context.Context, thread string) (threads, checkpoints int, err error)
	// Prune keeps the latest keep checkpoints of a thread and its head
	// (see [KeptCheckpoints]), reporting how many checkpoints went.
	Prune func(ctx context.Context, thread string, keep int) (int, error)
	// Reclaim gives the freed space back (VACUUM).
	Reclaim func(ctx context.Context) error
}

// RunGC does what o selects with a saver's steps: it deletes the threads
// last updated before o.Before, then prunes every thread left to its
// latest o.Keep checkpoints, then reclaims the space.
func RunGC(ctx context.Context, o GCOptions, st GCSteps) (GCResult, error) {
	var res GCResult
	var err error
	if res.BytesBefore, err = st.Size(ctx); err != nil {
		return res, err
	}
	if !o.Before.IsZero() {
		ids, err := st.Threads(ctx, o.Before, o.Thread)
		if err != nil {
			return res, err
		}
		for _, id := range ids {
			threads, cps, err := st.Delete(ctx, id)
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
		ids, err := st.Threads(ctx, time.Time{}, o.Thread)
		if err != nil {
			return res, err
		}
		for _, id := range ids {
			n, err := st.Prune(ctx, id, o.Keep)
			if err != nil {
				return res, fmt.Errorf("gc thread %q: %w", id, err)
			}
			res.Checkpoints += n
		}
	}
	if err := st.Reclaim(ctx); err != nil {
		return res, err
	}
	res.BytesAfter, err = st.Size(ctx)
	return res, err
}

// KeptCheckpoints returns the checkpoints a prune to the latest keep
// keeps: the thread's head and the newest of all (newest first) up to
// keep in all.
func KeptCheckpoints(head string, all []*runtime.Checkpoint, keep int) map[string]bool {
	kept := map[string]bool{head: true}
	for _, cp := range all {
		if len(kept) >= keep && !kept[cp.ID] {
			break
		}
		kept[cp.ID] = true
	}
	return kept
}

// GC deletes old threads and old checkpoints without breaking delta
// chains, then reclaims space with VACUUM. The oldest kept checkpoint of
// each branch is rewritten as a full snapshot before its ancestors go.
func (s *SQLite) GC(ctx context.Context, o GCOptions) (GCResult, error) {
	return RunGC(ctx, o, GCSteps{
		Size: s.size,
		Threads: func(ctx context.Context, before time.Time, thread string) ([]string, error) {
			q := `SELECT t.id FROM threads t WHERE 1`
			var args []any
			if !before.IsZero() {
				// The time of a running thread's latest commit (see follow.go).
				q = `SELECT t.id FROM threads t ` + liveJoin + ` WHERE ` + liveUpdatedSQL + ` < ?`
				args = append(args, before.UnixNano())
			}
			if thread != "" {
				q += ` AND t.id = ?`
				args = append(args, thread)
			}
			return s.strings(ctx, q, args...)
		},
		Delete: s.deleteThread,
		Prune:  s.pruneThread,
		Reclaim: func(ctx context.Context) error {
			if _, err := s.db.ExecContext(ctx, `VACUUM`); err != nil {
				return fmt.Errorf("gc: vacuum: %w", s.describe(err))
			}
			if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
				return fmt.Errorf("gc: checkpoint WAL: %w", s.describe(err))
			}
			return nil
		},
	})
}

func (s *SQLite) size(ctx context.Context) (int64, error) {
	var pages, size int64
	if err := s.db.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		return 0, fmt.Errorf("read database size: %w", s.describe(err))
	}
	if err := s.db.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&size); err != nil {
		return 0, fmt.Errorf("read database size: %w", s.describe(err))
	}
	return pages * size, nil
}

func (s *SQLite) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", s.describe(err))
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// pruneThread keeps the latest keep checkpoints of a thread (and always its
// head) and deletes the rest in one transaction. The transaction takes the
// write lock first, so no commit (a fork of a checkpoint about to go, say)
// can slip in between choosing what to delete and deleting it; the reads in
// between go through other connections, which WAL allows.
func (s *SQLite) pruneThread(ctx context.Context, thread string, keep int) (int, error) {
	tx, err := s.begin(ctx)
	if err != nil {
		return 0, s.describe(err)
	}
	defer s.end(tx)
	s.forgetStates(thread, false)
	th, err := s.Thread(ctx, thread)
	if err != nil {
		return 0, err
	}
	all, err := s.List(ctx, thread, 0) // newest first
	if err != nil {
		return 0, err
	}
	if len(all) <= keep {
		return 0, nil
	}
	kept := KeptCheckpoints(th.Head, all, keep)
	// Materialise the values of kept checkpoints whose parent goes, while
	// their chains are still intact.
	for _, cp := range all {
		if !kept[cp.ID] || cp.ParentID == "" || kept[cp.ParentID] {
			continue
		}
		values, _, err := s.values(ctx, thread, cp.ID)
		if err != nil {
			return 0, err
		}
		js, err := marshal(values)
		if err != nil {
			return 0, err
		}
		b := encodeSnapshot(js)
		// The row's checksum covers the snapshot's: renew both (a row
		// from before checksums keeps none).
		var r cpRow
		if err := tx.QueryRowContext(ctx, `SELECT `+cpColumns+` FROM checkpoints c LEFT JOIN graphs g ON g.id = c.graph WHERE c.thread = ? AND c.id = ?`, thread, cp.ID).Scan(r.scanArgs()...); err != nil {
			return 0, s.describe(err)
		}
		sum, snapSum, link := sql.NullInt64{}, sql.NullInt64{}, sql.NullInt64{}
		if r.sum.Valid {
			r.snapSum = snapshotSum(b)
			sum, snapSum = sql.NullInt64{Int64: r.checksum(), Valid: true}, r.snapSum
			link = sql.NullInt64{Int64: linkSum(r.thread, r.id, r.parent, r.delta, r.snapSum), Valid: true}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE checkpoints SET snapshot = ?, chain_bytes = 0, base_bytes = ?, sum = ?, snap_sum = ?, link_sum = ? WHERE thread = ? AND id = ?`, b, len(js), sum, snapSum, link, thread, cp.ID); err != nil {
			return 0, s.describe(err)
		}
	}
	// Packs summarise runs of the chains that change here: they go (new
	// commits make new ones).
	if _, err := tx.ExecContext(ctx, `DELETE FROM packs WHERE thread = ?`, thread); err != nil {
		return 0, s.describe(err)
	}
	n := 0
	for _, cp := range all {
		if kept[cp.ID] {
			continue
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM checkpoints WHERE thread = ? AND id = ?`, thread, cp.ID); err != nil {
			return 0, s.describe(err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM writes WHERE thread = ? AND checkpoint = ?`, thread, cp.ID); err != nil {
			return 0, s.describe(err)
		}
		n++
	}
	if err := tx.Commit(); err != nil {
		return 0, s.describe(err)
	}
	s.mu.Lock()
	delete(s.chains, thread)
	delete(s.runs, thread)
	s.mu.Unlock()
	return n, nil
}
