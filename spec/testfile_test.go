package spec_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lgrun/lgrun/spec"
)

// Test files live in testdata/testfiles: g.yaml (and its subgraph
// inner.yaml) is the graph most of them test; invalid/*.test.yaml each hold
// a kind of mistake and the diagnostics in the .golden file beside them
// (go test ./spec -update rewrites those); valid/*.test.yaml load cleanly.
const testfiles = "testdata/testfiles"

func TestTestFileInvalidGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testfiles, "invalid", "*.test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("only %d invalid test files", len(files))
	}
	for _, file := range files {
		file = filepath.ToSlash(file)
		name := strings.TrimSuffix(filepath.Base(file), ".test.yaml")
		t.Run(name, func(t *testing.T) {
			tf, errs := spec.LoadTestFile(file, nil)
			if tf != nil || !errs.HasErrors() {
				t.Fatalf("%s loads without errors (test file %v)", file, tf != nil)
			}
			checkTestFileDiagnostics(t, errs)
			golden := strings.TrimSuffix(file, ".test.yaml") + ".golden"
			got := render(errs)
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
		})
	}
}

// TestTestFileNoStaleGoldens checks that every golden file of the invalid
// test files belongs to one.
func TestTestFileNoStaleGoldens(t *testing.T) {
	goldens, err := filepath.Glob(filepath.Join(testfiles, "invalid", "*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range goldens {
		if _, err := os.Stat(strings.TrimSuffix(g, ".golden") + ".test.yaml"); err != nil {
			t.Errorf("%s has no test file", g)
		}
	}
}

// checkTestFileDiagnostics checks what every diagnostic must satisfy: a
// position inside the file it names (the test file or the graph), a
// lower-case message without a trailing period.
func checkTestFileDiagnostics(t *testing.T, errs spec.ErrorList) {
	t.Helper()
	for _, e := range errs {
		src, err := os.ReadFile(e.Pos.File)
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
		if r := e.Msg[0]; r >= 'A' && r <= 'Z' {
			t.Errorf("message not lower-case: %v", e)
		}
	}
}

func TestTestFileValid(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testfiles, "valid", "*.test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(testfiles, "g.test.yaml"))
	for _, file := range files {
		tf, errs := spec.LoadTestFile(file, nil)
		if len(errs) > 0 || tf == nil {
			t.Errorf("%s:\n%s", file, render(errs))
		}
	}
}

// TestTestFileGraph checks which graph a test file tests: x.yaml for
// x.test.yaml, or the graph: key's file relative to the test file.
func TestTestFileGraph(t *testing.T) {
	tf, errs := spec.LoadTestFile(filepath.Join(testfiles, "g.test.yaml"), nil)
	if errs.HasErrors() {
		t.Fatal(render(errs))
	}
	if tf.Graph.Name != "g" || tf.Graph.File != filepath.Join(testfiles, "g.yaml") {
		t.Errorf("g.test.yaml tests graph %q in %s, want g in g.yaml", tf.Graph.Name, tf.Graph.File)
	}
	if len(tf.Cases) != 1 || tf.Cases[0].Name != "by name" {
		t.Errorf("cases %+v", tf.Cases)
	}

	tf, errs = spec.LoadTestFile(filepath.Join(testfiles, "valid", "full.test.yaml"), nil)
	if errs.HasErrors() {
		t.Fatal(render(errs))
	}
	if tf.Graph.Name != "g" || tf.Graph.File != filepath.Join(testfiles, "g.yaml") {
		t.Errorf("full.test.yaml (graph: ../g.yaml) tests %q in %s", tf.Graph.Name, tf.Graph.File)
	}

	// An absolute graph: path is used as it is.
	abs, err := filepath.Abs(filepath.Join(testfiles, "g.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "abs.test.yaml")
	if err := os.WriteFile(file, []byte("graph: "+abs+"\ncases: [{name: a}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tf, errs = spec.LoadTestFile(file, nil)
	if errs.HasErrors() {
		t.Fatalf("absolute graph path: %s", render(errs))
	}
	if tf.Graph.File != abs {
		t.Errorf("graph %s, want %s", tf.Graph.File, abs)
	}
}

func TestGraphOfTest(t *testing.T) {
	tests := []struct{ in, want string }{
		{"x.test.yaml", "x.yaml"},
		{"graphs/support-ticket.test.yaml", "graphs/support-ticket.yaml"},
		{"a/b.test.yml", "a/b.yml"},
		// Only the file name's suffix counts.
		{"my.test.dir/x.test.yaml", "my.test.dir/x.yaml"},
		{"x.test.test.yaml", "x.test.yaml"},
	}
	for _, tt := range tests {
		if got := spec.GraphOfTest(tt.in); got != tt.want {
			t.Errorf("GraphOfTest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestIsTestFile(t *testing.T) {
	for in, want := range map[string]bool{
		"x.test.yaml":       true,
		"dir/x.test.yml":    true,
		"x.yaml":            false,
		"x.fixtures.yaml":   false,
		"x.test.yaml.bak":   false,
		"my.test.dir/x.yml": false,
		"test.yaml":         false,
	} {
		if got := spec.IsTestFile(in); got != want {
			t.Errorf("IsTestFile(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestTestFileDecode checks what LoadTestFile makes of every key of a case.
func TestTestFileDecode(t *testing.T) {
	file := filepath.Join(testfiles, "valid", "full.test.yaml")
	tf, errs := spec.LoadTestFile(file, nil)
	if errs.HasErrors() {
		t.Fatal(render(errs))
	}
	if len(tf.Cases) != 3 {
		t.Fatalf("%d cases, want 3", len(tf.Cases))
	}
	c := tf.Cases[0]
	eq := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", what, got, want)
		}
	}
	eq("name", c.Name, "everything")
	eq("pos", c.Pos, spec.Pos{File: file, Line: 4, Col: 5})
	eq("description", c.Description, "all the keys")
	eq("turns", c.Turns, []spec.TestTurn{
		{Input: map[string]any{"notes": "first", "tags": "one"}, Resume: []any{"yes"}},
		{},
	})
	// Inputs are writes: one item of an append list and one message stay
	// as written for the reducers.
	eq("input", c.Input, map[string]any{
		"count": 2, "total": 3, "mood": "sad", "tags": "two",
		"messages": map[string]any{"role": "user", "content": "hi"},
		"info":     map[string]any{"a": 1}, "answer": []any{1, "x"},
	})
	eq("models", c.Models, map[string][]any{
		"agent": {
			map[string]any{
				"tool_calls": []any{
					map[string]any{"name": "add", "arguments": map[string]any{"a": 1, "b": 2}},
					map[string]any{"name": "shell", "arguments": `{"bad`},
				},
				"usage": map[string]any{"in": 10, "out": 5},
			},
			map[string]any{"text": "done"},
			map[string]any{"json": map[string]any{"ok": true}},
			map[string]any{"error": "rate limited"},
		},
		"writer": {map[string]any{"text": "written"}},
	})
	eq("tools", c.Tools, map[string][]any{
		"shell":  {"ok", map[string]any{"code": 1}},
		"lookup": {"found it"},
	})
	eq("resume", c.Resume, []any{map[string]any{"approved": true}, nil})
	eq("limits", c.Limits, spec.Limits{Steps: 9, LLMCalls: 4, Tokens: 100, CostUSD: 0.5})

	e := c.Expect
	eq("expect.pos", e.Pos, spec.Pos{File: file, Line: 33, Col: 7})
	eq("expect.status", e.Status, "done")
	eq("expect.has_state", e.HasState, true)
	// Expected values are whole, canonical field values.
	eq("expect.state", e.State, map[string]any{
		"count": 3, "tags": []any{"one", "two"}, "mood": "happy",
		"messages": []any{map[string]any{"id": "", "role": "user", "content": "hi"}},
		"info":     map[string]any{"a": 1}, "answer": nil,
	})
	eq("expect.state pos", e.StatePos["count"], spec.Pos{File: file, Line: 35, Col: 9})
	var asserts []string
	for _, a := range e.Asserts {
		asserts = append(asserts, strings.TrimSpace(a.Src))
	}
	eq("expect.assert", asserts, []string{"state.count == 3", "len(state.tags) == 2"})
	eq("expect.path", e.Path, []string{"agent", "tools", "agent", "ask", "bump", "helper"})
	eq("expect.has_path", e.HasPath, true)
	eq("expect.interrupts", e.Interrupts, []spec.ExpectInterrupt{
		{Node: "ask", When: "node", Payload: 3, HasPayload: true},
		{Node: "helper"},
	})
	eq("expect.has_interrupts", e.HasInts, true)
	if e.LLMCalls == nil || *e.LLMCalls != 4 || e.Tokens == nil || *e.Tokens != 30 || e.CostUSD == nil || *e.CostUSD != 0.25 {
		t.Errorf("llm_calls %v, tokens %v, cost_usd %v; want 4, 30, 0.25", e.LLMCalls, e.Tokens, e.CostUSD)
	}
	if e.Error == nil || !e.Error.MatchString("node: rate exceeded") || e.Error.MatchString("rate") {
		t.Errorf("error regexp %v", e.Error)
	}

	// Nothing expected: nothing is checked beyond the default status.
	n := tf.Cases[1].Expect
	if n.HasState || n.HasPath || n.HasInts || n.Asserts != nil || n.LLMCalls != nil || n.Tokens != nil || n.CostUSD != nil || n.Error != nil || n.Status != "" {
		t.Errorf("case without expect: %+v", n)
	}
	// An empty state and path are expectations too.
	x := tf.Cases[2].Expect
	if !x.HasState || len(x.State) != 0 || !x.HasPath || len(x.Path) != 0 {
		t.Errorf("state: {}, path: [] read as %+v", x)
	}
}

// TestWithStates checks the rewrite behind lgrun test --update.
func TestWithStates(t *testing.T) {
	const src = `# head comment
graph: g.yaml
cases:
  # the first case
  - name: flow
    input: {count: 1}   # an input
    expect:
      state: {count: 5, mood: sad}  # keep me
      path: [agent]
  - name: block
    expect:
      state:
        tags: [a]
        notes: old
  - name: untouched
    expect:
      state: {count: 1}
  - name: none
  - name: empty
    expect:
      state: {}
`
	dir := t.TempDir()
	for name, data := range map[string]string{
		"g.yaml":      "version: 1\nname: g\nstate:\n  count: {type: int}\n  mood: {type: string}\n  tags: {type: list, items: string}\n  notes: {type: string}\nnodes:\n  agent: {kind: noop}\nedges:\n  - {from: START, to: agent}\n  - {from: agent, to: END}\n",
		"g.test.yaml": src,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tf, errs := spec.LoadTestFile(filepath.Join(dir, "g.test.yaml"), nil)
	if errs.HasErrors() {
		t.Fatal(render(errs))
	}
	out, err := tf.WithStates(map[int]map[string]any{
		0: {"count": 7},
		1: {"notes": "new", "count": 2},
		3: {"count": 3},
		4: {"tags": []any{"x", "y"}, "count": 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	const want = `# head comment
graph: g.yaml
cases:
  # the first case
  - name: flow
    input: {count: 1} # an input
    expect:
      state: {count: 7, mood: sad} # keep me
      path: [agent]
  - name: block
    expect:
      state:
        tags: [a]
        notes: new
        count: 2
  - name: untouched
    expect:
      state: {count: 1}
  - name: none
    expect:
      state:
        count: 3
  - name: empty
    expect:
      state:
        count: 1
        tags:
          - x
          - "y"
`
	if string(out) != want {
		t.Errorf("WithStates:\n%s\nwant:\n%s", out, want)
	}

	// Aliased expectations are shared: they are not rewritten.
	src2 := "graph: g.yaml\ncases:\n  - name: a\n    expect: &e\n      state: {count: 1}\n  - name: b\n    expect: *e\n"
	if err := os.WriteFile(filepath.Join(dir, "g.test.yaml"), []byte(src2), 0o644); err != nil {
		t.Fatal(err)
	}
	tf, errs = spec.LoadTestFile(filepath.Join(dir, "g.test.yaml"), nil)
	if errs.HasErrors() {
		t.Fatal(render(errs))
	}
	if _, err := tf.WithStates(map[int]map[string]any{1: {"count": 2}}); err == nil || !strings.Contains(err.Error(), `case "b": expect is an alias`) {
		t.Errorf("rewriting an aliased expect: %v", err)
	}
}

// FuzzLoadTestFile checks LoadTestFile's invariants on arbitrary test files
// (of the graph g.yaml): it never panics; it returns a test file exactly
// when there are no errors; every diagnostic in the test file points into
// it; and rewriting the expected states of a loaded file gives a file that
// loads again.
func FuzzLoadTestFile(f *testing.F) {
	for _, pattern := range []string{testfiles + "/*/*.test.yaml", repoRoot + "/graphs/*.test.yaml"} {
		files, err := filepath.Glob(pattern)
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
	const name = testfiles + "/valid/fuzz.test.yaml"
	f.Fuzz(func(t *testing.T, src []byte) {
		read := func(path string) ([]byte, error) {
			if path == name {
				return src, nil
			}
			return os.ReadFile(path)
		}
		opts := &spec.Options{ReadFile: read}
		tf, errs := spec.LoadTestFile(name, opts)
		if (tf != nil) == errs.HasErrors() {
			t.Fatalf("test file %v with errors:\n%v", tf != nil, errs)
		}
		lines := len(yamlLines(src))
		for _, e := range errs {
			if e.Pos.File == name && (e.Pos.Line < 1 || e.Pos.Line > lines+1 || e.Pos.Col < 1) {
				t.Errorf("diagnostic outside the file (%d lines): %v", lines, e)
			}
			if e.Msg == "" {
				t.Errorf("empty message at %v", e.Pos)
			}
		}
		if tf == nil {
			return
		}
		states := map[int]map[string]any{}
		for i := range tf.Cases {
			states[i] = map[string]any{"count": i, "tags": []any{"a"}}
		}
		out, err := tf.WithStates(states)
		if err != nil {
			return // aliased expectations are refused
		}
		src = out
		if _, errs := spec.LoadTestFile(name, opts); errs.HasErrors() {
			t.Errorf("rewritten file does not load:\n%s\n%v", out, errs)
		}
	})
}
