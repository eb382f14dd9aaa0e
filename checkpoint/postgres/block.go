package postgres

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/jackc/pgx/v5"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// Blocks (layout version 3).
//
// A checkpoints row per checkpoint costs about 290 bytes on this layout
// whatever its delta (the tuple header, three ids, the step numbers, the
// metadata, the checksums) plus its primary-key entry, and compressing
// one step's delta alone leaves most of its bytes. A block holds a run of
// consecutive checkpoints of one chain (each the parent of the next) as
// records, compressed together with DEFLATE: the ids, metadata and the
// messages' repeated words are then stored once per block rather than
// once per checkpoint (35 bytes a checkpoint instead of 290 on
// BenchmarkMessagesThread).
//
// The block a thread is appending to is its row in open_blocks, rewritten
// (recompressed) by each commit. A commit seals it, moving it as it is to
// the insert-only blocks table, when it is full ([blockRows] records,
// [blockBytes] compressed or [blockRaw] raw) or when the new checkpoint
// does not extend it (a fork). A checkpoint with a snapshot ends its
// block: the block is sealed with the snapshot, stored beside its records
// in the snapshot column, so the block holding a checkpoint that a chain
// read starts from, and the blocks back to the nearest snapshot, are the
// only ones read. Sealing and the rewrite are statements of the commit's
// transaction: a commit that fails leaves both tables as they were.
//
// A block's checksum covers its columns and its stored (compressed)
// bytes; every record also keeps its checkpoint's row checksum, so what a
// block decodes to is verified as a checkpoints row is. A damaged block is
// a [runtime.CorruptError] naming its first checkpoint (the newest older
// one is the last good) and the range it holds.
const (
	blockRows  = 32       // records in a block
	blockBytes = 1600     // compressed bytes: the open row stays inline, and its update HOT
	blockRaw   = 32 << 10 // raw bytes, which each commit recompresses
)

// block is a blocks or open_blocks row.
type block struct {
	open                bool
	first, last, parent string
	n                   int
	data                []byte // the records, raw DEFLATE
	snapshot            []byte // the last record's snapshot, stored form; nil for none
	hasSnap             bool   // snapshot is non-nil in the database (it may not have been read)
	sum                 int64
}

// record is a checkpoint in a block: its row (Thread and Parent filled in
// when decoded) and its chain sizes for the snapshot policy.
type record struct {
	row         checkpoint.Row
	chain, base int64
}

// full reports whether a commit must seal b rather than extend it.
func (b *block) full(raw int) bool {
	return b.n >= blockRows || len(b.data) >= blockBytes || raw >= blockRaw
}

// checksum is the block's checksum over its columns and stored bytes.
func (b *block) checksum(thread string) int64 {
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli)) // made once, on first use
	var buf [binary.MaxVarintLen64]byte
	for _, s := range []string{"block/3", thread, b.first, b.last, b.parent} {
		h.Write(binary.AppendUvarint(buf[:0], uint64(len(s))))
		h.Write([]byte(s))
	}
	h.Write(binary.AppendUvarint(buf[:0], uint64(b.n)))
	h.Write(b.data)
	return int64(h.Sum32())
}

// describe names the block in messages.
func (b *block) describe() string {
	if b.n == 1 {
		return fmt.Sprintf("block of checkpoint %s", b.first)
	}
	return fmt.Sprintf("block of the %d checkpoints %s…%s", b.n, b.first, b.last)
}

// corrupt is the error of a damaged block.
func (b *block) corrupt(thread, where string, err error) *runtime.CorruptError {
	which := "sealed"
	if b.open {
		which = "open"
	}
	return &runtime.CorruptError{Thread: thread, Checkpoint: b.first,
		Err: fmt.Errorf("%s %s is damaged (database %s): %w", which, b.describe(), where, err)}
}

// records verifies b and decodes its records, oldest first.
func (b *block) records(thread, where string) ([]record, error) {
	recs, _, err := b.recordsRaw(thread, where)
	return recs, err
}

