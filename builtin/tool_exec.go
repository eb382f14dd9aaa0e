package builtin

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lgrun/lgrun/spec"
)

// execEnv lists the environment variables an exec tool inherits; nothing
// else (API keys in particular) reaches the program.
var execEnv = []string{"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ"}

// execTool runs an exec tool: the program the graph names (never a
// shell), the JSON arguments on stdin, stdout as the result. The timeout
// kills the program (and, on Unix, its process group); output past
// max_output_bytes kills it too and is cut off.
func (e *engine) execTool(ctx context.Context, g *spec.Graph, t *spec.Tool, args string) (string, error) {
	dir, err := filepath.Abs(filepath.Dir(g.File))
	if err != nil {
		return "", fmt.Errorf("graph directory: %v", err)
	}
	prog := commandPath(dir, t.Command[0])
	limit := t.MaxOutputBytes
	if limit <= 0 {
		limit = defaultMaxOutput
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, prog, t.Command[1:]...)
	cmd.Dir = dir
	for _, k := range execEnv {
		if v := e.opts.Getenv(k); v != "" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.Stdin = strings.NewReader(args)
	stdout := &capWriter{limit: limit, full: cancel}
	stderr := &capWriter{limit: 4 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = time.Second
	killGroup(cmd)
	err = cmd.Run()
	if stdout.over() {
		return capped(stdout.bytes(), limit), nil
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if err != nil {
		msg := strings.TrimSpace(string(stderr.bytes()))
		if msg == "" {
			return "", fmt.Errorf("%s: %v", t.Command[0], err)
		}
		return "", fmt.Errorf("%s: %v: %s", t.Command[0], err, clip(msg, 500))
	}
	return strings.TrimRight(string(stdout.bytes()), "\n"), nil
}

// commandPath resolves an exec tool's program. A name with a slash
// ("./tool.sh", "tools/wc.sh") is a file relative to the graph's directory
// dir (never looked up in PATH); an absolute path is taken as it is; a bare
// name ("python3") is looked up in PATH, as the graph's author chose.
func commandPath(dir, prog string) string {
	if filepath.IsAbs(prog) || !strings.ContainsAny(prog, "/"+string(filepath.Separator)) {
		return prog
	}
	return filepath.Join(dir, prog)
}

// capWriter keeps the first limit bytes (plus one, to tell that there was
// more) and calls full once when the output passes the limit.
type capWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	limit int
	full  func()
	done  bool
}

func (w *capWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := w.limit + 1 - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(len(p), room)])
	}
	if w.buf.Len() > w.limit && !w.done {
		w.done = true
		if w.full != nil {
			w.full()
		}
	}
	return len(p), nil
}

func (w *capWriter) over() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Len() > w.limit
}

func (w *capWriter) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]byte(nil), w.buf.Bytes()...)
}
