package checkpoint

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// SchemaVersion is the version of the database layout this package writes.
const SchemaVersion = 1

// MinSnapshotBytes is the least delta volume between two full snapshots.
// A checkpoint stores a snapshot of the whole state when the deltas since
// the last snapshot reach max(2 × that snapshot's size, MinSnapshotBytes):
// snapshot sizes then grow geometrically, so all snapshots of a thread sum
// to a small multiple of its final state, and loading any checkpoint reads
// one snapshot plus deltas no larger than about twice the state.
const MinSnapshotBytes = 32 << 10

// Durability selects what a committed step survives.
type Durability string

const (
	// DurabilityProcess (the default) survives a killed or crashed process:
	// SQLite's WAL with synchronous=NORMAL. A power loss or OS crash can lose
	// the last few committed steps (never corrupt the database).
	DurabilityProcess Durability = "process"
	// DurabilityPower adds an fsync of the WAL on every step commit
	// (synchronous=FULL), so committed steps survive power loss too, at the
	// cost of one fsync per superstep (typically 0.1–10 ms depending on disk).
	DurabilityPower Durability = "power"
)

// Options configure an SQLite saver.
type Options struct {
	Durability Durability
	// BusyTimeout is how long a write waits for another process's lock
	// before failing; 5s when zero.
	BusyTimeout time.Duration
}

// SQLite is the durable saver: one database file, WAL mode, one
// transaction per committed superstep. Append and messages fields are
// stored as deltas; see [MinSnapshotBytes] for snapshots.
type SQLite struct {
	db   *sql.DB
	path string

	stmtHead, stmtInsert, stmtUpsert, stmtParent, stmtWrite, stmtGraph, stmtGraphGet *sql.Stmt

	mu     sync.Mutex
	chains map[string]chainInfo // thread → last committed checkpoint's chain state
	graphs map[string]int64     // name\x00hash\x00version → graph row id
}

type chainInfo struct {
	id         string
	chainBytes int
	baseBytes  int
}

var _ runtime.Saver = (*SQLite)(nil)

