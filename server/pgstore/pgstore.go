// Package pgstore is the [server.Store] of lgrun serve on PostgreSQL: the
// threads, runs, assistants and resumable stream events of the Agent
// Server API, in the same database and schema as the checkpoints of
// [postgres.Postgres], so every API server and worker on that database
// shares them.
//
// Its tables are prefixed server_ (the saver owns threads, checkpoints,
// writes and leases) and versioned by their own migrations table,
// lgrun_server_migrations, applied on open under a transaction-level
// advisory lock as the saver does, so processes starting together do not
// race.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/server"
)

// migrations[i] takes the server tables from version i to i+1; append
// only. Rows are JSON text (the server's own encoding, as in the SQLite
// store) next to the columns queries filter and sort on.
var migrations = []string{
	`CREATE TABLE server_threads (
		id TEXT COLLATE "C" PRIMARY KEY,
		updated BIGINT NOT NULL,
		data TEXT NOT NULL
	);
	CREATE INDEX server_threads_updated ON server_threads (updated DESC, id);
	CREATE SEQUENCE server_run_seq;
	CREATE TABLE server_runs (
		id TEXT COLLATE "C" PRIMARY KEY,
		thread_id TEXT COLLATE "C" NOT NULL,
		seq BIGINT NOT NULL,
		status TEXT NOT NULL,
		data TEXT NOT NULL
	);
	CREATE INDEX server_runs_thread ON server_runs (thread_id, seq);
	CREATE INDEX server_runs_unfinished ON server_runs (seq) WHERE status IN ('pending', 'running');
	CREATE TABLE server_run_events (
		run_id TEXT COLLATE "C" NOT NULL,
		id INTEGER NOT NULL,
		event TEXT NOT NULL,
		data TEXT NOT NULL,
		PRIMARY KEY (run_id, id)
	);
	CREATE TABLE server_assistants (
		id TEXT COLLATE "C" PRIMARY KEY,
		updated BIGINT NOT NULL,
		data TEXT NOT NULL
	);
	CREATE TABLE server_assistant_versions (
		id TEXT COLLATE "C" NOT NULL,
		version INTEGER NOT NULL,
		data TEXT NOT NULL,
		PRIMARY KEY (id, version)
	);`,
	// Version 2: the run queue. A claimed run is running, with the
	// claiming worker, a fencing token of the claim and the worker's last
	// heartbeat; at most one run of a thread is running, by the database.
	`ALTER TABLE server_runs ADD COLUMN worker TEXT, ADD COLUMN token TEXT,
		ADD COLUMN heartbeat TIMESTAMPTZ, ADD COLUMN cancel TEXT NOT NULL DEFAULT '';
	CREATE UNIQUE INDEX server_runs_one_running ON server_runs (thread_id) WHERE status = 'running';
	CREATE INDEX server_runs_pending ON server_runs (seq) WHERE status = 'pending';`,
}

// SchemaVersion is the layout version of the server tables this package
// writes.
var SchemaVersion = len(migrations)

// Store is the [server.Store] on PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
}

var _ server.Store = (*Store)(nil)

// New uses pool (whose connections' search_path selects the schema, as
// [postgres.Open] sets it) and applies the migrations the schema lacks.
// Close does not close the pool: its owner does.
func New(ctx context.Context, pool *pgxpool.Pool) (*Store, error) {
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		return nil, fmt.Errorf("open server tables: %w", err)
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	var schema string
	if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('lgrun.server.' || $1, 0))`, schema); err != nil {
		return fmt.Errorf("lock schema %s for migration: %w", schema, err)
	}
	var have bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('lgrun_server_migrations') IS NOT NULL`).Scan(&have); err != nil {
		return err
	}
	if !have {
		if _, err := tx.Exec(ctx, `CREATE TABLE lgrun_server_migrations (version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create lgrun_server_migrations in schema %s: %w", schema, err)
		}
	}
	var v int
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM lgrun_server_migrations`).Scan(&v); err != nil {
		return err
	}
	if v > SchemaVersion {
		return fmt.Errorf("schema %s has server tables of a newer lgrun (layout version %d; this lgrun reads version %d): upgrade lgrun, or use another schema", schema, v, SchemaVersion)
	}
	if v == SchemaVersion {
		return nil
	}
	for ; v < SchemaVersion; v++ {
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrate server tables of schema %s from version %d to %d: %w", schema, v, v+1, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO lgrun_server_migrations (version) VALUES ($1)`, v+1); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// Close is a no-op: the pool belongs to whoever passed it to [New].
func (s *Store) Close() error { return nil }

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// list decodes the data column of q's rows into new T values.
func list[T any](ctx context.Context, s *Store, what, q string, args ...any) ([]*T, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", what, err)
	}
	defer rows.Close()
	return server.DecodeRows[T](rows, what)
}

// one decodes the data column of q's single row into v.
func one(ctx context.Context, s *Store, what, id, q string, v any) error {
	var data string
	err := s.pool.QueryRow(ctx, q, id).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s %q: %w", what, id, server.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("load %s %q: %w", what, id, err)
	}
	if err := json.Unmarshal([]byte(data), v); err != nil {
		return fmt.Errorf("decode %s %q: %w", what, id, err)
	}
	return nil
}

