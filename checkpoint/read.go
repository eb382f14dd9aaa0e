package checkpoint

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	goruntime "runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/lgrun/lgrun/runtime"
)

// Get implements runtime.Saver. It reads the checkpoint's chain back to the
// nearest snapshot in one query and applies the deltas forward. Every row
// read is verified (see integrity.go); a bad one is reported as a
// *runtime.CorruptError naming it.
//
// Its statements run on the connection pool, each on its own snapshot,
// which is cheap and almost always consistent. When they disagree (a write
// to the thread landed between them, so the checks report damage), Get
// reads again in one read transaction and believes that.
func (s *SQLite) Get(ctx context.Context, thread, id string) (*runtime.Checkpoint, error) {
	cp, err := s.get(ctx, thread, id)
	var bad *runtime.CorruptError
	if err == nil || !errors.As(err, &bad) {
		return cp, err
	}
	tx, terr := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if terr != nil {
		return nil, fmt.Errorf("read checkpoint: %w", s.describe(terr))
	}
	defer tx.Rollback()
	return s.get(context.WithValue(ctx, readTxKey{}, tx), thread, id)
}

func (s *SQLite) get(ctx context.Context, thread, id string) (*runtime.Checkpoint, error) {
	// The thread's row (verified) names the head and counts its pending
	// writes; when it follows its greatest checkpoint, that checkpoint's
	// row holds them (see follow.go).
	var tr threadRow
	var lr liveRow
	err := s.queryRow(ctx, threadByIDSQL, thread).Scan(append(tr.scanArgs(), lr.scanArgs()...)...)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		tr = threadRow{}
		if id == "" {
			return nil, fmt.Errorf("thread %q: %w", thread, runtime.ErrNotFound)
		}
	case err != nil:
		return nil, fmt.Errorf("read thread: %w", s.describe(err))
	default:
		if err := tr.verifyLive(&lr); err != nil {
			return nil, err
		}
	}
	head := id == ""
	if head {
		id = tr.head
	}
	values, _, err := s.values(ctx, thread, id)
	if err != nil {
		if head && errors.Is(err, runtime.ErrNotFound) {
			return nil, &runtime.CorruptError{Thread: thread, Checkpoint: id, Err: errors.New("the thread's head checkpoint is missing from the database")}
		}
		return nil, err
	}
	// The row itself, verified by its checksum and by its link checksum
	// (which its chain read does not check when a pack ends at it).
	var r cpRow
	var link sql.NullInt64
	err = s.queryRow(ctx, `SELECT `+cpColumns+`, c.link_sum FROM checkpoints c LEFT JOIN graphs g ON g.id = c.graph WHERE c.thread = ? AND c.id = ?`, thread, id).Scan(append(r.scanArgs(), &link)...)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("checkpoint %q of thread %q: %w", id, thread, runtime.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
	}
	cp, err := r.decode()
	if err != nil {
		return nil, &runtime.CorruptError{Thread: r.thread, Checkpoint: r.id, Err: err}
	}
	if link.Valid && link.Int64 != linkSum(r.thread, r.id, r.parent, r.delta, r.snapSum) {
		return nil, &runtime.CorruptError{Thread: thread, Checkpoint: id, Err: errChecksum}
	}
	cp.Values = values
	if cp.Pending, err = s.pending(ctx, thread, id); err != nil {
		return nil, err
	}
	if id == tr.head && tr.pending.Valid && int64(len(cp.Pending)) != tr.pending.Int64 {
		return nil, &runtime.CorruptError{Thread: thread, Checkpoint: id, Err: fmt.Errorf("it has %d pending writes, where the thread's row records %d (database %s damaged)", len(cp.Pending), tr.pending.Int64, s.path)}
	}
	return cp, nil
}

// chainStats describes what rebuilding a checkpoint's values read.
type chainStats struct {
	Rows      int // checkpoint rows
	Packs     int // packs standing for runs of rows (see pack.go)
	Snapshots int // rows with a snapshot (1 unless damaged)
	Bytes     int // snapshot and delta bytes (as JSON)
}

// cpColumns are the columns of a checkpoints row c that its checksum
// covers, with its graph g by value, in the order cpRow.scan expects.
const cpColumns = `c.thread, c.id, c.parent, c.step, c.turn_step, c.next, c.waiting, c.source, c.writes,
	COALESCE(g.name, ''), COALESCE(g.hash, ''), COALESCE(g.version, ''), c.time, c.usage, c.totals, c.records,
	c.delta, c.sum, c.snap_sum, c.pending, c.updated_off, c.live_sum`

