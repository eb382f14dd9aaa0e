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
