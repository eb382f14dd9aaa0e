package checkpoint

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/lgrun/lgrun/runtime"
)

// SchemaVersion is the version of the database layout this package writes.
// Version 2 added row checksums (see integrity.go), version 3 a more
// compact layout, version 4 compressed deltas and packs (see pack.go and
// [migrations]), version 5 heads that follow a thread's greatest
// checkpoint (see follow.go); an older database is upgraded when it is
// opened (see [migrate]).
const SchemaVersion = 5

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
	// SQLite's WAL with synchronous=NORMAL. A commit writes to the WAL
	// without waiting for the disk (about 25 µs on the machine of
	// BENCHMARKS.md). A power loss or OS crash can lose the steps the OS had
	// not yet written to disk (typically the last seconds, at most about
	// half a minute), never corrupt the database; a resume then starts from
	// the last step that reached the disk.
	DurabilityProcess Durability = "process"
	// DurabilityPower adds an fsync of the WAL to every commit
	// (synchronous=FULL), so committed steps survive power loss too. Each
	// superstep then waits for the disk: from ~0.1 ms on a local NVMe drive
	// to several ms on network or shared cloud volumes (see BENCHMARKS.md).
	DurabilityPower Durability = "power"
)

// Options configure an SQLite saver.
type Options struct {
	Durability Durability
	// BusyTimeout is how long a write waits for another process's lock
	// before failing; 5s when zero.
	BusyTimeout time.Duration
	// LeaseTTL is how long a run lease lasts without renewal;
	// [DefaultLeaseTTL] when zero.
	LeaseTTL time.Duration
}

// SQLite is the durable saver: one database file, WAL mode, one
// transaction per committed superstep. Append and messages fields are
// stored as deltas; see [MinSnapshotBytes] for snapshots.
type SQLite struct {
	db   *sql.DB
	path string
	busy time.Duration
	// leaseTTL is the TTL of the run leases this handle takes.
	leaseTTL time.Duration
	// wlock (a one-slot semaphore) queues this process's writers; see begin.
	wlock chan struct{}
	// closed is set by Close, with wlock held: later writes fail.
	closed bool

	// wconn is the connection all writes go through, one at a time (see
	// begin), opened at the first write (see openWriter); the stmt*
	// statements are prepared on it.
	wconn                                                 *sql.Conn
	stmtHead, stmtState, stmtParent, stmtWrite, stmtGraph *sql.Stmt

	// wstmts caches the statements prepared on wconn (see wstmt), used
	// with the write lock held; rstmts those prepared on the pool.
	wstmts map[string]*sql.Stmt
	rstmts map[string]*sql.Stmt

	// raw holds the statements of a step's commit, prepared on wconn's
	// driver connection, and moveArgs and insertArgs the values bound to
	// the thread's and the checkpoint's (see rawstmt.go); all are used
	// with the write lock held.
	raw                  rawStmts
	moveArgs, insertArgs argList
	// encCache keeps the JSON a run's commits repeat (see enccache.go).
	encCache encCache

	// states is what the writer connection knows of the threads it
	// committed to, valid while dataVersion (PRAGMA data_version as the
	// writer last read it, dvKnown once read) stays the same (see
	// follow.go); intDest is rawInt's row. Used with the write lock held.
	states      map[string]threadState
	dataVersion int64
	dvKnown     bool
	intDest     [1]driver.Value

	mu sync.Mutex
	// releases queues the released leases whose rows are still to be
	// deleted, releaseTimer the flush of them (see releaseDelay).
	releases     []leaseRef
	releaseTimer *time.Timer
	chains       map[string]chainInfo // thread → last committed checkpoint's chain state
	runs         map[string]*packRun  // thread → the run its next pack summarises (see pack.go)
	graphs       map[string]int64     // name\x00hash\x00version → graph row id
	lastGraph    graphRef             // the graphs row last looked up in graphs

	// writeTxns counts the write transactions this handle committed.
	writeTxns atomic.Int64

	// packRows is the longest run a pack summarises ([packRows]; tests
	// make it shorter).
	packRows int
}

