package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lgrun/lgrun/checkpoint/postgres/pgtest"
)

// startLgrun starts `lgrun args…` and waits for a stderr line containing
// ready; the process is killed at the end of the test.
func startLgrun(t *testing.T, ready string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(lgrunBinary(t), args...)
	cmd.Env = os.Environ()
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
	up := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			t.Logf("%s[%d]: %s", args[0], cmd.Process.Pid, line)
			if strings.Contains(line, ready) {
				up <- struct{}{}
			}
		}
	}()
	select {
	case <-up:
	case <-time.After(30 * time.Second):
		t.Fatalf("lgrun %s did not start in 30s", args[0])
	}
	return cmd
}

// serveAPI starts an `lgrun serve` that only serves the API (no workers).
func serveAPI(t *testing.T, db string, graphs ...string) string {
	addr := freeAddr(t)
	startLgrun(t, "listening on", append([]string{"serve", "--db", db, "--addr", addr, "--concurrency=0"}, graphs...)...)
	return "http://" + addr
}

func startWorker(t *testing.T, db string, extra []string, graphs ...string) *exec.Cmd {
	return startLgrun(t, "lgrun worker: started", append(append([]string{"worker", "--db", db}, extra...), graphs...)...)
}

// TestQueueStreamAcrossProcesses streams a run from one `lgrun serve`
// (without workers) while a worker process executes it: every step's
// update arrives, in order, and the end; the run and thread rows are
// final when the stream ends. A second API server follows the same run.
func TestQueueStreamAcrossProcesses(t *testing.T) {
	_, db := pgtest.Schema(t)
	a := serveAPI(t, db, "../graphs/loop.yaml")
	b := serveAPI(t, db, "../graphs/loop.yaml")
	startWorker(t, db, nil, "../graphs/loop.yaml")
	th := call(t, "POST", a+"/threads", `{}`)
	tid := th["thread_id"].(string)
	resp, err := http.Post(a+"/threads/"+tid+"/runs/stream", "application/json",
		strings.NewReader(`{"assistant_id": "loop", "input": {"target": 40}, "config": {"recursion_limit": 100}, "stream_mode": ["updates"]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rid := strings.TrimPrefix(resp.Header.Get("Content-Location"), "/threads/"+tid+"/runs/")
	// B joins the run by id while it executes on the worker.
	joined := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", b+"/threads/"+tid+"/runs/"+rid+"/stream", nil)
		req.Header.Set("Last-Event-ID", "-1")
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			joined <- err.Error()
			return
		}
		defer r.Body.Close()
		body, _ := io.ReadAll(r.Body)
		joined <- string(body)
	}()
	body, _ := io.ReadAll(resp.Body)
	check := func(who, s string) {
		var counts []int
		for _, f := range strings.Split(strings.TrimSpace(s), "\n\n") {
			if strings.HasPrefix(f, "event: updates\n") {
				var u map[string]map[string]any
				data := strings.SplitN(strings.SplitN(f, "data: ", 2)[1], "\n", 2)[0]
				if err := json.Unmarshal([]byte(data), &u); err != nil {
					t.Fatalf("%s: bad frame %q", who, f)
				}
				if inc, ok := u["increment"]; ok {
					counts = append(counts, int(inc["count"].(float64)))
				}
			}
		}
		for i, c := range counts {
			if c != i+1 {
				t.Fatalf("%s: update %d has count %d: %v", who, i, c, counts)
			}
		}
		if len(counts) != 40 || !strings.Contains(s, "event: end\ndata: {\"run_id\":\""+rid+"\",\"status\":\"success\"}") {
			t.Fatalf("%s: %d increments (want 40), stream:\n%.2000s", who, len(counts), s)
		}
	}
	check("A (creator)", string(body))
	select {
	case s := <-joined:
		check("B (joined)", s)
	case <-time.After(30 * time.Second):
		t.Fatal("B's join stream did not end")
	}
	run := call(t, "GET", a+"/threads/"+tid+"/runs/"+rid, "")
	thr := call(t, "GET", b+"/threads/"+tid, "")
	if run["status"] != "success" || thr["status"] != "idle" {
		t.Fatalf("after the stream: run %v, thread %v; want success, idle", run["status"], thr["status"])
	}
}

// TestQueueCancelAcrossProcesses cancels, through an API server, a run a
// worker process executes: it stops at a step and ends interrupted, and
// the thread goes no further.
func TestQueueCancelAcrossProcesses(t *testing.T) {
	_, db := pgtest.Schema(t)
	a := serveAPI(t, db, "../graphs/loop.yaml")
	startWorker(t, db, nil, "../graphs/loop.yaml")
	th := call(t, "POST", a+"/threads", `{}`)
	tid := th["thread_id"].(string)
	run := call(t, "POST", a+"/threads/"+tid+"/runs", `{"assistant_id": "loop", "input": {"target": 100000}, "config": {"recursion_limit": 200000}}`)
	rid := run["run_id"].(string)
	count := func() float64 {
		st := call(t, "GET", a+"/threads/"+tid+"/state", "")
		v, _ := st["values"].(map[string]any)
		c, _ := v["count"].(float64)
		return c
	}
	deadline := time.Now().Add(20 * time.Second)
	for count() < 10 {
		if time.Now().After(deadline) {
			t.Fatal("the run did not progress")
		}
		time.Sleep(10 * time.Millisecond)
	}
	req, _ := http.NewRequest("POST", a+"/threads/"+tid+"/runs/"+rid+"/cancel?wait=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
	got := call(t, "GET", a+"/threads/"+tid+"/runs/"+rid, "")
	if got["status"] != "interrupted" {
		t.Fatalf("run after cancel: %v, want interrupted", got["status"])
	}
	c1 := count()
	time.Sleep(500 * time.Millisecond)
	if c2 := count(); c2 != c1 || c1 >= 100000 {
		t.Fatalf("count %v then %v: the run went on after the cancel", c1, c2)
	}
}

// TestQueueKillWorkers is the fault test: background runs of a 20-step
// graph whose exec tool appends a line per call, on 3 worker processes;
// every 0.5-1 s a random worker is killed with SIGKILL and a
// new one started. Then:
//   - every run ends success with the state of an uninterrupted run;
//   - no step whose checkpoint committed ran again: a call's line is
//     written at most once per attempt of its run (a kill may re-run the
//     step in flight, and only that one), so per run the extra lines are
//     at most its attempts - 1, and every call left a line;
//   - no thread ever had two writers: each thread's checkpoints form one
//     chain (no two share a parent), which the head's compare-and-swap
//     guarantees even when a second worker took over.
//
// LGRUN_FAULT_RUNS sets the number of runs (default 100).
func TestQueueKillWorkers(t *testing.T) {
	n := 100
	if v := os.Getenv("LGRUN_FAULT_RUNS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatalf("LGRUN_FAULT_RUNS=%q: %v", v, err)
		}
	}
	_, db := pgtest.Schema(t)
	dir := t.TempDir()
	for _, f := range []string{"sidefx.yaml", "mark.sh"} {
		b, err := os.ReadFile(filepath.Join("testdata", "sidefx", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	graph := filepath.Join(dir, "sidefx.yaml")
	flags := []string{"--concurrency=4", "--claim-ttl=1s", "--lease-ttl=1s"}
	api := serveAPI(t, db, graph)
	var mu sync.Mutex
	workers := []*exec.Cmd{}
	for i := 0; i < 3; i++ {
		workers = append(workers, startWorker(t, db, flags, graph))
	}
	runs := map[string]string{} // thread → run
	tags := map[string]string{} // thread → tag
	for i := 0; i < n; i++ {
		th := call(t, "POST", api+"/threads", `{}`)
		tid := th["thread_id"].(string)
		tag := fmt.Sprintf("r%d", i)
		run := call(t, "POST", api+"/threads/"+tid+"/runs", fmt.Sprintf(`{"assistant_id": "sidefx", "input": {"tag": %q}}`, tag))
		runs[tid], tags[tid] = run["run_id"].(string), tag
	}
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	unfinished := func() int {
		var k int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM server_runs WHERE status IN ('pending', 'running')`).Scan(&k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	kills := 0
	deadline := time.Now().Add(5 * time.Minute)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for unfinished() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d runs unfinished after 5 minutes", unfinished())
		}
		time.Sleep(time.Duration(500+rng.Intn(500)) * time.Millisecond)
		if unfinished() == 0 {
			break
		}
		mu.Lock()
		i := rng.Intn(len(workers))
		victim := workers[i]
		victim.Process.Signal(syscall.SIGKILL)
		victim.Wait()
		kills++
		workers[i] = startWorker(t, db, flags, graph)
		mu.Unlock()
	}
	t.Logf("%d runs, %d workers killed", n, kills)
	if kills < 3 && n >= 100 {
		t.Fatalf("only %d workers killed: the runs finished too fast for the test to mean anything", kills)
	}

	lines := map[string]map[int]int{} // tag → call → lines
	b, err := os.ReadFile(filepath.Join(dir, "sidefx.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var c struct {
			Tag string `json:"tag"`
			I   int    `json:"i"`
		}
		if err := json.Unmarshal([]byte(l), &c); err != nil {
			t.Fatalf("side-effect line %q: %v", l, err)
		}
		if lines[c.Tag] == nil {
			lines[c.Tag] = map[int]int{}
		}
		lines[c.Tag][c.I]++
	}
	rerun := 0
	for tid, rid := range runs {
		tag := tags[tid]
		var status, data string
		if err := conn.QueryRow(context.Background(), `SELECT status, data FROM server_runs WHERE id = $1`, rid).Scan(&status, &data); err != nil {
			t.Fatal(err)
		}
		var row struct{ Attempt int }
		_ = json.Unmarshal([]byte(data), &row)
		if status != "success" {
			t.Errorf("run %s (%s): %s", rid, tag, status)
			continue
		}
		st := call(t, "GET", api+"/threads/"+tid+"/state", "")
		vals := st["values"].(map[string]any)
		msgs, _ := vals["messages"].([]any)
		var tools []string
		for _, m := range msgs {
			mm := m.(map[string]any)
			if mm["role"] == "tool" {
				tools = append(tools, fmt.Sprint(mm["tool_call_id"], "=", mm["content"]))
			}
		}
		var want []string
		for i := 1; i <= 10; i++ {
			want = append(want, fmt.Sprintf(`c%d={"i":%d,"tag":"%s"}`, i, i, tag))
		}
		if vals["count"] != float64(10) || len(msgs) != 20 || strings.Join(tools, " ") != strings.Join(want, " ") {
			t.Errorf("run %s: final state differs from an uninterrupted run's: count %v, %d messages, tool results %v", tag, vals["count"], len(msgs), tools)
		}
		extra := 0
		for i := 1; i <= 10; i++ {
			c := lines[tag][i]
			if c == 0 {
				t.Errorf("run %s: call %d left no line", tag, i)
			}
			extra += max(c-1, 0)
		}
		if extra > row.Attempt-1 {
			t.Errorf("run %s: %d calls ran again over %d attempts (%v): a committed step re-ran", tag, extra, row.Attempt, lines[tag])
		}
		rerun += extra
		var cps, parents int
		if err := conn.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT parent) FROM checkpoints WHERE thread = $1`, tid).Scan(&cps, &parents); err != nil {
			t.Fatal(err)
		}
		if cps != parents {
			t.Errorf("thread %s: %d checkpoints on %d parents: two writers committed on one head", tag, cps, parents)
		}
	}
	t.Logf("%d tool calls ran a second time (steps in flight at a kill)", rerun)
}

// BenchmarkQueueThroughput measures background runs per second through
// the Postgres queue with 1, 2 and 4 worker processes (concurrency 4
// each): 200 runs of graphs/loop.yaml counting to 10 (11 checkpointed
// steps each) per iteration, from queued to all finished.
func BenchmarkQueueThroughput(b *testing.B) {
	for _, w := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) {
			_, db := pgtest.Schema(b)
			api := "http://" + freeAddrB(b)
			startLgrunB(b, "listening on", "serve", "--db", db, "--addr", strings.TrimPrefix(api, "http://"), "--concurrency=0", "../graphs/loop.yaml")
			for i := 0; i < w; i++ {
				startLgrunB(b, "lgrun worker: started", "worker", "--db", db, "--concurrency=4", "../graphs/loop.yaml")
			}
			conn, err := pgx.Connect(context.Background(), db)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close(context.Background())
			const runs = 200
			b.ResetTimer()
			start := time.Now()
			for it := 0; it < b.N; it++ {
				body := "["
				for i := 0; i < runs; i++ {
					if i > 0 {
						body += ","
					}
					body += `{"assistant_id": "loop", "input": {"target": 10}}`
				}
				body += "]"
				resp, err := http.Post(api+"/runs/batch", "application/json", strings.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("batch: %d", resp.StatusCode)
				}
				for {
					var k int
					if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM server_runs WHERE status IN ('pending', 'running')`).Scan(&k); err != nil {
						b.Fatal(err)
					}
					if k == 0 {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			b.ReportMetric(float64(runs*b.N)/time.Since(start).Seconds(), "runs/s")
		})
	}
}

func freeAddrB(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startLgrunB is startLgrun for benchmarks.
func startLgrunB(b *testing.B, ready string, args ...string) {
	b.Helper()
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
		b.Fatal(buildErr)
	}
	cmd := exec.Command(binPath, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	up := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), ready) {
				up <- struct{}{}
			}
		}
	}()
	select {
	case <-up:
	case <-time.After(30 * time.Second):
		b.Fatalf("lgrun %s did not start", args[0])
	}
}
