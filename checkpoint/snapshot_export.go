package checkpoint

import "bytes"

// EncodeSnapshot returns the stored form of a snapshot's JSON, as the
// SQLite saver stores it: compressed behind a marker byte when that makes
// it smaller (see encodeSnapshot), else the JSON itself. Every saver's
// rebuild ([Rebuild]) reads both forms. For the other SQL savers
// (checkpoint/postgres).
func EncodeSnapshot(js []byte) []byte { return encodeSnapshot(js) }

// Compress returns js compressed as the savers store snapshots and deltas:
// the marker byte 0x01, then the raw DEFLATE stream at the fastest level.
// It returns js itself when js is shorter than min or when compressing
// does not make it smaller. JSON never starts with the marker, so a reader
// tells the two forms apart by the first byte.
func Compress(js []byte, min int) []byte {
	if len(js) < min {
		return js
	}
	var buf bytes.Buffer
	buf.Grow(len(js)/4 + 64)
	buf.WriteByte(snapZ)
	deflateTo(&buf, js)
	if buf.Len() >= len(js) {
		return js
	}
	return buf.Bytes()
}

// Decompress returns what a value stored by [Compress] holds: a copy of
// the value when it is plain, else its inflated stream (at most 1 GiB). A
// stream that does not inflate is an error.
func Decompress(b []byte) ([]byte, error) { return inflateTo(nil, b) }

// Deflate returns the raw DEFLATE stream of raw, at the fastest level and
// with no marker: for values whose form the caller records itself
// (checkpoint/postgres's blocks). It uses the compressors the savers keep.
func Deflate(raw []byte) []byte {
	var buf bytes.Buffer
	buf.Grow(len(raw)/8 + 64)
	deflateTo(&buf, raw)
	return buf.Bytes()
}

// Inflate returns what the raw DEFLATE stream data holds (the inverse of
// [Deflate]), at most 1 GiB; a stream that does not inflate is an error.
func Inflate(data []byte) ([]byte, error) { return inflateStreamTo(nil, data) }

// deflateTo appends the raw DEFLATE stream of raw to buf.
func deflateTo(buf *bytes.Buffer, raw []byte) {
	w := getFlater()
	w.Reset(buf)
	// Writes to a bytes.Buffer do not fail.
	_, _ = w.Write(raw)
	_ = w.Close()
	putFlater(w)
}