// scanArgs returns the destinations of cpColumns; the delta is inflated
// (see [deltaColumn]).
func (r *cpRow) scanArgs() []any {
	return []any{&r.thread, &r.id, &r.parent, &r.step, &r.turnStep, &r.next, &r.waiting, &r.source, &r.writes,
		&r.graph, &r.graphHash, &r.version, &r.time, &r.usage, &r.totals, &r.records,
		deltaColumn{&r.delta}, &r.sum, &r.snapSum, &r.pending, &r.updatedOff, &r.liveSum}
}

// link is a row of a chain as stored, kept to find the bad one when the
// chain does not apply.
type link struct {
	id          string
	delta, snap []byte
}

// values rebuilds a checkpoint's values: it reads the chain back to the
// nearest snapshot (see [SQLite.rangeChain]), verifies every row and
// applies the deltas forward, composed (see [composer]). A chain that is
// broken, or a row that is damaged or does not apply, is a
// *runtime.CorruptError naming that row.
func (s *SQLite) values(ctx context.Context, thread, id string) (map[string]any, chainStats, error) {
	linked, packed, ok, err := s.rangeChain(ctx, thread, id, true)
	if err != nil {
		return nil, chainStats{}, err
	}
	if ok {
		values, st, err := rebuild(thread, id, s.path, linked)
		if err == nil || !packed {
			return values, st, err
		}
	}
	if packed {
		// A chain that cannot be read, or rebuilt, through packs is read
		// row by row, which names the row at fault.
		if linked, _, ok, err = s.rangeChain(ctx, thread, id, false); err != nil {
			return nil, chainStats{}, err
		}
		if ok {
			return rebuild(thread, id, s.path, linked)
		}
	}
	// parent < id: ids grow along a chain, which also keeps a damaged
	// parent column from sending the query round in a cycle.
	rows, err := s.queryRows(ctx, `
		WITH RECURSIVE chain (id, parent, snapshot, depth) AS (
			SELECT id, parent, snapshot IS NOT NULL, 0 FROM checkpoints WHERE thread = ?1 AND id = ?2
			UNION ALL
			SELECT c.id, c.parent, c.snapshot IS NOT NULL, chain.depth + 1
			FROM checkpoints c JOIN chain ON c.thread = ?1 AND c.id = chain.parent
			WHERE NOT chain.snapshot AND chain.parent < chain.id
		)
		SELECT `+cpColumns+`, c.snapshot, c.link_sum
		FROM chain JOIN checkpoints c ON c.thread = ?1 AND c.id = chain.id LEFT JOIN graphs g ON g.id = c.graph
		ORDER BY chain.depth DESC`, thread, id)
	if err != nil {
		return nil, chainStats{}, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
	}
	defer rows.Close()
	var chain []chainRow
	for rows.Next() {
		var l chainRow
		if err := rows.Scan(append(l.row.scanArgs(), &l.snap, &l.link)...); err != nil {
			return nil, chainStats{}, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
		}
		chain = append(chain, l)
	}
	if err := rows.Err(); err != nil {
		return nil, chainStats{}, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
	}
	return rebuild(thread, id, s.path, chain)
}

// narrowColumns are the columns of a checkpoints row c that a chain read
// needs (see [linkSum]), in the order of [chainScanner.scan].
const narrowColumns = `c.id, c.parent, c.delta, c.snap_sum, c.link_sum, c.sum IS NOT NULL, c.snapshot`

// chainScanner scans narrow chain rows, copying their deltas (inflated)
// into one growing slab instead of one allocation per row (sql.RawBytes
// is the driver's, valid until Next).
type chainScanner struct {
	thread      string
	slab        []byte
	delta, snap sql.RawBytes
}

// scan reads the rows of q (narrowColumns); false when a row has a full
// checksum but no link checksum (written before link_sum), which only a
// read of all its columns verifies.
func (cs *chainScanner) scan(rows *sql.Rows, out []chainRow) ([]chainRow, bool, error) {
	defer rows.Close()
	for rows.Next() {
		l, ok, err := cs.row(rows)
		if err != nil || !ok {
			return nil, false, err
		}
		out = append(out, l)
	}
	return out, true, rows.Err()
}

