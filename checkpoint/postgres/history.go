package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

var _ runtime.HistoryReader = (*Postgres)(nil)

// History implements [runtime.HistoryReader]: one walk of the thread's
// checkpoint tree (see [checkpoint.WalkHistory]) on one read-only
// repeatable-read transaction, so the rows, snapshots and pending writes
// read are of one moment.
func (s *Postgres) History(ctx context.Context, thread string, o runtime.HistoryOptions) ([]*runtime.Checkpoint, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("read history: %w", s.describe(err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	return checkpoint.WalkHistory(ctx, &pgHistory{s: s, tx: tx, thread: thread}, thread, s.where, o)
}

// pgHistory is the [checkpoint.HistorySource] of a read transaction.
type pgHistory struct {
	s      *Postgres
	tx     pgx.Tx
	thread string
}

func (h *pgHistory) Thread(ctx context.Context) (checkpoint.ThreadRow, bool, error) {
	var tr checkpoint.ThreadRow
	err := h.tx.QueryRow(ctx, `SELECT `+threadColumns+` FROM threads WHERE id = $1`, h.thread).Scan(threadArgs(&tr)...)
	switch {
	case isNoRows(err):
		return checkpoint.ThreadRow{}, false, nil
	case err != nil:
		return checkpoint.ThreadRow{}, false, fmt.Errorf("read thread: %w", h.s.describe(err))
	}
	return tr, true, nil
}

func (h *pgHistory) Rows(ctx context.Context) ([]checkpoint.HistoryRow, error) {
	rows, err := h.tx.Query(ctx, `SELECT `+cpColumns+`, c.snapshot IS NOT NULL
		FROM checkpoints c LEFT JOIN graphs g ON g.id = c.graph WHERE c.thread = $1`, h.thread)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", h.s.describe(err))
	}
	defer rows.Close()
	var out []checkpoint.HistoryRow
	for rows.Next() {
		var r checkpoint.HistoryRow
		if err := rows.Scan(append(rowArgs(&r.Row), &r.HasSnapshot)...); err != nil {
			return nil, fmt.Errorf("read checkpoints: %w", h.s.describe(err))
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", h.s.describe(err))
	}
	// The records of the thread's blocks. A damaged block fails the walk
	// (its records, ids included, cannot be read).
	brows, err := h.tx.Query(ctx, `SELECT `+sealedColumns+` FROM blocks WHERE thread = $1
		UNION ALL SELECT `+openColumns+` FROM open_blocks WHERE thread = $1 AND n > 0`, h.thread)
	if err != nil {
		return nil, fmt.Errorf("read blocks: %w", h.s.describe(err))
	}
	blocks, err := scanBlocks(brows)
	if err != nil {
		return nil, fmt.Errorf("read blocks: %w", h.s.describe(err))
	}
	for _, b := range blocks {
		recs, err := b.records(h.thread, h.s.where)
		if err != nil {
			return nil, err
		}
		for i := range recs {
			out = append(out, checkpoint.HistoryRow{Row: recs[i].row, HasSnapshot: b.hasSnap && i == len(recs)-1})
		}
	}
	return out, nil
}

func (h *pgHistory) Snapshots(ctx context.Context, ids []string) (map[string][]byte, error) {
	rows, err := h.tx.Query(ctx, `SELECT id, snapshot FROM checkpoints WHERE thread = $1 AND id = ANY($2) AND snapshot IS NOT NULL
		UNION ALL SELECT last, snapshot FROM blocks WHERE thread = $1 AND last = ANY($2) AND snapshot IS NOT NULL`, h.thread, ids)
	if err != nil {
		return nil, fmt.Errorf("read snapshots: %w", h.s.describe(err))
	}
	defer rows.Close()
	out := make(map[string][]byte, len(ids))
	for rows.Next() {
		var id string
		var snap []byte
		if err := rows.Scan(&id, &snap); err != nil {
			return nil, fmt.Errorf("read snapshots: %w", h.s.describe(err))
		}
		out[id] = snap
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read snapshots: %w", h.s.describe(err))
	}
	return out, nil
}

func (h *pgHistory) Writes(ctx context.Context) ([]checkpoint.WriteRow, error) {
	rows, err := h.tx.Query(ctx, `SELECT checkpoint, seq, node, kind, data, sum FROM writes WHERE thread = $1 ORDER BY checkpoint, seq`, h.thread)
	if err != nil {
		return nil, fmt.Errorf("read pending writes: %w", h.s.describe(err))
	}
	defer rows.Close()
	var out []checkpoint.WriteRow
	for rows.Next() {
		var wr checkpoint.WriteRow
		if err := rows.Scan(&wr.Checkpoint, &wr.Seq, &wr.Node, &wr.Kind, &wr.Data, &wr.Sum); err != nil {
			return nil, fmt.Errorf("read pending writes: %w", h.s.describe(err))
		}
		out = append(out, wr)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending writes: %w", h.s.describe(err))
	}
	return out, nil
}
