package checkpoint

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// encoder is a JSON encoder with its buffer, reused through encoders.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

// maxPooledBuf is the largest buffer an encoder keeps for reuse.
const maxPooledBuf = 64 << 10

func marshal(v any) ([]byte, error) {
	if b, ok := fastMarshal(v); ok {
		return b, nil
	}
	return slowMarshal(v)
}

// fastMarshal is marshal through appendJSON, or false (see jsonenc.go).
func fastMarshal(v any) ([]byte, bool) {
	buf := fastBufs.Get().(*[]byte)
	b, ok := appendJSON((*buf)[:0], v)
	var out []byte
	if ok {
		out = bytes.Clone(b)
	}
	if cap(b) <= maxPooledBuf {
		*buf = b[:0]
		fastBufs.Put(buf)
	}
	return out, ok
}

// fastBufs keeps the scratch buffers of fastMarshal.
var fastBufs = sync.Pool{New: func() any { return new([]byte) }}

// slowMarshal is marshal through encoding/json.
func slowMarshal(v any) ([]byte, error) {
	e := encoders.Get().(*encoder)
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		// An encoder that failed midway may hold state: drop it.
		return nil, err
	}
	out := bytes.Clone(bytes.TrimRight(e.buf.Bytes(), "\n"))
	if e.buf.Cap() <= maxPooledBuf {
		encoders.Put(e)
	}
	return out, nil
}

// nullJSON marshals v, or returns nil for empty values.
func nullJSON(v any, empty bool) (any, error) {
	if empty {
		return nil, nil
	}
	if js, ok := fastMarshalString(v); ok {
		return js, nil
	}
	b, err := slowMarshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// fastMarshalString is fastMarshal to a string (one copy, not two).
func fastMarshalString(v any) (string, bool) {
	buf := fastBufs.Get().(*[]byte)
	b, ok := appendJSON((*buf)[:0], v)
	var out string
	if ok {
		out = string(b)
	}
	if cap(b) <= maxPooledBuf {
		*buf = b[:0]
		fastBufs.Put(buf)
	}
	return out, ok
}

func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

func decodeMap(b []byte) (map[string]any, error) { return decodeMapNames(b, nil) }

// decodeMapNames is decodeMap interning short strings in names (nil for a
// fresh table; see [jsonNames]).
func decodeMapNames(b []byte, names *jsonNames) (map[string]any, error) {
	if m, ok := fastMap(b, names); ok {
		return m, nil
	}
	var m map[string]any
	if err := decodeJSON(b, &m); err != nil {
		return nil, err
	}
	normalize(m)
	return m, nil
}

// normalize turns the json.Numbers of a freshly decoded value into int or
// float64 (as [spec.Normalize] does) in place, without copying it: the
// value is owned by the caller. It returns the converted value.
func normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		return spec.Normalize(x)
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
	case map[string]any:
		for k, e := range x {
			switch e.(type) {
			case json.Number, []any, map[string]any:
				x[k] = normalize(e)
			}
		}
	}
	return v
}

// decodeDelta decodes a stored delta, normalized (see [normalizeDelta]).
func decodeDelta(b []byte) (runtime.Delta, error) { return decodeDeltaNames(b, nil) }

// decodeDeltaNames is decodeDelta interning short strings in names (see
// [jsonNames]).
func decodeDeltaNames(b []byte, names *jsonNames) (runtime.Delta, error) {
	if d, ok := fastDelta(b, names); ok {
		return d, nil
	}
	var d runtime.Delta
	if err := decodeJSON(b, &d); err != nil {
		return nil, err
	}
	normalizeDelta(d)
	return d, nil
}

// normalizeDelta normalizes a freshly decoded delta in place. An append or
// messages op of null, which older versions stored for an empty write,
// becomes an empty list: it changes nothing.
func normalizeDelta(d runtime.Delta) {
	for f, op := range d {
		op.Value = normalize(op.Value)
		if op.Value == nil && (op.Kind == runtime.OpAppend || op.Kind == runtime.OpMessages) {
			op.Value = []any{}
		}
		d[f] = op
	}
}

// Snapshots of layout version 3 are compressed: a snapshot of at least
// [compressMin] bytes of JSON is stored as the byte snapZ followed by its
// raw DEFLATE stream (at the fastest level: a snapshot is written on the
// commit path). JSON never starts with that byte, so plain snapshots
// (small ones, older layouts', Postgres's) read as before.
const (
	snapZ       = 0x01
	compressMin = 1 << 10
)

// flaters keeps compressors between snapshots. A compressor is about a
// megabyte to make, so they are not in a sync.Pool (which the collector
// empties, making every snapshot after a collection pay for a new one);
// snapshots are written by one writer at a time per database, so a couple
// are enough.
var flaters = make(chan *flate.Writer, 2)

func getFlater() *flate.Writer {
	select {
	case w := <-flaters:
		return w
	default:
		w, _ := flate.NewWriter(nil, flate.BestSpeed)
		return w
	}
}

func putFlater(w *flate.Writer) {
	select {
	case flaters <- w:
	default:
	}
}

