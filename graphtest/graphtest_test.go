package graphtest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/fail")

// testdata holds small graphs and their test files: every case of
// testdata/*.test.yaml passes; every case of testdata/fail/*.test.yaml
// fails, and the .golden file beside it holds what it reports.

func runFile(t *testing.T, file string, opts Options) *FileResult {
	t.Helper()
	if opts.Parallel == 0 {
		opts.Parallel = 4
	}
	if opts.Timeout == 0 {
		opts.Timeout = time.Minute
	}
	return RunFile(context.Background(), file, opts)
}

func TestPassing(t *testing.T) {
	files, err := filepath.Glob("testdata/*.test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("only %d test files", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			res := runFile(t, file, Options{})
			if len(res.Diags) > 0 {
				t.Fatalf("diagnostics:\n%v", res.Diags)
			}
			if len(res.Cases) == 0 {
				t.Fatal("no cases")
			}
			for _, c := range res.Cases {
				if !c.Passed() {
					t.Errorf("case %q failed:\n%s", c.Name, strings.Join(c.Failures, "\n"))
				}
			}
			if res.Failed() || res.Updated {
				t.Errorf("Failed() = %v, Updated = %v", res.Failed(), res.Updated)
			}
		})
	}
}

// TestCaseResult checks what a case result records besides its failures.
func TestCaseResult(t *testing.T) {
	res := runFile(t, "testdata/flow.test.yaml", Options{})
	byName := map[string]*CaseResult{}
	for _, c := range res.Cases {
		byName[c.Name] = c
	}
	c := byName["approved"]
	if c == nil {
		t.Fatal("no case approved")
	}
	if c.Status != runtime.StatusDone || c.Err != nil || c.Skipped {
		t.Errorf("status %s, err %v, skipped %v", c.Status, c.Err, c.Skipped)
	}
	if want := []string{"start", "left", "right", "ask", "finish"}; !reflect.DeepEqual(c.Path, want) {
		t.Errorf("path %v, want %v", c.Path, want)
	}
	if c.Values["n"] != 2 || c.Values["done"] != true {
		t.Errorf("values %v", c.Values)
	}
	if c.Pos.File != "testdata/flow.test.yaml" || c.Pos.Line != 3 {
		t.Errorf("pos %v", c.Pos)
	}
	w := byName["waits for an answer"]
	if w.Status != runtime.StatusInterrupted || w.Err != nil {
		t.Errorf("waits: status %s, err %v", w.Status, w.Err)
	}
}