type chainInfo struct {
	id         string
	chainBytes int
	baseBytes  int
	// run is the run of checkpoints ending at id that the next pack
	// will summarise (see pack.go), nil when unknown (kept in
	// SQLite.runs between transactions); within a transaction, add is the
	// checkpoint still to add to it in place once it commits.
	run *packRun
	add *runtime.Checkpoint
}

var _ runtime.Saver = (*SQLite)(nil)

// checkpointsDDL is the checkpoints table of layout version 3: keyed by
// (thread, id) without a rowid, so a commit writes one b-tree (version 2
// had a rowid table and a unique index beside it), with the snapshot last
// so that reading a row's other columns never walks its overflow pages.
const checkpointsDDL = `CREATE TABLE checkpoints (
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
	sum INTEGER,
	snap_sum INTEGER,
	link_sum INTEGER,
	chain_bytes INTEGER NOT NULL,
	base_bytes INTEGER NOT NULL,
	delta BLOB NOT NULL,
	snapshot BLOB,
	PRIMARY KEY (thread, id)
) WITHOUT ROWID`

// threadsDDL is the threads table of layout version 3 (without a rowid).
const threadsDDL = `CREATE TABLE threads (
	id TEXT PRIMARY KEY,
	head TEXT NOT NULL,
	status TEXT NOT NULL,
	error TEXT NOT NULL DEFAULT '',
	graph TEXT NOT NULL DEFAULT '',
	graph_hash TEXT NOT NULL DEFAULT '',
	graph_file TEXT NOT NULL DEFAULT '',
	config TEXT NOT NULL DEFAULT '{}',
	created INTEGER NOT NULL,
	updated INTEGER NOT NULL,
	pending INTEGER,
	sum INTEGER
) WITHOUT ROWID`

