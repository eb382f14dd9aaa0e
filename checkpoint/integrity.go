package checkpoint

import (
	"database/sql"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"sync"
	"unsafe"

	"github.com/lgrun/lgrun/runtime"
)

// Row checksums (layout version 2).
//
// Every checkpoint, pending-write and thread row stores a CRC-32C
// (Castagnoli) of its columns, framed (a NULL marker or a length prefix
// per column, integers as 8 bytes) so that moving bytes between columns
// changes the sum. A checkpoint's sum covers every column that determines
// what a read returns: thread, id, parent, step, turn step, next, waiting,
// source, metadata (writes, usage, totals, records, time), the graph's
// name, hash and version (by value, so a damaged graphs row or graph
// reference is caught too), the delta, and the CRC of the snapshot, kept
// in a column of its own (snap_sum) so that List can verify a row without
// reading its snapshot. chain_bytes and base_bytes only steer when the
// next snapshot is taken and are left out. A write's sum covers all its
// columns. Reads verify before decoding and report a mismatch as a
// [runtime.CorruptError] naming the checkpoint.
//
// Why CRC-32C: the threat is accidental damage (a flipped bit or byte, a
// torn or misdirected write), not an adversary. A CRC-32 detects every
// error burst of up to 32 bits — so every flipped byte, with certainty —
// and lets any other damage through with probability 2⁻³², while costing
// well under a nanosecond per byte (SSE4.2 and ARMv8 have instructions for
// it, which hash/crc32 uses): negligible next to JSON decoding. A
// cryptographic hash would add cost and nothing against accidents.
//
// Since layout version 3 a checkpoint row also carries a chain checksum
// (link_sum, see [linkSum]) over only what rebuilding values reads: its
// thread, id, parent, delta and snap_sum. A chain read (Get, History)
// scans those columns of the chain's rows and verifies them by it; the
// row's full sum is verified where the checkpoint itself is returned (its
// Get, List). Damage to a row's metadata is thus reported for that
// checkpoint, and no longer by the reads of the checkpoints built on it,
// which never used it. Rows written before link_sum (migrated from
// version 2) are read in full and verified by their full sum, as before.
//
// Rows written before version 2 have NULL sums and are read unverified.

// castagnoli is the CRC-32C table, made on first use: making it also
// builds hash/crc32's SSE4.2 tables, a fifth of a millisecond that a
// process which never reads or writes a SQLite row (lgrun run --no-db)
// need not pay in its package init. crc32.Update takes its fast path only
// for the very table MakeTable returns.
var castagnoli = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

// errChecksum is the error of a row that fails its checksum.
var errChecksum = errors.New("checksum mismatch: the stored row was changed or damaged after it was written")

// summer accumulates a row checksum over framed column values. The
// frames (a marker byte and a length or an integer) are hashed byte by
// byte here rather than by hash/crc32, whose assembly would make the
// summer escape to the heap (one allocation per checksum); the columns'
// bytes go to hash/crc32.
type summer struct {
	crc uint32
	// t8 is castagnoli8(), fetched on the summer's first frame (a
	// sync.OnceValue call per frame costs as much as the frame).
	t8 *[8][256]uint32
}

func (s *summer) raw(b []byte) { s.crc = crc32.Update(s.crc, castagnoli(), b) }

// tables returns castagnoli8(), fetched once per summer.
func (s *summer) tables() *[8][256]uint32 {
	if s.t8 == nil {
		s.t8 = castagnoli8()
	}
	return s.t8
}

// frame adds a marker byte and, if withValue, the 8 bytes of v big-endian:
// what crc32.Update of those bytes adds. The 8 bytes are hashed at once
// (slicing by 8, as hash/crc32 does without SSE4.2): eight independent
// table lookups instead of eight that wait on each other.
func (s *summer) frame(marker byte, v uint64, withValue bool) {
	t := s.tables()
	crc := ^s.crc
	crc = t[0][byte(crc)^marker] ^ (crc >> 8)
	if withValue {
		crc ^= uint32(bits.ReverseBytes64(v)) // the first four bytes, v's high ones
		crc = t[0][byte(v)] ^ t[1][byte(v>>8)] ^ t[2][byte(v>>16)] ^ t[3][byte(v>>24)] ^
			t[4][crc>>24] ^ t[5][byte(crc>>16)] ^ t[6][byte(crc>>8)] ^ t[7][byte(crc)]
	}
	s.crc = ^crc
}

