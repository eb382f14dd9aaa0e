package checkpoint

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// A history with values is read in one walk of the thread's checkpoint
// tree: every row is read once, every snapshot a selected checkpoint is
// built on is decoded once, and every delta on the way is applied once, to
// its parent's values. Get of each checkpoint instead reads and applies
// its whole chain back to a snapshot, so reading N checkpoints that way
// costs N times the state. The walk is shared by the SQL savers: each
// supplies the rows through a [HistorySource].

var _ runtime.HistoryReader = (*SQLite)(nil)

// HistoryRow is a checkpoints row read for a history walk, without its
// snapshot, and whether it has one.
type HistoryRow struct {
	Row         Row
	HasSnapshot bool
	// LinkSum is the row's chain checksum where the saver stores one
	// (SQLite, layout version 3), verified like the row's own.
	LinkSum sql.NullInt64
}

// WriteRow is a pending-write row as stored.
type WriteRow struct {
	Checkpoint string
	Seq        int64
	Node, Kind string
	Data       []byte
	Sum        sql.NullInt64
}

// HistorySource reads what a history walk needs from one SQL saver, all
// in one consistent view of the database (a read transaction).
type HistorySource interface {
	// Thread returns the thread's row, and false if it has none.
	Thread(ctx context.Context) (ThreadRow, bool, error)
	// Rows returns every checkpoints row of the thread, in any order.
	Rows(ctx context.Context) ([]HistoryRow, error)
	// Snapshots returns the snapshots of the checkpoints ids names.
	Snapshots(ctx context.Context, ids []string) (map[string][]byte, error)
	// Writes returns the pending-write rows of the thread, in seq order
	// within each checkpoint.
	Writes(ctx context.Context) ([]WriteRow, error)
}

// WalkHistory implements [runtime.HistoryReader] for an SQL saver on the
// rows src reads; where names the database in messages.
func WalkHistory(ctx context.Context, src HistorySource, thread, where string, o runtime.HistoryOptions) ([]*runtime.Checkpoint, error) {
	tr, haveThread, err := src.Thread(ctx)
	if err != nil {
		return nil, err
	}
	stored, err := src.Rows(ctx)
	if err != nil {
		return nil, err
	}
	if len(stored) == 0 {
		if !haveThread {
			return nil, fmt.Errorf("thread %q: %w", thread, runtime.ErrNotFound)
		}
		if _, err := tr.Decode(); err != nil {
			return nil, err
		}
		return nil, nil
	}
	w := &walker{thread: thread, where: where, rows: make(map[string]*walkRow, len(stored)), done: map[string]*walkResult{}}
	ids := make([]string, 0, len(stored))
	for i := range stored {
		r := &walkRow{cpRow: *stored[i].Row.inner(), hasSnap: stored[i].HasSnapshot, link: stored[i].LinkSum}
		w.rows[r.id] = r
		ids = append(ids, r.id)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))

	// Select as List and the filters do.
	var targets []*runtime.Checkpoint
	var bad []*runtime.CorruptError
	for _, id := range ids {
		if o.Before != "" && id >= o.Before {
			continue
		}
		if o.Limit > 0 && len(targets) >= o.Limit {
			// Only the rows List would report as bad are still wanted.
			if _, err := w.rows[id].decode(); err != nil {
				bad = append(bad, &runtime.CorruptError{Thread: thread, Checkpoint: id, Err: err})
			}
			continue
		}
		cp, err := w.rows[id].decode()
		if err != nil {
			bad = append(bad, &runtime.CorruptError{Thread: thread, Checkpoint: id, Err: err})
			continue
		}
		// The delta as decode reads it is the one the walk applies
		// (ApplyDelta copies what it keeps).
		w.rows[id].d, w.rows[id].decoded = cp.Delta, true
		if o.Filter != nil && !o.Filter(cp) {
			continue
		}
		targets = append(targets, cp)
	}
	listErr := joinCorrupt(bad)
	if len(targets) == 0 {
		return nil, listErr
	}
	// Get reads (and verifies) the thread's row for every checkpoint.
	if haveThread {
		if err := tr.Verify(); err != nil {
			return nil, fmt.Errorf("load checkpoint %s: %w", targets[0].ID, err)
		}
	}

	// The snapshots the selected checkpoints are built on, in one read.
	var snapIDs []string
	for _, cp := range targets {
		snapIDs = append(snapIDs, w.base(cp.ID)...)
	}
	if len(snapIDs) > 0 {
		snaps, err := src.Snapshots(ctx, snapIDs)
		if err != nil {
			return nil, err
		}
		for id, b := range snaps {
			w.rows[id].snap = b
		}
	}
	// Pending writes, decoded for the selected checkpoints only.
	want := make(map[string]*runtime.Checkpoint, len(targets))
	for _, cp := range targets {
		want[cp.ID] = cp
	}
	writes, err := src.Writes(ctx)
	if err != nil {
		return nil, err
	}
	pendErr := map[string]error{}
	for _, wr := range writes {
		cp := want[wr.Checkpoint]
		if cp == nil || pendErr[cp.ID] != nil {
			continue
		}
		pw, err := decodeWrite(thread, cp.ID, wr.Seq, wr.Node, wr.Kind, wr.Data, wr.Sum)
		if err != nil {
			pendErr[cp.ID] = err
			continue
		}
		cp.Pending = append(cp.Pending, pw)
	}

	for _, cp := range targets {
		values, err := w.values(cp.ID)
		if err == nil {
			err = pendErr[cp.ID]
		}
		if err == nil && haveThread && cp.ID == tr.Head && tr.Pending.Valid && int64(len(cp.Pending)) != tr.Pending.Int64 {
			err = &runtime.CorruptError{Thread: thread, Checkpoint: cp.ID, Err: fmt.Errorf("it has %d pending writes, where the thread's row records %d (database %s damaged)", len(cp.Pending), tr.Pending.Int64, where)}
		}
		if err != nil {
			return nil, fmt.Errorf("load checkpoint %s: %w", cp.ID, err)
		}
		if o.Shared {
			cp.Values = values
		} else {
			cp.Values = spec.DeepCopy(values).(map[string]any)
		}
	}
	return targets, listErr
}

