package spec_test

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lgrun/lgrun/builtin"
	"github.com/lgrun/lgrun/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/invalid and testdata/valid")

// repoRoot is the repository root as seen from this package's directory,
// where go test runs.
const repoRoot = ".."

// repoOptions makes the loader read paths relative to the repository root,
// so diagnostics name files as "testdata/invalid/x.yaml" whatever the
// working directory of the test. Mock fixtures are checked by the mock
// provider's checker, as lgrun validate does.
func repoOptions() *spec.Options {
	return &spec.Options{ReadFile: func(path string) ([]byte, error) {
		if !filepath.IsAbs(path) {
			path = filepath.Join(repoRoot, path)
		}
		return os.ReadFile(path)
	}, CheckFixtures: builtin.CheckFixtures}
}

// repoFiles lists the graph files matching pattern (relative to the
// repository root) with paths relative to the root.
func repoFiles(t *testing.T, pattern string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(repoRoot, filepath.FromSlash(pattern)))
	if err != nil {
		t.Fatal(err)
	}
	// Not graphs: mock fixtures and graph test files (as lgrun validate skips them).
	matches = slices.DeleteFunc(matches, func(m string) bool {
		base := filepath.Base(m)
		return strings.Contains(base, ".fixtures.") || strings.Contains(base, ".test.")
	})
	out := make([]string, 0, len(matches))
	for _, m := range matches {
		rel, err := filepath.Rel(repoRoot, m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, filepath.ToSlash(rel))
	}
	return out
}

// render formats diagnostics one per line, as the golden files hold them.
func render(errs spec.ErrorList) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString(e.Error())
		b.WriteByte('\n')
	}
	return b.String()
}

// checkGolden compares got with the golden file beside the graph file, or
// rewrites it under -update.
func checkGolden(t *testing.T, file, got string) {
	t.Helper()
	golden := filepath.Join(repoRoot, filepath.FromSlash(strings.TrimSuffix(file, ".yaml")+".golden"))
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./spec -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("diagnostics differ from %s\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

func TestInvalidGolden(t *testing.T) {
	files := repoFiles(t, "testdata/invalid/*.yaml")
	if len(files) < 40 {
		t.Errorf("only %d invalid graphs; want at least 40", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			g, errs := spec.LoadFile(file, repoOptions())
			if !errs.HasErrors() {
				t.Errorf("%s loads without errors", file)
			}
			if g != nil {
				t.Errorf("%s: LoadFile returned a graph along with errors", file)
			}
			checkDiagnostics(t, file, errs)
			checkGolden(t, file, render(errs))
		})
	}
}

func TestValidGolden(t *testing.T) {
	files := repoFiles(t, "testdata/valid/*.yaml")
	if len(files) == 0 {
		t.Fatal("no valid graphs")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			g, errs := spec.LoadFile(file, repoOptions())
			if errs.HasErrors() || g == nil {
				t.Fatalf("%s does not load:\n%s", file, render(errs))
			}
			checkDiagnostics(t, file, errs)
			warn := strings.Contains(filepath.Base(file), "warn")
			switch {
			case warn && len(errs) == 0:
				t.Errorf("%s is named for a warning but has none", file)
			case !warn && len(errs) > 0:
				t.Errorf("%s has warnings; only files named *warn* may:\n%s", file, render(errs))
			}
			if warn {
				checkGolden(t, file, render(errs))
			}
		})
	}
}

// TestNoStaleGoldens checks that every golden file belongs to a graph that
// the golden tests check, so a renamed test does not leave one behind.
func TestNoStaleGoldens(t *testing.T) {
	for _, dir := range []string{"invalid", "valid"} {
		goldens, err := filepath.Glob(filepath.Join(repoRoot, "testdata", dir, "*.golden"))
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range goldens {
			graph := strings.TrimSuffix(g, ".golden") + ".yaml"
			if _, err := os.Stat(graph); err != nil {
				t.Errorf("%s has no graph %s", g, filepath.Base(graph))
			} else if dir == "valid" && !strings.Contains(filepath.Base(g), "warn") {
				t.Errorf("%s: only graphs named *warn* have a golden in testdata/valid", g)
			}
		}
	}
}

// TestExamplesLoad checks every example graph of the repository.
func TestExamplesLoad(t *testing.T) {
	for _, file := range repoFiles(t, "graphs/*.yaml") {
		_, errs := spec.LoadFile(file, repoOptions())
		if len(errs) > 0 {
			t.Errorf("%s:\n%s", file, render(errs))
		}
	}
}

// checkDiagnostics checks what every diagnostic must satisfy: a position in
// the file it names, a lower-case message without a trailing period.
func checkDiagnostics(t *testing.T, file string, errs spec.ErrorList) {
	t.Helper()
	for _, e := range errs {
		if e.Pos.File == "" {
			t.Errorf("diagnostic without a file: %v", e)
			continue
		}
		src, err := repoOptions().ReadFile(e.Pos.File)
		if err != nil {
			t.Errorf("diagnostic names unreadable file: %v", e)
			continue
		}
		lines := yamlLines(src)
		if e.Pos.Line < 1 || e.Pos.Line > len(lines) || e.Pos.Col < 1 {
			t.Errorf("diagnostic outside %s (%d lines): %v", e.Pos.File, len(lines), e)
		} else if n := utf8.RuneCountInString(lines[e.Pos.Line-1]); e.Pos.Col > n+1 {
			t.Errorf("diagnostic past the end of line %d (%d columns): %v", e.Pos.Line, n, e)
		}
		if e.Msg == "" || strings.HasSuffix(e.Msg, ".") {
			t.Errorf("message empty or ending in a period: %v", e)
		}
		if r := e.Msg[0]; r >= 'A' && r <= 'Z' && !startsWithName(e.Msg) {
			t.Errorf("message not lower-case: %v", e)
		}
	}
}

// startsWithName reports whether msg begins with an upper-case word that is
// a name (START, END, YAML), which may keep its case.
func startsWithName(msg string) bool {
	for _, w := range []string{"START", "END", "YAML"} {
		if strings.HasPrefix(msg, w) {
			return true
		}
	}
	return false
}

// lineBreakRE matches a line break as YAML counts them.
var lineBreakRE = regexp.MustCompile("\r\n|[\r\n\u0085\u2028\u2029]")

// yamlLines splits src into the lines yaml.v3 numbers.
func yamlLines(src []byte) []string {
	return lineBreakRE.Split(string(src), -1)
}