// row scans the current row of rows (see scan).
func (cs *chainScanner) row(rows *sql.Rows) (chainRow, bool, error) {
	l := chainRow{narrow: true}
	l.row.thread = cs.thread
	var summed bool
	if err := rows.Scan(&l.row.id, &l.row.parent, &cs.delta, &l.row.snapSum, &l.link, &summed, &cs.snap); err != nil {
		return l, false, err
	}
	if summed && !l.link.Valid {
		return l, false, nil
	}
	if len(cs.slab)+4*len(cs.delta) > cap(cs.slab) {
		cs.slab = make([]byte, 0, max(64<<10, 4*len(cs.delta)))
	}
	n := len(cs.slab)
	if js, err := inflateTo(cs.slab, cs.delta); err == nil {
		cs.slab = js
	} else {
		// Kept as stored: it fails its checksum.
		cs.slab = append(cs.slab, cs.delta...)
	}
	l.row.delta = cs.slab[n:len(cs.slab):len(cs.slab)]
	if cs.snap != nil {
		l.snap = append([]byte{}, cs.snap...)
	}
	return l, true, nil
}

// rangeChain reads checkpoint id's chain back to the nearest snapshot,
// oldest first, with range scans of the thread's rows: ids grow along a
// chain, so the chain lies between id and the latest snapshot at or
// before it (in id order). With packs (see pack.go), a pack whose run
// ends where the chain is stands for the run's rows, and only the rows
// between packs are read. The rows read are walked from id through their
// parents in memory, which picks out the same rows as following the
// parent links in SQL (the query of values), at a fraction of the cost
// per row. It reports false, to let values follow the links in SQL, when
// the walk leaves the range (a branch whose snapshot is older than
// another branch's) or the rows do not link up as a chain should (damage,
// which values then reports); packed tells whether a pack was used.
func (s *SQLite) rangeChain(ctx context.Context, thread, id string, withPacks bool) (chain []chainRow, packed, ok bool, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("read checkpoint chain: %w", s.describe(err))
		}
	}()
	cs := &chainScanner{thread: thread}
	if withPacks {
		chain, packed, ok, err := s.packedChain(ctx, cs, id)
		if err != nil || packed {
			return chain, packed, ok, err
		}
	}
	// Only the columns the chain needs are read (see [linkSum]); rows
	// without a link_sum but with a full sum (written before it existed)
	// can only be verified through all their columns, which values does.
	rows, err := s.queryRows(ctx, `
		SELECT `+narrowColumns+`
		FROM checkpoints c
		WHERE c.thread = ?1 AND c.id <= ?2 AND c.id >= COALESCE((
			SELECT id FROM checkpoints WHERE thread = ?1 AND id <= ?2 AND snapshot IS NOT NULL ORDER BY id DESC LIMIT 1), '')
		ORDER BY c.id`, thread, id)
	if err != nil {
		return nil, false, false, err
	}
	all, ok, err := cs.scan(rows, nil)
	if err != nil || !ok {
		return nil, false, false, err
	}
	byID := make(map[string]int, len(all))
	for i := range all {
		byID[all[i].row.id] = i
	}
	// Walk back from id to a snapshot.
	var rev []chainRow
	for at := id; ; {
		i, found := byID[at]
		if !found {
			return nil, false, false, nil
		}
		r := &all[i]
		rev = append(rev, *r)
		if r.snap != nil {
			break
		}
		if r.row.parent == "" || r.row.parent >= r.row.id {
			return nil, false, false, nil
		}
		at = r.row.parent
	}
	slices.Reverse(rev)
	return rev, false, true, nil
}