// walkRow is a row of the walk, with its snapshot once read.
type walkRow struct {
	cpRow
	hasSnap bool
	snap    []byte
	link    sql.NullInt64
	// d is the row's delta once decoded (decoded is then set).
	d       runtime.Delta
	decoded bool
}

// walkResult is a checkpoint's values, or why they cannot be built.
type walkResult struct {
	values map[string]any
	err    error
}

// walker builds the values of a thread's checkpoints, each once.
type walker struct {
	thread, where string
	rows          map[string]*walkRow
	done          map[string]*walkResult
	// based marks the rows base has walked through.
	based map[string]bool
}

// base walks id's chain back to the nearest snapshot, as Get reads it, and
// returns the checkpoints with a snapshot on the way (the walk's start)
// that no earlier call returned.
func (w *walker) base(id string) []string {
	if w.based == nil {
		w.based = map[string]bool{}
	}
	for {
		r := w.rows[id]
		if r == nil || w.based[id] {
			return nil
		}
		w.based[id] = true
		if r.hasSnap {
			return []string{id}
		}
		if r.parent == "" || r.parent >= r.id {
			return nil
		}
		id = r.parent
	}
}

// values returns id's values: those of its parent with its delta applied,
// or its snapshot. The errors are those Get reports (see [rebuild]). The
// values returned are shared with the walk: callers copy them before any
// change.
func (w *walker) values(id string) (map[string]any, error) {
	// The chain from id back to a checkpoint already built, or to where
	// Get's chain starts (a snapshot, or a row without a usable parent).
	var chain []*walkRow
	var from *walkResult
	for cur := id; ; {
		if res := w.done[cur]; res != nil {
			from = res
			break
		}
		r := w.rows[cur]
		if r == nil {
			break // a parent missing from the database (id is there)
		}
		chain = append(chain, r)
		if r.hasSnap || r.parent == "" || r.parent >= r.id {
			break
		}
		cur = r.parent
	}
	for i := len(chain) - 1; i >= 0; i-- {
		r := chain[i]
		res := &walkResult{}
		switch {
		case from != nil && from.err != nil:
			res.err = from.err
		default:
			res.values, res.err = w.apply(r, from)
		}
		w.done[r.id] = res
		from = res
	}
	return from.values, from.err
}

// apply builds r's values on its parent's (from, nil when r starts a
// chain).
func (w *walker) apply(r *walkRow, from *walkResult) (map[string]any, error) {
	// As a chain read does (chainRow.verify): by the link checksum where
	// the row has one; the row's own is verified where it is listed.
	if r.link.Valid {
		if err := r.verifyLink(r.link, r.snap); err != nil {
			return nil, w.corrupt(r.id, err)
		}
	} else {
		if err := r.verify(); err != nil {
			return nil, w.corrupt(r.id, err)
		}
		if err := r.verifySnapshot(r.snap); err != nil {
			return nil, w.corrupt(r.id, err)
		}
	}
	if r.hasSnap {
		values, err := decodeSnapshot(r.snap)
		if err != nil {
			return nil, w.corrupt(r.id, fmt.Errorf("corrupt snapshot: %w", err))
		}
		return values, nil
	}
	if from == nil {
		switch {
		case r.parent == "":
			return nil, w.corrupt(r.id, fmt.Errorf("the thread's first checkpoint has no snapshot (database %s damaged)", w.where))
		case r.parent >= r.id:
			return nil, w.corrupt(r.id, fmt.Errorf("its parent %s is not older than it (database %s damaged)", r.parent, w.where))
		}
		return nil, w.corrupt(r.parent, fmt.Errorf("missing from the database, which checkpoint %s is built on (database %s damaged)", r.id, w.where))
	}
	d := r.d
	if !r.decoded {
		if err := decodeJSON(r.delta, &d); err != nil {
			return nil, w.corrupt(r.id, fmt.Errorf("corrupt delta: %w", err))
		}
		normalizeDelta(d)
	}
	// ApplyDelta replaces fields and never changes the lists and objects
	// it replaces, so the parent's values stay as they are.
	values := make(map[string]any, len(from.values)+len(d))
	for k, v := range from.values {
		values[k] = v
	}
	if err := runtime.ApplyDelta(values, d); err != nil {
		return nil, w.corrupt(r.id, fmt.Errorf("its delta does not apply: %w", err))
	}
	return values, nil
}

