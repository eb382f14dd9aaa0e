package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lgrun/lgrun/checkpoint/postgres/pgtest"
)

// TestPostgresCrashResumesBackgroundRuns runs `lgrun serve --db
// postgres://…`: threads and runs are rows of the server_ tables in the
// saver's schema, and background runs a SIGKILL interrupts continue at
// the next start with the state an uninterrupted run has.
func TestPostgresCrashResumesBackgroundRuns(t *testing.T) {
	_, db := pgtest.Schema(t)
	cmd, url := startServe(t, db, []string{"--lease-ttl=1s"}, "../graphs/loop.yaml")
	const target = 300
	type job struct{ thread, run string }
	var jobs []job
	for i := 0; i < 3; i++ {
		th := call(t, "POST", url+"/threads", `{}`)
		tid := th["thread_id"].(string)
		run := call(t, "POST", url+"/threads/"+tid+"/runs", fmt.Sprintf(`{"assistant_id": "loop", "input": {"target": %d}, "config": {"recursion_limit": 1000}}`, target))
		jobs = append(jobs, job{tid, run["run_id"].(string)})
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := call(t, "GET", url+"/threads/"+jobs[0].thread+"/state", "")
		v, _ := st["values"].(map[string]any)
		if c, _ := v["count"].(float64); c >= 10 {
			if c >= target {
				t.Fatalf("the run finished before the kill (count %v): make it longer", c)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the runs did not progress")
		}
		time.Sleep(5 * time.Millisecond)
	}
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM server_runs WHERE status IN ('pending', 'running')`).Scan(&n); err != nil || n != len(jobs) {
		t.Fatalf("unfinished runs in Postgres: %d, %v (want %d)", n, err, len(jobs))
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	_, url = startServe(t, db, []string{"--lease-ttl=1s"}, "../graphs/loop.yaml")
	want := []any{}
	for i := 1; i <= target; i++ {
		want = append(want, fmt.Sprintf("count=%d", i))
	}
	want = append(want, fmt.Sprintf("done at %d", target))
	wantJSON, _ := json.Marshal(want)
	for _, j := range jobs {
		final := call(t, "GET", url+"/threads/"+j.thread+"/runs/"+j.run+"/join", "")
		got, _ := json.Marshal(final["log"])
		if string(got) != string(wantJSON) {
			t.Errorf("thread %s: log after the crash differs from an uninterrupted run's (%d entries): got %.300s (final %.300v)", j.thread, len(want), got, final)
		}
		run := call(t, "GET", url+"/threads/"+j.thread+"/runs/"+j.run, "")
		if run["status"] != "success" {
			t.Errorf("run %s: status %v, want success", j.run, run["status"])
		}
	}
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM server_runs WHERE status = 'success'`).Scan(&n); err != nil || n != len(jobs) {
		t.Fatalf("finished runs in Postgres: %d, %v (want %d)", n, err, len(jobs))
	}
}