// castagnoli8 are the slicing-by-8 tables of CRC-32C: [0] is the
// byte-wise table, [k] a byte's contribution k bytes before the end of
// an 8-byte block.
var castagnoli8 = sync.OnceValue(func() *[8][256]uint32 {
	var t [8][256]uint32
	t[0] = *castagnoli()
	for i := range 256 {
		crc := t[0][i]
		for k := 1; k < 8; k++ {
			crc = t[0][byte(crc)] ^ (crc >> 8)
			t[k][i] = crc
		}
	}
	return &t
})

// bytes adds a non-NULL text or blob column.
func (s *summer) bytes(b []byte) {
	s.frame(1, uint64(len(b)), true)
	s.raw(b)
}

// str adds a non-NULL text column (without copying it to a []byte).
func (s *summer) str(v string) { s.bytes(unsafe.Slice(unsafe.StringData(v), len(v))) }

// nullStr adds a nullable text column.
func (s *summer) nullStr(v sql.NullString) {
	if !v.Valid {
		s.null()
		return
	}
	s.str(v.String)
}

func (s *summer) null() { s.frame(0, 0, false) }

func (s *summer) int(v int64) { s.frame(2, uint64(v), true) }

// nullInt adds a nullable integer column.
func (s *summer) nullInt(v sql.NullInt64) {
	if !v.Valid {
		s.null()
		return
	}
	s.int(v.Int64)
}

// cpRow is a checkpoints row as stored (with its graph's row by value).
type cpRow struct {
	thread, id, parent        string
	step, turnStep            int64
	next                      string
	waiting                   sql.NullString
	source                    string
	writes                    sql.NullString
	graph, graphHash, version string
	time                      int64
	usage, totals, records    sql.NullString
	delta                     []byte
	snapSum                   sql.NullInt64
	sum                       sql.NullInt64 // NULL for rows older than layout version 2
	// The thread's state at this checkpoint (layout version 5, see
	// follow.go): its pending-write count, its updated time as
	// nanoseconds after time, and their checksum (see [liveSum]); NULL in
	// older rows and in other savers' rows.
	pending, updatedOff, liveSum sql.NullInt64
}

// checksum returns the row's checksum. A row of layout version 5 (with a
// live_sum) is summed under its own tag with the thread's state columns
// too; older rows and other savers' rows keep the sum of version 2.
func (r *cpRow) checksum() int64 {
	var s summer
	v5 := r.liveSum.Valid
	if v5 {
		s.str("checkpoint/5")
	} else {
		s.str("checkpoint/2")
	}
	s.str(r.thread)
	s.str(r.id)
	s.str(r.parent)
	s.int(r.step)
	s.int(r.turnStep)
	s.str(r.next)
	s.nullStr(r.waiting)
	s.str(r.source)
	s.nullStr(r.writes)
	s.str(r.graph)
	s.str(r.graphHash)
	s.str(r.version)
	s.int(r.time)
	s.nullStr(r.usage)
	s.nullStr(r.totals)
	s.nullStr(r.records)
	s.bytes(r.delta)
	s.nullInt(r.snapSum)
	if v5 {
		s.nullInt(r.pending)
		s.nullInt(r.updatedOff)
		s.int(r.liveSum.Int64)
	}
	return int64(s.crc)
}

// linkSum is the chain checksum of a checkpoints row (column link_sum,
// layout version 3): a CRC-32C of only the columns rebuilding values
// needs (thread, id, parent, delta and the snapshot's checksum), so that a
// chain read scans those and not the metadata, which the row's full sum
// covers (and List, and Get of the checkpoint itself, verify). It is
// stored as a signed 32-bit value (four bytes in SQLite's record format).
func linkSum(thread, id, parent string, delta []byte, snapSum sql.NullInt64) int64 {
	var s summer
	s.str("link/3")
	s.str(thread)
	s.str(id)
	s.str(parent)
	s.bytes(delta)
	s.nullInt(snapSum)
	return int64(int32(s.crc))
}

