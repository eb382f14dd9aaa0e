package server_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSDK drives `lgrun serve` (a child process) with the pinned official
// JS SDK: testdata/sdk/sdk.mjs. Under CI=true a missing node or a missing
// `npm ci` fails the test instead of skipping it.
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
		need("the SDK is not installed: run `npm ci` in server/testdata/sdk (.ci/run does)")
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