func (w *walker) corrupt(id string, err error) error {
	return &runtime.CorruptError{Thread: w.thread, Checkpoint: id, Err: err}
}

// History implements [runtime.HistoryReader]: one walk of the thread's
// checkpoint tree in one read transaction (see [WalkHistory]).
func (s *SQLite) History(ctx context.Context, thread string, o runtime.HistoryOptions) ([]*runtime.Checkpoint, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", s.describe(err))
	}
	defer tx.Rollback()
	return WalkHistory(ctx, &sqliteHistory{s: s, tx: tx, thread: thread}, thread, s.path, o)
}

// sqliteHistory is the [HistorySource] of an SQLite read transaction.
type sqliteHistory struct {
	s      *SQLite
	tx     *sql.Tx
	thread string
}

func (h *sqliteHistory) Thread(ctx context.Context) (ThreadRow, bool, error) {
	var tr threadRow
	err := h.tx.QueryRowContext(ctx, `SELECT `+threadColumns+` FROM threads WHERE id = ?`, h.thread).Scan(tr.scanArgs()...)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ThreadRow{}, false, nil
	case err != nil:
		return ThreadRow{}, false, fmt.Errorf("read thread: %w", h.s.describe(err))
	}
	return ThreadRow{ID: tr.id, Head: tr.head, Status: tr.status, Error: tr.error, Graph: tr.graph, GraphHash: tr.graphHash,
		GraphFile: tr.graphFile, Config: tr.config, Created: tr.created, Updated: tr.updated, Pending: tr.pending, Sum: tr.sum}, true, nil
}

func (h *sqliteHistory) Rows(ctx context.Context) ([]HistoryRow, error) {
	rows, err := h.tx.QueryContext(ctx, `SELECT `+cpColumns+`, c.snapshot IS NOT NULL, c.link_sum
		FROM checkpoints c LEFT JOIN graphs g ON g.id = c.graph WHERE c.thread = ?`, h.thread)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", h.s.describe(err))
	}
	defer rows.Close()
	var out []HistoryRow
	for rows.Next() {
		var r cpRow
		var snap bool
		var link sql.NullInt64
		if err := rows.Scan(append(r.scanArgs(), &snap, &link)...); err != nil {
			return nil, fmt.Errorf("read checkpoints: %w", h.s.describe(err))
		}
		out = append(out, HistoryRow{Row: r.outer(), HasSnapshot: snap, LinkSum: link})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", h.s.describe(err))
	}
	return out, nil
}

func (h *sqliteHistory) Snapshots(ctx context.Context, ids []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), 500)
		args := []any{h.thread}
		for _, id := range ids[:n] {
			args = append(args, id)
		}
		q := `SELECT id, snapshot FROM checkpoints WHERE thread = ? AND id IN (?` + strings.Repeat(`, ?`, n-1) + `)`
		rows, err := h.tx.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("read snapshots: %w", h.s.describe(err))
		}
		for rows.Next() {
			var id string
			var snap []byte
			if err := rows.Scan(&id, &snap); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read snapshots: %w", h.s.describe(err))
			}
			out[id] = snap
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read snapshots: %w", h.s.describe(err))
		}
		ids = ids[n:]
	}
	return out, nil
}

func (h *sqliteHistory) Writes(ctx context.Context) ([]WriteRow, error) {
	rows, err := h.tx.QueryContext(ctx, `SELECT checkpoint, seq, node, kind, data, sum FROM writes WHERE thread = ? ORDER BY checkpoint, seq`, h.thread)
	if err != nil {
		return nil, fmt.Errorf("read pending writes: %w", h.s.describe(err))
	}
	defer rows.Close()
	var out []WriteRow
	for rows.Next() {
		var wr WriteRow
		if err := rows.Scan(&wr.Checkpoint, &wr.Seq, &wr.Node, &wr.Kind, &wr.Data, &wr.Sum); err != nil {
			return nil, fmt.Errorf("read pending writes: %w", h.s.describe(err))
		}
		out = append(out, wr)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending writes: %w", h.s.describe(err))
	}
	return out, nil
}

// outer is the exported form of r.
func (r *cpRow) outer() Row {
	return Row{Thread: r.thread, ID: r.id, Parent: r.parent, Step: r.step, TurnStep: r.turnStep, Next: r.next,
		Waiting: r.waiting, Source: r.source, Writes: r.writes, Graph: r.graph, GraphHash: r.graphHash, Version: r.version,
		Time: r.time, Usage: r.usage, Totals: r.totals, Records: r.records, Delta: r.delta, SnapSum: r.snapSum, Sum: r.sum}
}
