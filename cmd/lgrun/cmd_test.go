package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/lgrun/lgrun/runtime"
)

func TestParseJSONValue(t *testing.T) {
	tests := []struct {
		in      string
		want    any
		wantErr string
	}{
		{in: "", want: ""},
		{in: "  ", want: "  "},
		{in: "5", want: 5},
		{in: " 5 ", want: 5},
		{in: "-3", want: -3},
		{in: "1.5", want: 1.5},
		{in: "1e3", want: 1000.0},
		{in: "9007199254740993", want: 9007199254740993},
		{in: "true", want: true},
		{in: "false", want: false},
		{in: "null", want: nil},
		{in: `"x"`, want: "x"},
		{in: `"5"`, want: "5"},
		{in: `[1, "a", null]`, want: []any{1, "a", nil}},
		{in: `{"a": {"b": [2.5]}}`, want: map[string]any{"a": map[string]any{"b": []any{2.5}}}},
		// Text that is not JSON is a string, kept as written.
		{in: "hello", want: "hello"},
		{in: "hello world", want: "hello world"},
		{in: "True", want: "True"},
		{in: "5abc", want: "5abc"},
		{in: "1 2", want: "1 2"},
		{in: "-", want: "-"},
		// Text that looks like JSON but is broken is an error, not a string.
		{in: "{bad", wantErr: "not valid JSON"},
		{in: "[1,", wantErr: "not valid JSON"},
		{in: `"unterminated`, wantErr: "not valid JSON"},
		{in: `{"a": 1} ]`, wantErr: "trailing data"},
		{in: `[1] [2]`, wantErr: "trailing data"},
		// Numbers no float64 holds would become +Inf, which cannot be saved.
		{in: "1e400", wantErr: "number 1e400 is out of range"},
		{in: `[1, -1e999]`, wantErr: "out of range"},
		{in: `{"x": 1e400}`, wantErr: "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseJSONValue(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseJSONValue(%q) = %#v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseJSONValue(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseJSONValue(%q) = %#v (%T), want %#v (%T)", tt.in, got, got, tt.want, tt.want)
			}
		})
	}
}

