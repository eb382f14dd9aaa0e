package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/server"
	"github.com/lgrun/lgrun/spec"
)

const benchOne = `
version: 1
name: one
state:
  n: {type: int, default: 0}
nodes:
  inc: {kind: set, set: {n: state.n + 1}}
edges:
  - {from: START, to: inc}
  - {from: inc, to: END}
`

const benchTen = `
version: 1
name: ten
state:
  n: {type: int, default: 0}
nodes:
  inc: {kind: set, set: {n: state.n + 1}}
edges:
  - {from: START, to: inc}
  - {from: inc, when: state.n < 10, to: inc, else: END}
`

// benchServer serves the two bench graphs with durable SQLite checkpoints
// (LGRUN_BENCH_DIR, else a temporary directory) and returns its URL.
// LGRUN_BENCH_URL names another server to measure instead, e.g. the JS
// Agent Server serving the same graphs as "one" and "ten" (see
// BENCHMARKS.md).
func benchServer(b *testing.B) string {
	b.Helper()
	if u := os.Getenv("LGRUN_BENCH_URL"); u != "" {
		return u
	}
	dir := b.TempDir()
	if d := os.Getenv("LGRUN_BENCH_DIR"); d != "" {
		var err error
		if dir, err = os.MkdirTemp(d, "bench"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	saver, err := checkpoint.OpenSQLite(filepath.Join(dir, "lgrun.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { saver.Close() })
	store, err := server.OpenSQLite(filepath.Join(dir, "lgrun-server.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	var graphs []*spec.Graph
	for _, src := range []string{benchOne, benchTen} {
		g, errs := spec.Parse("bench.yaml", []byte(src), nil)
		if errs.HasErrors() {
			b.Fatal(errs)
		}
		graphs = append(graphs, g)
	}
	srv, err := server.New(server.Options{Graphs: graphs, Saver: saver, Store: store,
		Kinds: func(*spec.Graph) (map[string]runtime.NodeFunc, error) { return nil, nil }, Logf: b.Logf})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	b.Cleanup(hs.Close)
	return hs.URL
}

func post(c *http.Client, url, body string) (string, error) {
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("POST %s: %d %s", url, resp.StatusCode, out)
	}
	return string(out), nil
}

func threadID(c *http.Client, base string) (string, error) {
	out, err := post(c, base+"/threads", `{}`)
	if err != nil {
		return "", err
	}
	i := strings.Index(out, `"thread_id":"`)
	if i < 0 || len(out) < i+13+36 {
		return "", fmt.Errorf("no thread id in %s", out)
	}
	return out[i+13 : i+13+36], nil
}

// BenchmarkWait is runs.wait on a new thread per run (the thread create
// included), with 1 or 16 clients at once; it reports runs/s.
func BenchmarkWait(b *testing.B) {
	for _, g := range []string{"one", "ten"} {
		for _, clients := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/clients=%d", g, clients), func(b *testing.B) {
				base := benchServer(b)
				c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
				want := `"n":1}`
				if g == "ten" {
					want = `"n":10}`
				}
				var next atomic.Int64
				start := time.Now()
				b.ResetTimer()
				done := make(chan struct{})
				for w := 0; w < clients; w++ {
					go func() {
						defer func() { done <- struct{}{} }()
						for next.Add(1) <= int64(b.N) {
							tid, err := threadID(c, base)
							if err != nil {
								b.Error(err)
								return
							}
							out, err := post(c, base+"/threads/"+tid+"/runs/wait", `{"assistant_id": "`+g+`", "input": {"n": 0}}`)
							if err != nil {
								b.Error(err)
								return
							}
							if !strings.HasSuffix(strings.TrimSpace(out), want) {
								b.Errorf("result %s", out)
								return
							}
						}
					}()
				}
				for w := 0; w < clients; w++ {
					<-done
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "runs/s")
			})
		}
	}
}

// BenchmarkFirstEvent is the time from sending runs.stream to reading the
// first SSE event (metadata), on a thread created beforehand.
func BenchmarkFirstEvent(b *testing.B) {
	base := benchServer(b)
	c := &http.Client{}
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		tid, err := threadID(c, base)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		resp, err := c.Post(base+"/threads/"+tid+"/runs/stream", "application/json", strings.NewReader(`{"assistant_id": "one", "input": {"n": 0}}`))
		if err != nil {
			b.Fatal(err)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		total += time.Since(start)
		if err != nil || line != "event: metadata\n" {
			b.Fatalf("first line %q: %v", line, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/first-event")
}
