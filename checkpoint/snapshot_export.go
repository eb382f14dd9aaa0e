package checkpoint

// EncodeSnapshot returns the stored form of a snapshot's JSON, as the
// SQLite saver stores it: compressed behind a marker byte when that makes
// it smaller (see encodeSnapshot), else the JSON itself. Every saver's
// rebuild ([Rebuild]) reads both forms. For the other SQL savers
// (checkpoint/postgres).
func EncodeSnapshot(js []byte) []byte { return encodeSnapshot(js) }
