package checkpoint

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"

	"github.com/lgrun/lgrun/runtime"
)

// Packs (layout version 4).
//
// Loading a checkpoint reads its chain back to the nearest snapshot, and
// snapshots are placed by volume (see [MinSnapshotBytes]), so a chain can
// be thousands of rows long: 5,149 at the head of a 10,000-message thread,
// where scanning the rows cost more than decoding them. A pack summarises
// a run of consecutive checkpoints of a chain: the deltas of the run's
// checkpoints composed into one (as [composer] composes them when a chain
// is read), stored as a delta is, in the packs table under the run's last
// checkpoint. A chain read that reaches a pack's last checkpoint applies
// the pack and continues at the parent of the run's first checkpoint, so
// the head of that thread reads one snapshot, about 80 packs and the few
// rows after the last pack.
//
// Packs are redundant: every checkpoint row keeps its own delta, and a
// chain that cannot use a pack (a fork inside a run, a damaged pack, one
// whose rows were collected) is read row by row as before. A pack's
// checksum covers its columns and its JSON.
//
// A commit seals a pack when the run it extends reaches [packRows]
// checkpoints or [packBytes] of delta JSON, or, with at least
// [minPackRows], when the chain leaves the run (a fork, a field's op
// changing kind). The run being built is kept in memory by the handle
// that commits it (for at most [maxRuns] threads): a new process starts a
// new run at its first commit, and the rows before it are read one by one.

const packsDDL = `CREATE TABLE packs (
	thread TEXT NOT NULL,
	last TEXT NOT NULL,
	first TEXT NOT NULL,
	parent TEXT NOT NULL,
	rows INTEGER NOT NULL,
	delta BLOB NOT NULL,
	sum INTEGER NOT NULL,
	PRIMARY KEY (thread, last)
) WITHOUT ROWID`

const (
	packRows    = 64
	packBytes   = 64 << 10
	minPackRows = 8
	maxRuns     = 128
)

// packRun is the run of checkpoints a handle is building a pack of: the
// checkpoints after parent, from first on, their deltas composed (as
// [composer.add] composes them) into delta, whose lists and objects are
// the run's own (the deltas' values are shared with the caller's state).
type packRun struct {
	parent, first string
	rows, bytes   int
	delta         runtime.Delta
}

// composes reports whether d composes after the run's delta: false when
// a field's op changes kind (other than to a set) or a value is not of
// its op's kind, which only applying to values resolves.
func (r *packRun) composes(d runtime.Delta) bool {
	for f, op := range d {
		switch op.Kind {
		case runtime.OpSet, runtime.OpAppend, runtime.OpMessages, runtime.OpMerge:
		default:
			return false
		}
		if !wellFormed(op) {
			return false
		}
		if prev, ok := r.delta[f]; ok && op.Kind != runtime.OpSet && prev.Kind != op.Kind {
			return false
		}
	}
	return true
}

// add composes checkpoint cp, whose delta's JSON is n bytes and composes
// (see composes), into the run in place.
func (r *packRun) add(cp *runtime.Checkpoint, n int) {
	if r.first == "" {
		r.first = cp.ID
	}
	r.rows++
	r.bytes += n
	if r.delta == nil {
		r.delta = make(runtime.Delta, len(cp.Delta))
	}
	for f, op := range cp.Delta {
		prev, ok := r.delta[f]
		if !ok || op.Kind == runtime.OpSet {
			r.delta[f] = ownOp(op)
			continue
		}
		switch op.Kind {
		case runtime.OpAppend, runtime.OpMessages:
			a, _ := prev.Value.([]any)
			b, _ := op.Value.([]any)
			r.delta[f] = runtime.Op{Kind: op.Kind, Value: append(a, b...)}
		case runtime.OpMerge:
			maps.Copy(prev.Value.(map[string]any), op.Value.(map[string]any))
		}
	}
}