// packedChain is rangeChain through packs: it walks back from id through
// the parents, jumping from pack to pack, and reads the rows between
// packs as the walk reaches them, newest first, until it reaches a row
// with a snapshot. It reports packed false (and reads nothing else) when
// there is no pack to use, ok false when the walk fails or a pack is
// damaged (rangeChain then reads row by row).
//
// The walk stops at the first snapshot on the chain, so it needs neither
// the latest snapshot in id order (a scan of every row back to it, which
// cost more than the rest of the read) nor the packs to lie after it: a
// pack never spans a snapshot (a run ends at one, see nextRun), and the
// walk only uses a pack that ends where the chain is. The packs are read
// newest first as the walk goes (see [packReader]), and each range of rows
// (after the last pack before the walk's position, up to it) is one
// query, read only as far as the walk goes; every row read must be
// verifiable narrow. The history walk reads through packs the same way
// (walker.makePlan).
func (s *SQLite) packedChain(ctx context.Context, cs *chainScanner, id string) (chain []chainRow, packed, ok bool, err error) {
	thread := cs.thread
	packs := &packReader{s: s, thread: thread, upto: id}
	if p, err := packs.below(ctx, id); err != nil || p == nil {
		return nil, false, false, err
	}
	// The range being read: rows after lo (hasLo) up to where the walk
	// entered it, newest first.
	var rng *sql.Rows
	var lo string
	var hasLo bool
	defer func() {
		if rng != nil {
			rng.Close()
		}
	}()
	var rev []chainRow
	for at := id; ; {
		if rng != nil && hasLo && at <= lo {
			// Past the range: closed before the packs below are read,
			// which may take a query (one statement at a time keeps the
			// read on one connection).
			rng.Close()
			rng = nil
		}
		// Within a range the pack below is the one it starts after, read
		// already: no query while the range is open.
		p, err := packs.below(ctx, at)
		if err != nil {
			return nil, true, false, err
		}
		if p != nil && p.last == at {
			// A pack that turns out damaged when rebuild loads it makes
			// the rebuild fail, and values read the chain row by row.
			if !p.typed {
				return nil, true, false, nil
			}
			rev = append(rev, chainRow{row: cpRow{thread: thread, id: p.last, parent: p.parent}, pack: p})
			at = p.parent
			// The range being read, if any, ended at the pack.
			if rng != nil {
				rng.Close()
				rng = nil
			}
			continue
		}
		if rng == nil {
			// The rows after the last pack before at, up to at.
			if hasLo = p != nil; hasLo {
				lo = p.last
				rng, err = s.queryRows(ctx, `SELECT `+narrowColumns+` FROM checkpoints c
					WHERE c.thread = ?1 AND c.id > ?2 AND c.id <= ?3 ORDER BY c.id DESC`, thread, lo, at)
			} else {
				rng, err = s.queryRows(ctx, `SELECT `+narrowColumns+` FROM checkpoints c
					WHERE c.thread = ?1 AND c.id <= ?2 ORDER BY c.id DESC`, thread, at)
			}
			if err != nil {
				rng = nil
				return nil, true, false, err
			}
		}
		// Read down to at (rows of other branches in between are read and
		// left).
		var r chainRow
		found := false
		for rng.Next() {
			l, ok, err := cs.row(rng)
			if err != nil || !ok {
				return nil, true, false, err
			}
			if l.row.id <= at {
				r, found = l, l.row.id == at
				break
			}
		}
		if err := rng.Err(); err != nil {
			return nil, true, false, err
		}
		if !found {
			return nil, true, false, nil
		}
		rev = append(rev, r)
		if r.snap != nil {
			break
		}
		if r.row.parent == "" || r.row.parent >= r.row.id {
			return nil, true, false, nil
		}
		at = r.row.parent
	}
	slices.Reverse(rev)
	return rev, true, true, nil
}

// packReader reads a thread's packs up to a checkpoint newest first, in
// batches as a chain walk asks for them: the walk goes back to a snapshot
// and uses only the packs after it, so reading every pack of the thread
// (as many as its history has) costs more the longer the thread, for
// nothing. Each batch is one query, read to its end and closed.
type packReader struct {
	s      *SQLite
	thread string
	upto   string     // the next batch: packs with last <= upto, or < upto once a batch is read
	buf    []*packRow // newest first; buf[k:] not passed yet
	k      int
	read   bool // a batch was read
	done   bool // no pack is left to read
	batch  int
}

// Batches of packReader: the first, then twice the one before up to the
// most.
const packBatchFirst, packBatchMost = 32, 512

// below returns the newest pack whose run ends at or before at, nil if
// there is none; at must not grow from one call to the next. Packs whose
// last checkpoint is not text (damaged) are passed over: no walk can end
// at them.
func (pr *packReader) below(ctx context.Context, at string) (*packRow, error) {
	for {
		for ; pr.k < len(pr.buf); pr.k++ {
			if p := pr.buf[pr.k]; p.last != "" && p.last <= at {
				return p, nil
			}
		}
		if pr.done {
			return nil, nil
		}
		if err := pr.fetch(ctx); err != nil {
			return nil, err
		}
	}
}