const ddl = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS graphs (
	id INTEGER PRIMARY KEY,
	name TEXT NOT NULL, hash TEXT NOT NULL, version TEXT NOT NULL,
	UNIQUE (name, hash, version)
);
` + threadsDDL + `;
` + checkpointsDDL + `;
CREATE TABLE IF NOT EXISTS writes (
	thread TEXT NOT NULL,
	checkpoint TEXT NOT NULL,
	seq INTEGER NOT NULL,
	node TEXT NOT NULL,
	kind TEXT NOT NULL,
	data BLOB NOT NULL,
	sum INTEGER,
	PRIMARY KEY (thread, checkpoint, seq)
) WITHOUT ROWID;
` + leaseDDL + `;
` + packsDDL + `;
` + followDDL

// followDDL adds the columns of layout version 5 (see follow.go): after
// the others, so that an older database gets them without a copy.
const followDDL = `ALTER TABLE threads ADD COLUMN follow INTEGER;
ALTER TABLE checkpoints ADD COLUMN pending INTEGER;
ALTER TABLE checkpoints ADD COLUMN updated_off INTEGER;
ALTER TABLE checkpoints ADD COLUMN live_sum INTEGER;
`

// OpenSQLite opens (creating if needed) the checkpoint database at path.
func OpenSQLite(path string, opts *Options) (*SQLite, error) {
	if opts == nil {
		opts = &Options{}
	}
	busy := opts.BusyTimeout
	if busy == 0 {
		busy = 5 * time.Second
	}
	db, err := openDB(path, opts.Durability, busy)
	if err != nil {
		return nil, err
	}
	ttl := opts.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	s := &SQLite{db: db, path: path, busy: busy, leaseTTL: ttl, wlock: make(chan struct{}, 1), chains: map[string]chainInfo{}, graphs: map[string]int64{}, runs: map[string]*packRun{}, packRows: packRows}
	if err := s.init(); err != nil {
		s.Close()
		if err = s.describe(err); strings.Contains(err.Error(), path) {
			return nil, fmt.Errorf("open checkpoint database: %w", err)
		}
		return nil, fmt.Errorf("open checkpoint database %s: %w", path, err)
	}
	return s, nil
}

// openDB opens the database at path with the connection settings of every
// saver: WAL, synchronous for d, the busy timeout, foreign keys and
// [setupConn].
func openDB(path string, d Durability, busy time.Duration) (*sql.DB, error) {
	sync := "NORMAL"
	switch d {
	case "", DurabilityProcess:
	case DurabilityPower:
		sync = "FULL"
	default:
		return nil, fmt.Errorf("unknown durability %q (want process or power)", d)
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", sync)
	q.Set("_busy_timeout", fmt.Sprint(busy.Milliseconds()))
	q.Set("_foreign_keys", "on")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	return sql.OpenDB(&connector{dsn: dsn, drv: &sqlite3.SQLiteDriver{ConnectHook: setupConn}}), nil
}

// WALCheckpointPages is how many pages (of 4 KiB) the WAL may hold before
// a commit copies them into the database file (SQLite's
// wal_autocheckpoint; its default is 1,000). Each such checkpoint costs
// two or three fsyncs whatever the durability; a step commit adds about
// three pages, so the default would pay them every ~300 steps, which on a
// disk with slow fsync (tens of ms on shared cloud volumes) costs more
// than the steps themselves. At 8,192 pages they come every ~2,700 steps.
// The WAL file then grows to about 32 MiB while a process writes (more
// only if a long read holds a checkpoint back, after which it is trimmed
// to [WALKeepBytes]); it is reused in place, which spares the filesystem
// allocating blocks anew, and removed when the last connection closes.
const WALCheckpointPages = 8192

// WALKeepBytes is the size a WAL file larger than it is trimmed to after a
// checkpoint (SQLite's journal_size_limit).
const WALKeepBytes = WALCheckpointPages * 4096

// setupConn applies the settings the DSN cannot carry to every new
// connection.
func setupConn(c *sqlite3.SQLiteConn) error {
	_, err := c.Exec(fmt.Sprintf(`PRAGMA wal_autocheckpoint = %d; PRAGMA journal_size_limit = %d`, WALCheckpointPages, WALKeepBytes), nil)
	return err
}

// connector opens connections with setupConn, without registering a
// driver name globally.
type connector struct {
	dsn string
	drv *sqlite3.SQLiteDriver
}

func (c *connector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c *connector) Driver() driver.Driver                        { return c.drv }

func (s *SQLite) init() error {
	ctx := context.Background()
	version, err := s.schemaVersion(ctx, pool{s.db})
	if err != nil {
		return err
	}
	if version == "" {
		if err := s.create(ctx); err != nil {
			return err
		}
		// Another process may have created the tables first, in an
		// older layout.
		if version, err = s.schemaVersion(ctx, pool{s.db}); err != nil {
			return err
		}
	}
	return s.migrate(ctx, version)
}

// openWriter opens the writer connection, at the first write (a handle
// that only reads never opens it). Call it with the write lock held.
func (s *SQLite) openWriter(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	s.raw = rawStmts{
		begin:         rawStmt{q: `BEGIN IMMEDIATE`},
		commit:        rawStmt{q: `COMMIT`},
		dataVersion:   rawStmt{q: `PRAGMA data_version`},
		insert:        rawStmt{q: insertCheckpointSQL},
		moveHead:      rawStmt{q: moveHeadSQL + ` IS NULL`},
		moveFollowing: rawStmt{q: moveHeadSQL + ` = 1`},
		newThread:     rawStmt{q: newThreadSQL},
	}
	// Set under s.mu too: Close reads it without the write lock.
	s.mu.Lock()
	s.wconn = conn
	s.mu.Unlock()
	if err := s.prepareRaw(ctx, false); err != nil {
		s.mu.Lock()
		s.wconn = nil
		s.mu.Unlock()
		conn.Close()
		return err
	}
	return nil
}

// prepareWriter prepares the stmt* statements on the writer connection,
// at the first write transaction after the tables are made (see
// beginTx). Call it with the write lock held.
func (s *SQLite) prepareWriter(ctx context.Context) error {
	prep := func(dst **sql.Stmt, q string) error {
		st, err := s.wconn.PrepareContext(ctx, q)
		*dst = st
		return err
	}
	err := errors.Join(
		prep(&s.stmtHead, `SELECT head FROM threads WHERE id = ?`),
		prep(&s.stmtState, `SELECT t.head, t.follow, (SELECT max(c.id) FROM checkpoints c WHERE c.thread = k.id)
			FROM (SELECT ?1 AS id) k LEFT JOIN threads t ON t.id = k.id`),
		prep(&s.stmtParent, `SELECT chain_bytes, base_bytes FROM checkpoints WHERE thread = ? AND id = ?`),
		prep(&s.stmtWrite, `INSERT INTO writes (thread, checkpoint, seq, node, kind, data, sum) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		prep(&s.stmtGraph, `INSERT INTO graphs (name, hash, version) VALUES (?, ?, ?) ON CONFLICT (name, hash, version) DO UPDATE SET name = excluded.name RETURNING id`),
	)
	if err != nil {
		s.closeWriterStmts()
		return err
	}
	return s.prepareRaw(ctx, true)
}

