package postgres

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"sync"
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
	deltaZ        = 0x01
	deltaZMin     = 128 // below this DEFLATE rarely gains more than its marker and framing
	deltaZMaxSize = 1 << 30
)

// deltaFlaters keeps a few DEFLATE writers (about 800 KB each, mostly
// hash tables) for the commits, which each compress a delta: a sync.Pool
// is emptied by every other garbage collection, and a fresh writer costs
// more to allocate than a step's delta takes to compress.
var deltaFlaters = make(chan *flate.Writer, 2)

func getFlater() *flate.Writer {
	select {
	case w := <-deltaFlaters:
		return w
	default:
		w, _ := flate.NewWriter(nil, flate.BestSpeed)
		return w
	}
}

func putFlater(w *flate.Writer) {
	select {
	case deltaFlaters <- w:
	default:
	}
}

// encodeDelta returns the stored form of a delta's JSON.
func encodeDelta(js []byte) []byte {
	if len(js) < deltaZMin {
		return js
	}
	var buf bytes.Buffer
	buf.Grow(len(js)/2 + 16)
	buf.WriteByte(deltaZ)
	w := getFlater()
	w.Reset(&buf)
	// Writes to a bytes.Buffer do not fail.
	_, _ = w.Write(js)
	_ = w.Close()
	putFlater(w)
	if buf.Len() >= len(js) {
		return js
	}
	return buf.Bytes()
}

var deltaInflaters sync.Pool

// decodeDelta returns the JSON of a stored delta. A compressed delta that
// does not inflate is an error; the caller keeps the stored bytes, which
// then fail the row's checksum (or, in a row from before checksums, the
// delta's decoding) and are reported as a corrupt row.
func decodeDelta(b []byte) ([]byte, error) {
	if len(b) == 0 || b[0] != deltaZ {
		return bytes.Clone(b), nil
	}
	src := bytes.NewReader(b[1:])
	r, _ := deltaInflaters.Get().(io.ReadCloser)
	if r == nil {
		r = flate.NewReader(src)
	} else if err := r.(flate.Resetter).Reset(src, nil); err != nil {
		return nil, err
	}
	defer deltaInflaters.Put(r)
	js, err := io.ReadAll(io.LimitReader(r, deltaZMaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("decompress delta: %w", err)
	}
	if len(js) > deltaZMaxSize {
		return nil, fmt.Errorf("decompress delta: over %d bytes", deltaZMaxSize)
	}
	return js, nil
}

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