// with returns a copy of the run with cp added, leaving r as it is.
func (r *packRun) with(cp *runtime.Checkpoint, n int) *packRun {
	out := &packRun{parent: r.parent, first: r.first, rows: r.rows, bytes: r.bytes, delta: make(runtime.Delta, len(r.delta))}
	for f, op := range r.delta {
		out.delta[f] = ownOp(op)
	}
	out.add(cp, n)
	return out
}

// ownOp returns op with a copy of its list or object (a set's value is
// kept: the run never changes it).
func ownOp(op runtime.Op) runtime.Op {
	switch v := op.Value.(type) {
	case []any:
		if op.Kind != runtime.OpSet {
			op.Value = slices.Clone(v)
		}
	case map[string]any:
		if op.Kind == runtime.OpMerge {
			op.Value = maps.Clone(v)
		}
	}
	return op
}

// wellFormed reports whether op's value is of its kind (a list for append
// and messages, null standing for an empty one; an object for merge).
func wellFormed(op runtime.Op) bool {
	switch op.Kind {
	case runtime.OpAppend, runtime.OpMessages:
		_, ok := op.Value.([]any)
		return ok || op.Value == nil
	case runtime.OpMerge:
		_, ok := op.Value.(map[string]any)
		return ok
	}
	return true
}

// packSum is a pack's checksum: a CRC-32C of its columns and the JSON of
// its composed delta.
func packSum(thread, last, first, parent string, rows int64, js []byte) int64 {
	var s summer
	s.str("pack/4")
	s.str(thread)
	s.str(last)
	s.str(first)
	s.str(parent)
	s.int(rows)
	s.bytes(js)
	return int64(int32(s.crc))
}

// runPlan is what a commit does with its thread's run (see nextRun):
// it seals seal (if not nil) as a pack ending at checkpoint sealLast in
// its transaction, and extends the run with its checkpoint (extend), or
// makes next the thread's run (see [SQLite.insertCheckpoint]).
type runPlan struct {
	seal     *packRun
	sealLast string
	extend   bool
	next     *packRun
}

// nextRun plans, in the commit of cp (on the thread whose chain state
// this handle last committed is ci, if known), what becomes of the
// thread's run. n is the size of cp's delta JSON; snapshot tells whether
// cp stores a snapshot.
func (s *SQLite) nextRun(ci chainInfo, known bool, cp *runtime.Checkpoint, n int, snapshot bool) runPlan {
	if snapshot {
		// A chain read starts at the snapshot: a run before it is of no
		// use to reads of the head.
		return runPlan{next: &packRun{parent: cp.ID}}
	}
	run := ci.run
	if known && run != nil && ci.id == cp.ParentID && run.composes(cp.Delta) {
		if run.rows+1 >= s.packRows || run.bytes+n >= packBytes {
			return runPlan{seal: run.with(cp, n), sealLast: cp.ID, next: &packRun{parent: cp.ID}}
		}
		return runPlan{extend: true}
	}
	// A new run starts at cp; the one it leaves is sealed if long enough.
	var p runPlan
	if known && run != nil && run.rows >= min(minPackRows, s.packRows) {
		p.seal, p.sealLast = run, ci.id
	}
	if next := (&packRun{parent: cp.ParentID}); next.composes(cp.Delta) {
		next.add(cp, n)
		p.next = next
	}
	// Else a delta that does not compose even alone (an op of an unknown
	// kind): no run until the next snapshot.
	return p
}

