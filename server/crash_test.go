package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func call(t *testing.T, method, url, body string) map[string]any {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: %s", method, url, b)
	}
	return m
}

// TestCrashResumesBackgroundRuns kills `lgrun serve` with SIGKILL while
// background runs are in flight, starts it again on the same database, and
// checks every run finishes with the state an uninterrupted run has: each
// increment logged exactly once, so no committed step ran again.
func TestCrashResumesBackgroundRuns(t *testing.T) {
	db := filepath.Join(t.TempDir(), "lgrun.db")
	cmd, url := startServe(t, db, nil, "../graphs/loop.yaml")
	const target = 400
	type job struct{ thread, run string }
	var jobs []job
	for i := 0; i < 4; i++ {
		th := call(t, "POST", url+"/threads", `{}`)
		tid := th["thread_id"].(string)
		run := call(t, "POST", url+"/threads/"+tid+"/runs", fmt.Sprintf(`{"assistant_id": "loop", "input": {"target": %d}, "config": {"recursion_limit": 1000}}`, target))
		jobs = append(jobs, job{tid, run["run_id"].(string)})
	}
	// Wait until the runs are well under way, then kill the server.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := call(t, "GET", url+"/threads/"+jobs[0].thread+"/state", "")
		v, _ := st["values"].(map[string]any)
		if c, _ := v["count"].(float64); c >= 20 {
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
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	_, url = startServe(t, db, nil, "../graphs/loop.yaml")
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
			t.Errorf("thread %s: log after the crash differs from an uninterrupted run's:\n got %s\nwant %s", j.thread, got, wantJSON)
		}
		run := call(t, "GET", url+"/threads/"+j.thread+"/runs/"+j.run, "")
		if run["status"] != "success" {
			t.Errorf("run %s: status %v, want success", j.run, run["status"])
		}
		th := call(t, "GET", url+"/threads/"+j.thread, "")
		if th["status"] != "idle" {
			t.Errorf("thread %s: status %v, want idle", j.thread, th["status"])
		}
	}
}
