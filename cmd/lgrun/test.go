package main

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"regexp"
	goruntime "runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lgrun/lgrun/graphtest"
	"github.com/lgrun/lgrun/spec"
)

func newTestCmd(io *IO) *cobra.Command {
	var format, run, output, saver string
	var update, coverage bool
	var parallel int
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "test [FILE|DIR]...",
		Short: "Run graph test files (x.test.yaml beside x.yaml) offline",
		Long: `Run the cases of graph test files: each case gives an input, scripted model
replies and tool results, resume values for interrupts, and expectations
(final state, assertions, path, interrupts, LLM calls, tokens, cost, error).
No network and no API key are needed. Directories are searched for
*.test.yaml files. Cases keep their checkpoints in memory, or with
--saver sqlite each in a fresh SQLite database in a temporary directory
(removed afterwards), so every resume reads the state back from disk.
Exit status: 0 all passed, 1 a case failed, 3 no case failed but a test
file (or its graph) is invalid, 2 usage error.`,
		Example: `  lgrun test graphs/
  lgrun test graphs/support-ticket.test.yaml --run billing
  lgrun test graphs/ --format junit > report.xml
  lgrun test graphs/ --coverage
  lgrun test graphs/ --saver sqlite
  lgrun test graphs/ -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := reconcileFormat(cmd, io, &output, &format, "junit"); err != nil {
				return err
			}
			if parallel < 1 {
				return usagef("--parallel must be at least 1")
			}
			switch graphtest.Saver(saver) {
			case graphtest.SaverMemory, graphtest.SaverSQLite:
			default:
				return usagef("--saver: want memory or sqlite, got %q", saver)
			}
			opts := graphtest.Options{Update: update, Parallel: parallel, Timeout: timeout, Saver: graphtest.Saver(saver)}
			if run != "" {
				re, err := regexp.Compile(run)
				if err != nil {
					return usagef("--run: %v", err)
				}
				opts.Run = re
			}
			if len(args) == 0 {
				args = []string{"."}
			}
			files, err := findTestFiles(args)
			if err != nil {
				return err
			}
			var results []*graphtest.FileResult
			for _, f := range files {
				results = append(results, graphtest.RunFile(cmd.Context(), f, opts))
			}
			switch format {
			case "junit":
				err = writeJUnit(io, results)
			case "json":
				err = writeTestJSON(io, results, coverage)
			default:
				writeTestText(io, results, coverage)
			}
			if err != nil {
				return err
			}
			return testExit(results)
		},
	}
	f := c.Flags()
	f.StringVarP(&format, "format", "f", "", "report format: junit (JUnit XML)")
	_ = c.RegisterFlagCompletionFunc("format", fixedValues("junit"))
	addOutputFlag(c, &output)
	f.StringVar(&run, "run", "", "run only cases whose name (or file/name) matches this regular expression")
	f.BoolVar(&update, "update", false, "rewrite expect.state with the actual final values (the listed fields that differ; every field for state: {})")
	f.BoolVar(&coverage, "coverage", false, "report the nodes and route branches the cases exercised")
	f.IntVar(&parallel, "parallel", goruntime.GOMAXPROCS(0), "cases run at once")
	f.DurationVar(&timeout, "timeout", time.Minute, "time limit per case")
	f.StringVar(&saver, "saver", string(graphtest.SaverMemory), "where cases keep checkpoints: memory, or sqlite (a fresh database file per case)")
	return c
}

// testExit decides the exit status of a test run: a failed case wins over
// a file that does not load.
func testExit(results []*graphtest.FileResult) error {
	invalid := false
	for _, r := range results {
		if r.Diags.HasErrors() {
			invalid = true
			continue
		}
		if r.Failed() {
			return &exitError{code: exitFailed}
		}
	}
	if invalid {
		return &exitError{code: exitInvalid}
	}
	return nil
}

// findTestFiles expands files, directories and globs into *.test.yaml files.
func findTestFiles(args []string) ([]string, error) {
	files, err := expandFiles(args, spec.IsTestFile, "no test files (*.test.yaml) under %s")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if !spec.IsTestFile(f) {
			return nil, usagef("%s is not a test file (name it x.test.yaml for graph x.yaml)", f)
		}
	}
	return files, nil
}

func writeTestText(io *IO, results []*graphtest.FileResult, coverage bool) {
	st := style{on: io.Color}
	w := io.Out
	passed, failed, skipped := 0, 0, 0
	for _, r := range results {
		fmt.Fprintln(w, st.bold(relPath(r.File, io.Cwd)))
		for _, d := range r.Diags {
			fmt.Fprintf(w, "  %s\n", relDiag(d, io.Cwd))
		}
		if r.Diags.HasErrors() {
			failed++
			continue
		}
		for _, c := range r.Cases {
			switch {
			case c.Skipped:
				skipped++
			case c.Passed():
				passed++
				fmt.Fprintf(w, "  %s %s %s\n", st.green("✔"), c.Name, st.dim(formatDur(c.Duration)))
			default:
				failed++
				fmt.Fprintf(w, "  %s %s %s\n", st.red("✘"), c.Name, st.dim(fmt.Sprintf("(%s:%d) %s", relPath(c.Pos.File, io.Cwd), c.Pos.Line, formatDur(c.Duration))))
				for _, f := range c.Failures {
					fmt.Fprintf(w, "      %s\n", strings.ReplaceAll(f, "\n", "\n      "))
				}
			}
		}
		if r.Updated {
			fmt.Fprintf(w, "  %s\n", st.yellow("updated expected states"))
		}
		if coverage && r.Graph != nil {
			writeCoverage(io, r, st)
		}
	}
	line := fmt.Sprintf("%d passed, %d failed", passed, failed)
	if skipped > 0 {
		line += fmt.Sprintf(", %d skipped", skipped)
	}
	fmt.Fprintln(w, line)
}

func writeCoverage(io *IO, r *graphtest.FileResult, st style) {
	w := io.Out
	nodesHit, branchesHit := 0, 0
	for _, hit := range r.Nodes {
		if hit {
			nodesHit++
		}
	}
	for _, hit := range r.Branches {
		if hit {
			branchesHit++
		}
	}
	fmt.Fprintf(w, "  coverage of %s: nodes %d/%d, branches %d/%d\n", r.Graph.Name, nodesHit, len(r.Nodes), branchesHit, len(r.Branches))
	for _, n := range r.Graph.NodeOrder {
		if !r.Nodes[n] {
			fmt.Fprintf(w, "    %s node %s never ran\n", st.yellow("!"), n)
		}
	}
	for _, b := range r.Graph.Branches() {
		if !r.Branches[b.ID] {
			fmt.Fprintf(w, "    %s branch never taken: %s\n", st.yellow("!"), b.Label)
		}
	}
}

type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Tests   int          `xml:"tests,attr"`
	Fails   int          `xml:"failures,attr"`
	Errors  int          `xml:"errors,attr"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name    string      `xml:"name,attr"`
	Tests   int         `xml:"tests,attr"`
	Fails   int         `xml:"failures,attr"`
	Errors  int         `xml:"errors,attr"`
	Skipped int         `xml:"skipped,attr"`
	Time    string      `xml:"time,attr"`
	Cases   []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string     `xml:"name,attr"`
	Classname string     `xml:"classname,attr"`
	File      string     `xml:"file,attr,omitempty"`
	Line      int        `xml:"line,attr,omitempty"`
	Time      string     `xml:"time,attr"`
	Failure   *junitFail `xml:"failure,omitempty"`
	Error     *junitFail `xml:"error,omitempty"`
	Skipped   *struct{}  `xml:"skipped,omitempty"`
}

