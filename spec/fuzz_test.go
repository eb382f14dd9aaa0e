package spec_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/lgrun/lgrun/spec"
)

// FuzzLoad checks the loader's invariants on arbitrary input: it never
// panics; it returns a graph exactly when there are no errors; every
// diagnostic points into the file; and the result does not depend on map
// order. Subgraph and fixture files cannot be read, so every input is checked
// on its own.
func FuzzLoad(f *testing.F) {
	for _, pattern := range []string{"graphs/*.yaml", "testdata/*/*.yaml", "testdata/*/*/*.yaml"} {
		files, err := filepath.Glob(filepath.Join(repoRoot, pattern))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			src, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(src)
		}
	}
	opts := &spec.Options{ReadFile: func(string) ([]byte, error) { return nil, fs.ErrNotExist }}
	f.Fuzz(func(t *testing.T, src []byte) {
		g, errs := spec.Parse("fuzz.yaml", src, opts)
		if (g != nil) == errs.HasErrors() {
			t.Fatalf("graph %v with errors:\n%v", g != nil, errs)
		}
		lines := len(yamlLines(src))
		for _, e := range errs {
			if e.Pos.File != "fuzz.yaml" {
				t.Errorf("diagnostic names file %q: %v", e.Pos.File, e)
			}
			if e.Pos.Line < 1 || e.Pos.Line > lines+1 || e.Pos.Col < 1 {
				t.Errorf("diagnostic outside the file (%d lines): %v", lines, e)
			}
			if e.Msg == "" {
				t.Errorf("empty message at %v", e.Pos)
			}
		}
		_, again := spec.Parse("fuzz.yaml", src, opts)
		if errs.Error() != again.Error() {
			t.Errorf("diagnostics differ between two runs:\n%v\n---\n%v", errs, again)
		}
	})
}