// fetch reads the next batch.
func (pr *packReader) fetch(ctx context.Context) error {
	q := `SELECT ` + packColumns + ` FROM packs WHERE thread = ?1 AND last < ?2 ORDER BY last DESC LIMIT ?3`
	if !pr.read {
		q = `SELECT ` + packColumns + ` FROM packs WHERE thread = ?1 AND last <= ?2 ORDER BY last DESC LIMIT ?3`
	}
	pr.batch = min(max(2*pr.batch, packBatchFirst), packBatchMost)
	rows, err := pr.s.queryRows(ctx, q, pr.thread, pr.upto, pr.batch)
	if err != nil {
		return err
	}
	defer rows.Close()
	pr.buf, pr.k, pr.read = pr.buf[:0], 0, true
	var last any
	for rows.Next() {
		var ps packScan
		if err := rows.Scan(ps.scanArgs()...); err != nil {
			return err
		}
		last = ps.last
		pr.buf = append(pr.buf, ps.row())
	}
	if err := rows.Err(); err != nil {
		return err
	}
	pr.done = len(pr.buf) < pr.batch
	// The next batch starts below the last pack read, by its last as
	// stored.
	if l, ok := last.(string); ok {
		pr.upto = l
	} else {
		pr.done = true // a damaged last: read no further
	}
	return nil
}

// chainRow is a row of a checkpoint's chain with its snapshot. A narrow
// row holds only the columns a chain needs (id, parent, delta, snap_sum)
// and is verified by its link checksum (NULL for a row written before
// checksums) alone; a full row by its row checksum, and its link checksum
// where it has one (so that both reads report the same damage).
type chainRow struct {
	row    cpRow
	snap   []byte
	narrow bool
	link   sql.NullInt64
	// pack is set for a pack (see pack.go), which stands for the rows of
	// its run: row then holds its last checkpoint, the parent of its first
	// and its composed delta, verified when read.
	pack *packRow
}

// verify checks a chain row and its snapshot against their checksums: by
// its link checksum where it has one (the columns a chain uses), else by
// the row's own (rows written before link_sum, and other savers' rows).
func (l *chainRow) verify() error {
	if l.pack != nil {
		if !l.pack.load(l.row.thread) {
			return fmt.Errorf("pack %w", errChecksum)
		}
		l.row.delta = l.pack.delta
		return nil
	}
	r := &l.row
	if !l.link.Valid {
		if l.narrow {
			return nil // no checksum at all (see rangeChain)
		}
		if err := r.verify(); err != nil {
			return err
		}
		return r.verifySnapshot(l.snap)
	}
	return r.verifyLink(l.link, l.snap)
}

// rebuild verifies a chain read back from checkpoint id to the nearest
// snapshot, oldest first, and applies the deltas forward, composed (see
// [composer]). A chain that is broken, or a row that is damaged or does
// not apply, is a *runtime.CorruptError naming that row; where names the
// database in messages.
func rebuild(thread, id, where string, rows []chainRow) (map[string]any, chainStats, error) {
	if values, st, ok := rebuildParallel(rows); ok {
		return values, st, nil
	}
	var st chainStats
	corrupt := func(cp string, err error) error {
		return &runtime.CorruptError{Thread: thread, Checkpoint: cp, Err: err}
	}
	var comp *composer
	var chain []link
	names := &jsonNames{}
	for i := range rows {
		r, snap := &rows[i].row, rows[i].snap
		if rows[i].pack != nil {
			st.Packs++
		} else {
			st.Rows++
		}
		if err := rows[i].verify(); err != nil {
			return nil, st, corrupt(r.id, err)
		}
		st.Bytes += len(r.delta) + len(snap)
		chain = append(chain, link{r.id, r.delta, snap})
		if snap != nil {
			st.Snapshots++
			values, err := decodeSnapshotNames(snap, names)
			if err != nil {
				return nil, st, corrupt(r.id, fmt.Errorf("corrupt snapshot: %w", err))
			}
			comp = newComposer(values)
			continue
		}
		if comp == nil {
			// The oldest row read has no snapshot: its parent is missing.
			switch {
			case r.parent == "":
				return nil, st, corrupt(r.id, fmt.Errorf("the thread's first checkpoint has no snapshot (database %s damaged)", where))
			case r.parent >= r.id:
				return nil, st, corrupt(r.id, fmt.Errorf("its parent %s is not older than it (database %s damaged)", r.parent, where))
			}
			return nil, st, corrupt(r.parent, fmt.Errorf("missing from the database, which checkpoint %s is built on (database %s damaged)", r.id, where))
		}
		d, err := decodeDeltaNames(r.delta, names)
		if err != nil {
			return nil, st, corrupt(r.id, fmt.Errorf("corrupt delta: %w", err))
		}
		if err := comp.add(d); err != nil {
			return nil, st, locate(thread, id, chain, err)
		}
	}
	if st.Rows+st.Packs == 0 {
		return nil, st, fmt.Errorf("checkpoint %q of thread %q: %w", id, thread, runtime.ErrNotFound)
	}
	values, err := comp.result()
	if err != nil {
		return nil, st, locate(thread, id, chain, err)
	}
	return values, st, nil
}

