package server_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// lgrunBinary builds cmd/lgrun once per test binary.
func lgrunBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lgrun-serve-test")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "lgrun")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/lgrun").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// freeAddr returns a free loopback address.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServe starts `lgrun serve` as a child process and waits until it
// listens. env holds VAR=value entries for its environment and --flag=value
// entries for its command line. The process is killed at the end of the test.
func startServe(t *testing.T, db string, env []string, graphs ...string) (*exec.Cmd, string) {
	t.Helper()
	addr := freeAddr(t)
	args := append([]string{"serve", "--db", db, "--addr", addr}, graphs...)
	for _, e := range env {
		if f, ok := strings.CutPrefix(e, "--"); ok {
			args = append(args, "--"+f)
		}
	}
	cmd := exec.Command(lgrunBinary(t), args...)
	for _, e := range env {
		if !strings.HasPrefix(e, "--") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(os.Environ(), cmd.Env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			t.Logf("serve: %s", line)
			if strings.Contains(line, "listening on") {
				ready <- line
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("lgrun serve did not start listening in 30s")
	}
	return cmd, "http://" + addr
}
