package checkpoint

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/lgrun/lgrun/runtime"
)

// The row layout of the SQLite saver, exported for the other SQL savers
// (checkpoint/postgres) so that every saver stores the same encodings,
// checksums, snapshot policy and chain rebuilding. These are not meant
// for callers of the savers.

// Row is a checkpoints row as stored (with its graph by value); its
// checksum is the one of integrity.go.
type Row struct {
	Thread, ID, Parent        string
	Step, TurnStep            int64
	Next                      string
	Waiting                   sql.NullString
	Source                    string
	Writes                    sql.NullString
	Graph, GraphHash, Version string
	Time                      int64
	Usage, Totals, Records    sql.NullString
	Delta                     []byte
	SnapSum                   sql.NullInt64
	Sum                       sql.NullInt64
	// The thread's state columns of the SQLite saver's layout version 5
	// (see follow.go); NULL in the rows of other savers.
	Pending, UpdatedOff, LiveSum sql.NullInt64
}

func (r *Row) inner() *cpRow {
	return &cpRow{thread: r.Thread, id: r.ID, parent: r.Parent, step: r.Step, turnStep: r.TurnStep, next: r.Next,
		waiting: r.Waiting, source: r.Source, writes: r.Writes, graph: r.Graph, graphHash: r.GraphHash, version: r.Version,
		time: r.Time, usage: r.Usage, totals: r.Totals, records: r.Records, delta: r.Delta, snapSum: r.SnapSum, sum: r.Sum,
		pending: r.Pending, updatedOff: r.UpdatedOff, liveSum: r.LiveSum}
}

// EncodeRow encodes cp (without its values) as a row, sealed with its
// checksum for the snapshot snap (nil for none).
func EncodeRow(thread string, cp *runtime.Checkpoint, snap []byte) (Row, error) {
	delta, err := marshal(cp.Delta)
	if err != nil {
		return Row{}, fmt.Errorf("encode delta: %w", err)
	}
	next, err := marshal(cp.Next)
	if err != nil {
		return Row{}, err
	}
	m := cp.Metadata
	waiting, err1 := nullJSON(cp.Waiting, len(cp.Waiting) == 0)
	writes, err2 := nullJSON(m.Writes, len(m.Writes) == 0)
	usage, err3 := nullJSON(m.Usage, len(m.Usage) == 0)
	totals, err4 := nullJSON(m.Totals, m.Totals == runtime.Totals{})
	records, err5 := nullJSON(m.Records, len(m.Records) == 0)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return Row{}, fmt.Errorf("encode checkpoint: %w", err)
	}
	r := Row{Thread: thread, ID: cp.ID, Parent: cp.ParentID, Step: int64(cp.Step), TurnStep: int64(cp.TurnStep),
		Next: string(next), Waiting: nullString(waiting), Source: string(m.Source), Writes: nullString(writes),
		Graph: m.Graph, GraphHash: m.GraphHash, Version: m.Version, Time: m.Time.UnixNano(),
		Usage: nullString(usage), Totals: nullString(totals), Records: nullString(records), Delta: delta}
	r.Seal(snap)
	return r, nil
}

// Seal sets the row's snapshot checksum for snap (nil for none) and its
// own checksum.
func (r *Row) Seal(snap []byte) {
	r.SnapSum = snapshotSum(snap)
	r.Sum = sql.NullInt64{Int64: r.inner().checksum(), Valid: true}
}

// Decode verifies the row and decodes it into a checkpoint without
// values; a row that fails is a *runtime.CorruptError.
func (r *Row) Decode() (*runtime.Checkpoint, error) {
	cp, err := r.inner().decode()
	if err != nil {
		return nil, &runtime.CorruptError{Thread: r.Thread, Checkpoint: r.ID, Err: err}
	}
	return cp, nil
}

// Link is a row of a checkpoint's chain with its snapshot (nil for none).
type Link struct {
	Row      Row
	Snapshot []byte
}