// Thresholds of rebuildParallel: the least stored snapshot, and stored
// deltas and packs, for which decoding them side by side pays for the
// goroutine.
const (
	parallelSnapMin  = 8 << 10
	parallelDeltaMin = 8 << 10
)

// rebuildParallel is rebuild of a long chain (a snapshot, then deltas)
// on two goroutines, on machines with two cores or more: this one decodes
// the snapshot, then composes the deltas in order as they are decoded
// (see [composer]: a run of deltas of one kind is applied once, at the
// end); the other decodes the deltas from the first on. Each claims the
// next delta nobody has, so that this one, once it has composed what is
// decoded, decodes deltas ahead of the other's instead of waiting for
// them (it waits only for the last). It reports false, to let rebuild
// read the chain one row at a time and name what is wrong, on any error,
// and for chains too short to gain.
func rebuildParallel(rows []chainRow) (map[string]any, chainStats, bool) {
	var st chainStats
	if len(rows) < 2 || len(rows[0].snap) < parallelSnapMin || goruntime.GOMAXPROCS(0) < 2 {
		return nil, st, false
	}
	stored := 0
	for i := range rows {
		r := &rows[i]
		if i > 0 && r.snap != nil {
			return nil, st, false
		}
		if r.pack != nil {
			// Loaded (inflated and verified) by the decoders below.
			st.Packs++
			stored += len(r.pack.stored)
			continue
		}
		if err := r.verify(); err != nil {
			return nil, st, false
		}
		st.Rows++
		if i > 0 {
			stored += len(r.row.delta)
		}
	}
	if stored < parallelDeltaMin {
		return nil, st, false
	}
	st.Snapshots = 1
	n := len(rows) - 1
	ds := make([]runtime.Delta, n)
	// decoded[i] is closed once ds[i] is decoded (or failed to).
	decoded := make([]chan struct{}, n)
	for i := range decoded {
		decoded[i] = make(chan struct{})
	}
	var claimed atomic.Int64 // how many deltas the goroutines have claimed, in order
	var failed atomic.Bool
	decode := func(i int, names *jsonNames) {
		defer close(decoded[i])
		r := &rows[i+1]
		var d runtime.Delta
		ok := true
		if r.pack != nil {
			d, ok = r.pack.decodeDelta(r.row.thread, names)
		} else {
			var err error
			d, err = decodeDeltaNames(r.row.delta, names)
			ok = err == nil
		}
		if !ok {
			failed.Store(true)
			return
		}
		ds[i] = d
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		names := &jsonNames{}
		for !failed.Load() {
			i := int(claimed.Add(1)) - 1
			if i >= n {
				return
			}
			decode(i, names)
		}
	}()
	// The other goroutine must be done with the rows before they are
	// returned, or read again by rebuild.
	defer func() { <-done }()
	names := &jsonNames{}
	base, err := decodeSnapshotNames(rows[0].snap, names)
	if err != nil {
		failed.Store(true)
		return nil, st, false
	}
	comp := newComposer(base)
	// Compose the deltas in order as they are ready; while the next one
	// is not, decode one nobody has claimed yet (after those the other
	// goroutine is decoding), and wait only when none is left.
	for next := 0; next < n; {
		if failed.Load() {
			return nil, st, false
		}
		select {
		case <-decoded[next]:
			if failed.Load() || comp.add(ds[next]) != nil {
				failed.Store(true)
				return nil, st, false
			}
			next++
			continue
		default:
		}
		if i := int(claimed.Add(1)) - 1; i < n {
			decode(i, names)
			continue
		}
		<-decoded[next]
	}
	if failed.Load() {
		return nil, st, false
	}
	values, err := comp.result()
	if err != nil {
		return nil, st, false
	}
	for i := range rows {
		if p := rows[i].pack; p != nil {
			st.Bytes += p.size
			continue
		}
		st.Bytes += len(rows[i].row.delta) + len(rows[i].snap)
	}
	return values, st, true
}

