package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" database/sql driver
)

// ErrNotFound is returned by a [Store] for a thread or run that does not
// exist.
var ErrNotFound = errors.New("not found")

// Thread is the server's row of an API thread. Its values, next nodes and
// interrupts live in the checkpoint saver under the same id; a thread
// exists here from its creation, before it has any checkpoint.
type Thread struct {
	ID       string         `json:"thread_id"`
	Created  time.Time      `json:"created_at"`
	Updated  time.Time      `json:"updated_at"`
	Metadata map[string]any `json:"metadata"`
	// Status is idle, busy, interrupted or error.
	Status string `json:"status"`
	// GraphID is the graph the thread's checkpoints belong to; "" until
	// its first run or state update.
	GraphID string `json:"graph_id,omitempty"`
	// Error is the last run's failure when Status is error.
	Error string `json:"error,omitempty"`
}

// Run is the server's row of a run.
type Run struct {
	ID          string         `json:"run_id"`
	ThreadID    string         `json:"thread_id"`
	AssistantID string         `json:"assistant_id"`
	GraphID     string         `json:"graph_id"`
	Created     time.Time      `json:"created_at"`
	Updated     time.Time      `json:"updated_at"`
	Status      string         `json:"status"`
	Metadata    map[string]any `json:"metadata"`
	// Request is the run-create body as received.
	Request  *RunRequest `json:"kwargs"`
	Strategy string      `json:"multitask_strategy"`
	// Seq orders runs by creation, across restarts.
	Seq int64 `json:"seq"`
	// Attempt counts starts: a run requeued after a crash starts again.
	Attempt int `json:"attempt"`
	// Started is set once the run began executing and StartHead is the
	// thread's head checkpoint then, so a run requeued after a crash
	// knows whether it already committed a step (then it resumes instead
	// of starting over).
	Started   bool   `json:"started,omitempty"`
	StartHead string `json:"start_head,omitempty"`
	// Temporary marks the thread of a thread-less run, deleted at the end
	// unless on_completion is keep.
	Temporary bool   `json:"temporary,omitempty"`
	Error     string `json:"error,omitempty"`
	// Trace and Baggage are the W3C traceparent and baggage of the
	// request that created the run, and Background whether the client
	// went away (not /wait or /stream): the run's span is a child of
	// the request's span, or for a background run links to it.
	Trace      string `json:"trace,omitempty"`
	Baggage    string `json:"baggage,omitempty"`
	Background bool   `json:"background,omitempty"`
}