func TestFailing(t *testing.T) {
	files, err := filepath.Glob("testdata/fail/*.test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			res := runFile(t, file, Options{})
			if !res.Failed() {
				t.Error("Failed() = false")
			}
			for _, c := range res.Cases {
				if c.Passed() {
					t.Errorf("case %q passed", c.Name)
				}
			}
			got := renderResult(res)
			golden := strings.TrimSuffix(file, ".test.yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./graphtest -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("results differ from %s\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

// renderResult formats a file's result for the golden files: its
// diagnostics, then each case's status, path and failures.
func renderResult(res *FileResult) string {
	var b strings.Builder
	for _, d := range res.Diags {
		fmt.Fprintf(&b, "%v\n", d)
	}
	for _, c := range res.Cases {
		fmt.Fprintf(&b, "=== %s (line %d)\nstatus: %s\npath: %s\n", c.Name, c.Pos.Line, c.Status, strings.Join(c.Path, " "))
		for _, f := range c.Failures {
			fmt.Fprintf(&b, "  %s\n", strings.ReplaceAll(f, "\n", "\n  "))
		}
	}
	return b.String()
}

func TestNoStaleGoldens(t *testing.T) {
	goldens, err := filepath.Glob("testdata/fail/*.golden")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range goldens {
		if _, err := os.Stat(strings.TrimSuffix(g, ".golden") + ".test.yaml"); err != nil {
			t.Errorf("%s has no test file", g)
		}
	}
}

// TestInvalidFile checks that a test file with errors runs no case.
func TestInvalidFile(t *testing.T) {
	res := runFile(t, "testdata/fail/invalid.test.yaml", Options{})
	if !res.Diags.HasErrors() || res.Cases != nil || res.Graph != nil || !res.Failed() {
		t.Errorf("diags %v, cases %v, graph %v, failed %v", res.Diags, res.Cases, res.Graph != nil, res.Failed())
	}
}

// neverCovered lists the nodes and the labels of the branches that no case
// of res exercised.
func neverCovered(res *FileResult) (nodes, branches []string) {
	for _, n := range res.Graph.NodeOrder {
		if !res.Nodes[n] {
			nodes = append(nodes, n)
		}
	}
	for _, b := range res.Graph.Branches() {
		if !res.Branches[b.ID] {
			branches = append(branches, b.Label)
		}
	}
	return nodes, branches
}

func TestCoverage(t *testing.T) {
	tests := []struct {
		file, run    string
		nodes        []string
		branches     []string
		wantBranches int
	}{
		{
			file:         "testdata/flow.test.yaml",
			nodes:        []string{"slow"},
			branches:     []string{"start → slow otherwise"},
			wantBranches: 4,
		},
		{
			// Only the selected cases count. An interrupt node that paused
			// has run.
			file:         "testdata/flow.test.yaml",
			run:          "^waits",
			nodes:        []string{"finish", "slow"},
			branches:     []string{"start → slow otherwise", `ask → finish when state.review.ok == true`, "ask → END otherwise"},
			wantBranches: 4,
		},
		{
			// Earlier turns count too.
			file:         "testdata/flow.test.yaml",
			run:          "second turn",
			nodes:        []string{"slow"},
			branches:     []string{"start → slow otherwise"},
			wantBranches: 4,
		},
		{
			// Nodes and branches of subgraphs are not the graph's.
			file:         "testdata/outer.test.yaml",
			wantBranches: 0,
		},
		{
			file:         "testdata/agent.test.yaml",
			run:          "fixtures",
			nodes:        []string{"tools", "count"},
			branches:     []string{"agent → tools when has_tool_calls(state.messages)"},
			wantBranches: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.file+" "+tt.run, func(t *testing.T) {
			var opts Options
			if tt.run != "" {
				opts.Run = regexp.MustCompile(tt.run)
			}
			res := runFile(t, tt.file, opts)
			if res.Graph == nil {
				t.Fatalf("%v", res.Diags)
			}
			if len(res.Nodes) != len(res.Graph.NodeOrder) || len(res.Branches) != tt.wantBranches {
				t.Errorf("%d nodes, %d branches; want %d, %d", len(res.Nodes), len(res.Branches), len(res.Graph.NodeOrder), tt.wantBranches)
			}
			nodes, branches := neverCovered(res)
			if !reflect.DeepEqual(nodes, tt.nodes) {
				t.Errorf("nodes never run %q, want %q", nodes, tt.nodes)
			}
			if !reflect.DeepEqual(branches, tt.branches) {
				t.Errorf("branches never taken %q, want %q", branches, tt.branches)
			}
		})
	}
}

func TestRunSelects(t *testing.T) {
	tests := []struct {
		run  string
		want []string
	}{
		{"^rejected$", []string{"rejected"}},
		{"a", []string{"approved", "waits for an answer", "rejected", "a second turn on the same thread"}},
		// By file and name.
		{"flow.test.yaml/approved", []string{"approved"}},
		{"^testdata/flow\\.test\\.yaml/(waits|rejected)", []string{"waits for an answer", "rejected"}},
		{"other.test.yaml/", nil},
		{"nothing", nil},
	}
	for _, tt := range tests {
		t.Run(tt.run, func(t *testing.T) {
			res := runFile(t, "testdata/flow.test.yaml", Options{Run: regexp.MustCompile(tt.run)})
			var ran []string
			for _, c := range res.Cases {
				switch {
				case c.Skipped && (c.Status != "" || c.Failures != nil || c.Passed()):
					t.Errorf("skipped case %q has results", c.Name)
				case !c.Skipped:
					ran = append(ran, c.Name)
				}
			}
			if !reflect.DeepEqual(ran, tt.want) {
				t.Errorf("ran %q, want %q", ran, tt.want)
			}
			if len(res.Cases) != 4 || res.Failed() {
				t.Errorf("%d cases, failed %v", len(res.Cases), res.Failed())
			}
		})
	}
}

// copyTestdata copies files of testdata into a new directory.
func copyTestdata(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestUpdate(t *testing.T) {
	dir := copyTestdata(t, "flow.yaml")
	file := filepath.Join(dir, "flow.test.yaml")
	const src = `# Cases of flow.yaml.
cases:
  # Wrong values are rewritten in place, in the style they were written in.
  - name: approved
    resume: [{ok: true}]
    expect:
      state: {n: 5, done: true, tags: [x]}  # n and tags are wrong
      path: [start, left, right, ask, finish]
  - name: right already
    resume: [{ok: true}]
    expect:
      state:
        n: 2
  # An empty state is filled with every field.
  - name: fill
    input: {mode: slow}
    expect:
      state: {}
  - name: no state
    input: {n: 7}
    expect:
      path: [start, left, right]
      status: interrupted
  - name: failing before it runs
    input: {n: 1}
    turns: [{}]
    expect:
      state: {n: 1}
`
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	res := runFile(t, file, Options{Update: true})
	if !res.Updated || res.Diags.HasErrors() {
		t.Fatalf("updated %v, diags %v", res.Updated, res.Diags)
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	const want = `# Cases of flow.yaml.
cases:
  # Wrong values are rewritten in place, in the style they were written in.
  - name: approved
    resume: [{ok: true}]
    expect:
      state: {n: 2, done: true, tags: [start, left, right]} # n and tags are wrong
      path: [start, left, right, ask, finish]
  - name: right already
    resume: [{ok: true}]
    expect:
      state:
        n: 2
  # An empty state is filled with every field.
  - name: fill
    input: {mode: slow}
    expect:
      state:
        done: false
        mode: slow
        n: 1
        review: {}
        tags:
          - start
          - slow
  - name: no state
    input: {n: 7}
    expect:
      path: [start, left, right]
      status: interrupted
  - name: failing before it runs
    input: {n: 1}
    turns: [{}]
    expect:
      state: {n: 1}
`
	if string(got) != want {
		t.Errorf("updated file:\n%s\nwant:\n%s", got, want)
	}

	// The rewritten file passes, except the case whose earlier turn stops,
	// and a second update changes nothing.
	res = runFile(t, file, Options{Update: true})
	for _, c := range res.Cases {
		if c.Passed() != (c.Name != "failing before it runs") {
			t.Errorf("after the update, case %q passed %v: %v", c.Name, c.Passed(), c.Failures)
		}
	}
	if res.Updated {
		t.Error("second update rewrote the file")
	}
	again, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != want {
		t.Errorf("second update changed the file:\n%s", again)
	}
}

// TestUpdateSelected checks that --update rewrites only the cases --run
// selects, and that an update leaves a file without changes alone.
func TestUpdateSelected(t *testing.T) {
	dir := copyTestdata(t, "flow.yaml")
	file := filepath.Join(dir, "flow.test.yaml")
	const src = "cases:\n  - name: a\n    expect: {status: interrupted, state: {n: 0}}\n  - name: b\n    expect: {status: interrupted, state: {n: 0}}\n"
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	res := runFile(t, file, Options{Update: true, Run: regexp.MustCompile("^b$")})
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	const want = "cases:\n  - name: a\n    expect: {status: interrupted, state: {n: 0}}\n  - name: b\n    expect: {status: interrupted, state: {n: 2}}\n"
	if !res.Updated || string(got) != want {
		t.Errorf("updated %v:\n%s\nwant:\n%s", res.Updated, got, want)
	}
}

// TestUpdateWriteError checks that a file that cannot be written is a
// diagnostic of the file, which then fails.
func TestUpdateWriteError(t *testing.T) {
	if os.Getuid() == 0 {
		t.Skip("root writes read-only files")
	}
	dir := copyTestdata(t, "flow.yaml")
	file := filepath.Join(dir, "flow.test.yaml")
	if err := os.WriteFile(file, []byte("cases:\n  - name: a\n    expect: {status: interrupted, state: {n: 0}}\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	res := runFile(t, file, Options{Update: true})
	if res.Updated || !res.Diags.HasErrors() || !res.Failed() || !strings.Contains(res.Diags.Error(), "update: open ") {
		t.Errorf("updated %v, diags %v", res.Updated, res.Diags)
	}
}

// TestParallel runs many cases at once (go test -race checks the sharing)
// and checks the results do not depend on how many run at once.
func TestParallel(t *testing.T) {
	dir := t.TempDir()
	abs, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "graph: %s\ncases:\n", filepath.Join(abs, "agent.yaml"))
	for i := range 24 {
		fmt.Fprintf(&b, `  - name: case %d
    turns: [{input: {messages: {role: user, content: "turn %d"}}}]
    models:
      agent:
        - text: first
        - tool_calls: [{name: add, arguments: {a: %d, b: 1}}, {name: shell}]
        - text: "done %d"
    tools: {shell: [ok]}
    expect:
      state: {rounds: 1}
      path: [agent, tools, count, agent]
      assert: ['state.messages[4].content == "%d"']
`, i, i, i, i, i+1)
		if i%3 == 0 { // and some that fail
			fmt.Fprintf(&b, "      llm_calls: %d\n", 100+i)
		}
	}
	file := filepath.Join(dir, "many.test.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		Name     string
		Status   runtime.Status
		Path     []string
		Values   map[string]any
		Failures []string
	}
	outcomes := func(res *FileResult) []outcome {
		if len(res.Diags) > 0 {
			t.Fatalf("diagnostics:\n%v", res.Diags)
		}
		var out []outcome
		for _, c := range res.Cases {
			out = append(out, outcome{c.Name, c.Status, c.Path, c.Values, c.Failures})
		}
		return out
	}
	serial := outcomes(runFile(t, file, Options{Parallel: 1}))
	parallel := outcomes(runFile(t, file, Options{Parallel: 16}))
	if !reflect.DeepEqual(serial, parallel) {
		t.Errorf("results differ:\nserial   %+v\nparallel %+v", serial, parallel)
	}
	failed := 0
	for _, o := range parallel {
		if len(o.Failures) > 0 {
			failed++
			var i int
			fmt.Sscanf(o.Name, "case %d", &i)
			if want := []string{fmt.Sprintf("llm_calls: want %d, got 3", 100+i)}; !slices.Equal(o.Failures, want) {
				t.Errorf("%s: %q, want %q", o.Name, o.Failures, want)
			}
		}
	}
	if failed != 8 {
		t.Errorf("%d cases failed, want 8", failed)
	}
}

func TestTimeout(t *testing.T) {
	res := runFile(t, "testdata/flow.test.yaml", Options{Timeout: time.Nanosecond})
	for _, c := range res.Cases {
		if c.Passed() || !strings.Contains(strings.Join(c.Failures, "\n"), "the case timed out after 1ns") {
			t.Errorf("case %q: %q", c.Name, c.Failures)
		}
	}
}

func TestDiff(t *testing.T) {
	tests := []struct {
		want, got any
		diff      string
	}{
		{1, 2, "    - 1\n    + 2"},
		{"a", "a", `      "a"`},
		{[]any{"a", "b"}, []any{"b", "a"}, `      [
    -   "a",
        "b",
    +   "a"
      ]`},
		{map[string]any{"k": 1, "x": []any{1}}, map[string]any{"k": 1, "x": []any{}}, `      {
        "k": 1,
    -   "x": [
    -     1
    -   ]
    +   "x": []
      }`},
		{nil, map[string]any{}, "    - null\n    + {}"},
	}
	for _, tt := range tests {
		if got := diff(tt.want, tt.got); got != tt.diff {
			t.Errorf("diff(%v, %v):\n%s\nwant:\n%s", tt.want, tt.got, got, tt.diff)
		}
	}
}

// TestSavers runs every case of every example graph on both savers: all
// pass, and on SQLite each case opens a database of its own in TempDir,
// which is empty again afterwards.
func TestSavers(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "graphs", "*.test.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("example test files: %v %v", files, err)
	}
	for _, saver := range []Saver{SaverMemory, SaverSQLite} {
		t.Run(string(saver), func(t *testing.T) {
			tmp := t.TempDir()
			for _, file := range files {
				res := runFile(t, file, Options{Saver: saver, TempDir: tmp})
				if len(res.Diags) > 0 || len(res.Cases) == 0 {
					t.Fatalf("%s: %d cases, diagnostics:\n%v", file, len(res.Cases), res.Diags)
				}
				for _, c := range res.Cases {
					if !c.Passed() {
						t.Errorf("%s: case %q failed on %s:\n%s", file, c.Name, saver, strings.Join(c.Failures, "\n"))
					}
				}
			}
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("the cases left %d entries in their temporary directory", len(left))
			}
		})
	}
	// Where no database can be made, every SQLite case fails saying so:
	// the cases really run on a database file.
	res := runFile(t, files[0], Options{Saver: SaverSQLite, TempDir: filepath.Join(t.TempDir(), "missing")})
	for _, c := range res.Cases {
		if c.Passed() || !strings.Contains(strings.Join(c.Failures, "\n"), "set up the sqlite saver: create the case's database directory") {
			t.Errorf("case %q without a database directory: %q", c.Name, c.Failures)
		}
	}
	if res := runFile(t, files[0], Options{Saver: "disk"}); !res.Failed() || !strings.Contains(res.Cases[0].Failures[0], `unknown saver "disk"`) {
		t.Errorf("an unknown saver: %v", res.Cases[0].Failures)
	}
}
