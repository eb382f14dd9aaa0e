package postgres

import (
	"bytes"
	"fmt"

	"github.com/lgrun/lgrun/checkpoint"
)

// Deltas are stored compressed when that makes them smaller, in the form
// of compressed snapshots ([checkpoint.EncodeSnapshot]): the byte deltaZ,
// then the raw DEFLATE stream of the delta's JSON. PostgreSQL compresses a
// value only in rows over about 2 KB (TOAST), which a step's delta rarely
// is, so without this every delta is stored as its JSON. The row's
// checksum still covers the JSON: the column is decoded when read, before
// the row is verified. JSON never starts with deltaZ, so rows stored plain
// (before this, and small deltas now) read as they are.
const (
	deltaZ    = 0x01
	deltaZMin = 128 // below this DEFLATE rarely gains more than its marker and framing
)

// encodeDelta returns the stored form of a delta's JSON.
func encodeDelta(js []byte) []byte { return checkpoint.Compress(js, deltaZMin) }

// decodeDelta returns the JSON of a stored delta. A compressed delta that
// does not inflate is an error; the caller keeps the stored bytes, which
// then fail the row's checksum (or, in a row from before checksums, the
// delta's decoding) and are reported as a corrupt row.
func decodeDelta(b []byte) ([]byte, error) { return checkpoint.Decompress(b) }

// deltaColumn scans a stored delta into the JSON it holds (see
// [decodeDelta]): a delta that does not decode is kept as stored.
type deltaColumn struct{ p *[]byte }

// Scan implements sql.Scanner, which pgx honours.
func (c deltaColumn) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*c.p = nil
	case []byte:
		js, err := decodeDelta(v)
		if err != nil {
			js = bytes.Clone(v)
		}
		*c.p = js
	case string:
		return c.Scan([]byte(v))
	default:
		return fmt.Errorf("delta column: unexpected %T", src)
	}
	return nil
}