const ddl = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS graphs (
	id INTEGER PRIMARY KEY,
	name TEXT NOT NULL, hash TEXT NOT NULL, version TEXT NOT NULL,
	UNIQUE (name, hash, version)
);
CREATE TABLE IF NOT EXISTS threads (
	id TEXT PRIMARY KEY,
	head TEXT NOT NULL,
	status TEXT NOT NULL,
	error TEXT NOT NULL DEFAULT '',
	graph TEXT NOT NULL DEFAULT '',
	graph_hash TEXT NOT NULL DEFAULT '',
	graph_file TEXT NOT NULL DEFAULT '',
	config TEXT NOT NULL DEFAULT '{}',
	created INTEGER NOT NULL,
	updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
	seq INTEGER PRIMARY KEY,
	thread TEXT NOT NULL,
	id TEXT NOT NULL,
	parent TEXT NOT NULL,
	step INTEGER NOT NULL,
	turn_step INTEGER NOT NULL,
	next TEXT NOT NULL,
	waiting TEXT,
	source TEXT NOT NULL,
	writes TEXT,
	graph INTEGER NOT NULL REFERENCES graphs (id),
	time INTEGER NOT NULL,
	usage TEXT,
	totals TEXT,
	records TEXT,
	delta BLOB NOT NULL,
	snapshot BLOB,
	chain_bytes INTEGER NOT NULL,
	base_bytes INTEGER NOT NULL,
	UNIQUE (thread, id)
);
CREATE TABLE IF NOT EXISTS writes (
	thread TEXT NOT NULL,
	checkpoint TEXT NOT NULL,
	seq INTEGER NOT NULL,
	node TEXT NOT NULL,
	kind TEXT NOT NULL,
	data BLOB NOT NULL,
	PRIMARY KEY (thread, checkpoint, seq)
) WITHOUT ROWID;
`

// OpenSQLite opens (creating if needed) the checkpoint database at path.
func OpenSQLite(path string, opts *Options) (*SQLite, error) {
	if opts == nil {
		opts = &Options{}
	}
	sync := "NORMAL"
	switch opts.Durability {
	case "", DurabilityProcess:
	case DurabilityPower:
		sync = "FULL"
	default:
		return nil, fmt.Errorf("unknown durability %q (want process or power)", opts.Durability)
	}
	busy := opts.BusyTimeout
	if busy == 0 {
		busy = 5 * time.Second
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", sync)
	q.Set("_busy_timeout", fmt.Sprint(busy.Milliseconds()))
	q.Set("_txlock", "immediate")
	q.Set("_foreign_keys", "on")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint database %s: %w", path, err)
	}
	s := &SQLite{db: db, path: path, chains: map[string]chainInfo{}, graphs: map[string]int64{}}
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open checkpoint database %s: %w", path, describeSQLiteErr(err))
	}
	return s, nil
}

func (s *SQLite) init() error {
	ctx := context.Background()
	var version string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&version)
	switch {
	case err == nil:
		if version != fmt.Sprint(SchemaVersion) {
			return fmt.Errorf("database layout version %s is not supported by this lgrun (it reads version %d)", version, SchemaVersion)
		}
	case errors.Is(err, sql.ErrNoRows) || strings.Contains(err.Error(), "no such table"):
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, ddl); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)`, fmt.Sprint(SchemaVersion)); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	default:
		return err
	}
	prep := func(dst **sql.Stmt, q string) error {
		st, err := s.db.PrepareContext(ctx, q)
		*dst = st
		return err
	}
	return errors.Join(
		prep(&s.stmtHead, `SELECT head FROM threads WHERE id = ?`),
		prep(&s.stmtInsert, `INSERT INTO checkpoints (thread, id, parent, step, turn_step, next, waiting, source, writes, graph, time, usage, totals, records, delta, snapshot, chain_bytes, base_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		prep(&s.stmtUpsert, `INSERT INTO threads (id, head, status, error, graph, graph_hash, graph_file, config, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET head = excluded.head, status = excluded.status, error = excluded.error, graph = excluded.graph, graph_hash = excluded.graph_hash, graph_file = excluded.graph_file, config = excluded.config, updated = excluded.updated`),
		prep(&s.stmtParent, `SELECT chain_bytes, base_bytes FROM checkpoints WHERE thread = ? AND id = ?`),
		prep(&s.stmtWrite, `INSERT INTO writes (thread, checkpoint, seq, node, kind, data) VALUES (?, ?, ?, ?, ?, ?)`),
		prep(&s.stmtGraph, `INSERT INTO graphs (name, hash, version) VALUES (?, ?, ?) ON CONFLICT (name, hash, version) DO UPDATE SET name = excluded.name RETURNING id`),
		prep(&s.stmtGraphGet, `SELECT name, hash, version FROM graphs WHERE id = ?`),
	)
}

// Path returns the database file's path.
func (s *SQLite) Path() string { return s.path }

// Close closes the database.
func (s *SQLite) Close() error { return s.db.Close() }

// DB exposes the database for tests and maintenance commands.
func (s *SQLite) DB() *sql.DB { return s.db }

func describeSQLiteErr(err error) error {
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrNotADB:
			return fmt.Errorf("not an lgrun checkpoint database (file is not SQLite or is corrupt): %w", err)
		case sqlite3.ErrCorrupt:
			return fmt.Errorf("database file is corrupt: %w", err)
		case sqlite3.ErrBusy, sqlite3.ErrLocked:
			return fmt.Errorf("database is locked by another process (busy timeout expired): %w", err)
		case sqlite3.ErrReadonly, sqlite3.ErrPerm, sqlite3.ErrCantOpen:
			return fmt.Errorf("cannot write the database file (check its directory and permissions): %w", err)
		case sqlite3.ErrFull:
			return fmt.Errorf("disk full: %w", err)
		}
	}
	return err
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// nullJSON marshals v, or returns nil for empty values.
func nullJSON(v any, empty bool) (any, error) {
	if empty {
		return nil, nil
	}
	b, err := marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

func (s *SQLite) graphID(ctx context.Context, tx *sql.Tx, m runtime.Metadata) (int64, error) {
	key := m.Graph + "\x00" + m.GraphHash + "\x00" + m.Version
	s.mu.Lock()
	id, ok := s.graphs[key]
	s.mu.Unlock()
	if ok {
		return id, nil
	}
	if err := tx.StmtContext(ctx, s.stmtGraph).QueryRowContext(ctx, m.Graph, m.GraphHash, m.Version).Scan(&id); err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.graphs[key] = id
	s.mu.Unlock()
	return id, nil
}

// Commit implements runtime.Saver: one immediate transaction that checks
// the head, inserts the checkpoint, moves the head and stores writes.
func (s *SQLite) Commit(ctx context.Context, c *runtime.Commit) error {
	cp := c.Checkpoint
	delta, err := marshal(cp.Delta)
	if err != nil {
		return fmt.Errorf("encode delta: %w", err)
	}
	next, err := marshal(cp.Next)
	if err != nil {
		return err
	}
	m := cp.Metadata
	waiting, err1 := nullJSON(cp.Waiting, len(cp.Waiting) == 0)
	writes, err2 := nullJSON(m.Writes, len(m.Writes) == 0)
	usage, err3 := nullJSON(m.Usage, len(m.Usage) == 0)
	totals, err4 := nullJSON(m.Totals, m.Totals == runtime.Totals{})
	records, err5 := nullJSON(m.Records, len(m.Records) == 0)
	config, err6 := marshal(c.Thread.Config)
	if err := errors.Join(err1, err2, err3, err4, err5, err6); err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", describeSQLiteErr(err))
	}
	defer tx.Rollback()
	var head string
	err = tx.StmtContext(ctx, s.stmtHead).QueryRowContext(ctx, c.Thread.ID).Scan(&head)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read thread head: %w", describeSQLiteErr(err))
	}
	if head != c.ExpectHead {
		return fmt.Errorf("commit to thread %q: %w (head is %s, expected %s)", c.Thread.ID, runtime.ErrConflict, orNone(head), orNone(c.ExpectHead))
	}

	// Snapshot policy.
	chain, baseBytes := 0, 0
	if cp.ParentID != "" {
		s.mu.Lock()
		ci, ok := s.chains[c.Thread.ID]
		s.mu.Unlock()
		if ok && ci.id == cp.ParentID {
			chain, baseBytes = ci.chainBytes, ci.baseBytes
		} else if err := tx.StmtContext(ctx, s.stmtParent).QueryRowContext(ctx, c.Thread.ID, cp.ParentID).Scan(&chain, &baseBytes); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("commit to thread %q: parent checkpoint %s: %w", c.Thread.ID, cp.ParentID, runtime.ErrNotFound)
			}
			return fmt.Errorf("read parent checkpoint: %w", describeSQLiteErr(err))
		}
	}
	chain += len(delta)
	var snapshot any
	if cp.ParentID == "" || chain >= max(2*baseBytes, MinSnapshotBytes) {
		snap, err := marshal(cp.Values)
		if err != nil {
			return fmt.Errorf("encode snapshot: %w", err)
		}
		snapshot = snap
		chain, baseBytes = 0, len(snap)
	}
	gid, err := s.graphID(ctx, tx, m)
	if err != nil {
		return fmt.Errorf("record graph: %w", describeSQLiteErr(err))
	}
	if _, err := tx.StmtContext(ctx, s.stmtInsert).ExecContext(ctx,
		c.Thread.ID, cp.ID, cp.ParentID, cp.Step, cp.TurnStep, string(next), waiting,
		string(m.Source), writes, gid, m.Time.UnixNano(), usage, totals, records,
		delta, snapshot, chain, baseBytes); err != nil {
		return fmt.Errorf("insert checkpoint: %w", describeSQLiteErr(err))
	}
	th := c.Thread
	created := th.Created
	if created.IsZero() {
		created = th.Updated
	}
	if _, err := tx.StmtContext(ctx, s.stmtUpsert).ExecContext(ctx,
		th.ID, cp.ID, string(th.Status), th.Error, th.Graph, th.GraphHash, th.GraphFile, string(config),
		created.UnixNano(), th.Updated.UnixNano()); err != nil {
		return fmt.Errorf("update thread: %w", describeSQLiteErr(err))
	}
	if err := s.insertWrites(ctx, tx, th.ID, cp.ID, 0, c.Writes); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", describeSQLiteErr(err))
	}
	s.mu.Lock()
	s.chains[c.Thread.ID] = chainInfo{id: cp.ID, chainBytes: chain, baseBytes: baseBytes}
	s.mu.Unlock()
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (s *SQLite) insertWrites(ctx context.Context, tx *sql.Tx, thread, cpID string, seq int, ws []runtime.PendingWrite) error {
	if len(ws) == 0 {
		return nil
	}
	st := tx.StmtContext(ctx, s.stmtWrite)
	for i, w := range ws {
		data, err := marshal(w)
		if err != nil {
			return fmt.Errorf("encode pending write of %q: %w", w.Node, err)
		}
		if _, err := st.ExecContext(ctx, thread, cpID, seq+i, w.Node, string(w.Kind), data); err != nil {
			return fmt.Errorf("insert pending write: %w", describeSQLiteErr(err))
		}
	}
	return nil
}

// Mark implements runtime.Saver.
func (s *SQLite) Mark(ctx context.Context, mk *runtime.Mark) error {
	th := mk.Thread
	config, err := marshal(th.Config)
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", describeSQLiteErr(err))
	}
	defer tx.Rollback()
	var head string
	if err := tx.StmtContext(ctx, s.stmtHead).QueryRowContext(ctx, th.ID).Scan(&head); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("mark thread %q: %w", th.ID, runtime.ErrNotFound)
		}
		return fmt.Errorf("read thread head: %w", describeSQLiteErr(err))
	}
	if head != th.Head {
		return fmt.Errorf("mark thread %q: %w (head is %s, expected %s)", th.ID, runtime.ErrConflict, head, th.Head)
	}
	seq := 0
	if mk.ClearWrites {
		if _, err := tx.ExecContext(ctx, `DELETE FROM writes WHERE thread = ? AND checkpoint = ?`, th.ID, head); err != nil {
			return fmt.Errorf("clear pending writes: %w", describeSQLiteErr(err))
		}
	} else if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq) + 1, 0) FROM writes WHERE thread = ? AND checkpoint = ?`, th.ID, head).Scan(&seq); err != nil {
		return fmt.Errorf("read pending writes: %w", describeSQLiteErr(err))
	}
	if err := s.insertWrites(ctx, tx, th.ID, head, seq, mk.Writes); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE threads SET status = ?, error = ?, config = ?, updated = ? WHERE id = ?`,
		string(th.Status), th.Error, string(config), th.Updated.UnixNano(), th.ID); err != nil {
		return fmt.Errorf("update thread: %w", describeSQLiteErr(err))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", describeSQLiteErr(err))
	}
	return nil
}

// Get implements runtime.Saver. It reads the checkpoint's chain back to the
// nearest snapshot in one query and applies the deltas forward.
func (s *SQLite) Get(ctx context.Context, thread, id string) (*runtime.Checkpoint, error) {
	if id == "" {
		if err := s.db.QueryRowContext(ctx, `SELECT head FROM threads WHERE id = ?`, thread).Scan(&id); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil, fmt.Errorf("thread %q: %w", thread, runtime.ErrNotFound)
			}
			return nil, fmt.Errorf("read thread: %w", describeSQLiteErr(err))
		}
	}
	rows, err := s.db.QueryContext(ctx, `
		WITH RECURSIVE chain (id, parent, snapshot, depth) AS (
			SELECT id, parent, snapshot IS NOT NULL, 0 FROM checkpoints WHERE thread = ?1 AND id = ?2
			UNION ALL
			SELECT c.id, c.parent, c.snapshot IS NOT NULL, chain.depth + 1
			FROM checkpoints c JOIN chain ON c.thread = ?1 AND c.id = chain.parent
			WHERE NOT chain.snapshot
		)
		SELECT c.delta, c.snapshot FROM chain JOIN checkpoints c ON c.thread = ?1 AND c.id = chain.id
		ORDER BY chain.depth DESC`, thread, id)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint chain: %w", describeSQLiteErr(err))
	}
	defer rows.Close()
	var values map[string]any
	n := 0
	for rows.Next() {
		var delta, snap []byte
		if err := rows.Scan(&delta, &snap); err != nil {
			return nil, fmt.Errorf("read checkpoint chain: %w", describeSQLiteErr(err))
		}
		n++
		if snap != nil {
			if values, err = decodeMap(snap); err != nil {
				return nil, fmt.Errorf("checkpoint %s of thread %q: corrupt snapshot: %w", id, thread, err)
			}
			continue
		}
		if values == nil {
			return nil, fmt.Errorf("checkpoint %s of thread %q: delta chain has no snapshot (database damaged)", id, thread)
		}
		var d runtime.Delta
		if err := decodeJSON(delta, &d); err != nil {
			return nil, fmt.Errorf("checkpoint %s of thread %q: corrupt delta: %w", id, thread, err)
		}
		if err := runtime.ApplyDelta(values, d); err != nil {
			return nil, fmt.Errorf("checkpoint %s of thread %q: %w", id, thread, err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoint chain: %w", describeSQLiteErr(err))
	}
	if n == 0 {
		return nil, fmt.Errorf("checkpoint %q of thread %q: %w", id, thread, runtime.ErrNotFound)
	}
	cps, err := s.query(ctx, `WHERE thread = ? AND id = ?`, thread, id)
	if err != nil {
		return nil, err
	}
	if len(cps) == 0 {
		return nil, fmt.Errorf("checkpoint %q of thread %q: %w", id, thread, runtime.ErrNotFound)
	}
	cp := cps[0]
	cp.Values = values
	if cp.Pending, err = s.pending(ctx, thread, id); err != nil {
		return nil, err
	}
	return cp, nil
}

func (s *SQLite) pending(ctx context.Context, thread, id string) ([]runtime.PendingWrite, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT data FROM writes WHERE thread = ? AND checkpoint = ? ORDER BY seq`, thread, id)
	if err != nil {
		return nil, fmt.Errorf("read pending writes: %w", describeSQLiteErr(err))
	}
	defer rows.Close()
	var out []runtime.PendingWrite
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, err
		}
		var w runtime.PendingWrite
		if err := decodeJSON(data, &w); err != nil {
			return nil, fmt.Errorf("corrupt pending write: %w", err)
		}
		if w.Result != nil {
			for i := range w.Result.Writes {
				w.Result.Writes[i].Value = spec.Normalize(w.Result.Writes[i].Value)
			}
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// List implements runtime.Saver.
func (s *SQLite) List(ctx context.Context, thread string, limit int) ([]*runtime.Checkpoint, error) {
	q := `WHERE thread = ? ORDER BY id DESC`
	args := []any{thread}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	cps, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	if len(cps) == 0 {
		if _, err := s.Thread(ctx, thread); err != nil {
			return nil, err
		}
	}
	return cps, nil
}

func (s *SQLite) query(ctx context.Context, where string, args ...any) ([]*runtime.Checkpoint, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT thread, id, parent, step, turn_step, next, waiting, source, writes, graph, time, usage, totals, records, delta FROM checkpoints `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", describeSQLiteErr(err))
	}
	defer rows.Close()
	var out []*runtime.Checkpoint
	var gids []int64
	graphs := map[int64][3]string{}
	for rows.Next() {
		var cp runtime.Checkpoint
		var next, src string
		var waiting, writes, usage, totals, records sql.NullString
		var gid, t int64
		var delta []byte
		if err := rows.Scan(&cp.Thread, &cp.ID, &cp.ParentID, &cp.Step, &cp.TurnStep, &next, &waiting, &src, &writes, &gid, &t, &usage, &totals, &records, &delta); err != nil {
			return nil, fmt.Errorf("read checkpoints: %w", describeSQLiteErr(err))
		}
		m := &cp.Metadata
		m.Source = runtime.Source(src)
		m.Time = time.Unix(0, t).UTC()
		errs := []error{decodeJSON([]byte(next), &cp.Next), decodeJSON(delta, &cp.Delta)}
		if waiting.Valid {
			errs = append(errs, decodeJSON([]byte(waiting.String), &cp.Waiting))
		}
		if writes.Valid {
			errs = append(errs, decodeJSON([]byte(writes.String), &m.Writes))
		}
		if usage.Valid {
			errs = append(errs, decodeJSON([]byte(usage.String), &m.Usage))
		}
		if totals.Valid {
			errs = append(errs, decodeJSON([]byte(totals.String), &m.Totals))
		}
		if records.Valid {
			errs = append(errs, decodeJSON([]byte(records.String), &m.Records))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("checkpoint %s of thread %q is corrupt: %w", cp.ID, cp.Thread, err)
		}
		for f, op := range cp.Delta {
			op.Value = spec.Normalize(op.Value)
			cp.Delta[f] = op
		}
		out = append(out, &cp)
		gids = append(gids, gid)
		graphs[gid] = [3]string{}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", describeSQLiteErr(err))
	}
	rows.Close()
	for gid := range graphs {
		var g [3]string
		if err := s.stmtGraphGet.QueryRowContext(ctx, gid).Scan(&g[0], &g[1], &g[2]); err != nil {
			return nil, fmt.Errorf("read graph record: %w", describeSQLiteErr(err))
		}
		graphs[gid] = g
	}
	for i, cp := range out {
		g := graphs[gids[i]]
		cp.Metadata.Graph, cp.Metadata.GraphHash, cp.Metadata.Version = g[0], g[1], g[2]
	}
	return out, nil
}

func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

func decodeMap(b []byte) (map[string]any, error) {
	var m map[string]any
	if err := decodeJSON(b, &m); err != nil {
		return nil, err
	}
	return spec.Normalize(m).(map[string]any), nil
}

// Thread implements runtime.Saver.
func (s *SQLite) Thread(ctx context.Context, id string) (*runtime.Thread, error) {
	ts, err := s.threads(ctx, `WHERE id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("thread %q: %w", id, runtime.ErrNotFound)
	}
	return ts[0], nil
}

