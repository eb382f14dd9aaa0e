package server_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSDK drives `lgrun serve` (a child process) with the pinned official
// JS SDK: testdata/sdk/sdk.mjs, installing the SDK with `npm ci` when it
// is missing. Under CI=true a missing node or a failed install fails the
// test instead of skipping it.
func TestSDK(t *testing.T) {
	need := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		need("node is not installed: the SDK test needs node and npm")
	}
	if _, err := os.Stat(filepath.Join("testdata", "sdk", "node_modules", "@langchain", "langgraph-sdk")); err != nil {
		// Install the pinned SDK (package-lock.json), as the MCP tests
		// install their server: a fresh clone's `go test ./...` runs
		// this test too.
		npm, err := exec.LookPath("npm")
		if err != nil {
			need("the SDK is not installed and npm is missing: run `npm ci` in server/testdata/sdk")
		}
		cmd := exec.Command(npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund")
		cmd.Dir = filepath.Join("testdata", "sdk")
		if out, err := cmd.CombinedOutput(); err != nil {
			need("npm ci in server/testdata/sdk: %v\n%s", err, out)
		}
	}
	db := filepath.Join(t.TempDir(), "lgrun.db")
	key := "k-" + strings.Repeat("x", 16)
	_, url := startServe(t, db, []string{"LGRUN_API_KEYS=other," + key}, "../graphs/loop.yaml", "../graphs/approval.yaml", "../graphs/memory-chat.yaml", "../graphs/team.yaml")
	cmd := exec.Command(node, "sdk.mjs")
	cmd.Dir = filepath.Join("testdata", "sdk")
	cmd.Env = append(os.Environ(), "LGRUN_URL="+url, "LGRUN_KEY="+key)
	out, err := cmd.CombinedOutput()
	t.Logf("sdk.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("sdk.mjs failed: %v", err)
	}
	if !strings.Contains(string(out), "ok errors") {
		t.Fatal("sdk.mjs did not reach its last check")
	}
}