// recordsRaw is records with their raw encoding.
func (b *block) recordsRaw(thread, where string) ([]record, []byte, error) {
	if b.sum != b.checksum(thread) {
		return nil, nil, b.corrupt(thread, where, errors.New("checksum mismatch"))
	}
	raw, err := inflateBlock(b.data)
	if err != nil {
		return nil, nil, b.corrupt(thread, where, err)
	}
	recs, err := decodeRecords(raw, thread, b.parent, b.n)
	if err != nil {
		return nil, nil, b.corrupt(thread, where, err)
	}
	if recs[0].row.ID != b.first || recs[len(recs)-1].row.ID != b.last {
		return nil, nil, b.corrupt(thread, where, errors.New("its records do not match its first and last ids"))
	}
	return recs, raw, nil
}

// newBlock encodes recs (a run of one chain, oldest first, the first a
// child of parent) as a block of thread.
func newBlock(thread, parent string, recs []record) *block {
	var raw []byte
	for i := range recs {
		raw = appendRecord(raw, &recs[i])
	}
	return rawBlock(thread, parent, recs[0].row.ID, recs[len(recs)-1].row.ID, len(recs), raw)
}

// rawBlock is the block of the n records encoded in raw.
func rawBlock(thread, parent, first, last string, n int, raw []byte) *block {
	b := &block{first: first, last: last, parent: parent, n: n, data: deflateBlock(raw)}
	b.sum = b.checksum(thread)
	return b
}

// The record encoding: strings as a uvarint length and their bytes,
// nullable ones behind a byte 0 (NULL) or 1; integers as uvarints or, for
// the time and the checksums, 8 bytes big-endian (whose high bytes repeat
// from record to record, which DEFLATE finds). The parent is implied (the
// record before, or the block's parent), and so is the thread.
func appendRecord(b []byte, rec *record) []byte {
	r := &rec.row
	b = appendString(b, r.ID)
	b = binary.AppendVarint(b, r.Step)
	b = binary.AppendVarint(b, r.TurnStep)
	b = appendString(b, r.Next)
	b = appendNull(b, r.Waiting)
	b = appendString(b, r.Source)
	b = appendNull(b, r.Writes)
	b = appendString(b, r.Graph)
	b = appendString(b, r.GraphHash)
	b = appendString(b, r.Version)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time))
	b = appendNull(b, r.Usage)
	b = appendNull(b, r.Totals)
	b = appendNull(b, r.Records)
	b = appendInt(b, r.Sum)
	b = appendInt(b, r.SnapSum)
	b = binary.AppendUvarint(b, uint64(rec.chain))
	b = binary.AppendUvarint(b, uint64(rec.base))
	return appendString(b, string(r.Delta))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendNull(b []byte, s sql.NullString) []byte {
	if !s.Valid {
		return append(b, 0)
	}
	return appendString(append(b, 1), s.String)
}

func appendInt(b []byte, n sql.NullInt64) []byte {
	if !n.Valid {
		return append(b, 0)
	}
	return binary.BigEndian.AppendUint64(append(b, 1), uint64(n.Int64))
}

// recordReader reads records back; the first error sticks.
type recordReader struct {
	b   []byte
	err error
}

var errShort = errors.New("a record ends early")

func (d *recordReader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[k:]
	return n
}

func (d *recordReader) varint() int64 {
	if d.err != nil {
		return 0
	}
	n, k := binary.Varint(d.b)
	if k <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[k:]
	return n
}

func (d *recordReader) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	out := d.b[:n:n]
	d.b = d.b[n:]
	return out
}

func (d *recordReader) str() string { return string(d.bytes(d.uvarint())) }

func (d *recordReader) flag() bool {
	b := d.bytes(1)
	if d.err != nil {
		return false
	}
	if b[0] > 1 {
		d.err = fmt.Errorf("bad null flag %d", b[0])
	}
	return b[0] == 1
}

func (d *recordReader) null() sql.NullString {
	if !d.flag() {
		return sql.NullString{}
	}
	return sql.NullString{String: d.str(), Valid: d.err == nil}
}

func (d *recordReader) u64() uint64 {
	b := d.bytes(8)
	if d.err != nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (d *recordReader) int() sql.NullInt64 {
	if !d.flag() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: int64(d.u64()), Valid: d.err == nil}
}

