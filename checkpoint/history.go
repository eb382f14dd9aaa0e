package checkpoint

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
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

	// The packs of the thread, where the saver stores them: Get reads
	// through them (see pack.go), and so does the walk.
	if ps, ok := src.(packSource); ok {
		packs, err := ps.packs(ctx)
		if err != nil {
			return nil, err
		}
		w.setPacks(packs)
	}
	// The snapshots the selected checkpoints are built on, in one read.
	var snapIDs []string
	for _, cp := range targets {
		snapIDs = append(snapIDs, w.base(cp.ID)...)
		if plan := w.plan(cp.ID); plan != nil {
			if bottom := plan[len(plan)-1].row; !w.based[bottom.id] {
				w.based[bottom.id] = true
				snapIDs = append(snapIDs, bottom.id)
			}
		}
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
		values, err := w.get(cp.ID)
		if err == nil {
			// As Get verifies the row it returns by its link checksum too.
			if r := w.rows[cp.ID]; r.link.Valid && r.link.Int64 != linkSum(r.thread, r.id, r.parent, r.delta, r.snapSum) {
				err = w.corrupt(cp.ID, errChecksum)
			}
		}
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

	// The thread's packs by last checkpoint (nil when the saver stores
	// none), the ids of its rows in order, and for each the number of rows
	// up to it that packedChain cannot read narrow (see chainScanner).
	packs  map[string]*packRow
	lasts  []string // the packs' last checkpoints, in order
	ids    []string
	legacy []int
	plans  map[string][]planStep     // see plan
	pdone  map[[2]string]*walkResult // values built through packs, by checkpoint and base
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

// packSource is implemented by the history sources of savers that store
// packs (SQLite).
type packSource interface {
	packs(ctx context.Context) ([]*packRow, error)
}

func (w *walker) setPacks(packs []*packRow) {
	if len(packs) == 0 {
		return
	}
	w.packs = make(map[string]*packRow, len(packs))
	for _, p := range packs {
		w.packs[p.last] = p
	}
	w.ids = make([]string, 0, len(w.rows))
	for id := range w.rows {
		w.ids = append(w.ids, id)
	}
	sort.Strings(w.ids)
	w.legacy = make([]int, len(w.ids)+1)
	for i, id := range w.ids {
		r := w.rows[id]
		w.legacy[i+1] = w.legacy[i]
		if r.sum.Valid && !r.link.Valid {
			w.legacy[i+1]++
		}
	}
	w.lasts = slices.Sorted(maps.Keys(w.packs))
	w.plans = map[string][]planStep{}
	w.pdone = map[[2]string]*walkResult{}
}

// planStep is a step of a chain read through packs: a pack, or a row.
type planStep struct {
	pack *packRow
	row  *walkRow
}

// plan returns the chain Get reads for id through packs (see
// [SQLite.packedChain]), newest first, ending at a row with a snapshot;
// nil when Get would read it row by row. It follows packedChain step by
// step: the packs are those up to id, the walk goes back from id through
// the parents, jumping from pack to pack, and reads rows in ranges after
// the last pack before its position, newest first, only as far as it
// goes; every row read must be verifiable narrow.
func (w *walker) plan(id string) []planStep {
	if w.packs == nil {
		return nil
	}
	if p, ok := w.plans[id]; ok {
		return p
	}
	out := w.makePlan(id)
	w.plans[id] = out
	return out
}

func (w *walker) makePlan(id string) []planStep {
	if len(w.lasts) == 0 || w.lasts[0] > id {
		return nil // no pack up to id: Get reads row by row
	}
	// The range being read: the rows after lo (hasLo) that are not read
	// yet are w.ids[:next+1] (newest first from next).
	var open, hasLo bool
	var lo string
	next := 0
	var out []planStep
	for at := id; ; {
		if p := w.packs[at]; p != nil {
			if !p.ok {
				return nil
			}
			open = false
			out = append(out, planStep{pack: p})
			at = p.parent
			continue
		}
		if !open || hasLo && at <= lo {
			k := sort.SearchStrings(w.lasts, at)
			open, hasLo = true, k > 0
			if hasLo {
				lo = w.lasts[k-1]
			}
			j := sort.SearchStrings(w.ids, at)
			if j < len(w.ids) && w.ids[j] == at {
				j++
			}
			next = j - 1
		}
		// Read down to at: each row read must carry a link checksum if it
		// has a full one.
		found := false
		for next >= 0 && (!hasLo || w.ids[next] > lo) {
			rid := w.ids[next]
			next--
			if w.legacy[next+2]-w.legacy[next+1] > 0 {
				return nil
			}
			if rid <= at {
				found = rid == at
				break
			}
		}
		if !found {
			return nil
		}
		r := w.rows[at]
		out = append(out, planStep{row: r})
		if r.hasSnap {
			return out
		}
		if r.parent == "" || r.parent >= r.id {
			return nil
		}
		at = r.parent
	}
}

// get returns id's values as Get reads them: through packs where Get
// would (see plan) and that builds them, else row by row (see values).
func (w *walker) get(id string) (map[string]any, error) {
	if plan := w.plan(id); plan != nil {
		if res := w.packed(plan, plan[len(plan)-1].row.id); res.err == nil {
			return res.values, nil
		}
	}
	return w.values(id)
}

// packed builds the values at the top of plan, from its bottom (a row
// with a snapshot, whose id is base) up, as a chain read through packs
// does; the values at each step are kept for the plans that share it.
func (w *walker) packed(plan []planStep, base string) *walkResult {
	var res *walkResult
	for k := len(plan) - 1; k >= 0; k-- {
		st := plan[k]
		key := [2]string{stepID(st), base}
		if done := w.pdone[key]; done != nil {
			res = done
			continue
		}
		switch {
		case k == len(plan)-1:
			v, err := w.values(st.row.id)
			res = &walkResult{values: v, err: err}
		case res.err != nil:
			res = &walkResult{err: res.err}
		case st.pack != nil:
			res = w.applyPack(st.pack, res)
		default:
			v, err := w.apply(st.row, res)
			res = &walkResult{values: v, err: err}
		}
		w.pdone[key] = res
	}
	return res
}

// applyPack builds the values at a pack's last checkpoint on those at the
// parent of its first (from).
func (w *walker) applyPack(p *packRow, from *walkResult) *walkResult {
	d, err := decodeDelta(p.delta)
	if err != nil {
		return &walkResult{err: w.corrupt(p.last, fmt.Errorf("corrupt pack: %w", err))}
	}
	values := make(map[string]any, len(from.values)+len(d))
	for k, v := range from.values {
		values[k] = v
	}
	if err := runtime.ApplyDelta(values, d); err != nil {
		return &walkResult{err: w.corrupt(p.last, fmt.Errorf("its pack does not apply: %w", err))}
	}
	return &walkResult{values: values}
}

func stepID(st planStep) string {
	if st.pack != nil {
		return st.pack.last
	}
	return st.row.id
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
	var lr liveRow
	err := h.tx.QueryRowContext(ctx, threadByIDSQL, h.thread).Scan(append(tr.scanArgs(), lr.scanArgs()...)...)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ThreadRow{}, false, nil
	case err != nil:
		return ThreadRow{}, false, fmt.Errorf("read thread: %w", h.s.describe(err))
	}
	// A row that follows its greatest checkpoint is verified and resolved
	// here (see follow.go), and handed on as the pinned row it stands
	// for; what fails is reported where Get would report it.
	var bad error
	if tr.follow.Valid {
		bad = tr.verifyLive(&lr)
	}
	return ThreadRow{ID: tr.id, Head: tr.head, Status: tr.status, Error: tr.error, Graph: tr.graph, GraphHash: tr.graphHash,
		GraphFile: tr.graphFile, Config: tr.config, Created: tr.created, Updated: tr.updated, Pending: tr.pending, Sum: tr.sum, bad: bad}, true, nil
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
		Time: r.time, Usage: r.usage, Totals: r.totals, Records: r.records, Delta: r.delta, SnapSum: r.snapSum, Sum: r.sum,
		Pending: r.pending, UpdatedOff: r.updatedOff, LiveSum: r.liveSum}
}

func (h *sqliteHistory) packs(ctx context.Context) ([]*packRow, error) {
	rows, err := h.tx.QueryContext(ctx, `SELECT `+packColumns+` FROM packs WHERE thread = ?`, h.thread)
	if err != nil {
		return nil, fmt.Errorf("read packs: %w", h.s.describe(err))
	}
	defer rows.Close()
	var out []*packRow
	for rows.Next() {
		var ps packScan
		if err := rows.Scan(ps.scanArgs()...); err != nil {
			return nil, fmt.Errorf("read packs: %w", h.s.describe(err))
		}
		p := ps.row()
		p.load(h.thread)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read packs: %w", h.s.describe(err))
	}
	return out, nil
}
