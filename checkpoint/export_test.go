package checkpoint

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/lgrun/lgrun/runtime"
)

// ChainStats is what Get read to rebuild a checkpoint's values.
type ChainStats = chainStats

// ChainStats reports what Get reads to rebuild the values of checkpoint id
// of thread: the rows of its chain back to the nearest snapshot.
func ChainStatsOf(s *SQLite, thread, id string) (ChainStats, error) {
	_, st, err := s.values(context.Background(), thread, id)
	return st, err
}

// Reseal recomputes the checksums of checkpoint id of thread from its row
// as it now is, as if it had been written that way.
func Reseal(s *SQLite, thread, id string) error {
	ctx := context.Background()
	var r cpRow
	var snap []byte
	if err := s.db.QueryRowContext(ctx, `SELECT `+cpColumns+`, c.snapshot FROM checkpoints c LEFT JOIN graphs g ON g.id = c.graph WHERE c.thread = ? AND c.id = ?`, thread, id).Scan(append(r.scanArgs(), &snap)...); err != nil {
		return err
	}
	r.snapSum = snapshotSum(snap)
	_, err := s.db.ExecContext(ctx, `UPDATE checkpoints SET sum = ?, snap_sum = ?, link_sum = ? WHERE thread = ? AND id = ?`, r.checksum(), r.snapSum, linkSum(r.thread, r.id, r.parent, r.delta, r.snapSum), thread, id)
	return err
}

// MemoryLease reports thread's run lease in m: when it was taken and when
// it expires unless renewed.
func MemoryLease(m *Memory, thread string) (acquired, expires time.Time, held bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, held := m.leases[thread]
	return l.acquired, l.expires, held
}

// ExpireMemoryLease makes thread's lease in m expired, as if its holder
// had stopped renewing it (a hung run).
func ExpireMemoryLease(m *Memory, thread string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.leases[thread]
	l.expires = time.Now().Add(-time.Second)
	m.leases[thread] = l
}

// OpenFloor opens path with the connection settings of [OpenSQLite]
// (journal mode, synchronous, busy timeout, foreign keys, the WAL
// pragmas) for the storage floor benchmark, which writes its own table.
func OpenFloor(path string, d Durability) (*sql.DB, error) {
	return openDB(path, d, 5*time.Second)
}

// WriteTxns reports how many write transactions s has committed.
func WriteTxns(s *SQLite) int64 { return s.writeTxns.Load() }

// SetPackRows makes s seal a pack every n checkpoints of a run (see
// pack.go), so that tests reach packs with short chains.
func SetPackRows(s *SQLite, n int) { s.packRows = n }

// PackCount reports how many packs thread has in s.
func PackCount(s *SQLite, thread string) int {
	var n int
	if err := s.db.QueryRow(`SELECT count(*) FROM packs WHERE thread = ?`, thread).Scan(&n); err != nil {
		panic(err)
	}
	return n
}

// ValuesByRows rebuilds checkpoint id's values of thread from its rows
// alone, as Get reads a chain without packs.
func ValuesByRows(s *SQLite, thread, id string) (map[string]any, error) {
	chain, _, ok, err := s.rangeChain(context.Background(), thread, id, false)
	if err != nil || !ok {
		return nil, fmt.Errorf("no chain read (%v)", err)
	}
	values, _, err := rebuild(thread, id, s.path, chain)
	return values, err
}

// ConfigJSON is configJSON.
func ConfigJSON(c runtime.Config) ([]byte, error) {
	js, err := configJSON(&c)
	return []byte(js), err
}
