package builtin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/spec"
)

// writeScript writes an executable shell script that prints out.
func writeScript(t *testing.T, path, out string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestExecRelativeCommandIsRelativeToTheGraph: a command with a slash is
// the graph file's program, wherever lgrun runs from and whatever PATH
// holds; a bare name is looked up in PATH.
func TestExecRelativeCommandIsRelativeToTheGraph(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	root := t.TempDir()
	// A planted program of the same name early in PATH must never run.
	planted := filepath.Join(root, "bin")
	writeScript(t, filepath.Join(planted, "tool.sh"), "planted")
	writeScript(t, filepath.Join(planted, "hello.sh"), "planted")
	t.Setenv("PATH", planted+string(os.PathListSeparator)+os.Getenv("PATH"))

	src := `version: 1
name: tools
state:
  messages: {type: messages}
tools:
  dot: {kind: exec, command: [./tool.sh]}
  nested: {kind: exec, command: [helpers/hello.sh]}
  bare: {kind: exec, command: [hello.sh]}
nodes:
  run: {kind: tools}
edges:
  - {from: START, to: run}
  - {from: run, to: END}
`
	for _, dir := range []string{".", "sub", filepath.Join("deep", "er")} {
		t.Run(dir, func(t *testing.T) {
			gdir := filepath.Join(root, "work", dir)
			writeScript(t, filepath.Join(gdir, "tool.sh"), "graph-tool")
			writeScript(t, filepath.Join(gdir, "helpers", "hello.sh"), "graph-hello")
			if err := os.WriteFile(filepath.Join(gdir, "graph.yaml"), []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			// Run from the parent of the graph's directory tree, naming
			// the graph by a relative path.
			t.Chdir(filepath.Join(root, "work"))
			g, diags := spec.LoadFile(filepath.Join(dir, "graph.yaml"), nil)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			opts := Options{Getenv: envOf("PATH", os.Getenv("PATH"))}
			got := results(t, g, opts, withCalls("dot", "{}", "nested", "{}", "bare", "{}"))
			want := []string{"graph-tool", "graph-hello", "planted"}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("results %q, want %q (./x and a/x are the graph's files; a bare name is PATH's)", got, want)
			}
		})
	}
}
