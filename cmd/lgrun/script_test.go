package main

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	_ "github.com/mattn/go-sqlite3"
	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the test binary act as the lgrun command inside scripts:
// `exec lgrun ...` runs Main, the same function the real binary runs.
func TestMain(m *testing.M) {
	testscript.Main(cleanupM{m}, map[string]func(){
		"lgrun": func() { os.Exit(Main()) },
	})
}

// cleanupM removes what the package's tests left behind after they ran.
type cleanupM struct{ m *testing.M }

func (c cleanupM) Run() int {
	code := c.m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	return code
}

// TestScripts runs the CLI end to end from testdata/script/*.txtar.
// LGRUN_UPDATE_SCRIPTS=1 rewrites the golden files (cmp targets) in place.
func TestScripts(t *testing.T) {
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join("testdata", "script"),
		UpdateScripts:       os.Getenv("LGRUN_UPDATE_SCRIPTS") == "1",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		// [knownbug] runs scripts that expose open bugs of other packages
		// (they fail until fixed): LGRUN_TEST_KNOWN_BUGS=1.
		Condition: func(cond string) (bool, error) {
			if cond == "knownbug" {
				return os.Getenv("LGRUN_TEST_KNOWN_BUGS") == "1", nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Setup: func(e *testscript.Env) error {
			e.Setenv("REPO", repo)
			e.Setenv("NO_COLOR", "1")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"status":    cmdStatus,
			"jsonvalid": cmdJSONValid,
			"jsonget":   cmdJSONGet,
			"jsoneq":    cmdJSONEq,
			"sqlexec":   cmdSQLExec,
			"replace":   cmdReplace,
			"truncate":  cmdTruncate,
		},
	})
}

// cmdStatus: status CODE COMMAND [ARGS...]
// Like exec, but the command must exit with exactly CODE (testscript's
// `! exec` accepts any failure). Its stdout and stderr are kept for the
// following commands.
func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status CODE COMMAND [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("status: bad exit code %q", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("status: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", args[1], got, want)
	}
}

// cmdJSONValid: jsonvalid [-lines] FILE
// FILE (stdout, stderr or a path) holds one JSON value, or with -lines one
// JSON object per non-empty line.
func cmdJSONValid(ts *testscript.TestScript, neg bool, args []string) {
	lines := len(args) > 0 && args[0] == "-lines"
	if lines {
		args = args[1:]
	}
	if len(args) != 1 {
		ts.Fatalf("usage: jsonvalid [-lines] FILE")
	}
	data := ts.ReadFile(args[0])
	var err error
	if lines {
		n := 0
		for i, l := range strings.Split(data, "\n") {
			if strings.TrimSpace(l) == "" {
				continue
			}
			n++
			var m map[string]any
			if e := json.Unmarshal([]byte(l), &m); e != nil {
				err = fmt.Errorf("line %d: %v: %s", i+1, e, l)
				break
			}
		}
		if err == nil && n == 0 {
			err = fmt.Errorf("no JSON lines")
		}
	} else if !json.Valid([]byte(data)) {
		err = fmt.Errorf("%s is not valid JSON", args[0])
	}
	switch {
	case err != nil && !neg:
		ts.Fatalf("%v", err)
	case err == nil && neg:
		ts.Fatalf("%s is valid JSON", args[0])
	}
}

// jsonAt parses FILE and walks PATH: dot-separated object keys and list
// indices (negative from the end); "#" yields the length of a list or object.
func jsonAt(ts *testscript.TestScript, file, path string) any {
	dec := json.NewDecoder(strings.NewReader(ts.ReadFile(file)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		ts.Fatalf("%s: %v", file, err)
	}
	if path == "" || path == "." {
		return v
	}
	for _, p := range strings.Split(path, ".") {
		switch x := v.(type) {
		case []any:
			if p == "#" {
				v = json.Number(strconv.Itoa(len(x)))
				continue
			}
			i, err := strconv.Atoi(p)
			if err != nil {
				ts.Fatalf("%s: path %s: %q is not a list index", file, path, p)
			}
			if i < 0 {
				i += len(x)
			}
			if i < 0 || i >= len(x) {
				ts.Fatalf("%s: path %s: index %s out of range (length %d)", file, path, p, len(x))
			}
			v = x[i]
		case map[string]any:
			if p == "#" {
				v = json.Number(strconv.Itoa(len(x)))
				continue
			}
			e, ok := x[p]
			if !ok {
				ts.Fatalf("%s: path %s: no key %q", file, path, p)
			}
			v = e
		default:
			ts.Fatalf("%s: path %s: cannot index %T with %q", file, path, v, p)
		}
	}
	return v
}

// cmdJSONGet: jsonget VAR FILE PATH
// Sets $VAR to the value at PATH: strings as they are, others as JSON.
func cmdJSONGet(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: jsonget VAR FILE PATH")
	}
	v := jsonAt(ts, args[1], args[2])
	s, ok := v.(string)
	if !ok {
		b, _ := json.Marshal(v)
		s = string(b)
	}
	ts.Setenv(args[0], s)
}

// cmdJSONEq: jsoneq FILE PATH JSON
// The value at PATH equals the JSON literal (numbers compared by value).
func cmdJSONEq(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: jsoneq FILE PATH JSON")
	}
	got := normJSON(jsonAt(ts, args[0], args[1]))
	dec := json.NewDecoder(strings.NewReader(args[2]))
	dec.UseNumber()
	var want any
	if err := dec.Decode(&want); err != nil {
		ts.Fatalf("jsoneq: want value %q: %v", args[2], err)
	}
	eq := reflect.DeepEqual(got, normJSON(want))
	switch {
	case !eq && !neg:
		b, _ := json.Marshal(got)
		ts.Fatalf("%s %s = %s, want %s", args[0], args[1], b, args[2])
	case eq && neg:
		ts.Fatalf("%s %s = %s", args[0], args[1], args[2])
	}
}

// normJSON turns json.Numbers into float64 so 1 and 1.0 compare equal.
func normJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normJSON(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normJSON(e)
		}
		return out
	}
	return v
}

// cmdReplace: replace OLD NEW FILE
// Replaces every OLD in FILE with NEW; OLD must occur.
func cmdReplace(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: replace OLD NEW FILE")
	}
	data := ts.ReadFile(args[2])
	if !strings.Contains(data, args[0]) {
		ts.Fatalf("replace: %q not found in %s", args[0], args[2])
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[2]), []byte(strings.ReplaceAll(data, args[0], args[1])), 0o644))
}

// cmdTruncate: truncate FILE SIZE
func cmdTruncate(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: truncate FILE SIZE")
	}
	n, err := strconv.ParseInt(args[1], 10, 64)
	ts.Check(err)
	ts.Check(os.Truncate(ts.MkAbs(args[0]), n))
}

// cmdSQLExec: sqlexec DB SQL
// Runs one statement on an SQLite file, to simulate damage and crashes.
func cmdSQLExec(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: sqlexec DB SQL")
	}
	db, err := sql.Open("sqlite3", ts.MkAbs(args[0]))
	ts.Check(err)
	defer db.Close()
	res, err := db.Exec(args[1])
	ts.Check(err)
	n, _ := res.RowsAffected()
	fmt.Fprintf(ts.Stdout(), "%d rows\n", n)
}
