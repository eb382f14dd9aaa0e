package postgres

import (
	"context"

	"github.com/lgrun/lgrun/runtime"
)

// DecodeDelta is decodeDelta, for the tests of package postgres_test.
var DecodeDelta = decodeDelta

// BlockRows is blockRows, for the tests.
const BlockRows = blockRows

// Unblock rewrites thread's blocks as the checkpoints rows layout version
// 2 wrote (the same rows, deltas stored as version 2 stored them), so that
// the tests can make the data of a version 2 database.
func Unblock(ctx context.Context, s *Postgres, thread string) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	rows, err := tx.Query(ctx, `SELECT sum, n, last, first, parent, data, snapshot, false FROM blocks WHERE thread = $1
		UNION ALL SELECT sum, n, last, first, parent, data, NULL, true FROM open_blocks WHERE thread = $1 AND n > 0`, thread)
	if err != nil {
		return err
	}
	var all []*block
	for rows.Next() {
		b := &block{}
		if err := rows.Scan(&b.sum, &b.n, &b.last, &b.first, &b.parent, &b.data, &b.snapshot, &b.open); err != nil {
			return err
		}
		b.hasSnap = b.snapshot != nil
		all = append(all, b)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, b := range all {
		recs, err := b.records(thread, s.where)
		if err != nil {
			return err
		}
		for i, rec := range recs {
			r := rec.row
			var snap []byte
			if i == len(recs)-1 {
				snap = b.snapshot
			}
			gid, _, err := s.graphID(ctx, tx, runtime.Metadata{Graph: r.Graph, GraphHash: r.GraphHash, Version: r.Version})
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO checkpoints (thread, id, parent, step, turn_step, next, waiting, source, writes, graph, time, usage, totals, records, delta, snapshot, chain_bytes, base_bytes, sum, snap_sum)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)`,
				r.Thread, r.ID, r.Parent, r.Step, r.TurnStep, r.Next, r.Waiting, r.Source, r.Writes, gid, r.Time,
				r.Usage, r.Totals, r.Records, encodeDelta(r.Delta), snap, rec.chain, rec.base, r.Sum, r.SnapSum); err != nil {
				return err
			}
		}
	}
	for _, q := range []string{`DELETE FROM blocks WHERE thread = $1`, `DELETE FROM open_blocks WHERE thread = $1`} {
		if _, err := tx.Exec(ctx, q, thread); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}
