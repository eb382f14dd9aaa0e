package pgstore

import (
	"context"
	"fmt"

	"github.com/lgrun/lgrun/checkpoint/postgres"
	"github.com/lgrun/lgrun/runtime"
)

// A claim is a worker's claim on a run: the run's token column holds its
// token while the claim is the worker's (a sweep clears it, another
// claim replaces it).
type claim struct{ run, token string }

type claimKey struct{}

func claimOf(ctx context.Context) *claim {
	c, _ := ctx.Value(claimKey{}).(*claim)
	return c
}

// Fence returns a context whose writes hold only while the claim of run
// under token does: this store's writes (run, thread, events) and the
// saver's commits ([postgres.WithFence]) check the token in their own
// transaction, under a FOR SHARE lock of the run's row that keeps a
// sweep or another claim waiting until they commit, and fail with a
// [*runtime.FencedError] once the claim is lost.
func (s *Store) Fence(ctx context.Context, run, token string) context.Context {
	ctx = context.WithValue(ctx, claimKey{}, &claim{run: run, token: token})
	return postgres.WithFence(ctx, &postgres.Fence{Claim: "run " + run,
		Query: `SELECT 1 FROM server_runs WHERE id = $1 AND token = $2 FOR SHARE`, Args: []any{run, token}})
}

// fenceCTE is the claim check as a CTE named fence, its run and token
// the n-th and n+1-th parameters.
func fenceCTE(n int) string {
	return fmt.Sprintf(`fence AS (SELECT 1 FROM server_runs WHERE id = $%d AND token = $%d FOR SHARE)`, n, n+1)
}

// fenced runs q, a write made of CTEs that only apply FROM fence (or
// with EXISTS (SELECT 1 FROM fence)) whose result is count(*) of fence,
// and fails with a FencedError when the claim did not hold.
func (s *Store) fenced(ctx context.Context, c *claim, what, q string, args ...any) error {
	var n int
	if err := s.pool.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return &runtime.FencedError{Claim: "run " + c.run}
	}
	return nil
}

// Depth counts the runs waiting in the queue (pending), whichever process
// accepted them (the server_runs_pending index has them).
func (s *Store) Depth(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM server_runs WHERE status = 'pending'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count queued runs: %w", err)
	}
	return n, nil
}