// verifyLink checks the chain columns of the row (id, parent, delta,
// snap_sum, the thread it was read from) against its link checksum, and
// the snapshot snap against snap_sum.
func (r *cpRow) verifyLink(link sql.NullInt64, snap []byte) error {
	if link.Int64 != linkSum(r.thread, r.id, r.parent, r.delta, r.snapSum) {
		return errChecksum
	}
	if snapshotSum(snap) != r.snapSum {
		return fmt.Errorf("snapshot %w", errChecksum)
	}
	return nil
}

// verify checks the row's checksum; rows without one pass.
func (r *cpRow) verify() error {
	if !r.sum.Valid {
		return nil
	}
	if r.sum.Int64 != r.checksum() {
		return errChecksum
	}
	return nil
}

// snapshotSum is the checksum of a snapshot's bytes, NULL without one.
func snapshotSum(snap []byte) sql.NullInt64 {
	if snap == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: int64(crc32.Checksum(snap, castagnoli())), Valid: true}
}

// verifySnapshot checks a snapshot against the snap_sum of its row (which
// the row's own checksum covers); rows without a checksum pass.
func (r *cpRow) verifySnapshot(snap []byte) error {
	if !r.sum.Valid {
		return nil
	}
	if snapshotSum(snap) != r.snapSum {
		return fmt.Errorf("snapshot %w", errChecksum)
	}
	return nil
}

// threadRow is a threads row as stored. Its checksum covers every column
// but created, which a commit's upsert leaves as first stored (and which
// is only shown, never acted on). pending counts the head's pending-write
// rows, so that a write row that damage moved away (to another checkpoint
// or thread) is missed, not silently dropped; the writes of older
// checkpoints are verified row by row only.
//
// follow (layout version 5, see follow.go) is 1 when the thread's head is
// its greatest checkpoint, whose row then holds the thread's updated time
// and pending count; NULL when the head is the head column. A row with
// follow set is summed under its own tag, with follow.
type threadRow struct {
	id, head, status, error, graph, graphHash, graphFile, config string
	created, updated                                             int64
	pending                                                      sql.NullInt64
	sum                                                          sql.NullInt64 // NULL for rows older than layout version 2
	follow                                                       sql.NullInt64
}

func (r *threadRow) checksum() int64 {
	var s summer
	if r.follow.Valid {
		s.str("thread/5")
	} else {
		s.str("thread/2")
	}
	s.str(r.id)
	s.str(r.head)
	s.str(r.status)
	s.str(r.error)
	s.str(r.graph)
	s.str(r.graphHash)
	s.str(r.graphFile)
	s.str(r.config)
	s.int(r.updated)
	s.nullInt(r.pending)
	if r.follow.Valid {
		s.int(r.follow.Int64)
	}
	return int64(s.crc)
}

// threadColumns are the columns of a threads row t, in the order of
// threadRow.scanArgs.
const threadColumns = `t.id, t.head, t.status, t.error, t.graph, t.graph_hash, t.graph_file, t.config, t.created, t.updated, t.pending, t.sum, t.follow`

func (r *threadRow) scanArgs() []any {
	return []any{&r.id, &r.head, &r.status, &r.error, &r.graph, &r.graphHash, &r.graphFile, &r.config, &r.created, &r.updated, &r.pending, &r.sum, &r.follow}
}

// verify checks the row's checksum; rows without one pass.
func (r *threadRow) verify() error {
	if r.sum.Valid && r.sum.Int64 != r.checksum() {
		return &runtime.CorruptError{Thread: r.id, Err: fmt.Errorf("its row (head, status, settings) fails its check: %w", errChecksum)}
	}
	return nil
}

// writeSum is the checksum of a writes row.
func writeSum(thread, checkpoint string, seq int64, node, kind string, data []byte) int64 {
	var s summer
	s.str("write/2")
	s.str(thread)
	s.str(checkpoint)
	s.int(seq)
	s.str(node)
	s.str(kind)
	s.bytes(data)
	return int64(s.crc)
}

// nullString makes the sql.NullString of a value bound as a nullable text
// column (nil or a string).
func nullString(v any) sql.NullString {
	if v == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: v.(string), Valid: true}
}
