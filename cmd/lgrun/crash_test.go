package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash tests run the real binary as a child process and kill it.
// They are skipped with -short. LGRUN_CRASH_ITERATIONS and
// LGRUN_CRASH_SEED change how many kills are tried and their timing.

var (
	buildOnce sync.Once
	binDir    string // removed by TestMain
	binPath   string
	buildErr  error
)

// buildLgrun builds the lgrun binary once per test process.
func buildLgrun(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and kills the real binary; skipped with -short")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "lgrun-crash-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "lgrun")
		out, err := exec.Command(goBin, "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// cli runs the binary against one database.
type cli struct {
	t   *testing.T
	bin string
	db  string
}

func (c *cli) command(args ...string) *exec.Cmd {
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), "LGRUN_DB="+c.db, "NO_COLOR=1")
	return cmd
}

// run runs lgrun to the end and returns stdout, stderr and the exit code.
func (c *cli) run(args ...string) (string, string, int) {
	c.t.Helper()
	cmd := c.command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			c.t.Fatalf("lgrun %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

// threadState is what `lgrun state -o json` reports.
type threadState struct {
	Status string         `json:"status"`
	Step   int            `json:"step"`
	Next   []string       `json:"next"`
	Values map[string]any `json:"values"`
}

// state returns the thread's state, or nil when the thread does not exist.
func (c *cli) state(thread string) *threadState {
	c.t.Helper()
	out, errOut, code := c.run("state", "-t", thread, "-o", "json")
	if code != 0 {
		if strings.Contains(errOut, "not found") {
			return nil
		}
		c.t.Fatalf("lgrun state: exit %d: %s", code, errOut)
	}
	var st threadState
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		c.t.Fatalf("lgrun state: %v\n%s", err, out)
	}
	return &st
}

// historyRow is one row of `lgrun history -o json`.
type historyRow struct {
	ID     string `json:"checkpoint"`
	Parent string `json:"parent"`
	Step   int    `json:"step"`
}

func (c *cli) history(thread string) []historyRow {
	c.t.Helper()
	out, errOut, code := c.run("history", "-t", thread, "-o", "json")
	if code != 0 {
		c.t.Fatalf("lgrun history: exit %d: %s", code, errOut)
	}
	var doc struct {
		Checkpoints []historyRow `json:"checkpoints"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		c.t.Fatalf("lgrun history: %v", err)
	}
	return doc.Checkpoints
}

// update is one line of `--stream updates`.
type update struct {
	Node  string `json:"node"`
	Step  int    `json:"step"`
	Event string `json:"event"`
}

// startStreaming starts `lgrun run` (no thread yet) or `lgrun resume` with
// --stream updates and returns the command and a channel of its lines.
func (c *cli) startStreaming(graph, thread string, resume bool, extra ...string) (*exec.Cmd, <-chan string, *bytes.Buffer) {
	c.t.Helper()
	args := []string{"run", graph, "-t", thread}
	if resume {
		args = []string{"resume", "-t", thread}
	}
	args = append(append(args, "--stream", "updates"), extra...)
	cmd := c.command(args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	return cmd, lines, &errb
}

// checkUpdates asserts that a process that began at committed step head
// ran no node of a step at or before it: committed work never runs again.
func checkUpdates(t *testing.T, lines []string, head int, what string) {
	t.Helper()
	for _, l := range lines {
		var u update
		if err := json.Unmarshal([]byte(l), &u); err != nil {
			t.Fatalf("%s: bad stream line %q: %v", what, l, err)
		}
		if u.Event == "" && u.Step <= head {
			t.Fatalf("%s: node %s ran at step %d, but step %d was already committed when the process started", what, u.Node, u.Step, head)
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestCrashSafety kills `lgrun run` and `lgrun resume` with SIGKILL at
// random moments, many times, and checks that resuming finishes with
// exactly the state of an uninterrupted run, one checkpoint per step, and
// that no node of a committed step ran again.
func TestCrashSafety(t *testing.T) {
	bin := buildLgrun(t)
	dir := t.TempDir()
	graph, err := filepath.Abs(filepath.Join("testdata", "crash.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	ref := &cli{t: t, bin: bin, db: filepath.Join(dir, "ref.db")}
	if _, errOut, code := ref.run("run", graph, "-t", "ref", "-q"); code != 0 {
		t.Fatalf("reference run: exit %d: %s", code, errOut)
	}
	want := ref.state("ref")
	wantHistory := ref.history("ref")
	if want.Status != "done" || len(wantHistory) != 40 || want.Step != 39 {
		t.Fatalf("reference run: status %s, step %d, %d checkpoints; want done, 39, 40", want.Status, want.Step, len(wantHistory))
	}
	// The log must be exactly this sequence, no step missing or doubled.
	var wantLog []any
	for n := 1; n <= 20; n++ {
		wantLog = append(wantLog, fmt.Sprintf("tick@%d", n))
		if n < 20 {
			wantLog = append(wantLog, fmt.Sprintf("left@%d", n), fmt.Sprintf("right@%d", n))
		}
	}
	if !reflect.DeepEqual(want.Values["log"], wantLog) {
		t.Fatalf("reference log = %v, want %v", want.Values["log"], wantLog)
	}

	seed := uint64(envInt("LGRUN_CRASH_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("LGRUN_CRASH_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	iterations := envInt("LGRUN_CRASH_ITERATIONS", 30)
	deadline := time.Now().Add(60 * time.Second)
	var done, kills, midRun, notCreated, stuckDone int
	for i := 0; i < iterations && time.Now().Before(deadline); i++ {
		done++
		c := &cli{t: t, bin: bin, db: filepath.Join(dir, fmt.Sprintf("crash%02d.db", i))}
		thread := "c"
		for k, n := 0, 1+rng.IntN(3); k < n; k++ {
			before := c.state(thread)
			if before != nil && before.Status == "done" {
				break
			}
			head := -1
			if before != nil {
				head = before.Step
			}
			cmd, lines, _ := c.startStreaming(graph, thread, before != nil)
			// Kill after a random number of streamed node results (and a
			// few random microseconds), or after a random delay that may
			// fall before anything is committed.
			var seen []string
			if rng.IntN(5) == 0 {
				time.Sleep(time.Duration(rng.IntN(15000)) * time.Microsecond)
			} else {
				// count is the number of node results committed so far:
				// aim anywhere in what is left, the very end included (the
				// window between the last commit and the done mark).
				left := 58
				if before != nil {
					left -= int(before.Values["count"].(float64))
				}
				target := rng.IntN(left + 1)
				for len(seen) < target {
					l, ok := <-lines
					if !ok {
						break
					}
					seen = append(seen, l)
				}
				time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
			}
			_ = cmd.Process.Signal(syscall.SIGKILL)
			for l := range lines {
				seen = append(seen, l)
			}
			err := cmd.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) && !ee.Exited() {
				kills++
			}
			checkUpdates(t, seen, head, fmt.Sprintf("iteration %d, process %d", i, k))
		}

		// Resume until done; a single uninterrupted resume must suffice.
		st := c.state(thread)
		switch {
		case st == nil:
			notCreated++
			cmd, lines, errb := c.startStreaming(graph, thread, false)
			var seen []string
			for l := range lines {
				seen = append(seen, l)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("iteration %d: run after the crash: %v\n%s", i, err, errb)
			}
		case st.Status == "done":
		case len(st.Next) == 0:
			// Killed between the last commit and the done mark: resume
			// finishes the thread (see testdata/script/crash_before_done.txtar).
			stuckDone++
			cmd, lines, errb := c.startStreaming(graph, thread, true)
			var seen []string
			for l := range lines {
				seen = append(seen, l)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("iteration %d: resume of a thread killed before its done mark: %v\n%s", i, err, errb)
			}
			// Every step was committed: no node may run.
			checkUpdates(t, seen, st.Step, fmt.Sprintf("iteration %d, resume of a thread killed before its done mark", i))
		default:
			midRun++
			cmd, lines, errb := c.startStreaming(graph, thread, true)
			var seen []string
			for l := range lines {
				seen = append(seen, l)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("iteration %d: resume after the crash (head step %d, status %s): %v\n%s", i, st.Step, st.Status, err, errb)
			}
			checkUpdates(t, seen, st.Step, fmt.Sprintf("iteration %d, final resume", i))
		}

		got := c.state(thread)
		if got == nil {
			t.Fatalf("iteration %d: no thread after resuming", i)
		}
		if !reflect.DeepEqual(got.Values, want.Values) {
			t.Fatalf("iteration %d: final state differs from an uninterrupted run\n got %v\nwant %v", i, got.Values, want.Values)
		}
		if got.Step != want.Step {
			t.Fatalf("iteration %d: final step %d, want %d", i, got.Step, want.Step)
		}
		if got.Status != "done" && len(got.Next) > 0 {
			t.Fatalf("iteration %d: status %s with next %v after resuming", i, got.Status, got.Next)
		}
		// One checkpoint per step, each the child of the one before: no
		// step was committed twice and no branch appeared.
		hist := c.history(thread)
		if len(hist) != len(wantHistory) {
			t.Fatalf("iteration %d: %d checkpoints, want %d", i, len(hist), len(wantHistory))
		}
		for j, h := range hist {
			if wantStep := len(hist) - 1 - j; h.Step != wantStep {
				t.Fatalf("iteration %d: checkpoint %d has step %d, want %d", i, j, h.Step, wantStep)
			}
			if j+1 < len(hist) && h.Parent != hist[j+1].ID {
				t.Fatalf("iteration %d: checkpoint %s (step %d) has parent %s, want %s", i, h.ID, h.Step, h.Parent, hist[j+1].ID)
			}
		}
	}
	t.Logf("%d iterations, %d SIGKILLs; then: %d threads resumed mid-run, %d never created, %d stuck after their last commit (known bug)", done, kills, midRun, notCreated, stuckDone)
	if kills == 0 {
		t.Fatal("no process was killed: the graph finishes too fast for the kill timing")
	}
}

// TestSignal sends SIGINT to a running `lgrun run`: it exits 130, the state
// is saved, and `lgrun resume` finishes the run exactly.
func TestSignal(t *testing.T) {
	bin := buildLgrun(t)
	c := &cli{t: t, bin: bin, db: filepath.Join(t.TempDir(), "db")}
	loop, err := filepath.Abs(filepath.Join("..", "..", "graphs", "loop.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const target = 5000 // long enough that the SIGINT sent after 5 steps lands mid-run on a loaded machine
	cmd, lines, errb := c.startStreaming(loop, "sig", false, "--set", fmt.Sprintf("target=%d", target), "--max-steps", "10000")
	var seen []string
	for l := range lines {
		seen = append(seen, l)
		if len(seen) == 5 {
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupt {
		t.Fatalf("lgrun run after SIGINT: %v, want exit %d\n%s", err, exitInterrupt, errb)
	}
	if !strings.Contains(errb.String(), "resume with `lgrun resume --thread sig`") {
		t.Errorf("stderr does not say how to resume:\n%s", errb)
	}
	st := c.state("sig")
	if st == nil || len(st.Next) == 0 || st.Step >= target {
		t.Fatalf("state after SIGINT: %+v; want a saved, unfinished thread", st)
	}
	// The stored --max-steps still applies: resume needs no flags.
	out, errOut, code := c.run("resume", "-t", "sig", "-o", "json")
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s", code, errOut)
	}
	var res struct {
		Status string         `json:"status"`
		Values map[string]any `json:"values"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	var wantLog []any
	for i := 1; i <= target; i++ {
		wantLog = append(wantLog, fmt.Sprintf("count=%d", i))
	}
	wantLog = append(wantLog, fmt.Sprintf("done at %d", target))
	if res.Status != "done" || res.Values["count"] != float64(target) || !reflect.DeepEqual(res.Values["log"], wantLog) {
		gotLog, _ := res.Values["log"].([]any)
		t.Fatalf("after resume: status %s, count %v, log of %d entries; want done, %d, exactly count=1..%d then done", res.Status, res.Values["count"], len(gotLog), target, target)
	}
}

// TestConcurrentResume starts `lgrun resume` while another process is
// running the same thread: the resume finds the thread's lease held and
// exits 6 (thread busy) without doing any work; the run finishes exactly.
func TestConcurrentResume(t *testing.T) {
	bin := buildLgrun(t)
	c := &cli{t: t, bin: bin, db: filepath.Join(t.TempDir(), "db")}
	loop, err := filepath.Abs(filepath.Join("..", "..", "graphs", "loop.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Long enough that the second process starts well before the end.
	const target = 3000
	first, lines, errb := c.startStreaming(loop, "cc", false, "--set", fmt.Sprintf("target=%d", target), "--max-steps", "5000")
	for i := 0; i < 3; i++ {
		if _, ok := <-lines; !ok {
			break
		}
	}
	_, errOut, code := c.run("resume", "-t", "cc", "-q")
	for range lines {
	}
	firstCode := 0
	if err := first.Wait(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		firstCode = ee.ExitCode()
	}
	// The running process holds the thread's lease: the resume fails at
	// once, before doing any work, and the run finishes undisturbed.
	if code != exitConflict || firstCode != exitOK {
		t.Fatalf("exit codes: first run %d (%s), concurrent resume %d (%s); want %d and %d", firstCode, errb, code, errOut, exitOK, exitConflict)
	}
	if !strings.Contains(errOut, `thread "cc" is busy: another process (pid `) {
		t.Errorf("conflict message: %q", errOut)
	}
	st := c.state("cc")
	if st == nil || st.Status != "done" || st.Values["count"] != float64(target) {
		t.Fatalf("final state: %+v", st)
	}
	if hist := c.history("cc"); len(hist) != target+2 {
		t.Errorf("%d checkpoints, want %d (one per step, no branch)", len(hist), target+2)
	}
}
