package postgres_test

import (
	"context"
	"testing"

	"github.com/lgrun/lgrun/checkpoint/checkpointtest"
	"github.com/lgrun/lgrun/checkpoint/postgres"
	"github.com/lgrun/lgrun/checkpoint/postgres/pgtest"
	"github.com/lgrun/lgrun/runtime"
)

var bg = context.Background()

// open opens a saver on a fresh schema of its own.
func open(tb testing.TB, opts *postgres.Options) (*postgres.Postgres, string) {
	tb.Helper()
	_, u := pgtest.Schema(tb)
	return openURL(tb, u, opts), u
}

func openURL(tb testing.TB, u string, opts *postgres.Options) *postgres.Postgres {
	tb.Helper()
	s, err := postgres.Open(bg, u, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	checkpointtest.Run(t, func(t *testing.T) runtime.Saver {
		s, _ := open(t, &postgres.Options{MaxConns: 4})
		return s
	})
}
