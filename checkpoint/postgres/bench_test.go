package postgres_test

// Benchmarks of the Postgres saver side by side with SQLite, on the
// workloads of checkpoint/bench_test.go; results are in BENCHMARKS.md.
//
//	go test ./checkpoint/postgres -run XXX -bench . -benchtime 1x   # thread runs
//	go test ./checkpoint/postgres -run XXX -bench 'Commit|List500'

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// chatGraph is checkpoint/bench_test.go's: one message of about 200 bytes
// of content per superstep until n reaches target.
const chatGraph = `
version: 1
name: chat
state:
  n: {type: int}
  target: {type: int, default: 100}
  messages: {type: messages}
limits: {steps: 1000000}
nodes:
  talk:
    kind: set
    set:
      n: state.n + 1
      messages: '{"role": "assistant", "content": "reply " + string(state.n) + ": " + repeat("lorem ipsum ", 16)}'
edges:
  - {from: START, to: talk}
  - {from: talk, when: state.n < state.target, to: talk, else: END}
`

// store is a saver under benchmark with a way to measure its size.
type store struct {
	runtime.Saver
	bytes func() int64
}

func savers(b *testing.B) map[string]func(b *testing.B) store {
	return map[string]func(b *testing.B) store{
		"postgres": func(b *testing.B) store {
			s, _ := open(b, nil)
			return store{s, func() int64 {
				n, err := s.Size(bg)
				if err != nil {
					b.Fatal(err)
				}
				return n
			}}
		},
		"sqlite": func(b *testing.B) store {
			path := filepath.Join(b.TempDir(), "bench.db")
			s, err := checkpoint.OpenSQLite(path, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return store{s, func() int64 {
				if _, err := s.DB().Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
					b.Fatal(err)
				}
				var n int64
				for _, suffix := range []string{"", "-wal"} {
					if fi, err := os.Stat(path + suffix); err == nil {
						n += fi.Size()
					}
				}
				return n
			}}
		},
	}
}

// BenchmarkMessagesThread runs a 500-step (and a 2,000-step) thread of chatGraph through
// the runtime and reports the time per checkpointed step, the bytes the
// database takes (Postgres: pg_total_relation_size of the tables; SQLite:
// the file and its WAL), those of the empty database (KB-empty, measured
// the same way before the run), the difference (KB-thread: the bytes the
// thread itself adds) and the time to list its history. Run with
// -benchtime 1x: one iteration is a whole thread.
func BenchmarkMessagesThread(b *testing.B) {
	g, errs := spec.Parse("bench.yaml", []byte(chatGraph), nil)
	if errs.HasErrors() {
		b.Fatal(errs)
	}
	for _, bc := range []struct {
		name string
		n    int
	}{{"postgres/N=500", 500}, {"sqlite/N=500", 500}, {"postgres/N=1000", 1000}, {"sqlite/N=1000", 1000}, {"postgres/N=2000", 2000}, {"sqlite/N=2000", 2000}} {
		name, n := bc.name[:strings.Index(bc.name, "/")], bc.n
		b.Run(bc.name, func(b *testing.B) {
			var step, list time.Duration
			var bytes, empty, thread int64
			for i := 0; i < b.N; i++ {
				s := savers(b)[name](b)
				empty = s.bytes()
				r := &runtime.Runner{Graph: g, Saver: s, Version: "bench"}
				start := time.Now()
				res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "chat", Input: map[string]any{"target": n}})
				if err != nil {
					b.Fatal(err)
				}
				step = time.Since(start) / time.Duration(n)
				if res.Checkpoint.Step != n {
					b.Fatalf("ran %d steps, want %d", res.Checkpoint.Step, n)
				}
				bytes = s.bytes()
				thread = bytes - empty
				start = time.Now()
				if l, err := s.List(bg, "chat", 0); err != nil || len(l) != n+1 {
					b.Fatal(len(l), err)
				}
				list = time.Since(start)
			}
			b.ReportMetric(float64(step.Microseconds()), "µs/step")
			b.ReportMetric(float64(bytes)/1024, "KB-in-db")
			b.ReportMetric(float64(empty)/1024, "KB-empty")
			b.ReportMetric(float64(thread)/1024, "KB-thread")
			b.ReportMetric(float64(list.Microseconds())/1000, "ms-list")
		})
	}
}

// benchCommit commits n checkpoints of a counter-like thread straight to
// the saver (checkpoint/bench_test.go's workload).
func benchCommit(b *testing.B, s runtime.Saver, thread string, n int) {
	head := ""
	now := time.Now()
	row := runtime.Thread{ID: thread, Status: runtime.StatusRunning, Graph: "bench", GraphHash: "h", Created: now, Updated: now}
	for i := 0; i < n; i++ {
		d := runtime.Delta{"count": {Kind: runtime.OpSet, Value: i}}
		cp := &runtime.Checkpoint{Thread: thread, ParentID: head, Step: i, Values: map[string]any{"count": i}, Delta: d,
			Next: []string{"inc"}, Metadata: runtime.Metadata{Source: runtime.SourceLoop, Writes: map[string][]string{"inc": {"count"}},
				Graph: "bench", GraphHash: "h", Version: "bench", Time: now}}
		cp.ID = ids.Next(now, head)
		if err := s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: head, Thread: row}); err != nil {
			b.Fatal(err)
		}
		head = cp.ID
	}
}

// BenchmarkCommit measures one step commit (a small delta).
func BenchmarkCommit(b *testing.B) {
	for _, name := range []string{"postgres", "sqlite"} {
		b.Run(name, func(b *testing.B) {
			s := savers(b)[name](b)
			b.ResetTimer()
			benchCommit(b, s, "t", b.N)
		})
	}
}

// BenchmarkList500 lists a 500-checkpoint history.
func BenchmarkList500(b *testing.B) {
	for _, name := range []string{"postgres", "sqlite"} {
		b.Run(name, func(b *testing.B) {
			s := savers(b)[name](b)
			benchCommit(b, s, "t", 500)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if l, err := s.List(bg, "t", 0); err != nil || len(l) != 500 {
					b.Fatal(len(l), err)
				}
			}
		})
	}
}