// StoredEvent is one SSE event of a run, kept so a resumable stream can be
// replayed after a reconnect.
type StoredEvent struct {
	ID    int             `json:"id"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// Store keeps the server's threads, runs and resumable stream events. The
// checkpoints themselves are in a runtime.Saver. Implementations must be
// safe for concurrent use.
type Store interface {
	// PutThread inserts or replaces a thread.
	PutThread(ctx context.Context, t *Thread) error
	// Thread returns a thread, or an error wrapping ErrNotFound.
	Thread(ctx context.Context, id string) (*Thread, error)
	// Threads returns all threads, most recently updated first.
	Threads(ctx context.Context) ([]*Thread, error)
	// DeleteThread removes a thread with its runs and their events.
	DeleteThread(ctx context.Context, id string) error
	// PutRun inserts or replaces a run. A new run (Seq 0) gets the next
	// sequence number, written back to r.
	PutRun(ctx context.Context, r *Run) error
	// Run returns a run, or an error wrapping ErrNotFound.
	Run(ctx context.Context, id string) (*Run, error)
	// Runs returns a thread's runs, newest first.
	Runs(ctx context.Context, thread string) ([]*Run, error)
	// Unfinished returns the runs still pending or running, oldest first.
	Unfinished(ctx context.Context) ([]*Run, error)
	// DeleteRun removes a run and its events.
	DeleteRun(ctx context.Context, id string) error
	// AppendEvent stores one event of a run.
	AppendEvent(ctx context.Context, run string, e StoredEvent) error
	// Events returns a run's stored events with an id above after, in order.
	Events(ctx context.Context, run string, after int) ([]StoredEvent, error)
	// PutAssistant makes a the assistant's current version and keeps it
	// as version a.Version (replacing a version of that number).
	PutAssistant(ctx context.Context, a *Assistant) error
	// AssistantVersions returns every kept version of an assistant,
	// newest first.
	AssistantVersions(ctx context.Context, id string) ([]*Assistant, error)
	// Assistant returns an assistant, or an error wrapping ErrNotFound.
	Assistant(ctx context.Context, id string) (*Assistant, error)
	// Assistants returns all assistants, most recently updated first.
	Assistants(ctx context.Context) ([]*Assistant, error)
	// DeleteAssistant removes an assistant with its versions.
	DeleteAssistant(ctx context.Context, id string) error
	Close() error
}

// SQLiteStore is the [Store] in a SQLite file.
type SQLiteStore struct {
	db *sql.DB
}

var _ Store = (*SQLiteStore)(nil)

// OpenSQLite opens (creating it if needed) the store at path.
func OpenSQLite(path string) (*SQLiteStore, error) {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "NORMAL")
	q.Set("_busy_timeout", "5000")
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open server database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer; SQLite serialises writes anyway
	_, err = db.Exec(`
CREATE TABLE IF NOT EXISTS threads (id TEXT PRIMARY KEY, updated INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, seq INTEGER NOT NULL,
  status TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_thread ON runs (thread_id, seq);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, seq);
CREATE TABLE IF NOT EXISTS assistants (id TEXT PRIMARY KEY, updated INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assistant_versions (id TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (id, version));
CREATE TABLE IF NOT EXISTS run_events (run_id TEXT NOT NULL, id INTEGER NOT NULL, event TEXT NOT NULL,
  data TEXT NOT NULL, PRIMARY KEY (run_id, id));`)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open server database %s: %w", path, err)
	}
	return &SQLiteStore{db: db}, nil
}

// Close closes the database.
func (s *SQLiteStore) Close() error { return s.db.Close() }

func (s *SQLiteStore) PutThread(ctx context.Context, t *Thread) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO threads (id, updated, data) VALUES (?, ?, ?)
ON CONFLICT (id) DO UPDATE SET updated = excluded.updated, data = excluded.data`, t.ID, t.Updated.UnixNano(), string(b))
	if err != nil {
		return fmt.Errorf("save thread %q: %w", t.ID, err)
	}
	return nil
}

func (s *SQLiteStore) Thread(ctx context.Context, id string) (*Thread, error) {
	return loadOne[Thread](ctx, s.db, "thread", id, `SELECT data FROM threads WHERE id = ?`)
}

func (s *SQLiteStore) Threads(ctx context.Context) ([]*Thread, error) {
	return loadList[Thread](ctx, s.db, "threads", `SELECT data FROM threads ORDER BY updated DESC, id`)
}

func (s *SQLiteStore) DeleteThread(ctx context.Context, id string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{
		`DELETE FROM run_events WHERE run_id IN (SELECT id FROM runs WHERE thread_id = ?)`,
		`DELETE FROM runs WHERE thread_id = ?`,
		`DELETE FROM threads WHERE id = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, id); err != nil {
			return fmt.Errorf("delete thread %q: %w", id, err)
		}
	}
	return tx.Commit()
}

func (s *SQLiteStore) PutRun(ctx context.Context, r *Run) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if r.Seq == 0 {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) + 1 FROM runs`).Scan(&r.Seq); err != nil {
			return fmt.Errorf("save run %q: %w", r.ID, err)
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO runs (id, thread_id, seq, status, data) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET status = excluded.status, data = excluded.data`, r.ID, r.ThreadID, r.Seq, r.Status, string(b))
	if err != nil {
		return fmt.Errorf("save run %q: %w", r.ID, err)
	}
	return tx.Commit()
}

func (s *SQLiteStore) Run(ctx context.Context, id string) (*Run, error) {
	return loadOne[Run](ctx, s.db, "run", id, `SELECT data FROM runs WHERE id = ?`)
}

func (s *SQLiteStore) Runs(ctx context.Context, thread string) ([]*Run, error) {
	return loadList[Run](ctx, s.db, "runs", `SELECT data FROM runs WHERE thread_id = ? ORDER BY seq DESC`, thread)
}

func (s *SQLiteStore) Unfinished(ctx context.Context) ([]*Run, error) {
	return loadList[Run](ctx, s.db, "runs", `SELECT data FROM runs WHERE status IN ('pending', 'running') ORDER BY seq`)
}

func (s *SQLiteStore) DeleteRun(ctx context.Context, id string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM run_events WHERE run_id = ?`, id); err != nil {
		return fmt.Errorf("delete run %q: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM runs WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete run %q: %w", id, err)
	}
	return tx.Commit()
}

