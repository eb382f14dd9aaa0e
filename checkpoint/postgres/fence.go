package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lgrun/lgrun/runtime"
)

// A Fence makes the saver's writes conditional on a claim held in the
// same database, such as a run queue's claim on the run a worker
// executes (server/pgstore makes them). Query, with Args, is run first in
// the transaction of every write made with a context carrying the fence
// ([WithFence]): it must return a row while the claim holds and lock it
// against being taken away until the transaction ends (SELECT … FOR
// SHARE), and no row once it is lost. With no row, the write is rolled
// back and fails with a [*runtime.FencedError]: a worker that lost its
// claim commits nothing, whenever its heartbeat would have noticed.
type Fence struct {
	Claim string // what is claimed, for messages ("run <id>")
	Query string
	Args  []any
}

type fenceKey struct{}

// WithFence returns a context whose writes are fenced by f.
func WithFence(ctx context.Context, f *Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceOf returns the fence of ctx, or nil.
func FenceOf(ctx context.Context) *Fence {
	f, _ := ctx.Value(fenceKey{}).(*Fence)
	return f
}

// queue queues f's check on b; nil does nothing.
func (f *Fence) queue(b *pgx.Batch) {
	if f != nil {
		b.Queue(f.Query, f.Args...)
	}
}

// check reads the result of f's check queued on br; nil passes.
func (f *Fence) check(br pgx.BatchResults) error {
	if f == nil {
		return nil
	}
	var one any
	return f.result(br.QueryRow().Scan(&one))
}

// hold runs f's check in tx; nil passes.
func (f *Fence) hold(ctx context.Context, tx pgx.Tx) error {
	if f == nil {
		return nil
	}
	var one any
	return f.result(tx.QueryRow(ctx, f.Query, f.Args...).Scan(&one))
}

func (f *Fence) result(err error) error {
	switch {
	case err == nil:
		return nil
	case isNoRows(err):
		return &runtime.FencedError{Claim: f.Claim}
	}
	return fmt.Errorf("check the claim on %s: %w", f.Claim, err)
}