func (s *Store) PutThread(ctx context.Context, t *server.Thread) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	if c := claimOf(ctx); c != nil {
		return s.fenced(ctx, c, "save thread "+t.ID, `WITH `+fenceCTE(4)+`,
w AS (INSERT INTO server_threads (id, updated, data) SELECT $1, $2::bigint, $3 FROM fence
	ON CONFLICT (id) DO UPDATE SET updated = excluded.updated, data = excluded.data)
SELECT count(*) FROM fence`, t.ID, t.Updated.UnixNano(), string(b), c.run, c.token)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO server_threads (id, updated, data) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET updated = excluded.updated, data = excluded.data`, t.ID, t.Updated.UnixNano(), string(b))
	if err != nil {
		return fmt.Errorf("save thread %q: %w", t.ID, err)
	}
	return nil
}

func (s *Store) Thread(ctx context.Context, id string) (*server.Thread, error) {
	t := &server.Thread{}
	if err := one(ctx, s, "thread", id, `SELECT data FROM server_threads WHERE id = $1`, t); err != nil {
		return nil, err
	}
	return t, nil
}

func (s *Store) Threads(ctx context.Context) ([]*server.Thread, error) {
	return list[server.Thread](ctx, s, "threads", `SELECT data FROM server_threads ORDER BY updated DESC, id`)
}

func (s *Store) DeleteThread(ctx context.Context, id string) error {
	if c := claimOf(ctx); c != nil {
		return s.fenced(ctx, c, "delete thread "+id, `WITH `+fenceCTE(2)+`,
r AS (DELETE FROM server_runs WHERE thread_id = $1 AND EXISTS (SELECT 1 FROM fence) RETURNING id),
e AS (DELETE FROM server_run_events WHERE run_id IN (SELECT id FROM r)),
t AS (DELETE FROM server_threads WHERE id = $1 AND EXISTS (SELECT 1 FROM fence))
SELECT count(*) FROM fence`, id, c.run, c.token)
	}
	_, err := s.pool.Exec(ctx, `WITH r AS (DELETE FROM server_runs WHERE thread_id = $1 RETURNING id),
e AS (DELETE FROM server_run_events WHERE run_id IN (SELECT id FROM r))
DELETE FROM server_threads WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete thread %q: %w", id, err)
	}
	return nil
}

