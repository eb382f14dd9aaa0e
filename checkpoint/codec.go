package checkpoint

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"fmt"
	"io"
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
	b, err := marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

func decodeMap(b []byte) (map[string]any, error) {
	if m, ok := fastMap(b); ok {
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
func decodeDelta(b []byte) (runtime.Delta, error) {
	if d, ok := fastDelta(b); ok {
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
func encodeSnapshot(js []byte) []byte {
	if len(js) < compressMin {
		return js
	}
	var buf bytes.Buffer
	buf.Grow(len(js)/4 + 64)
	buf.WriteByte(snapZ)
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

// decodeSnapshot decodes a stored snapshot (compressed or plain JSON).
func decodeSnapshot(b []byte) (map[string]any, error) {
	if len(b) > 0 && b[0] == snapZ {
		r := flate.NewReader(bytes.NewReader(b[1:]))
		js, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("decompress: %w", err)
		}
		b = js
	}
	return decodeMap(b)
}
