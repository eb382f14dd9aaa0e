package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// Options configure a Postgres saver.
type Options struct {
	// Schema is the schema the saver's tables live in, created if missing;
	// when empty, the URL's search_path if it names one schema, else the
	// server's default (public).
	Schema string
	// LeaseTTL is how long a run lease lasts without renewal;
	// [checkpoint.DefaultLeaseTTL] when zero.
	LeaseTTL time.Duration
	// MaxConns caps the pool's connections; pgxpool's default when zero.
	MaxConns int32
}

// Postgres is the saver on a PostgreSQL database: one transaction per
// committed superstep, the head moved by compare-and-swap, deltas and
// snapshots laid out as in [checkpoint.SQLite].
type Postgres struct {
	pool     *pgxpool.Pool
	where    string // host:port/database, for messages
	schema   string
	leaseTTL time.Duration

	mu     sync.Mutex
	graphs map[string]int64 // name\x00hash\x00version → graph row id
}

var (
	_ runtime.Saver  = (*Postgres)(nil)
	_ runtime.Locker = (*Postgres)(nil)
)

// Open connects to the database at url (postgres://… or a key=value
// connection string) and applies the migrations its schema lacks.
func Open(ctx context.Context, url string, opts *Options) (*Postgres, error) {
	if opts == nil {
		opts = &Options{}
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors quote the URL with its password masked.
		return nil, fmt.Errorf("open postgres database: bad connection URL: %w", err)
	}
	cc := cfg.ConnConfig
	where := fmt.Sprintf("%s/%s", net.JoinHostPort(cc.Host, fmt.Sprint(cc.Port)), cc.Database)
	schema := opts.Schema
	if schema == "" {
		if sp := strings.TrimSpace(cc.RuntimeParams["search_path"]); sp != "" && !strings.Contains(sp, ",") {
			schema = strings.Trim(sp, `"`)
		}
	}
	if schema != "" {
		cc.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
		where += " (schema " + schema + ")"
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = 10 * time.Second
	}
	ttl := opts.LeaseTTL
	if ttl <= 0 {
		ttl = checkpoint.DefaultLeaseTTL
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres database %s: %w", where, err)
	}
	s := &Postgres{pool: pool, where: where, schema: schema, leaseTTL: ttl, graphs: map[string]int64{}}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		if err = s.describe(err); strings.Contains(err.Error(), where) {
			return nil, fmt.Errorf("open postgres database: %w", err)
		}
		return nil, fmt.Errorf("open postgres database %s: %w", where, err)
	}
	return s, nil
}

// Close closes the pool.
func (s *Postgres) Close() error {
	s.pool.Close()
	return nil
}

// Path names the database (host:port/database and schema) for messages.
func (s *Postgres) Path() string { return "postgres " + s.where }

// Pool exposes the connection pool for tests and maintenance.
func (s *Postgres) Pool() *pgxpool.Pool { return s.pool }

// describe explains a database error in the user's terms.
func (s *Postgres) describe(err error) error {
	var pe *pgconn.PgError
	var ce *pgconn.ConnectError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return fmt.Errorf("cannot connect to %s (is PostgreSQL running there, and the URL right?): %w", s.where, err)
	case errors.As(err, &pe) && pe.Code == "42501":
		return fmt.Errorf("permission denied on %s (the role needs CREATE on the database or schema): %w", s.where, err)
	}
	return err
}