// decodeRecords decodes the n records of raw, the first a child of parent.
func decodeRecords(raw []byte, thread, parent string, n int) ([]record, error) {
	d := &recordReader{b: raw}
	recs := make([]record, 0, n)
	for len(d.b) > 0 && d.err == nil {
		var rec record
		r := &rec.row
		r.Thread, r.Parent = thread, parent
		r.ID = d.str()
		r.Step, r.TurnStep = d.varint(), d.varint()
		r.Next, r.Waiting, r.Source, r.Writes = d.str(), d.null(), d.str(), d.null()
		r.Graph, r.GraphHash, r.Version = d.str(), d.str(), d.str()
		r.Time = int64(d.u64())
		r.Usage, r.Totals, r.Records = d.null(), d.null(), d.null()
		r.Sum, r.SnapSum = d.int(), d.int()
		rec.chain, rec.base = int64(d.uvarint()), int64(d.uvarint())
		r.Delta = bytes.Clone(d.bytes(d.uvarint()))
		if d.err != nil {
			break
		}
		recs = append(recs, rec)
		parent = r.ID
	}
	if d.err != nil {
		return nil, fmt.Errorf("record %d: %w", len(recs)+1, d.err)
	}
	if len(recs) != n || n == 0 {
		return nil, fmt.Errorf("it holds %d records, where its row records %d", len(recs), n)
	}
	return recs, nil
}

// deflateBlock and inflateBlock use the compressors and decompressors
// package checkpoint keeps between values (a DEFLATE writer is about a
// megabyte to make).
func deflateBlock(raw []byte) []byte { return checkpoint.Deflate(raw) }

func inflateBlock(data []byte) ([]byte, error) { return checkpoint.Inflate(data) }

// The columns of a block that scanBlocks reads, from blocks (with or
// without its snapshot's bytes) and from open_blocks.
const (
	sealedColumns     = `sum, n, last, first, parent, data, NULL::bytea, snapshot IS NOT NULL, false`
	sealedSnapColumns = `sum, n, last, first, parent, data, snapshot, snapshot IS NOT NULL, false`
	openColumns       = `sum, n, last, first, parent, data, NULL::bytea, false, true`
)

// scanBlocks reads rows of sealedColumns, sealedSnapColumns or
// openColumns.
func scanBlocks(rows pgx.Rows) ([]*block, error) {
	defer rows.Close()
	var out []*block
	for rows.Next() {
		b := &block{}
		if err := rows.Scan(&b.sum, &b.n, &b.last, &b.first, &b.parent, &b.data, &b.snapshot, &b.hasSnap, &b.open); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// tail verifies b and returns its raw encoding and the chain sizes of its
// last record, without decoding the others (a commit that extends b needs
// no more).
func (b *block) tail(thread, where string) (raw []byte, chain, base int64, err error) {
	if b.sum != b.checksum(thread) {
		return nil, 0, 0, b.corrupt(thread, where, errors.New("checksum mismatch"))
	}
	if raw, err = inflateBlock(b.data); err != nil {
		return nil, 0, 0, b.corrupt(thread, where, err)
	}
	d := &recordReader{b: raw}
	n := 0
	var last []byte
	for len(d.b) > 0 && d.err == nil {
		last = d.bytes(d.uvarint()) // id
		d.varint()
		d.varint()
		d.bytes(d.uvarint()) // next
		d.skipNull()
		d.bytes(d.uvarint()) // source
		d.skipNull()
		for range 3 { // graph, hash, version
			d.bytes(d.uvarint())
		}
		d.u64()
		for range 3 { // usage, totals, records
			d.skipNull()
		}
		d.int()
		d.int()
		chain, base = int64(d.uvarint()), int64(d.uvarint())
		d.bytes(d.uvarint()) // delta
		n++
	}
	switch {
	case d.err != nil:
		err = fmt.Errorf("record %d: %w", n, d.err)
	case n != b.n:
		err = fmt.Errorf("it holds %d records, where its row records %d", n, b.n)
	case string(last) != b.last:
		err = errors.New("its records do not match its first and last ids")
	}
	if err != nil {
		return nil, 0, 0, b.corrupt(thread, where, err)
	}
	return raw, chain, base, nil
}

func (d *recordReader) skipNull() {
	if d.flag() {
		d.bytes(d.uvarint())
	}
}
