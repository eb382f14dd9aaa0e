package checkpoint_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// Tests with several processes re-run this test binary as a helper: with
// LGRUN_CHECKPOINT_HELPER set, TestHelperProcess acts on the arguments after
// "--" and exits (the os/exec tests' pattern).

const helperEnv = "LGRUN_CHECKPOINT_HELPER"

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

func startHelper(t *testing.T, args ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHelperProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &helper{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
}

// line reads the helper's next output line.
func (h *helper) line(t *testing.T) string {
	t.Helper()
	if !h.out.Scan() {
		t.Fatalf("helper %v ended early: %v", h.cmd.Args[3:], h.out.Err())
	}
	return h.out.Text()
}

// TestHelperProcess is not a test: it is the helper process.
//
//	commit DB THREAD EXPECT_HEAD STEPS  print "ready", wait for a line on
//	    stdin, commit STEPS checkpoints in a row starting on EXPECT_HEAD,
//	    then print "ok HEAD", "conflict ERR" or "error ERR".
//	run DB THREAD  see below.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper process")
	}
	args := os.Args
	for len(args) > 0 && args[0] != "--" {
		args = args[1:]
	}
	if len(args) < 2 {
		fmt.Println("error no command")
		os.Exit(2)
	}
	switch args[1] {
	case "commit":
		db, thread, expect := args[2], args[3], args[4]
		steps, _ := strconv.Atoi(args[5])
		s, err := checkpoint.OpenSQLite(db, &checkpoint.Options{BusyTimeout: 10 * time.Second})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(0)
		}
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
		c := newChain(t, s, thread)
		if expect != "" {
			// Values are not needed for a few steps: no snapshot is due.
			c.head, c.at = expect, 1
		}
		for i := 0; i < steps; i++ {
			if err := c.try(); err != nil {
				if errors.Is(err, runtime.ErrConflict) {
					fmt.Println("conflict", err)
				} else {
					fmt.Println("error", err)
				}
				os.Exit(0)
			}
		}
		fmt.Println("ok", c.head)
		s.Close()
		os.Exit(0)
	case "run":
		// run DB THREAD: run fanout3 on THREAD, a new thread; at its
		// input checkpoint print "started TXNS" (the write transactions
		// so far) and wait for a line on stdin, then print "ok STATUS" or
		// "error ERR".
		db, thread := args[2], args[3]
		s, err := checkpoint.OpenSQLite(db, &checkpoint.Options{BusyTimeout: 10 * time.Second})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(0)
		}
		in := bufio.NewReader(os.Stdin)
		r := &runtime.Runner{Graph: mustParse(t, fanout3), Saver: s, Version: "test", Events: func(e runtime.Event) {
			if e.Kind == runtime.EvRunStart {
				fmt.Println("started", checkpoint.WriteTxns(s))
				in.ReadString('\n')
			}
		}}
		res, err := r.Run(bg, runtime.RunOptions{Thread: thread})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(0)
		}
		fmt.Println("ok", res.Status)
		s.Close()
		os.Exit(0)
	}
	if args[1] == "chain" {
		// chain DB THREAD: run fanout3 on THREAD, a new thread, through
		// a saver that prints "committing N" (N checkpoints in the chain)
		// and waits for a line on stdin before its CommitChain: the first
		// step has run, nothing is committed.
		db, thread := args[2], args[3]
		s, err := checkpoint.OpenSQLite(db, &checkpoint.Options{BusyTimeout: 10 * time.Second})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(0)
		}
		r := &runtime.Runner{Graph: mustParse(t, fanout3), Saver: pausingChain{s, bufio.NewReader(os.Stdin)}, Version: "test"}
		res, err := r.Run(bg, runtime.RunOptions{Thread: thread})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(0)
		}
		fmt.Println("ok", res.Status)
		s.Close()
		os.Exit(0)
	}
	fmt.Println("error unknown command", args[1])
	os.Exit(2)
}

// release starts helpers waiting at "ready" as close together as possible.
func release(t *testing.T, hs ...*helper) {
	t.Helper()
	for _, h := range hs {
		if got := h.line(t); got != "ready" {
			t.Fatalf("helper: %s", got)
		}
	}
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Add(1)
		go func() { defer wg.Done(); io.WriteString(h.stdin, "go\n") }()
	}
	wg.Wait()
}

// TestTwoProcessesOneHead starts two processes that commit on the same
// thread head at the same moment: exactly one wins, the other gets
// ErrConflict, and the thread holds the winner's checkpoint.
func TestTwoProcessesOneHead(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "race.db")
	s := MustOpenPath(t, path, nil)
	for round := 0; round < 3; round++ {
		thread := fmt.Sprintf("t%d", round)
		c := newChain(t, s, thread)
		c.step(2)
		a := startHelper(t, "commit", path, thread, c.head, "1")
		b := startHelper(t, "commit", path, thread, c.head, "1")
		release(t, a, b)
		outs := []string{a.line(t), b.line(t)}
		var won, lost []string
		for _, o := range outs {
			switch {
			case strings.HasPrefix(o, "ok "):
				won = append(won, strings.TrimPrefix(o, "ok "))
			case strings.HasPrefix(o, "conflict "):
				lost = append(lost, o)
				if !strings.Contains(o, "thread has moved on") {
					t.Errorf("the loser's error does not say the thread moved on: %s", o)
				}
			default:
				t.Fatalf("helper: %s", o)
			}
		}
		if len(won) != 1 || len(lost) != 1 {
			t.Fatalf("round %d: outcomes %q; want exactly one ok and one conflict", round, outs)
		}
		row, err := s.Thread(bg, thread)
		if err != nil || row.Head != won[0] {
			t.Fatalf("round %d: head %v (%v), want the winner's %s", round, row, err, won[0])
		}
		if list, _ := s.List(bg, thread, 0); len(list) != 3 {
			t.Fatalf("round %d: %d checkpoints, want 3", round, len(list))
		}
	}
}

