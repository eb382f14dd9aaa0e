package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lgrun/lgrun/checkpoint/postgres/pgtest"
)

// TestQueueFencedWorker steals a run from a live worker whose heartbeat
// has not noticed yet: worker A (a heartbeat a minute apart) is in a tool
// call when worker B, whose sweeper requeues claims older than 300 ms,
// requeues the run and claims it. When A's call returns, A can commit
// nothing: its checkpoint commit and its final run status are refused by
// the fencing token checked in their transactions. B's results stand:
// every tool result in the final state is B's, the run ends success on
// its second attempt, and the thread's checkpoints form one chain.
func TestQueueFencedWorker(t *testing.T) {
	_, db := pgtest.Schema(t)
	dir := t.TempDir()
	for _, f := range []string{"fence.yaml", "gate.sh"} {
		b, err := os.ReadFile(filepath.Join("testdata", "fence", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	graph := filepath.Join(dir, "fence.yaml")
	api := serveAPI(t, db, graph)
	a := startWorker(t, db, []string{"--claim-ttl=1m", "--lease-ttl=1m", "--concurrency=1"}, graph)
	th := call(t, "POST", api+"/threads", `{}`)
	tid := th["thread_id"].(string)
	rid := call(t, "POST", api+"/threads/"+tid+"/runs", `{"assistant_id": "fence", "input": {}}`)["run_id"].(string)

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("A's first tool call", func() bool {
		_, err := os.Stat(filepath.Join(dir, "waiting"))
		return err == nil
	})
	claim := func() (status, worker, token string) {
		var w, tok *string
		if err := conn.QueryRow(ctx, `SELECT status, worker, token FROM server_runs WHERE id = $1`, rid).Scan(&status, &w, &tok); err != nil {
			t.Fatal(err)
		}
		if w != nil && tok != nil {
			worker, token = *w, *tok
		}
		return status, worker, token
	}
	_, workerA, tokA := claim()
	if tokA == "" {
		t.Fatal("A's claim has no token")
	}
	b := startWorker(t, db, []string{"--claim-ttl=300ms"}, graph)
	waitFor("B's claim", func() bool {
		st, w, tok := claim()
		return st == "running" && tok != "" && w != workerA
	})
	if err := os.WriteFile(filepath.Join(dir, "gate"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("the run's end", func() bool {
		st, _, _ := claim()
		return st != "running" && st != "pending"
	})
	// A's final write, if it were not fenced, could land after B's: give
	// it the time to try.
	time.Sleep(500 * time.Millisecond)

	run := call(t, "GET", api+"/threads/"+tid+"/runs/"+rid, "")
	var row struct{ Attempt int }
	var data string
	if err := conn.QueryRow(ctx, `SELECT data FROM server_runs WHERE id = $1`, rid).Scan(&data); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal([]byte(data), &row)
	if run["status"] != "success" || row.Attempt != 2 {
		t.Errorf("run: status %v, attempt %d; want success on attempt 2 (B's)", run["status"], row.Attempt)
	}
	st := call(t, "GET", api+"/threads/"+tid+"/state", "")
	vals := st["values"].(map[string]any)
	msgs, _ := vals["messages"].([]any)
	var got []string
	for _, m := range msgs {
		mm := m.(map[string]any)
		if mm["role"] != "tool" {
			continue
		}
		var res struct {
			Args   struct{ I int }
			Worker int
		}
		if err := json.Unmarshal([]byte(fmt.Sprint(mm["content"])), &res); err != nil {
			t.Fatalf("tool result %v: %v", mm["content"], err)
		}
		who := "?"
		switch res.Worker {
		case a.Process.Pid:
			who = "A"
		case b.Process.Pid:
			who = "B"
		}
		got = append(got, fmt.Sprintf("%d:%s", res.Args.I, who))
	}
	if want := "1:B 2:B 3:B"; strings.Join(got, " ") != want || vals["count"] != float64(3) {
		t.Errorf("final state: count %v, tool results by worker %v; want %s (A lost its claim before its first call returned)", vals["count"], got, want)
	}
	// The run's stored stream is B's, ending once.
	var ends int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM server_run_events WHERE run_id = $1 AND event = 'end'`, rid).Scan(&ends); err != nil || ends != 1 {
		t.Errorf("%d end events stored (%v), want 1", ends, err)
	}
	var cps, parents int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT parent) FROM checkpoints WHERE thread = $1`, tid).Scan(&cps, &parents); err != nil {
		t.Fatal(err)
	}
	if cps != parents {
		t.Errorf("%d checkpoints on %d parents: two writers committed on one head", cps, parents)
	}
}

// TestQueueFailoverDefaults kills a worker (SIGKILL) in the middle of a
// run and starts another, both with the default --claim-ttl and
// --lease-ttl: the run resumes and ends within seconds (the thread lease
// expires with the claim, 5 s, not 30 s later).
func TestQueueFailoverDefaults(t *testing.T) {
	_, db := pgtest.Schema(t)
	dir := t.TempDir()
	for _, f := range []string{"fence.yaml", "gate.sh"} {
		b, err := os.ReadFile(filepath.Join("testdata", "fence", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	graph := filepath.Join(dir, "fence.yaml")
	api := serveAPI(t, db, graph)
	a := startWorker(t, db, nil, graph)
	th := call(t, "POST", api+"/threads", `{}`)
	tid := th["thread_id"].(string)
	rid := call(t, "POST", api+"/threads/"+tid+"/runs", `{"assistant_id": "fence", "input": {}}`)["run_id"].(string)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "waiting")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.Process.Kill()
	a.Wait()
	killed := time.Now()
	if err := os.WriteFile(filepath.Join(dir, "gate"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	startWorker(t, db, nil, graph)
	final := call(t, "GET", api+"/threads/"+tid+"/runs/"+rid+"/join", "")
	took := time.Since(killed)
	run := call(t, "GET", api+"/threads/"+tid+"/runs/"+rid, "")
	if run["status"] != "success" || final["count"] != float64(3) {
		t.Fatalf("run after the failover: %v, final %v", run["status"], final)
	}
	t.Logf("the run ended %v after its worker was killed", took.Round(time.Millisecond))
	if took > 15*time.Second {
		t.Fatalf("the run ended %v after its worker was killed: failover with the default TTLs should take seconds", took)
	}
}

// TestQueueQueuedGaugeAcrossProcesses reads lgrun_runs_queued from the
// /metrics of two API servers on one database: runs queued through one
// count on both (the gauge is the database's queue depth), and they
// leave it on both once a worker process claims them.
func TestQueueQueuedGaugeAcrossProcesses(t *testing.T) {
	_, db := pgtest.Schema(t)
	a := serveAPI(t, db, "../graphs/loop.yaml")
	c := serveAPI(t, db, "../graphs/loop.yaml")
	for i := 0; i < 2; i++ {
		th := call(t, "POST", c+"/threads", `{}`)
		tid := th["thread_id"].(string)
		call(t, "POST", c+"/threads/"+tid+"/runs", `{"assistant_id": "loop", "input": {"target": 100000}, "config": {"recursion_limit": 200000}}`)
	}
	queued := func(api string) float64 {
		resp, err := http.Get(api + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "lgrun_runs_queued") {
				f := strings.Fields(l)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				return v
			}
		}
		return -1 // no gauge
	}
	expect := func(want float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ga, gc := queued(a), queued(c)
			if ga == want && gc == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("lgrun_runs_queued: %v on A, %v on C (where the runs were created); want %v on both", ga, gc, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	expect(2)
	startWorker(t, db, nil, "../graphs/loop.yaml")
	expect(0)
}

// TestQueueReclaimOwnRun requeues (as a sweep does) a run its worker is
// still executing, blocked in a tool call, and lets the same worker claim
// it again: the first execution stops, its writes fenced off, before the
// second starts, and the run ends once, on its second attempt, with the
// worker still alive.
func TestQueueReclaimOwnRun(t *testing.T) {
	_, db := pgtest.Schema(t)
	dir := t.TempDir()
	for _, f := range []string{"fence.yaml", "gate.sh"} {
		b, err := os.ReadFile(filepath.Join("testdata", "fence", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	graph := filepath.Join(dir, "fence.yaml")
	api := serveAPI(t, db, graph)
	w := startWorker(t, db, []string{"--claim-ttl=1m", "--concurrency=4"}, graph)
	th := call(t, "POST", api+"/threads", `{}`)
	tid := th["thread_id"].(string)
	rid := call(t, "POST", api+"/threads/"+tid+"/runs", `{"assistant_id": "fence", "input": {}}`)["run_id"].(string)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "waiting")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var tok1 string
	if err := conn.QueryRow(ctx, `SELECT token FROM server_runs WHERE id = $1`, rid).Scan(&tok1); err != nil {
		t.Fatal(err)
	}
	// What the sweeper does to a claim whose heartbeat is too old.
	if _, err := conn.Exec(ctx, `UPDATE server_runs SET status = 'pending', worker = NULL, token = NULL WHERE id = $1`, rid); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_notify('lgrun_runs', '')`); err != nil {
		t.Fatal(err)
	}
	for {
		var st string
		var tok *string
		if err := conn.QueryRow(ctx, `SELECT status, token FROM server_runs WHERE id = $1`, rid).Scan(&st, &tok); err != nil {
			t.Fatal(err)
		}
		if st == "running" && tok != nil && *tok != tok1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not claim the run again")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(dir, "gate"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	final := call(t, "GET", api+"/threads/"+tid+"/runs/"+rid+"/join", "")
	time.Sleep(300 * time.Millisecond)
	if w.ProcessState != nil || w.Process.Signal(syscall.Signal(0)) != nil {
		t.Fatal("the worker died")
	}
	var data string
	var ends, cps, parents int
	if err := conn.QueryRow(ctx, `SELECT data FROM server_runs WHERE id = $1`, rid).Scan(&data); err != nil {
		t.Fatal(err)
	}
	var row struct {
		Status  string
		Attempt int
	}
	_ = json.Unmarshal([]byte(data), &row)
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM server_run_events WHERE run_id = $1 AND event = 'end'`, rid).Scan(&ends); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT parent) FROM checkpoints WHERE thread = $1`, tid).Scan(&cps, &parents); err != nil {
		t.Fatal(err)
	}
	if row.Status != "success" || row.Attempt != 2 || ends != 1 || final["count"] != float64(3) || cps != parents {
		t.Fatalf("run %s on attempt %d, %d end events, final %v, %d checkpoints on %d parents; want success on attempt 2, one end, count 3, one chain",
			row.Status, row.Attempt, ends, final, cps, parents)
	}
}