func (s *Store) PutRun(ctx context.Context, r *server.Run) error {
	if r.Seq == 0 {
		if err := s.pool.QueryRow(ctx, `SELECT nextval('server_run_seq')`).Scan(&r.Seq); err != nil {
			return fmt.Errorf("save run %q: %w", r.ID, err)
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if c := claimOf(ctx); c != nil && c.run == r.ID {
		// The claimed row itself: the update takes its lock and rechecks
		// the token.
		tag, err := s.pool.Exec(ctx, `UPDATE server_runs SET status = $2, data = $3 WHERE id = $1 AND token = $4`, r.ID, r.Status, string(b), c.token)
		if err != nil {
			return fmt.Errorf("save run %q: %w", r.ID, err)
		}
		if tag.RowsAffected() != 1 {
			return &runtime.FencedError{Claim: "run " + c.run}
		}
		return nil
	} else if c != nil {
		return s.fenced(ctx, c, "save run "+r.ID, `WITH `+fenceCTE(6)+`,
w AS (INSERT INTO server_runs (id, thread_id, seq, status, data) SELECT $1, $2, $3::bigint, $4, $5 FROM fence
	ON CONFLICT (id) DO UPDATE SET status = excluded.status, data = excluded.data)
SELECT count(*) FROM fence`, r.ID, r.ThreadID, r.Seq, r.Status, string(b), c.run, c.token)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO server_runs (id, thread_id, seq, status, data) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE SET status = excluded.status, data = excluded.data`, r.ID, r.ThreadID, r.Seq, r.Status, string(b))
	if err != nil {
		return fmt.Errorf("save run %q: %w", r.ID, err)
	}
	return nil
}

func (s *Store) Run(ctx context.Context, id string) (*server.Run, error) {
	r := &server.Run{}
	if err := one(ctx, s, "run", id, `SELECT data FROM server_runs WHERE id = $1`, r); err != nil {
		return nil, err
	}
	return r, nil
}

func (s *Store) Runs(ctx context.Context, thread string) ([]*server.Run, error) {
	return list[server.Run](ctx, s, "runs", `SELECT data FROM server_runs WHERE thread_id = $1 ORDER BY seq DESC`, thread)
}

func (s *Store) Unfinished(ctx context.Context) ([]*server.Run, error) {
	return list[server.Run](ctx, s, "runs", `SELECT data FROM server_runs WHERE status IN ('pending', 'running') ORDER BY seq`)
}

func (s *Store) DeleteRun(ctx context.Context, id string) error {
	if c := claimOf(ctx); c != nil {
		return s.fenced(ctx, c, "delete run "+id, `WITH `+fenceCTE(2)+`,
e AS (DELETE FROM server_run_events WHERE run_id = $1 AND EXISTS (SELECT 1 FROM fence)),
r AS (DELETE FROM server_runs WHERE id = $1 AND EXISTS (SELECT 1 FROM fence))
SELECT count(*) FROM fence`, id, c.run, c.token)
	}
	_, err := s.pool.Exec(ctx, `WITH e AS (DELETE FROM server_run_events WHERE run_id = $1)
DELETE FROM server_runs WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete run %q: %w", id, err)
	}
	return nil
}

func (s *Store) AppendEvent(ctx context.Context, run string, e server.StoredEvent) error {
	if c := claimOf(ctx); c != nil {
		return s.fenced(ctx, c, "save event of run "+run, `WITH `+fenceCTE(5)+`,
w AS (INSERT INTO server_run_events (run_id, id, event, data) SELECT $1, $2::integer, $3, $4 FROM fence
	ON CONFLICT (run_id, id) DO UPDATE SET event = excluded.event, data = excluded.data)
SELECT count(*) FROM fence`, run, e.ID, e.Event, string(e.Data), c.run, c.token)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO server_run_events (run_id, id, event, data) VALUES ($1, $2, $3, $4)
ON CONFLICT (run_id, id) DO UPDATE SET event = excluded.event, data = excluded.data`, run, e.ID, e.Event, string(e.Data))
	if err != nil {
		return fmt.Errorf("save event of run %q: %w", run, err)
	}
	return nil
}

func (s *Store) Events(ctx context.Context, run string, after int) ([]server.StoredEvent, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, event, data FROM server_run_events WHERE run_id = $1 AND id > $2 ORDER BY id`, run, after)
	if err != nil {
		return nil, fmt.Errorf("load events of run %q: %w", run, err)
	}
	defer rows.Close()
	var out []server.StoredEvent
	for rows.Next() {
		var e server.StoredEvent
		var data string
		if err := rows.Scan(&e.ID, &e.Event, &data); err != nil {
			return nil, fmt.Errorf("load events of run %q: %w", run, err)
		}
		e.Data = json.RawMessage(data)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load events of run %q: %w", run, err)
	}
	return out, nil
}

func (s *Store) PutAssistant(ctx context.Context, a *server.Assistant) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `WITH v AS (INSERT INTO server_assistant_versions (id, version, data) VALUES ($1, $4, $3)
  ON CONFLICT (id, version) DO UPDATE SET data = excluded.data)
INSERT INTO server_assistants (id, updated, data) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET updated = excluded.updated, data = excluded.data`, a.ID, a.Updated.UnixNano(), string(b), a.Version)
	if err != nil {
		return fmt.Errorf("save assistant %q: %w", a.ID, err)
	}
	return nil
}

func (s *Store) AssistantVersions(ctx context.Context, id string) ([]*server.Assistant, error) {
	return list[server.Assistant](ctx, s, "assistant versions", `SELECT data FROM server_assistant_versions WHERE id = $1 ORDER BY version DESC`, id)
}

func (s *Store) Assistant(ctx context.Context, id string) (*server.Assistant, error) {
	a := &server.Assistant{}
	if err := one(ctx, s, "assistant", id, `SELECT data FROM server_assistants WHERE id = $1`, a); err != nil {
		return nil, err
	}
	return a, nil
}

func (s *Store) Assistants(ctx context.Context) ([]*server.Assistant, error) {
	return list[server.Assistant](ctx, s, "assistants", `SELECT data FROM server_assistants ORDER BY updated DESC, id`)
}

func (s *Store) DeleteAssistant(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `WITH v AS (DELETE FROM server_assistant_versions WHERE id = $1)
DELETE FROM server_assistants WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete assistant %q: %w", id, err)
	}
	return nil
}
