package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCIScript checks that .ci/run keeps its gates: vet, the README's test
// command, the race detector on the runtime, the savers and the server,
// the npm ci of the SDK test, the examples validated and tested on both
// savers, and PostgreSQL started (with CI=true, so its tests fail rather
// than skip); and that bash parses it.
func TestCIScript(t *testing.T) {
	path := filepath.Join("..", "..", ".ci", "run")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			cmds = append(cmds, l)
		}
	}
	for _, want := range []string{
		"set -euo pipefail",
		"go vet ./...",
		"go test ./...",
		"go test -race ./runtime/ ./checkpoint/ ./checkpoint/postgres/",
		"go test -race ./server/",
		"(cd \"$sdk\" && npm ci --ignore-scripts --no-audit --no-fund)",
		"export CI=true",
		"if ! pg_isready -q -h 127.0.0.1; then",
		`pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start`,
		"validate --strict graphs/",
		"test graphs/ --saver memory",
		"test graphs/ --saver sqlite",
	} {
		found := false
		for _, c := range cmds {
			found = found || c == want || strings.HasSuffix(c, "lgrun\" "+want)
		}
		if !found {
			t.Errorf("%s does not run %q", path, want)
		}
	}
	if bash, err := exec.LookPath("bash"); err == nil {
		if out, err := exec.Command(bash, "-n", path).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", path, err, out)
		}
	}
}