type junitFail struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

func writeJUnit(io *IO, results []*graphtest.FileResult) error {
	var all junitSuites
	for _, r := range results {
		file := relPath(r.File, io.Cwd)
		s := junitSuite{Name: file}
		var total time.Duration
		if r.Diags.HasErrors() {
			// JUnit has errors only in test cases: an invalid file (or a
			// failed --update) is one erroring case named after the file.
			var msgs []string
			for _, d := range r.Diags.Errors() {
				msgs = append(msgs, relDiag(d, io.Cwd))
			}
			s.Cases = append(s.Cases, junitCase{Name: file, Classname: strings.TrimSuffix(file, ".yaml"), File: file, Time: "0.000",
				Error: &junitFail{Message: msgs[0], Text: strings.Join(msgs, "\n")}})
			s.Tests++
			s.Errors++
		}
		for _, c := range r.Cases {
			total += c.Duration
			jc := junitCase{Name: c.Name, Classname: strings.TrimSuffix(file, ".yaml"), File: file, Line: c.Pos.Line, Time: fmt.Sprintf("%.3f", c.Duration.Seconds())}
			switch {
			case c.Skipped:
				jc.Skipped = &struct{}{}
				s.Skipped++
			case !c.Passed():
				jc.Failure = &junitFail{Message: firstLine(c.Failures[0]), Text: strings.Join(c.Failures, "\n")}
				s.Fails++
			}
			s.Cases = append(s.Cases, jc)
			s.Tests++
		}
		s.Time = fmt.Sprintf("%.3f", total.Seconds())
		all.Tests += s.Tests
		all.Fails += s.Fails
		all.Errors += s.Errors
		all.Suites = append(all.Suites, s)
	}
	if _, err := io.Out.Write([]byte(xml.Header)); err != nil {
		return err
	}
	enc := xml.NewEncoder(io.Out)
	enc.Indent("", "  ")
	if err := enc.Encode(all); err != nil {
		return err
	}
	_, err := io.Out.Write([]byte("\n"))
	return err
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func writeTestJSON(io *IO, results []*graphtest.FileResult, coverage bool) error {
	type caseOut struct {
		Name       string         `json:"name"`
		Line       int            `json:"line"`
		Result     string         `json:"result"`
		Failures   []string       `json:"failures,omitempty"`
		DurationMS float64        `json:"duration_ms"`
		Status     string         `json:"status,omitempty"`
		Path       []string       `json:"path,omitempty"`
		State      map[string]any `json:"state,omitempty"`
	}
	type fileOut struct {
		File        string    `json:"file"`
		Diagnostics []string  `json:"diagnostics,omitempty"`
		Cases       []caseOut `json:"cases"`
		Coverage    any       `json:"coverage,omitempty"`
	}
	out := struct {
		Passed  int       `json:"passed"`
		Failed  int       `json:"failed"`
		Skipped int       `json:"skipped"`
		Files   []fileOut `json:"files"`
	}{}
	for _, r := range results {
		fo := fileOut{File: relPath(r.File, io.Cwd), Cases: []caseOut{}}
		for _, d := range r.Diags {
			fo.Diagnostics = append(fo.Diagnostics, relDiag(d, io.Cwd))
		}
		if r.Diags.HasErrors() {
			out.Failed++
		}
		for _, c := range r.Cases {
			co := caseOut{Name: c.Name, Line: c.Pos.Line, Failures: c.Failures, DurationMS: float64(c.Duration.Microseconds()) / 1000, Status: string(c.Status), Path: c.Path, State: c.Values}
			switch {
			case c.Skipped:
				co.Result = "skipped"
				out.Skipped++
			case c.Passed():
				co.Result = "passed"
				out.Passed++
			default:
				co.Result = "failed"
				out.Failed++
			}
			fo.Cases = append(fo.Cases, co)
		}
		if coverage && r.Graph != nil {
			var nodes, branches []string
			for _, n := range r.Graph.NodeOrder {
				if !r.Nodes[n] {
					nodes = append(nodes, n)
				}
			}
			for _, b := range r.Graph.Branches() {
				if !r.Branches[b.ID] {
					branches = append(branches, b.Label)
				}
			}
			fo.Coverage = map[string]any{"nodes": len(r.Nodes), "branches": len(r.Branches), "nodes_never_run": nodes, "branches_never_taken": branches}
		}
		out.Files = append(out.Files, fo)
	}
	enc := json.NewEncoder(io.Out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