func TestParseSets(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    []runtime.Write
		wantErr string
	}{
		{name: "none", in: nil, want: nil},
		{name: "int", in: []string{"count=3"}, want: []runtime.Write{{Field: "count", Value: 3}}},
		{name: "string", in: []string{"topic=the roadmap"}, want: []runtime.Write{{Field: "topic", Value: "the roadmap"}}},
		{name: "quoted", in: []string{`topic="5"`}, want: []runtime.Write{{Field: "topic", Value: "5"}}},
		{name: "empty value", in: []string{"topic="}, want: []runtime.Write{{Field: "topic", Value: ""}}},
		{name: "value with =", in: []string{"expr=a=b"}, want: []runtime.Write{{Field: "expr", Value: "a=b"}}},
		{name: "object", in: []string{`review={"approved": true}`}, want: []runtime.Write{{Field: "review", Value: map[string]any{"approved": true}}}},
		{name: "order kept", in: []string{"b=1", "a=2", "b=3"}, want: []runtime.Write{{Field: "b", Value: 1}, {Field: "a", Value: 2}, {Field: "b", Value: 3}}},
		{name: "no =", in: []string{"count"}, wantErr: `--set "count": want field=JSON`},
		{name: "no field", in: []string{"=3"}, wantErr: `--set "=3": want field=JSON`},
		{name: "bad JSON", in: []string{"x=[1,"}, wantErr: "--set x: not valid JSON"},
		{name: "second bad", in: []string{"x=1", "y"}, wantErr: `--set "y"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSets(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseSets(%q) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				if code := exitCode(context.Background(), err); code != exitUsage {
					t.Errorf("exit code %d, want %d (usage)", code, exitUsage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseSets(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "in.json")
	if err := os.WriteFile(file, []byte(`{"topic": "from file", "n": 2}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		input   string
		sets    []string
		want    map[string]any
		wantErr string
	}{
		{name: "nothing", want: map[string]any{}},
		{name: "object", input: `{"count": 1, "log": ["a"]}`, want: map[string]any{"count": 1, "log": []any{"a"}}},
		{name: "empty object", input: `{}`, want: map[string]any{}},
		{name: "file", input: "@" + file, want: map[string]any{"topic": "from file", "n": 2}},
		{name: "set overrides input", input: `{"count": 1, "x": 2}`, sets: []string{"count=5"}, want: map[string]any{"count": 5, "x": 2}},
		{name: "sets only", sets: []string{"a=1", "b=two"}, want: map[string]any{"a": 1, "b": "two"}},
		{name: "list", input: `[1]`, wantErr: "--input: want a JSON object of field values, got list"},
		{name: "string", input: `"x"`, wantErr: "got string"},
		{name: "not JSON", input: `count=1`, wantErr: "--input: not valid JSON"},
		{name: "broken", input: `{"a": `, wantErr: "--input: not valid JSON"},
		{name: "trailing", input: `{} {}`, wantErr: "trailing data"},
		{name: "missing file", input: "@" + filepath.Join(dir, "nope.json"), wantErr: "--input: open "},
		{name: "bad set", input: `{}`, sets: []string{"oops"}, wantErr: `--set "oops"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseInput(&IO{}, tt.input, tt.sets)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseInput error = %v, want %q", err, tt.wantErr)
				}
				if code := exitCode(context.Background(), err); code != exitUsage {
					t.Errorf("exit code %d, want %d (usage)", code, exitUsage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseInput = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestExpandGraphArgs(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{
		"a.yaml", "b.yml", "notes.txt", "x.test.yaml", "x.fixtures.yaml",
		"sub/c.yaml", "sub/deep/d.yaml", "empty/readme.md",
	} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	j := func(p ...string) string { return filepath.Join(append([]string{dir}, p...)...) }
	tests := []struct {
		name    string
		args    []string
		want    []string
		wantErr string
	}{
		{name: "file", args: []string{j("a.yaml")}, want: []string{j("a.yaml")}},
		{name: "named test file is kept", args: []string{j("x.test.yaml")}, want: []string{j("x.test.yaml")}},
		{name: "named non-yaml file is kept", args: []string{j("notes.txt")}, want: []string{j("notes.txt")}},
		{name: "dir walks, keeps test files, skips fixtures", args: []string{dir}, want: []string{j("a.yaml"), j("b.yml"), j("sub", "c.yaml"), j("sub", "deep", "d.yaml"), j("x.test.yaml")}},
		{name: "glob", args: []string{j("*.y*ml")}, want: []string{j("a.yaml"), j("b.yml"), j("x.fixtures.yaml"), j("x.test.yaml")}},
		{name: "glob matching a dir", args: []string{j("su?")}, want: []string{j("sub", "c.yaml"), j("sub", "deep", "d.yaml")}},
		{name: "duplicates once, sorted", args: []string{j("sub", "c.yaml"), j("a.yaml"), j("sub"), j("a.yaml")}, want: []string{j("a.yaml"), j("sub", "c.yaml"), j("sub", "deep", "d.yaml")}},
		{name: "missing file", args: []string{j("nope.yaml")}, wantErr: "nope.yaml: no such file or directory"},
		{name: "glob without match", args: []string{j("*.json")}, wantErr: "matches no files"},
		{name: "bad glob", args: []string{j("[")}, wantErr: "bad glob"},
		{name: "dir without graphs", args: []string{j("empty")}, wantErr: "holds no graph files"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := expandGraphArgs(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("expandGraphArgs = %v, %v; want error %q", got, err, tt.wantErr)
				}
				if code := exitCode(context.Background(), err); code != exitUsage {
					t.Errorf("exit code %d, want %d (usage)", code, exitUsage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("expandGraphArgs =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	background := context.Background()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	stepLimit := &runtime.StepLimitError{Limit: 3, Step: 3, Nodes: []string{"n"}}
	budget := &runtime.BudgetError{What: "tokens", Limit: "10", Used: "12"}
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want int
	}{
		{"nil", background, nil, exitOK},
		{"nil after a signal", cancelled, nil, exitOK},
		{"plain error", background, errors.New("boom"), exitFailed},
		{"node error", background, &runtime.NodeError{Node: "n", Err: errors.New("boom")}, exitFailed},
		{"exitError", background, &exitError{code: 1}, 1},
		{"exitError code kept", background, fmt.Errorf("wrapped: %w", &exitError{code: 7}), 7},
		{"usage", background, usagef("bad flag"), exitUsage},
		{"wrapped usage", background, fmt.Errorf("x: %w", usagef("bad")), exitUsage},
		{"missing --value", background, fmt.Errorf("thread waits: %w", runtime.ErrNeedValue), exitUsage},
		{"invalid graph", background, invalidGraph{n: 2}, exitInvalid},
		{"paused", background, pausedError{}, exitPaused},
		{"step limit", background, stepLimit, exitLimit},
		{"step limit with hint", background, &hintError{stepLimit, "resume"}, exitLimit},
		{"budget", background, budget, exitLimit},
		{"budget in a node", background, &runtime.NodeError{Node: "llm", Err: budget}, exitLimit},
		{"conflict", background, fmt.Errorf("commit: %w", runtime.ErrConflict), exitConflict},
		{"signal", cancelled, fmt.Errorf("run cancelled: %w", context.Canceled), exitInterrupt},
		{"signal with hint", cancelled, &hintError{fmt.Errorf("run cancelled: %w", context.Canceled), "resume"}, exitInterrupt},
		{"canceled without a signal", background, context.Canceled, exitFailed},
		{"other error after a signal", cancelled, errors.New("boom"), exitFailed},
		{"usage wins over a signal", cancelled, usagef("bad"), exitUsage},
		{"new input to a paused thread", background, &runtime.PausedError{Thread: "t"}, exitState},
		{"new input to an unfinished thread", background, fmt.Errorf("x: %w", runtime.ErrUnfinished), exitState},
		{"graph changed (strict)", background, fmt.Errorf("x: %w", runtime.ErrGraphChanged), exitFailed},
		{"nothing to resume", background, fmt.Errorf("x: %w", runtime.ErrNothingToResume), exitState},
		{"--value not needed", background, fmt.Errorf("x: %w", runtime.ErrValueNotNeeded), exitState},
		{"reworded --no-db limit", background, &rewordedError{stepLimit, "nothing saved"}, exitLimit},
		{"not found", background, fmt.Errorf("x: %w", runtime.ErrNotFound), exitFailed},
		{"corrupt checkpoint", background, fmt.Errorf("load thread: %w", &runtime.CorruptError{Thread: "t", Checkpoint: "c", Err: errors.New("checksum mismatch")}), exitCorrupt},
		{"corrupt checkpoints listed", background, errors.Join(&runtime.CorruptError{Thread: "t", Checkpoint: "a"}, &runtime.CorruptError{Thread: "t", Checkpoint: "b"}), exitCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.ctx, tt.err); got != tt.want {
				t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

// runCLI runs the command in-process through the IO seam.
func runCLI(t *testing.T, color bool, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cwd, _ := os.Getwd()
	io := &IO{
		In: strings.NewReader(""), Out: &out, Err: &errb, Color: color, Cwd: cwd,
		Getenv: func(k string) string { return env[k] },
	}
	code = run(context.Background(), io, args)
	return out.String(), errb.String(), code
}

func TestRunSeam(t *testing.T) {
	db := filepath.Join(t.TempDir(), "db")
	env := map[string]string{"LGRUN_DB": db}
	loop := filepath.Join("..", "..", "graphs", "loop.yaml")

	// Colour only when the IO says so; the text is the same without it.
	plain, _, code := runCLI(t, false, env, "run", loop, "-t", "plain")
	if code != exitOK || strings.Contains(plain, "\x1b[") {
		t.Fatalf("plain run: exit %d, output %q", code, plain)
	}
	colored, _, code := runCLI(t, true, env, "run", loop, "-t", "colored")
	if code != exitOK || !strings.Contains(colored, "\x1b[") {
		t.Fatalf("colour run: exit %d, output %q", code, colored)
	}

	// Every error is printed once, with the usage hint only for usage errors.
	_, stderr, code := runCLI(t, false, env, "resume")
	if code != exitUsage || stderr != "lgrun: resume needs --thread\nrun 'lgrun --help' for usage\n" {
		t.Errorf("resume without --thread: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = runCLI(t, false, env, "state", "-t", "nosuch")
	if code != exitFailed || strings.Count(stderr, "\n") != 1 || strings.Contains(stderr, "--help") {
		t.Errorf("state of a missing thread: exit %d, stderr %q", code, stderr)
	}

	// --db wins over LGRUN_DB.
	other := filepath.Join(t.TempDir(), "other.db")
	out, _, code := runCLI(t, false, env, "--db", other, "threads")
	if code != exitOK || strings.Contains(out, "plain") {
		t.Errorf("threads --db other: exit %d, output %q", code, out)
	}
	out, _, _ = runCLI(t, false, env, "threads")
	if !strings.Contains(out, "plain") || !strings.Contains(out, "colored") {
		t.Errorf("threads: %q", out)
	}
}

func TestIsTerminal(t *testing.T) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if isTerminal(null) {
		t.Error("isTerminal(/dev/null) = true")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Error("isTerminal(regular file) = true")
	}
}

// TestEveryCommandHasAnExample walks the command tree: every command of
// lgrun's own (not cobra's help and completion) shows an example in its help.
func TestEveryCommandHasAnExample(t *testing.T) {
	root := newRootCmd(&IO{Out: &bytes.Buffer{}, Err: &bytes.Buffer{}, Getenv: func(string) string { return "" }})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		switch c.Name() {
		case "help", "completion":
			return
		}
		if c.Example == "" {
			t.Errorf("%q has no example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// TestExitCodesMatchTheREADME: the README's exit-code table, the root
// help's list and the codes exitCode decides are the same set.
func TestExitCodesMatchTheREADME(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "### Exit codes\n")
	if !ok {
		t.Fatal("README.md has no exit-code table")
	}
	table, _, _ = strings.Cut(table, "\n\n#")
	var readme, help []string
	for _, m := range regexp.MustCompile(`(?m)^\| (\d+) \|`).FindAllStringSubmatch(table, -1) {
		readme = append(readme, m[1])
	}
	for _, m := range regexp.MustCompile(`(?m)^  (\d+) +\S`).FindAllStringSubmatch(helpFooter, -1) {
		help = append(help, m[1])
	}
	var consts []string
	for _, c := range []int{exitOK, exitFailed, exitUsage, exitInvalid, exitPaused, exitLimit, exitConflict, exitState, exitCorrupt, exitInterrupt} {
		consts = append(consts, fmt.Sprint(c))
	}
	if !reflect.DeepEqual(readme, consts) || !reflect.DeepEqual(help, consts) {
		t.Errorf("exit codes: README %v, help %v, code %v", readme, help, consts)
	}
}