func (s *SQLiteStore) AppendEvent(ctx context.Context, run string, e StoredEvent) error {
	_, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO run_events (run_id, id, event, data) VALUES (?, ?, ?, ?)`, run, e.ID, e.Event, string(e.Data))
	if err != nil {
		return fmt.Errorf("save event of run %q: %w", run, err)
	}
	return nil
}

func (s *SQLiteStore) Events(ctx context.Context, run string, after int) ([]StoredEvent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, event, data FROM run_events WHERE run_id = ? AND id > ? ORDER BY id`, run, after)
	if err != nil {
		return nil, fmt.Errorf("load events of run %q: %w", run, err)
	}
	defer rows.Close()
	var out []StoredEvent
	for rows.Next() {
		var e StoredEvent
		var data string
		if err := rows.Scan(&e.ID, &e.Event, &data); err != nil {
			return nil, err
		}
		e.Data = json.RawMessage(data)
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *SQLiteStore) PutAssistant(ctx context.Context, a *Assistant) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO assistants (id, updated, data) VALUES (?, ?, ?)
ON CONFLICT (id) DO UPDATE SET updated = excluded.updated, data = excluded.data`, a.ID, a.Updated.UnixNano(), string(b))
	if err == nil {
		_, err = tx.ExecContext(ctx, `INSERT OR REPLACE INTO assistant_versions (id, version, data) VALUES (?, ?, ?)`, a.ID, a.Version, string(b))
	}
	if err != nil {
		return fmt.Errorf("save assistant %q: %w", a.ID, err)
	}
	return tx.Commit()
}

func (s *SQLiteStore) AssistantVersions(ctx context.Context, id string) ([]*Assistant, error) {
	return loadList[Assistant](ctx, s.db, "versions of assistant "+strconv.Quote(id), `SELECT data FROM assistant_versions WHERE id = ? ORDER BY version DESC`, id)
}

func (s *SQLiteStore) Assistant(ctx context.Context, id string) (*Assistant, error) {
	return loadOne[Assistant](ctx, s.db, "assistant", id, `SELECT data FROM assistants WHERE id = ?`)
}

func (s *SQLiteStore) Assistants(ctx context.Context) ([]*Assistant, error) {
	return loadList[Assistant](ctx, s.db, "assistants", `SELECT data FROM assistants ORDER BY updated DESC, id`)
}

func (s *SQLiteStore) DeleteAssistant(ctx context.Context, id string) error {
	for _, q := range []string{`DELETE FROM assistant_versions WHERE id = ?`, `DELETE FROM assistants WHERE id = ?`} {
		if _, err := s.db.ExecContext(ctx, q, id); err != nil {
			return fmt.Errorf("delete assistant %q: %w", id, err)
		}
	}
	return nil
}

// loadOne decodes the data column of q's single row (q takes id).
func loadOne[T any](ctx context.Context, db *sql.DB, what, id, q string) (*T, error) {
	var data string
	err := db.QueryRowContext(ctx, q, id).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%s %q: %w", what, id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load %s %q: %w", what, id, err)
	}
	v := new(T)
	if err := json.Unmarshal([]byte(data), v); err != nil {
		return nil, fmt.Errorf("decode %s %q: %w", what, id, err)
	}
	return v, nil
}

// loadList decodes the data column of every row of q.
func loadList[T any](ctx context.Context, db *sql.DB, what, q string, args ...any) ([]*T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", what, err)
	}
	defer rows.Close()
	return DecodeRows[T](rows, what)
}

// Rows are the rows of a query, as database/sql and pgx both give them.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// DecodeRows decodes the JSON of each row's one column (a Store's data
// column) into a new T; what names the rows in errors. The caller closes
// rows.
func DecodeRows[T any](rows Rows, what string) ([]*T, error) {
	var out []*T
	for rows.Next() {
		var data string
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("list %s: %w", what, err)
		}
		v := new(T)
		if err := json.Unmarshal([]byte(data), v); err != nil {
			return nil, fmt.Errorf("decode %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", what, err)
	}
	return out, nil
}
