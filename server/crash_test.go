package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lgrun/lgrun/server"
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

// TestSIGTERMDrains stops `lgrun serve` with SIGTERM while a long run is in
// flight: the process exits cleanly after its drain time, and the run
// continues at the next start to the state an uninterrupted run has.
func TestSIGTERMDrains(t *testing.T) {
	db := filepath.Join(t.TempDir(), "lgrun.db")
	cmd, url := startServe(t, db, []string{"--drain=100ms"}, "../graphs/loop.yaml")
	const target = 3000
	th := call(t, "POST", url+"/threads", `{}`)
	tid := th["thread_id"].(string)
	run := call(t, "POST", url+"/threads/"+tid+"/runs", fmt.Sprintf(`{"assistant_id": "loop", "input": {"target": %d}, "config": {"recursion_limit": 10000}}`, target))
	rid := run["run_id"].(string)
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := call(t, "GET", url+"/threads/"+tid+"/state", "")
		v, _ := st["values"].(map[string]any)
		if c, _ := v["count"].(float64); c >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run did not progress")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("lgrun serve after SIGTERM: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %s", d)
	}
	// The drain stopped the run at a step and left it queued.
	store, err := server.OpenSQLite(filepath.Join(filepath.Dir(db), "lgrun-server.db"))
	if err != nil {
		t.Fatal(err)
	}
	row, err := store.Run(context.Background(), rid)
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	if row.Status != "running" {
		t.Fatalf("run after SIGTERM: %s, want running (to continue at the next start)", row.Status)
	}
	_, url = startServe(t, db, nil, "../graphs/loop.yaml")
	final := call(t, "GET", url+"/threads/"+tid+"/runs/"+rid+"/join", "")
	log, _ := final["log"].([]any)
	if final["count"] != float64(target) || len(log) != target+1 {
		t.Fatalf("after the restart: count %v, %d log entries; want %d and %d", final["count"], len(log), target, target+1)
	}
	for i := 0; i < target; i++ {
		if log[i] != fmt.Sprintf("count=%d", i+1) {
			t.Fatalf("log[%d] = %v: a step ran twice or was lost", i, log[i])
		}
	}
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
		// The first run's stream is resumable: its events are stored.
		run := call(t, "POST", url+"/threads/"+tid+"/runs", fmt.Sprintf(`{"assistant_id": "loop", "input": {"target": %d}, "config": {"recursion_limit": 1000}, "stream_resumable": %v, "stream_mode": "updates"}`, target, i == 0))
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
	// The resumable stream goes on across the crash: ids 0, 1, 2… without
	// a gap or a repeat, a metadata event per attempt, and the end last.
	req, _ := http.NewRequest("GET", url+"/threads/"+jobs[0].thread+"/runs/"+jobs[0].run+"/stream", nil)
	req.Header.Set("Last-Event-ID", "-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	frames := strings.Split(strings.TrimSpace(string(b)), "\n\n")
	attempts := 0
	for i, f := range frames {
		if !strings.HasSuffix(f, fmt.Sprintf("\nid: %d", i)) {
			t.Fatalf("frame %d has the wrong id: %q", i, f)
		}
		if strings.HasPrefix(f, "event: metadata\n") {
			attempts++
			if !strings.Contains(f, fmt.Sprintf(`"attempt":%d`, attempts)) {
				t.Errorf("metadata frame %q: want attempt %d", f, attempts)
			}
		}
	}
	if attempts != 2 || !strings.HasPrefix(frames[len(frames)-1], "event: end\n") {
		t.Errorf("%d attempts (want 2); last frame %q", attempts, frames[len(frames)-1])
	}
}

// TestResumableEventsSurviveRestart replays a resumable stream from the
// store after the server that ran it was killed and started again.
func TestResumableEventsSurviveRestart(t *testing.T) {
	db := filepath.Join(t.TempDir(), "lgrun.db")
	cmd, url := startServe(t, db, nil, "../graphs/loop.yaml")
	th := call(t, "POST", url+"/threads", `{}`)
	tid := th["thread_id"].(string)
	run := call(t, "POST", url+"/threads/"+tid+"/runs", `{"assistant_id": "loop", "input": {"target": 3}, "stream_mode": ["updates"], "stream_resumable": true}`)
	rid := run["run_id"].(string)
	call(t, "GET", url+"/threads/"+tid+"/runs/"+rid+"/join", "")
	stream := func(url string) string {
		req, _ := http.NewRequest("GET", url+"/threads/"+tid+"/runs/"+rid+"/stream", nil)
		req.Header.Set("Last-Event-ID", "-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	before := stream(url)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	_, url = startServe(t, db, nil, "../graphs/loop.yaml")
	after := stream(url)
	if after != before {
		t.Fatalf("replay after the restart differs:\n%s\nbefore the kill:\n%s", after, before)
	}
	for _, want := range []string{"event: metadata\n", "event: updates\ndata: {\"finish\":", "event: end\n"} {
		if !bytes.Contains([]byte(after), []byte(want)) {
			t.Errorf("replay lacks %q:\n%s", want, after)
		}
	}
}
