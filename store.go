package lgrun

import (
	"context"
	"strings"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/checkpoint/postgres"
	"github.com/lgrun/lgrun/runtime"
)

// Store is a durable checkpoint store: a saver that also takes run leases,
// collects garbage and names itself in messages. [checkpoint.SQLite] and
// [postgres.Postgres] are Stores.
type Store interface {
	runtime.Saver
	runtime.Locker
	GC(ctx context.Context, o checkpoint.GCOptions) (checkpoint.GCResult, error)
	// Path names the database: a file path, or "postgres host:port/db".
	Path() string
	Close() error
}

var (
	_ Store = (*checkpoint.SQLite)(nil)
	_ Store = (*postgres.Postgres)(nil)
)

// IsPostgresURL reports whether db names a PostgreSQL database
// (postgres:// or postgresql://) rather than an SQLite file.
func IsPostgresURL(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// Open opens the checkpoint store db names: a postgres:// or
// postgresql:// URL opens a [postgres.Postgres] (migrating its schema),
// anything else is the path of an SQLite file, created if needed. opts
// may be nil; its Durability applies to SQLite only (a Postgres commit is
// as durable as the server's synchronous_commit makes it).
func Open(ctx context.Context, db string, opts *checkpoint.Options) (Store, error) {
	if IsPostgresURL(db) {
		po := &postgres.Options{}
		if opts != nil {
			po.LeaseTTL = opts.LeaseTTL
		}
		return postgres.Open(ctx, db, po)
	}
	return checkpoint.OpenSQLite(db, opts)
}