// closeWriterStmts closes the statements prepareWriter prepared.
func (s *SQLite) closeWriterStmts() {
	for _, st := range []**sql.Stmt{&s.stmtHead, &s.stmtState, &s.stmtParent, &s.stmtWrite, &s.stmtGraph} {
		if *st != nil {
			(*st).Close()
			*st = nil
		}
	}
}

// The statements of a step's commit (see rawstmt.go).
const (
	insertCheckpointSQL = `INSERT INTO checkpoints (thread, id, parent, step, turn_step, next, waiting, source, writes, graph, time, usage, totals, records, sum, snap_sum, link_sum, chain_bytes, base_bytes, delta, snapshot, pending, updated_off, live_sum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	// newThreadSQL takes its values in moveHeadSQL's order (see writeThread).
	newThreadSQL = `INSERT INTO threads (head, status, error, graph, graph_hash, graph_file, config, updated, pending, sum, follow, id, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO NOTHING`
	// moveHeadSQL moves a pinned row (+ IS NULL) or one that follows
	// (+ = 1): two statements, since a test of follow against a bound
	// value would have SQLite prepare the statement again at every use.
	moveHeadSQL = `UPDATE threads SET head = ?, status = ?, error = ?, graph = ?, graph_hash = ?, graph_file = ?, config = ?, updated = ?, pending = ?, sum = ?, follow = ? WHERE id = ? AND head = ? AND follow`
)

// begin starts a write transaction on the writer connection with BEGIN
// IMMEDIATE, which takes SQLite's write lock at once (a deferred
// transaction could fail to upgrade its read lock, with no busy wait). The
// writers of this process queue here, in order, instead of in SQLite's
// busy handler, which polls with sleeps of 1, 2, 5, 10 ms and more while
// another connection writes; other processes still wait in the busy
// handler, up to the busy timeout. Release with end.
//
// Writes use one connection and plain BEGIN/COMMIT rather than database/sql
// transactions, which cost a goroutine (and its wake-up) each and
// re-resolve prepared statements per transaction; BEGIN IMMEDIATE and
// COMMIT are prepared once, on the driver connection (see rawstmt.go).
func (s *SQLite) begin(ctx context.Context) (*wtx, error) { return s.beginTx(ctx, true) }

// beginTx is begin; prepared tells whether the transaction uses the stmt*
// statements (all but those that make or upgrade the tables, before which
// they cannot be prepared).
func (s *SQLite) beginTx(ctx context.Context, prepared bool) (*wtx, error) {
	select {
	case s.wlock <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s.closed {
		<-s.wlock
		return nil, errClosed
	}
	if s.wconn == nil {
		if err := s.openWriter(ctx); err != nil {
			<-s.wlock
			return nil, err
		}
	}
	if prepared && s.stmtHead == nil {
		if err := s.prepareWriter(ctx); err != nil {
			<-s.wlock
			return nil, err
		}
	}
	if _, err := s.rawExec(ctx, &s.raw.begin, nil); err != nil {
		<-s.wlock
		return nil, err
	}
	tx := &wtx{s: s, conn: s.wconn}
	s.deleteReleased(ctx, tx)
	return tx, nil
}

// wstmt returns q prepared on the writer connection, preparing it the
// first time (SQLite then parses each statement once per handle, not once
// per transaction). Call it with the write lock held.
func (s *SQLite) wstmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := s.wstmts[q]; ok {
		return st, nil
	}
	st, err := s.wconn.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if s.wstmts == nil {
		s.wstmts = map[string]*sql.Stmt{}
	}
	s.wstmts[q] = st
	return st, nil
}

// rstmt returns q prepared for reads on the connection pool.
func (s *SQLite) rstmt(ctx context.Context, q string) (*sql.Stmt, error) {
	s.mu.Lock()
	st, ok := s.rstmts[q]
	s.mu.Unlock()
	if ok {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.rstmts[q]; ok {
		st.Close()
		return old, nil
	}
	if s.rstmts == nil {
		s.rstmts = map[string]*sql.Stmt{}
	}
	s.rstmts[q] = st
	return st, nil
}

// query runs a read query through rstmt.
func (s *SQLite) queryRows(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.rstmt(ctx, q)
	if err != nil {
		return nil, err
	}
	if tx := readTx(ctx); tx != nil {
		return tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return st.QueryContext(ctx, args...)
}

// readTxKey carries, inside this package only, the read transaction that
// queryRows and queryRow run on (see [SQLite.Get]).
type readTxKey struct{}

func readTx(ctx context.Context) *sql.Tx {
	tx, _ := ctx.Value(readTxKey{}).(*sql.Tx)
	return tx
}

// queryRow runs a one-row read query through rstmt; a failed prepare
// comes out of Scan.
func (s *SQLite) queryRow(ctx context.Context, q string, args ...any) rowScanner {
	st, err := s.rstmt(ctx, q)
	if err != nil {
		return errRow{err}
	}
	if tx := readTx(ctx); tx != nil {
		return tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

type rowScanner interface{ Scan(dest ...any) error }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// end rolls tx back unless it was committed and lets the next writer in.
func (s *SQLite) end(tx *wtx) {
	if !tx.done {
		tx.conn.ExecContext(context.Background(), `ROLLBACK`)
	}
	<-s.wlock
	if !tx.done && len(tx.released) > 0 {
		// The deletions rolled back with the rest: try again soon.
		s.mu.Lock()
		if s.releaseTimer == nil {
			s.releaseTimer = time.AfterFunc(releaseDelay, s.flushReleases)
		}
		s.mu.Unlock()
	}
}

// wtx is a write transaction begun by begin.
type wtx struct {
	s    *SQLite
	conn *sql.Conn
	done bool
	// released lists the leases whose rows this transaction deletes.
	released []leaseRef
}

// ExecContext runs q, prepared once per handle (see wstmt).
func (t *wtx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := t.s.wstmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// QueryRowContext runs q, prepared once per handle (see wstmt).
func (t *wtx) QueryRowContext(ctx context.Context, q string, args ...any) rowScanner {
	st, err := t.s.wstmt(ctx, q)
	if err != nil {
		return errRow{err}
	}
	if tx := readTx(ctx); tx != nil {
		return tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// execScript runs statements that cannot be prepared as one (DDL
// scripts), unprepared.
func (t *wtx) execScript(ctx context.Context, q string) error {
	_, err := t.conn.ExecContext(ctx, q)
	return err
}

// StmtContext returns st as is: write statements are prepared on the
// writer connection.
func (t *wtx) StmtContext(_ context.Context, st *sql.Stmt) *sql.Stmt { return st }

// Commit commits the transaction.
func (t *wtx) Commit() error {
	if _, err := t.s.rawExec(context.Background(), &t.s.raw.commit, nil); err != nil {
		return err
	}
	t.done = true
	t.s.writeTxns.Add(1)
	t.s.releasedDone(t)
	return nil
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) rowScanner
}

// pool runs queries on the connection pool as a queryer.
type pool struct{ db *sql.DB }

func (p pool) QueryRowContext(ctx context.Context, q string, args ...any) rowScanner {
	return p.db.QueryRowContext(ctx, q, args...)
}

// schemaVersion reads the layout version, or "" when the database has no
// lgrun tables yet.
func (s *SQLite) schemaVersion(ctx context.Context, q queryer) (string, error) {
	var version string
	err := q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&version)
	switch {
	case err == nil:
		return version, nil
	case errors.Is(err, sql.ErrNoRows) || strings.Contains(err.Error(), "no such table"):
		return "", nil
	}
	return "", err
}

// ErrNotCheckpointDB reports a file that is not a checkpoint database.
var ErrNotCheckpointDB = errors.New("not an lgrun checkpoint database")

// ErrSchemaVersion reports a database whose layout this lgrun cannot use.
var ErrSchemaVersion = errors.New("unsupported database layout version")

func checkVersion(version string) error {
	v, err := strconv.Atoi(version)
	switch {
	case err != nil:
		return fmt.Errorf("%w %q: not an lgrun checkpoint database, or a damaged one", ErrSchemaVersion, version)
	case v > SchemaVersion:
		return fmt.Errorf("%w: the database was written by a newer lgrun (layout version %d; this lgrun reads version %d): upgrade lgrun, or use another database", ErrSchemaVersion, v, SchemaVersion)
	case v < 1:
		return fmt.Errorf("%w %d: not an lgrun checkpoint database, or a damaged one", ErrSchemaVersion, v)
	}
	return nil
}

// migrations[v] upgrades a database from layout version v to v+1, inside
// the transaction that then records the new version.
var migrations = map[int]string{
	// 1 → 2: row checksums. Old rows keep NULL sums and are read
	// unverified; every row written from now on carries one.
	1: `ALTER TABLE checkpoints ADD COLUMN sum INTEGER;
		ALTER TABLE checkpoints ADD COLUMN snap_sum INTEGER;
		ALTER TABLE writes ADD COLUMN sum INTEGER;
		ALTER TABLE threads ADD COLUMN pending INTEGER;
		ALTER TABLE threads ADD COLUMN sum INTEGER;`,
	// 2 → 3: checkpoints and threads without rowids (one b-tree per
	// table instead of a table and its key's index), the snapshot column
	// last, and the leases table created with the others, without a
	// rowid, and the chain checksum link_sum (see [linkSum]; NULL in the
	// copied rows, which chain reads verify in full). Rows are copied as
	// they are: their checksums cover values,
	// not the layout, and their snapshots stay plain JSON (see
	// [encodeSnapshot] for the compressed ones written from now on).
	2: `CREATE TABLE IF NOT EXISTS leases (thread TEXT PRIMARY KEY, token TEXT NOT NULL, host TEXT NOT NULL,
			pid INTEGER NOT NULL, acquired INTEGER NOT NULL, expires INTEGER NOT NULL);
		ALTER TABLE checkpoints RENAME TO checkpoints_v2;
		` + checkpointsDDL + `;
		INSERT INTO checkpoints (thread, id, parent, step, turn_step, next, waiting, source, writes, graph, time, usage, totals, records, sum, snap_sum, chain_bytes, base_bytes, delta, snapshot)
			SELECT thread, id, parent, step, turn_step, next, waiting, source, writes, graph, time, usage, totals, records, sum, snap_sum, chain_bytes, base_bytes, delta, snapshot FROM checkpoints_v2;
		DROP TABLE checkpoints_v2;
		ALTER TABLE threads RENAME TO threads_v2;
		` + threadsDDL + `;
		INSERT INTO threads SELECT id, head, status, error, graph, graph_hash, graph_file, config, created, updated, pending, sum FROM threads_v2;
		DROP TABLE threads_v2;
		ALTER TABLE leases RENAME TO leases_v2;
		` + leaseDDL + `;
		INSERT INTO leases SELECT thread, token, host, pid, acquired, expires FROM leases_v2;
		DROP TABLE leases_v2;`,
	// 3 → 4: deltas may be stored compressed (see [encodeDelta]), and
	// packs summarise runs of a chain (see pack.go). The rows of version
	// 3 are plain and read as they are; their chains get packs as they
	// grow.
	3: packsDDL + `;`,
	// 4 → 5: heads that follow a thread's greatest checkpoint (see
	// follow.go). The columns are added, not copied into a new table: the
	// rows of version 4 keep NULL in them, and their heads stay pinned.
	4: followDDL,
}

// migrate checks a database's layout version and upgrades an older one to
// [SchemaVersion], in one write transaction (another process may be doing
// the same: the version is read again under the lock).
func (s *SQLite) migrate(ctx context.Context, version string) error {
	if err := checkVersion(version); err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	if version == fmt.Sprint(SchemaVersion) {
		return nil
	}
	tx, err := s.beginTx(ctx, false)
	if err != nil {
		return fmt.Errorf("upgrade the database layout: %w", s.describe(err))
	}
	defer s.end(tx)
	if version, err = s.schemaVersion(ctx, tx); err != nil {
		return err
	}
	if err := checkVersion(version); err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	v, _ := strconv.Atoi(version)
	if v == SchemaVersion {
		return nil
	}
	for ; v < SchemaVersion; v++ {
		if err := tx.execScript(ctx, migrations[v]); err != nil {
			return fmt.Errorf("upgrade the database layout from version %d to %d: %w", v, v+1, s.describe(err))
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE meta SET value = ? WHERE key = 'schema_version'`, fmt.Sprint(SchemaVersion)); err != nil {
		return fmt.Errorf("upgrade the database layout: %w", s.describe(err))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("upgrade the database layout: %w", s.describe(err))
	}
	return nil
}