// locate finds the row of chain whose delta does not apply, by applying
// the chain again one delta at a time (the composed pass that failed folds
// deltas together and cannot tell). It returns a *runtime.CorruptError
// for it, or for id with err if every delta applies on its own.
func locate(thread, id string, chain []link, err error) error {
	var values map[string]any
	for _, l := range chain {
		if l.snap != nil {
			if values, err = decodeSnapshot(l.snap); err != nil {
				return &runtime.CorruptError{Thread: thread, Checkpoint: l.id, Err: fmt.Errorf("corrupt snapshot: %w", err)}
			}
			continue
		}
		d, derr := decodeDelta(l.delta)
		if derr != nil {
			return &runtime.CorruptError{Thread: thread, Checkpoint: l.id, Err: fmt.Errorf("corrupt delta: %w", derr)}
		}
		if aerr := runtime.ApplyDelta(values, d); aerr != nil {
			return &runtime.CorruptError{Thread: thread, Checkpoint: l.id, Err: fmt.Errorf("its delta does not apply: %w", aerr)}
		}
	}
	return &runtime.CorruptError{Thread: thread, Checkpoint: id, Err: err}
}

func (s *SQLite) pending(ctx context.Context, thread, id string) ([]runtime.PendingWrite, error) {
	rows, err := s.queryRows(ctx, `SELECT seq, node, kind, data, sum FROM writes WHERE thread = ? AND checkpoint = ? ORDER BY seq`, thread, id)
	if err != nil {
		return nil, fmt.Errorf("read pending writes: %w", s.describe(err))
	}
	defer rows.Close()
	var out []runtime.PendingWrite
	for rows.Next() {
		var seq int64
		var node, kind string
		var data []byte
		var sum sql.NullInt64
		if err := rows.Scan(&seq, &node, &kind, &data, &sum); err != nil {
			return nil, fmt.Errorf("read pending writes: %w", s.describe(err))
		}
		w, err := decodeWrite(thread, id, seq, node, kind, data, sum)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// decodeWrite verifies and decodes a writes row.
func decodeWrite(thread, id string, seq int64, node, kind string, data []byte, sum sql.NullInt64) (runtime.PendingWrite, error) {
	var w runtime.PendingWrite
	if sum.Valid && sum.Int64 != writeSum(thread, id, seq, node, kind, data) {
		return w, &runtime.CorruptError{Thread: thread, Checkpoint: id, Err: fmt.Errorf("pending write %d (of node %q): %w", seq, node, errChecksum)}
	}
	if err := decodeJSON(data, &w); err != nil {
		return w, &runtime.CorruptError{Thread: thread, Checkpoint: id, Err: fmt.Errorf("corrupt pending write %d: %w", seq, err)}
	}
	if w.Result != nil {
		for i := range w.Result.Writes {
			w.Result.Writes[i].Value = normalize(w.Result.Writes[i].Value)
		}
		for i := range w.Result.Records {
			w.Result.Records[i] = normalize(w.Result.Records[i])
		}
	}
	if w.Interrupt != nil {
		w.Interrupt.Payload = normalize(w.Interrupt.Payload)
	}
	return w, nil
}

// List implements runtime.Saver. Rows that fail their checks are left out
// and reported in the error, one *runtime.CorruptError each (joined).
func (s *SQLite) List(ctx context.Context, thread string, limit int) ([]*runtime.Checkpoint, error) {
	q := `WHERE c.thread = ? ORDER BY c.id DESC`
	args := []any{thread}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	cps, bad, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	if len(cps) == 0 && len(bad) == 0 {
		if _, err := s.Thread(ctx, thread); err != nil {
			return nil, err
		}
	}
	return cps, joinCorrupt(bad)
}

// query reads checkpoints (without values) and verifies them; the rows
// that fail are returned apart, as errors.
func (s *SQLite) query(ctx context.Context, where string, args ...any) ([]*runtime.Checkpoint, []*runtime.CorruptError, error) {
	rows, err := s.queryRows(ctx, `SELECT `+cpColumns+` FROM checkpoints c LEFT JOIN graphs g ON g.id = c.graph `+where, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
	}
	defer rows.Close()
	var out []*runtime.Checkpoint
	var bad []*runtime.CorruptError
	for rows.Next() {
		var r cpRow
		if err := rows.Scan(r.scanArgs()...); err != nil {
			return nil, nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
		}
		cp, err := r.decode()
		if err != nil {
			bad = append(bad, &runtime.CorruptError{Thread: r.thread, Checkpoint: r.id, Err: err})
			continue
		}
		out = append(out, cp)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
	}
	return out, bad, nil
}

// decode verifies a row and decodes it into a checkpoint without values.
func (r *cpRow) decode() (*runtime.Checkpoint, error) {
	if err := r.verify(); err != nil {
		return nil, err
	}
	cp := &runtime.Checkpoint{Thread: r.thread, ID: r.id, ParentID: r.parent, Step: int(r.step), TurnStep: int(r.turnStep)}
	m := &cp.Metadata
	m.Source = runtime.Source(r.source)
	m.Time = time.Unix(0, r.time).UTC()
	m.Graph, m.GraphHash, m.Version = r.graph, r.graphHash, r.version
	var derr error
	cp.Delta, derr = decodeDelta(r.delta)
	errs := []error{decodeJSON([]byte(r.next), &cp.Next), derr}
	if r.waiting.Valid {
		errs = append(errs, decodeJSON([]byte(r.waiting.String), &cp.Waiting))
	}
	if r.writes.Valid {
		errs = append(errs, decodeJSON([]byte(r.writes.String), &m.Writes))
	}
	if r.usage.Valid {
		errs = append(errs, decodeJSON([]byte(r.usage.String), &m.Usage))
	}
	if r.totals.Valid {
		errs = append(errs, decodeJSON([]byte(r.totals.String), &m.Totals))
	}
	if r.records.Valid {
		errs = append(errs, decodeJSON([]byte(r.records.String), &m.Records))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("corrupt row: %w", err)
	}
	for _, recs := range m.Records {
		for i := range recs {
			recs[i] = normalize(recs[i])
		}
	}
	return cp, nil
}

// Thread implements runtime.Saver.
func (s *SQLite) Thread(ctx context.Context, id string) (*runtime.Thread, error) {
	ts, bad, err := s.threads(ctx, threadByIDSQL, id)
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		return nil, bad[0]
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("thread %q: %w", id, runtime.ErrNotFound)
	}
	return ts[0], nil
}

// Threads implements runtime.Saver. Rows that fail their checks are left
// out and reported in the error, one *runtime.CorruptError each (joined).
func (s *SQLite) Threads(ctx context.Context) ([]*runtime.Thread, error) {
	ts, bad, err := s.threads(ctx, threadLiveSQL+` ORDER BY `+liveUpdatedSQL+` DESC, t.id`)
	if err != nil {
		return nil, err
	}
	return ts, joinCorrupt(bad)
}

// joinCorrupt joins errs, nil when there are none.
func joinCorrupt(errs []*runtime.CorruptError) error {
	if len(errs) == 0 {
		return nil
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}

// threads reads the threads rows of q (threadLiveSQL or threadByIDSQL,
// see follow.go).
func (s *SQLite) threads(ctx context.Context, q string, args ...any) ([]*runtime.Thread, []*runtime.CorruptError, error) {
	rows, err := s.queryRows(ctx, q, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("read threads: %w", s.describe(err))
	}
	defer rows.Close()
	var out []*runtime.Thread
	var bad []*runtime.CorruptError
	for rows.Next() {
		var r threadRow
		var lr liveRow
		if err := rows.Scan(append(r.scanArgs(), lr.scanArgs()...)...); err != nil {
			return nil, nil, fmt.Errorf("read threads: %w", s.describe(err))
		}
		t, err := r.decodeLive(&lr)
		if err != nil {
			bad = append(bad, err.(*runtime.CorruptError))
			continue
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read threads: %w", s.describe(err))
	}
	return out, bad, nil
}

// decode verifies the row and decodes it; a bad row is a
// *runtime.CorruptError.
func (r *threadRow) decode() (*runtime.Thread, error) {
	if err := r.verify(); err != nil {
		return nil, err
	}
	t := runtime.Thread{ID: r.id, Head: r.head, Status: runtime.Status(r.status), Error: r.error,
		Graph: r.graph, GraphHash: r.graphHash, GraphFile: r.graphFile,
		Created: time.Unix(0, r.created).UTC(), Updated: time.Unix(0, r.updated).UTC()}
	if err := json.Unmarshal([]byte(r.config), &t.Config); err != nil {
		return nil, &runtime.CorruptError{Thread: r.id, Err: fmt.Errorf("corrupt config: %w", err)}
	}
	return &t, nil
}