// writePack stores run r, which ends at checkpoint last, as a pack.
func (s *SQLite) writePack(ctx context.Context, tx *wtx, thread, last string, r *packRun) error {
	js, err := marshal(r.delta)
	if err != nil {
		return fmt.Errorf("encode pack: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO packs (thread, last, first, parent, rows, delta, sum) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (thread, last) DO NOTHING`,
		thread, last, r.first, r.parent, r.rows, encodePack(js), packSum(thread, last, r.first, r.parent, int64(r.rows), js)); err != nil {
		return fmt.Errorf("insert pack: %w", s.describe(err))
	}
	return nil
}

// encodePack returns the stored form of a pack's JSON: compressed from
// [compressMin] bytes on, as snapshots are, and plain below (a delta's
// [deltaZMin] would compress every pack: a run of small deltas, such as a
// counter's 64 steps, makes a pack of a few hundred bytes, which DEFLATE
// shrinks by little and costs about a microsecond a step to compress).
// Reads take both forms (see [inflateTo]).
func encodePack(js []byte) []byte { return Compress(js, compressMin) }

// keepRun records thread's run (nil for none), keeping runs for at most
// maxRuns threads: another thread's run is dropped to make room (its next
// commit starts a new one). Call it with s.mu held.
func (s *SQLite) keepRun(thread string, r *packRun) {
	if r == nil {
		delete(s.runs, thread)
		return
	}
	if _, ok := s.runs[thread]; !ok && len(s.runs) >= maxRuns {
		for t := range s.runs {
			delete(s.runs, t)
			break
		}
	}
	s.runs[thread] = r
}

// packRow is a pack as read. Its delta is inflated, and the pack
// verified, when it is first used (load): a chain read decodes packs on
// both cores (see rebuildParallel).
type packRow struct {
	last, first, parent string
	rows                int64
	stored              []byte // the delta as stored
	sum                 int64
	typed               bool // its columns had their types
	loaded, ok          bool
	delta               []byte // the delta's JSON, once loaded
	size                int    // the length of the delta's JSON, once inflated
}

// load inflates the pack's delta and verifies the pack, once; false if it
// is damaged.
func (p *packRow) load(thread string) bool {
	if !p.loaded {
		js, err := inflateTo(nil, p.stored)
		p.ok = p.typed && err == nil && p.sum == packSum(thread, p.last, p.first, p.parent, p.rows, js)
		p.delta, p.loaded, p.size = js, true, len(js)
	}
	return p.ok
}

// decodeDelta verifies the pack and decodes its delta, interning in
// names, without keeping its JSON (load keeps it); false if the pack is
// damaged or its delta does not decode. For chain reads that decode each
// pack once (see rebuildParallel).
func (p *packRow) decodeDelta(thread string, names *jsonNames) (runtime.Delta, bool) {
	if p.loaded {
		if !p.ok {
			return nil, false
		}
		d, err := decodeDeltaNames(p.delta, names)
		return d, err == nil
	}
	if !p.typed {
		return nil, false
	}
	var d runtime.Delta
	err := inflated(p.stored, func(js []byte) (err error) {
		p.size = len(js)
		if p.sum != packSum(thread, p.last, p.first, p.parent, p.rows, js) {
			return errChecksum
		}
		d, err = decodeDeltaNames(js, names)
		return err
	})
	return d, err == nil
}

// packColumns are the columns of a packs row, in the order of
// packRow.scanArgs.
const packColumns = `last, first, parent, rows, delta, sum`

// packScan holds a packs row as scanned, each column as any, so that
// damage that changed a column's type (or made it NULL) makes the pack
// unusable rather than the read fail.
type packScan struct {
	last, first, parent, rows, sum any
	stored                         sql.RawBytes
}

func (ps *packScan) scanArgs() []any {
	return []any{&ps.last, &ps.first, &ps.parent, &ps.rows, &ps.stored, &ps.sum}
}

// row returns the pack as scanned (see packRow.load).
func (ps *packScan) row() *packRow {
	text := func(v any) (string, bool) {
		s, ok := v.(string)
		return s, ok
	}
	p := &packRow{stored: bytes.Clone(ps.stored)}
	var ok [5]bool
	p.last, ok[0] = text(ps.last)
	p.first, ok[1] = text(ps.first)
	p.parent, ok[2] = text(ps.parent)
	p.rows, ok[3] = ps.rows.(int64)
	p.sum, ok[4] = ps.sum.(int64)
	p.typed = ok == [5]bool{true, true, true, true, true}
	return p
}
