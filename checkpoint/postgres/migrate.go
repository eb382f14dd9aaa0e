package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lgrun/lgrun/checkpoint"
)

// migrations[i] takes a schema from version i to i+1. Each runs in the
// transaction that records it in lgrun_migrations, so none may use
// CREATE INDEX CONCURRENTLY (which cannot run in one). Append only: a
// released migration is never edited.
//
// Version 1 is the layout of the SQLite saver's version 2 (row checksums)
// with Postgres types: JSON stays text, so that the bytes the checksums
// cover round-trip exactly (jsonb would reformat them). Leases expire by
// the database's clock, shared by every process whatever its host's.
var migrations = []string{
	`CREATE TABLE graphs (
		id BIGSERIAL PRIMARY KEY,
		name TEXT NOT NULL, hash TEXT NOT NULL, version TEXT NOT NULL,
		UNIQUE (name, hash, version)
	);
	CREATE TABLE threads (
		id TEXT COLLATE "C" PRIMARY KEY,
		head TEXT NOT NULL,
		status TEXT NOT NULL,
		error TEXT NOT NULL DEFAULT '',
		graph TEXT NOT NULL DEFAULT '',
		graph_hash TEXT NOT NULL DEFAULT '',
		graph_file TEXT NOT NULL DEFAULT '',
		config TEXT NOT NULL DEFAULT '{}',
		created BIGINT NOT NULL,
		updated BIGINT NOT NULL,
		pending BIGINT,
		sum BIGINT
	);
	CREATE INDEX threads_updated ON threads (updated DESC, id);
	CREATE TABLE checkpoints (
		thread TEXT COLLATE "C" NOT NULL,
		id TEXT COLLATE "C" NOT NULL,
		parent TEXT COLLATE "C" NOT NULL,
		step BIGINT NOT NULL,
		turn_step BIGINT NOT NULL,
		next TEXT NOT NULL,
		waiting TEXT,
		source TEXT NOT NULL,
		writes TEXT,
		graph BIGINT NOT NULL REFERENCES graphs (id),
		time BIGINT NOT NULL,
		usage TEXT,
		totals TEXT,
		records TEXT,
		sum BIGINT,
		snap_sum BIGINT,
		delta BYTEA NOT NULL,
		snapshot BYTEA,
		chain_bytes BIGINT NOT NULL,
		base_bytes BIGINT NOT NULL,
		PRIMARY KEY (thread, id)
	);
	CREATE TABLE writes (
		thread TEXT COLLATE "C" NOT NULL,
		checkpoint TEXT COLLATE "C" NOT NULL,
		seq BIGINT NOT NULL,
		node TEXT NOT NULL,
		kind TEXT NOT NULL,
		data BYTEA NOT NULL,
		sum BIGINT,
		PRIMARY KEY (thread, checkpoint, seq)
	);
	CREATE TABLE leases (
		thread TEXT COLLATE "C" PRIMARY KEY,
		token TEXT NOT NULL,
		owner TEXT NOT NULL,
		acquired TIMESTAMPTZ NOT NULL,
		expires TIMESTAMPTZ NOT NULL
	);`,

	// Version 2: every commit updates its thread's row, and an index on
	// threads.updated made each update a new row version with new entries
	// in both of the table's indexes (no HOT update): a 500-step thread
	// left ~90 KB of dead versions and index pages for one row. Listing
	// threads reads every row, so it sorts them instead; GC's scan by age
	// reads every row too. Without the index a commit's update is HOT (it
	// changes no indexed column) and reuses the row's page; the fill
	// factor leaves room for that on pages holding many threads.
	`DROP INDEX threads_updated;
	ALTER TABLE threads SET (fillfactor = 80);`,

	// Version 3: checkpoints in blocks (see block.go). A blocks row is a
	// sealed run of a chain's checkpoints, keyed by its last one; a
	// thread's open_blocks row is the run its commits extend, rewritten by
	// each (its fill factor leaves room on the page for the new version,
	// so the update is HOT). Rows are kept inline (toast_tuple_target at
	// its maximum, the records' column MAIN): a block is already
	// compressed, and moving it to TOAST would cost a TOAST row and index
	// entry per commit. The checkpoints rows of version 2 stay as they
	// are and read as before; new checkpoints go into blocks.
	`CREATE TABLE blocks (
		sum BIGINT NOT NULL,
		n INTEGER NOT NULL,
		thread TEXT COLLATE "C" NOT NULL,
		last TEXT COLLATE "C" NOT NULL,
		first TEXT COLLATE "C" NOT NULL,
		parent TEXT COLLATE "C" NOT NULL,
		data BYTEA NOT NULL,
		snapshot BYTEA,
		PRIMARY KEY (thread, last)
	) WITH (toast_tuple_target = 8160);
	ALTER TABLE blocks ALTER COLUMN data SET STORAGE MAIN;
	CREATE TABLE open_blocks (
		sum BIGINT NOT NULL,
		n INTEGER NOT NULL,
		thread TEXT COLLATE "C" PRIMARY KEY,
		last TEXT COLLATE "C" NOT NULL,
		first TEXT COLLATE "C" NOT NULL,
		parent TEXT COLLATE "C" NOT NULL,
		data BYTEA NOT NULL
	) WITH (fillfactor = 50, toast_tuple_target = 8160);
	ALTER TABLE open_blocks ALTER COLUMN data SET STORAGE MAIN;`,
}

// SchemaVersion is the layout version this package writes.
var SchemaVersion = len(migrations)

// migrate creates the schema if needed and applies the migrations it
// lacks, in one transaction under a transaction-level advisory lock keyed
// on the schema's name: processes starting together wait for each other,
// and the second finds the work done.
func (s *Postgres) migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	schema := s.schema
	if schema == "" {
		if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('lgrun.schema.' || $1, 0))`, schema); err != nil {
		return fmt.Errorf("lock the schema for migration: %w", err)
	}
	// Create only what is missing: CREATE … IF NOT EXISTS needs the CREATE
	// privilege even when there is nothing to create, which a role that
	// only uses an existing schema may lack.
	if s.schema != "" {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, s.schema).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if _, err := tx.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{s.schema}.Sanitize()); err != nil {
				return fmt.Errorf("create schema %s: %w", s.schema, err)
			}
		}
	}
	var have bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('lgrun_migrations') IS NOT NULL`).Scan(&have); err != nil {
		return err
	}
	if !have {
		if _, err := tx.Exec(ctx, `CREATE TABLE lgrun_migrations (version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create lgrun_migrations: %w", err)
		}
	}
	var v int
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM lgrun_migrations`).Scan(&v); err != nil {
		return err
	}
	if v > SchemaVersion {
		return fmt.Errorf("%w: schema %s was written by a newer lgrun (layout version %d; this lgrun reads version %d): upgrade lgrun, or use another schema", checkpoint.ErrSchemaVersion, schema, v, SchemaVersion)
	}
	if v == 0 {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename IN ('threads', 'checkpoints', 'writes')`, schema).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("schema %s has tables named like lgrun's but no lgrun_migrations rows: %w (use another schema)", schema, checkpoint.ErrNotCheckpointDB)
		}
	}
	if v == SchemaVersion {
		return nil
	}
	for ; v < SchemaVersion; v++ {
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrate schema %s from version %d to %d: %w", schema, v, v+1, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO lgrun_migrations (version) VALUES ($1)`, v+1); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit migrations: %w", err)
	}
	return nil
}

var errNoRows = pgx.ErrNoRows

func isNoRows(err error) bool { return errors.Is(err, errNoRows) }
