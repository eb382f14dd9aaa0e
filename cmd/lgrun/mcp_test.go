package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateResolve: plain validation of a graph whose mcp source lists
// a tool its server lacks passes without connecting (the command is not
// even run); --resolve starts the server and reports the tool at its
// position, with exit status 3.
func TestValidateResolve(t *testing.T) {
	entry, err := filepath.Abs("../../builtin/testdata/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
	if err != nil {
		t.Fatal(err)
	}
	_, nodeErr := exec.LookPath("node")
	_, statErr := os.Stat(entry)
	if nodeErr != nil || statErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node or server-everything missing under CI (npm ci in builtin/testdata/mcp): %v %v", nodeErr, statErr)
		}
		t.Skipf("node or server-everything missing: %v %v", nodeErr, statErr)
	}
	dir := t.TempDir()
	marker := filepath.Join(dir, "started")
	graph := filepath.Join(dir, "g.yaml")
	src := `version: 1
name: g
state:
  messages: {type: messages}
models:
  m: {provider: mock, fixtures: f.yaml}
tools:
  ev:
    kind: mcp
    command: [sh, -c, 'echo > ` + marker + `; exec node ` + entry + ` stdio']
    tools: [echo, nope]
nodes:
  agent: {kind: llm, model: m, tools: [ev]}
edges:
  - {from: START, to: agent}
  - {from: agent, to: END}
`
	for name, body := range map[string]string{"g.yaml": src, "f.yaml": "replies: {agent: [{text: hi}]}\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"PATH": os.Getenv("PATH")}
	out, errOut, code := runCLI(t, false, env, "validate", graph)
	if code != 0 || !strings.Contains(out, "1 file valid") {
		t.Fatalf("validate: %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("plain validate started the server (%v)", err)
	}
	out, errOut, code = runCLI(t, false, env, "validate", "--resolve", graph)
	if code != 3 || !strings.Contains(out, `g.yaml:11:19: error: tools.ev.tools: the mcp server has no tool "nope"`) {
		t.Fatalf("validate --resolve: %d\n%s%s", code, out, errOut)
	}
}
