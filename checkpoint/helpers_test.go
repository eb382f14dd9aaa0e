package checkpoint_test

import (
	"path/filepath"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
)

// MustOpen opens a fresh SQLite saver in tb's temporary directory and
// closes it at the end of the test.
func MustOpen(tb testing.TB, opts *checkpoint.Options) *checkpoint.SQLite {
	tb.Helper()
	return MustOpenPath(tb, filepath.Join(tb.TempDir(), "lgrun.db"), opts)
}

// MustOpenPath opens the saver at path and closes it at the end of the test.
func MustOpenPath(tb testing.TB, path string, opts *checkpoint.Options) *checkpoint.SQLite {
	tb.Helper()
	s, err := checkpoint.OpenSQLite(path, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}