// TestProcessesOnDifferentThreads runs writers on different threads in
// two processes at once: none conflicts or fails, they only take turns
// at SQLite's write lock.
func TestProcessesOnDifferentThreads(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "parallel.db")
	s := MustOpenPath(t, path, nil)
	const steps = 300
	a := startHelper(t, "commit", path, "a", "", strconv.Itoa(steps))
	b := startHelper(t, "commit", path, "b", "", strconv.Itoa(steps))
	// And a third writer in this process.
	release(t, a, b)
	c := newChain(t, s, "c")
	c.step(steps)
	for _, h := range []*helper{a, b} {
		if o := h.line(t); !strings.HasPrefix(o, "ok ") {
			t.Fatalf("writer: %s", o)
		}
	}
	for _, th := range []string{"a", "b", "c"} {
		cp, err := s.Get(bg, th, "")
		if err != nil {
			t.Fatal(err)
		}
		if cp.Step != steps-1 || len(cp.Values["messages"].([]any)) != steps-1 {
			t.Errorf("thread %s: step %d with %d messages, want %d", th, cp.Step, len(cp.Values["messages"].([]any)), steps-1)
		}
	}
}

// A run of a new thread takes its lease in its input commit's transaction,
// which also holds its first step (set nodes only): one transaction, not
// three. While that run goes on in another process, a run of the thread
// there is refused as busy; once the holder is killed (kill -9) between
// its first and its second step, its lease is taken over and the thread
// is unfinished, not busy, and resumes to the end.
func TestRunLeaseTakenWithInputCommitAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "lease.db")
	s := MustOpenPath(t, path, nil)
	h := startHelper(t, "run", path, "t1")
	if got := h.line(t); got != "started 1" {
		t.Fatalf("helper at its input checkpoint: %q, want \"started 1\" (the lease, the input and the first step in one transaction)", got)
	}
	var n int
	if err := s.DB().QueryRow(`SELECT count(*) FROM leases WHERE thread = 't1' AND pid = ?`, h.cmd.Process.Pid).Scan(&n); err != nil || n != 1 {
		t.Fatalf("lease rows of the helper: %d (%v), want 1", n, err)
	}
	r := &runtime.Runner{Graph: mustParse(t, fanout3), Saver: s, Version: "test"}
	_, err := r.Run(bg, runtime.RunOptions{Thread: "t1"})
	var be *runtime.BusyError
	if !errors.As(err, &be) || be.Owner != fmt.Sprintf("pid %d on %s", h.cmd.Process.Pid, mustHostname(t)) {
		t.Fatalf("run while another process holds the lease: %v, want a BusyError naming the helper", err)
	}
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	h.cmd.Wait()
	_, err = r.Run(bg, runtime.RunOptions{Thread: "t1"})
	var ue *runtime.UnfinishedError
	if !errors.As(err, &ue) {
		t.Fatalf("run after the holder died: %v, want an UnfinishedError", err)
	}
	res, err := r.Resume(bg, runtime.ResumeOptions{Thread: "t1"})
	if err != nil || res.Status != runtime.StatusDone || res.Checkpoint.Values["total"] != 3 {
		t.Fatalf("resume: %v, %v", res, err)
	}
}

func mustHostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// pausingChain is the SQLite saver whose CommitChain waits for a line on
// in first (see the helper's chain command).
type pausingChain struct {
	*checkpoint.SQLite
	in *bufio.Reader
}

func (p pausingChain) CommitChain(ctx context.Context, cs []*runtime.Commit, lock bool) (func(), error) {
	fmt.Println("committing", len(cs))
	p.in.ReadString('\n')
	return p.SQLite.CommitChain(ctx, cs, lock)
}

// A process killed (kill -9) after the first step of a new thread ran
// (set nodes only) but before the commit that holds its input and that
// step leaves nothing behind: no thread, no lease, no checkpoint, as if
// it had died before its input commit. A run of the thread afterwards
// starts it afresh and ends as an uninterrupted run does.
func TestKilledBeforeInputAndFirstStepCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "chain.db")
	s := MustOpenPath(t, path, nil)
	h := startHelper(t, "chain", path, "t1")
	if got := h.line(t); got != "committing 2" {
		t.Fatalf("helper: %q, want \"committing 2\" (the input and the first step in one commit)", got)
	}
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	h.cmd.Wait()
	if _, err := s.Thread(bg, "t1"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("thread after the kill: %v, want not found", err)
	}
	var leases, cps int
	if err := s.DB().QueryRow(`SELECT (SELECT count(*) FROM leases), (SELECT count(*) FROM checkpoints)`).Scan(&leases, &cps); err != nil || leases != 0 || cps != 0 {
		t.Fatalf("after the kill: %d lease rows, %d checkpoints (%v); want none", leases, cps, err)
	}
	r := &runtime.Runner{Graph: mustParse(t, fanout3), Saver: s, Version: "test"}
	res, err := r.Run(bg, runtime.RunOptions{Thread: "t1"})
	if err != nil || res.Status != runtime.StatusDone || res.Checkpoint.Values["total"] != 3 {
		t.Fatalf("run after the kill: %v, %v", res, err)
	}
	if list, _ := s.List(bg, "t1", 0); len(list) != 3 {
		t.Fatalf("%d checkpoints, want 3", len(list))
	}
}