// Threads implements runtime.Saver.
func (s *SQLite) Threads(ctx context.Context) ([]*runtime.Thread, error) {
	return s.threads(ctx, `ORDER BY updated DESC, id`)
}

func (s *SQLite) threads(ctx context.Context, where string, args ...any) ([]*runtime.Thread, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, head, status, error, graph, graph_hash, graph_file, config, created, updated FROM threads `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read threads: %w", describeSQLiteErr(err))
	}
	defer rows.Close()
	var out []*runtime.Thread
	for rows.Next() {
		var t runtime.Thread
		var status, config string
		var created, updated int64
		if err := rows.Scan(&t.ID, &t.Head, &status, &t.Error, &t.Graph, &t.GraphHash, &t.GraphFile, &config, &created, &updated); err != nil {
			return nil, fmt.Errorf("read threads: %w", describeSQLiteErr(err))
		}
		t.Status = runtime.Status(status)
		t.Created, t.Updated = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
		if err := json.Unmarshal([]byte(config), &t.Config); err != nil {
			return nil, fmt.Errorf("thread %q: corrupt config: %w", t.ID, err)
		}
		out = append(out, &t)
	}
	return out, rows.Err()
}

// DeleteThread implements runtime.Saver.
func (s *SQLite) DeleteThread(ctx context.Context, id string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", describeSQLiteErr(err))
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM threads WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete thread: %w", describeSQLiteErr(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("thread %q: %w", id, runtime.ErrNotFound)
	}
	// Child runs (subgraphs, map items) are named "<id>/..." and go too.
	like := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(id) + "/%"
	for _, q := range []string{
		`DELETE FROM checkpoints WHERE thread = ?1 OR thread LIKE ?2 ESCAPE '\'`,
		`DELETE FROM writes WHERE thread = ?1 OR thread LIKE ?2 ESCAPE '\'`,
		`DELETE FROM threads WHERE id LIKE ?2 ESCAPE '\'`,
	} {
		if _, err := tx.ExecContext(ctx, q, id, like); err != nil {
			return fmt.Errorf("delete thread: %w", describeSQLiteErr(err))
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", describeSQLiteErr(err))
	}
	s.mu.Lock()
	delete(s.chains, id)
	s.mu.Unlock()
	return nil
}