// Rebuild verifies a chain read back from checkpoint id to the nearest
// snapshot (oldest first) and applies it; a broken chain or a bad row is a
// *runtime.CorruptError naming that row. where names the database in
// messages.
func Rebuild(thread, id, where string, chain []Link) (map[string]any, error) {
	rows := make([]chainRow, len(chain))
	for i, l := range chain {
		rows[i] = chainRow{row: *l.Row.inner(), snap: l.Snapshot}
	}
	values, _, err := rebuild(thread, id, where, rows)
	return values, err
}

// SnapshotDue reports whether a checkpoint whose chain since the last
// snapshot holds chainBytes of deltas (its own included), on a snapshot of
// baseBytes, stores a snapshot (see [MinSnapshotBytes]); first is true for
// a thread's first checkpoint.
func SnapshotDue(first bool, chainBytes, baseBytes int) bool {
	return first || chainBytes >= max(2*baseBytes, MinSnapshotBytes)
}

// Marshal encodes v as the savers store JSON.
func Marshal(v any) ([]byte, error) { return marshal(v) }

// ThreadRow is a threads row as stored.
type ThreadRow struct {
	ID, Head, Status, Error, Graph, GraphHash, GraphFile, Config string
	Created, Updated                                             int64
	Pending                                                      sql.NullInt64
	Sum                                                          sql.NullInt64
	// bad, when set, is what Verify and Decode report: the thread's state
	// could not be resolved from its greatest checkpoint (see follow.go).
	bad error
}

func (r *ThreadRow) inner() *threadRow {
	return &threadRow{id: r.ID, head: r.Head, status: r.Status, error: r.Error, graph: r.Graph, graphHash: r.GraphHash,
		graphFile: r.GraphFile, config: r.Config, created: r.Created, updated: r.Updated, pending: r.Pending, sum: r.Sum}
}

// NewThreadRow encodes th with head and the head's pending-write count.
func NewThreadRow(th runtime.Thread, head string, pending int) (ThreadRow, error) {
	config, err := marshal(th.Config)
	if err != nil {
		return ThreadRow{}, fmt.Errorf("encode thread config: %w", err)
	}
	created := th.Created
	if created.IsZero() {
		created = th.Updated
	}
	r := ThreadRow{ID: th.ID, Head: head, Status: string(th.Status), Error: th.Error, Graph: th.Graph, GraphHash: th.GraphHash,
		GraphFile: th.GraphFile, Config: string(config), Created: created.UnixNano(), Updated: th.Updated.UnixNano(),
		Pending: sql.NullInt64{Int64: int64(pending), Valid: true}}
	r.Reseal()
	return r, nil
}

// Reseal renews the row's checksum after a change.
func (r *ThreadRow) Reseal() { r.Sum = sql.NullInt64{Int64: r.inner().checksum(), Valid: true} }

// Verify checks the row's checksum (a *runtime.CorruptError).
func (r *ThreadRow) Verify() error {
	if r.bad != nil {
		return r.bad
	}
	return r.inner().verify()
}

// Decode verifies the row and decodes it.
func (r *ThreadRow) Decode() (*runtime.Thread, error) {
	if r.bad != nil {
		return nil, r.bad
	}
	return r.inner().decode()
}

// EncodeWrite encodes a pending write and returns its data and checksum.
func EncodeWrite(thread, checkpoint string, seq int, w runtime.PendingWrite) ([]byte, int64, error) {
	data, err := marshal(w)
	if err != nil {
		return nil, 0, fmt.Errorf("encode pending write of %q: %w", w.Node, err)
	}
	return data, writeSum(thread, checkpoint, int64(seq), w.Node, string(w.Kind), data), nil
}

// DecodeWrite verifies and decodes a stored pending write.
func DecodeWrite(thread, checkpoint string, seq int64, node, kind string, data []byte, sum sql.NullInt64) (runtime.PendingWrite, error) {
	return decodeWrite(thread, checkpoint, seq, node, kind, data, sum)
}