// encodeSnapshot returns the stored form of a snapshot's JSON.
func encodeSnapshot(js []byte) []byte { return Compress(js, compressMin) }

// decodeSnapshot decodes a stored snapshot (compressed or plain JSON).
func decodeSnapshot(b []byte) (map[string]any, error) { return decodeSnapshotNames(b, nil) }

// decodeSnapshotNames is decodeSnapshot interning short strings in names
// (see [jsonNames]).
func decodeSnapshotNames(b []byte, names *jsonNames) (map[string]any, error) {
	var m map[string]any
	err := inflated(b, func(js []byte) (err error) {
		m, err = decodeMapNames(js, names)
		return err
	})
	return m, err
}

// Deltas of layout version 4 are stored as snapshots are: a delta of at
// least [deltaZMin] bytes of JSON is stored compressed (the byte snapZ,
// then its raw DEFLATE stream) when that makes it smaller. A step's delta
// is mostly the values it wrote (a message, a tool result), whose text
// compresses well even alone. Checksums cover the JSON, not the stored
// bytes: a stored delta is inflated when it is read, before its row is
// verified. Deltas of older layouts are plain JSON and read as they are.
const deltaZMin = 128

// maxInflate bounds what one stored value may inflate to, so that a
// damaged stream cannot make a read allocate without end.
const maxInflate = 1 << 30

// encodeDelta returns the stored form of a delta's JSON.
func encodeDelta(js []byte) []byte { return Compress(js, deltaZMin) }

// inflaters keeps DEFLATE readers between values (a reader holds a 32 KiB
// window), inflateBufs the scratch buffers of inflateTo.
var inflaters, inflateBufs sync.Pool

// maxPooledInflate is the largest scratch buffer inflateTo keeps.
const maxPooledInflate = 16 << 20

// inflateTo appends the JSON a stored value (a delta or a snapshot)
// holds to dst: b itself when it is plain, else its inflated stream. A
// stream that does not inflate is an error.
func inflateTo(dst, b []byte) ([]byte, error) {
	if len(b) == 0 || b[0] != snapZ {
		return append(dst, b...), nil
	}
	return inflateStreamTo(dst, b[1:])
}

// inflated calls f with the JSON the stored value b holds: b itself when
// it is plain, else its inflated stream in a scratch buffer that is reused
// once f returns (the decoders copy what they keep). A stream that does
// not inflate is an error, and f is not called.
func inflated(b []byte, f func(js []byte) error) error {
	if len(b) == 0 || b[0] != snapZ {
		return f(b)
	}
	buf, _ := inflateBufs.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	js, err := inflateAppend((*buf)[:0], b[1:])
	if err == nil {
		err = f(js)
	}
	if cap(js) <= maxPooledInflate {
		*buf = js[:0]
		inflateBufs.Put(buf)
	}
	return err
}

// inflateStreamTo appends what the raw DEFLATE stream holds to dst.
func inflateStreamTo(dst, stream []byte) ([]byte, error) {
	if dst == nil {
		// Inflated into a scratch buffer kept between calls, then copied
		// once: growing a fresh buffer would copy it several times over.
		buf, _ := inflateBufs.Get().(*[]byte)
		if buf == nil {
			buf = new([]byte)
		}
		js, err := inflateAppend((*buf)[:0], stream)
		if err != nil {
			return nil, err
		}
		out := bytes.Clone(js)
		if cap(js) <= maxPooledInflate {
			*buf = js[:0]
			inflateBufs.Put(buf)
		}
		return out, nil
	}
	return inflateAppend(dst, stream)
}

// inflateAppend appends what the raw DEFLATE stream b holds to dst.
func inflateAppend(dst, b []byte) ([]byte, error) {
	src := bytes.NewReader(b)
	r, _ := inflaters.Get().(io.ReadCloser)
	if r == nil {
		r = flate.NewReader(src)
	} else if err := r.(flate.Resetter).Reset(src, nil); err != nil {
		return nil, fmt.Errorf("decompress: %w", err)
	}
	defer inflaters.Put(r)
	if cap(dst)-len(dst) < 3*len(b) {
		dst = slices.Grow(dst, 4*len(b))
	}
	for {
		if len(dst) == cap(dst) {
			dst = slices.Grow(dst, len(dst))
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst) > maxInflate {
			return nil, fmt.Errorf("decompress: over %d bytes", maxInflate)
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decompress: %w", err)
		}
	}
}

// deltaColumn scans a stored delta column into the JSON it holds (see
// [inflateTo]). A delta that does not inflate is kept as stored: it then
// fails its row's checksum (or, in a row from before checksums, its
// decoding) and is reported as a corrupt row.
type deltaColumn struct{ p *[]byte }

func (c deltaColumn) Scan(v any) error {
	var b []byte
	switch x := v.(type) {
	case nil:
		*c.p = nil
		return nil
	case []byte:
		b = x
	case string:
		b = []byte(x)
	default:
		return fmt.Errorf("delta column holds %T", v)
	}
	js, err := inflateTo(nil, b)
	if err != nil {
		js = bytes.Clone(b)
	}
	*c.p = js
	return nil
}
