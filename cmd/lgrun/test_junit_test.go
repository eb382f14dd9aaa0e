package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
)

// The JUnit XML of `lgrun test --format junit`, as CI systems read it.
type junitReport struct {
	XMLName  xml.Name `xml:"testsuites"`
	Tests    int      `xml:"tests,attr"`
	Failures int      `xml:"failures,attr"`
	Errors   int      `xml:"errors,attr"`
	Suites   []struct {
		Name     string `xml:"name,attr"`
		Tests    int    `xml:"tests,attr"`
		Failures int    `xml:"failures,attr"`
		Errors   int    `xml:"errors,attr"`
		Skipped  int    `xml:"skipped,attr"`
		Time     string `xml:"time,attr"`
		Cases    []struct {
			Name      string        `xml:"name,attr"`
			Classname string        `xml:"classname,attr"`
			File      string        `xml:"file,attr"`
			Line      int           `xml:"line,attr"`
			Time      string        `xml:"time,attr"`
			Failure   *junitProblem `xml:"failure"`
			Error     *junitProblem `xml:"error"`
			Skipped   *struct{}     `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

type junitProblem struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// runJUnit runs `lgrun test --format junit ARGS` in dir (the files of the
// test_report script) and parses its output.
func runJUnit(t *testing.T, dir string, wantCode int, args ...string) *junitReport {
	t.Helper()
	var out, errOut bytes.Buffer
	io := &IO{In: strings.NewReader(""), Out: &out, Err: &errOut, Getenv: func(string) string { return "" }, Cwd: dir}
	if code := run(context.Background(), io, append([]string{"test", "--format", "junit"}, args...)); code != wantCode {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, wantCode, errOut.String())
	}
	if errOut.Len() > 0 {
		t.Errorf("stderr: %s", errOut.String())
	}
	if !bytes.HasPrefix(out.Bytes(), []byte(xml.Header)) {
		t.Errorf("no XML header:\n%s", out.String())
	}
	var r junitReport
	dec := xml.NewDecoder(&out)
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("invalid XML: %v\n%s", err, out.String())
	}
	for _, s := range r.Suites {
		for _, tm := range append([]string{s.Time}, func() (ts []string) {
			for _, c := range s.Cases {
				ts = append(ts, c.Time)
			}
			return ts
		}()...) {
			if _, err := strconv.ParseFloat(tm, 64); err != nil {
				t.Errorf("suite %s: time %q is not a number of seconds", s.Name, tm)
			}
		}
	}
	return &r
}

func TestTestJUnit(t *testing.T) {
	ar, err := txtar.ParseFile(filepath.Join("testdata", "script", "test_report.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range ar.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Files are named by absolute paths; the report shows them relative to
	// the working directory (IO.Cwd).
	abs := func(names ...string) []string {
		for i, n := range names {
			names[i] = filepath.Join(dir, n)
		}
		return names
	}

	r := runJUnit(t, dir, 1, abs("bad", "fail.test.yaml", "flow.test.yaml")...)
	if r.Tests != 7 || r.Failures != 2 || r.Errors != 1 || len(r.Suites) != 3 {
		t.Fatalf("tests %d, failures %d, errors %d, %d suites; want 7, 2, 1, 3", r.Tests, r.Failures, r.Errors, len(r.Suites))
	}

	// An invalid test file is one erroring case holding its diagnostics.
	bad := r.Suites[0]
	if bad.Name != "bad/bad.test.yaml" || bad.Tests != 1 || bad.Errors != 1 || bad.Failures != 0 || len(bad.Cases) != 1 {
		t.Errorf("suite of the invalid file: %+v", bad)
	} else if c := bad.Cases[0]; c.Error == nil || c.Failure != nil || c.Name != "bad/bad.test.yaml" || c.File != "bad/bad.test.yaml" {
		t.Errorf("case of the invalid file: %+v", c)
	} else {
		const first = `bad/bad.test.yaml:4:13: error: cases[0] (x).input: graph flow has no state field "nn"; did you mean "n"?`
		const second = `bad/bad.test.yaml:6:25: error: cases[0] (x).expect.assert[0]: invalid operation: > (mismatched types int and string)`
		if c.Error.Message != first || c.Error.Text != first+"\n"+second {
			t.Errorf("error message %q, text:\n%s", c.Error.Message, c.Error.Text)
		}
	}

	// A failing case: the first failure is the message, all of them (diffs
	// included) the text.
	fail := r.Suites[1]
	if fail.Name != "fail.test.yaml" || fail.Tests != 3 || fail.Failures != 2 || fail.Errors != 0 || fail.Skipped != 0 || len(fail.Cases) != 3 {
		t.Fatalf("suite fail.test.yaml: %+v", fail)
	}
	all := fail.Cases[0]
	if all.Name != "all wrong" || all.Classname != "fail.test" || all.File != "fail.test.yaml" || all.Line != 4 || all.Failure == nil || all.Error != nil {
		t.Errorf("case all wrong: %+v", all)
	} else {
		if all.Failure.Message != "status done, want interrupted" {
			t.Errorf("failure message %q", all.Failure.Message)
		}
		for _, want := range []string{
			"status done, want interrupted\nstate.n (line 9):\n    - 3\n    + 2\nstate.tags (line 9):\n",
			"\nassert state.n > 5 (line 10) does not hold\npath:\n  want start → right → left → ask → finish\n  got  start → left → right → ask → finish\n",
			"\ncost_usd: want 0.100000, got 0.000000",
		} {
			if !strings.Contains(all.Failure.Text, want) {
				t.Errorf("failure text lacks %q:\n%s", want, all.Failure.Text)
			}
		}
	}
	if c := fail.Cases[1]; c.Failure == nil || c.Failure.Message != `want an error matching "boom", the run ended interrupted` || c.Line != 17 {
		t.Errorf("case 2: %+v", c)
	}
	if c := fail.Cases[2]; c.Name != "passes" || c.Failure != nil || c.Error != nil || c.Skipped != nil {
		t.Errorf("passing case: %+v", c)
	}
	flow := r.Suites[2]
	if flow.Name != "flow.test.yaml" || flow.Tests != 3 || flow.Failures != 0 || flow.Errors != 0 {
		t.Errorf("suite flow.test.yaml: %+v", flow)
	}

	// Cases --run does not select are skipped.
	r = runJUnit(t, dir, 0, append(abs("flow.test.yaml"), "--run", "approved")...)
	if r.Tests != 3 || r.Failures != 0 || r.Errors != 0 || len(r.Suites) != 1 || r.Suites[0].Skipped != 2 {
		t.Fatalf("with --run: %+v", r)
	}
	for _, c := range r.Suites[0].Cases {
		if (c.Skipped != nil) != (c.Name != "approved") {
			t.Errorf("case %q skipped %v", c.Name, c.Skipped != nil)
		}
	}
}