// create makes the tables of an empty database. It refuses a database that
// already holds other tables: it is not lgrun's.
func (s *SQLite) create(ctx context.Context) error {
	tx, err := s.beginTx(ctx, false)
	if err != nil {
		return err
	}
	defer s.end(tx)
	// Another process may have created the tables since we looked.
	version, err := s.schemaVersion(ctx, tx)
	if err != nil {
		return err
	}
	if version != "" {
		return nil // init checks it
	}
	var tables int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table'`).Scan(&tables); err != nil {
		return err
	}
	if tables > 0 {
		return fmt.Errorf("%s is an SQLite database but %w (it has other tables and no lgrun schema version)", s.path, ErrNotCheckpointDB)
	}
	if err := tx.execScript(ctx, ddl); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('schema_version', ?)`, fmt.Sprint(SchemaVersion)); err != nil {
		return err
	}
	return tx.Commit()
}

// Path returns the database file's path.
func (s *SQLite) Path() string { return s.path }

// Close closes the database. The last connection to close copies the WAL
// into the database file and removes it.
func (s *SQLite) Close() error {
	// Delete the rows of released leases before closing.
	s.mu.Lock()
	if s.releaseTimer != nil {
		s.releaseTimer.Stop()
	}
	pending := len(s.releases) > 0
	s.mu.Unlock()
	if pending {
		s.deleteQueuedReleases()
	}
	// A write in progress ends first; the writer's statements and
	// connection are made at the first write, under the write lock, so
	// they are closed under it too, and later writes fail.
	s.wlock <- struct{}{}
	defer func() { <-s.wlock }()
	s.closed = true
	// Statements prepared on a connection must be closed before it, or
	// SQLite keeps it open (and the WAL) until the process ends.
	s.closeWriterStmts()
	for _, st := range s.wstmts {
		st.Close()
	}
	s.mu.Lock()
	for _, st := range s.rstmts {
		st.Close()
	}
	wconn := s.wconn
	s.mu.Unlock()
	if wconn != nil {
		s.closeRaw(wconn)
		wconn.Close()
	}
	return s.db.Close()
}

// errClosed is a write to a closed handle.
var errClosed = errors.New("checkpoint database is closed")

// DB exposes the database for tests and maintenance commands.
func (s *SQLite) DB() *sql.DB { return s.db }

// describe explains an SQLite error in the user's terms, naming the
// database file.
func (s *SQLite) describe(err error) error {
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrNotADB:
			return fmt.Errorf("%s is %w (the file is not SQLite, or is corrupt): %w", s.path, ErrNotCheckpointDB, err)
		case sqlite3.ErrCorrupt:
			return fmt.Errorf("database file %s is corrupt: %w", s.path, err)
		case sqlite3.ErrBusy, sqlite3.ErrLocked:
			return fmt.Errorf("database %s is locked by another process (still locked after the busy timeout of %s): %w", s.path, s.busy, err)
		case sqlite3.ErrReadonly, sqlite3.ErrPerm, sqlite3.ErrCantOpen:
			return fmt.Errorf("cannot write the database file %s (check its directory and permissions): %w", s.path, err)
		case sqlite3.ErrFull:
			return fmt.Errorf("disk full writing %s: %w", s.path, err)
		}
	}
	return err
}
