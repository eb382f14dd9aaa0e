package runtime_test

// Runtime benchmarks; results and how to run them are in BENCHMARKS.md.
//
//	go test ./runtime -run XXX -bench . -benchtime 3x

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// benchNopSaver discards everything: the runner's own cost per step.
type benchNopSaver struct{}

func (benchNopSaver) Commit(context.Context, *runtime.Commit) error { return nil }
func (benchNopSaver) Mark(context.Context, *runtime.Mark) error     { return nil }
func (benchNopSaver) Get(context.Context, string, string) (*runtime.Checkpoint, error) {
	return nil, runtime.ErrNotFound
}
func (benchNopSaver) List(context.Context, string, int) ([]*runtime.Checkpoint, error) {
	return nil, runtime.ErrNotFound
}
func (benchNopSaver) Thread(context.Context, string) (*runtime.Thread, error) {
	return nil, runtime.ErrNotFound
}
func (benchNopSaver) Threads(context.Context) ([]*runtime.Thread, error) { return nil, nil }
func (benchNopSaver) DeleteThread(context.Context, string) error         { return runtime.ErrNotFound }

var _ runtime.Saver = benchNopSaver{}

const benchCounterGraph = `
version: 1
name: counter
state:
  count: {type: int}
  target: {type: int, default: 1000}
limits: {steps: 1000000}
nodes:
  inc:
    kind: set
    set:
      count: state.count + 1
edges:
  - {from: START, to: inc}
  - {from: inc, when: state.count < state.target, to: inc, else: END}
`

// benchLogGraph is the counter loop with an append log: each superstep
// increments count and appends one small string to log (reducer append),
// the workload of issue 16's step-time rows.
const benchLogGraph = `
version: 1
name: counter-log
state:
  count: {type: int}
  target: {type: int, default: 1000}
  log: {type: list, items: string, reducer: append}
limits: {steps: 1000000}
nodes:
  inc:
    kind: set
    set:
      count: state.count + 1
      log: '"step " + string(state.count)'
edges:
  - {from: START, to: inc}
  - {from: inc, when: state.count < state.target, to: inc, else: END}
`

// benchMessagesGraph adds one message (content ~200 bytes) to a messages
// field per superstep until count = target.
var benchMessagesGraph = `
version: 1
name: messages
state:
  count: {type: int}
  target: {type: int, default: 10000}
  messages: {type: messages}
limits: {steps: 1000000}
nodes:
  say:
    kind: set
    set:
      count: state.count + 1
      messages: '{role: "user", content: "message " + string(state.count) + " ` + strings.Repeat("lorem ipsum ", 16) + `"}'
edges:
  - {from: START, to: say}
  - {from: say, when: state.count < state.target, to: say, else: END}
`

func benchFanoutGraph(n int) string {
	var b strings.Builder
	b.WriteString("version: 1\nname: fanout\nstate:\n  results: {type: list, items: string, reducer: append}\n  total: {type: int}\nnodes:\n")
	var names []string
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("w%d", i)
		names = append(names, name)
		fmt.Fprintf(&b, "  %s:\n    kind: set\n    set:\n      results: '\"%s\"'\n", name, name)
	}
	b.WriteString("  join:\n    kind: set\n    set:\n      total: len(state.results)\n")
	fmt.Fprintf(&b, "edges:\n  - {from: START, to: [%s]}\n  - {from: [%s], to: join}\n  - {from: join, to: END}\n",
		strings.Join(names, ", "), strings.Join(names, ", "))
	return b.String()
}

type benchSaver struct {
	name string
	new  func(b *testing.B) runtime.Saver
}

var benchSavers = []benchSaver{
	{"nop", func(*testing.B) runtime.Saver { return benchNopSaver{} }},
	{"memory", func(*testing.B) runtime.Saver { return checkpoint.NewMemory() }},
	{"sqlite", func(b *testing.B) runtime.Saver {
		s, err := checkpoint.OpenSQLite(filepath.Join(benchDir(b), "bench.db"), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	}},
}

// benchDir is a temporary directory for databases: in $LGRUN_BENCH_DIR when
// set (e.g. /dev/shm, to leave the disk's fsync latency out), else in the
// test's temporary directory.
func benchDir(b *testing.B) string {
	root := os.Getenv("LGRUN_BENCH_DIR")
	if root == "" {
		return b.TempDir()
	}
	dir, err := os.MkdirTemp(root, "lgrun-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func benchGraph(b *testing.B, src string) *spec.Graph {
	b.Helper()
	g, errs := spec.Parse("bench.yaml", []byte(src), nil)
	if errs.HasErrors() {
		b.Fatalf("graph does not check:\n%v", errs)
	}
	return g
}

var benchThreadSeq atomic.Int64

func benchThreadID() string { return fmt.Sprintf("bench-%d", benchThreadSeq.Add(1)) }

// BenchmarkLoop1000 runs a 1,000-superstep counter loop per iteration and
// reports µs per superstep.
func BenchmarkLoop1000(b *testing.B) {
	g := benchGraph(b, benchCounterGraph)
	for _, sk := range benchSavers {
		b.Run(sk.name, func(b *testing.B) {
			r := &runtime.Runner{Graph: g, Saver: sk.new(b), Version: "bench"}
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := r.Run(ctx, runtime.RunOptions{Thread: benchThreadID()})
				if err != nil {
					b.Fatal(err)
				}
				if res.Checkpoint.Values["count"] != 1000 || res.Checkpoint.Step != 1000 {
					b.Fatalf("count %v at step %d", res.Checkpoint.Values["count"], res.Checkpoint.Step)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*1000), "µs/step")
		})
	}
}

// BenchmarkLoop1000Log is BenchmarkLoop1000 with an append log: each
// superstep also appends one item to a list field, so the list has 1,000
// items at the end. It reports µs and allocations per superstep.
func BenchmarkLoop1000Log(b *testing.B) {
	g := benchGraph(b, benchLogGraph)
	for _, sk := range benchSavers {
		b.Run(sk.name, func(b *testing.B) {
			r := &runtime.Runner{Graph: g, Saver: sk.new(b), Version: "bench"}
			ctx := context.Background()
			b.ReportAllocs()
			var before, after goruntime.MemStats
			goruntime.ReadMemStats(&before)
			cpu := processCPU()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := r.Run(ctx, runtime.RunOptions{Thread: benchThreadID()})
				if err != nil {
					b.Fatal(err)
				}
				log, _ := res.Checkpoint.Values["log"].([]any)
				if res.Checkpoint.Values["count"] != 1000 || len(log) != 1000 || log[999] != "step 999" {
					b.Fatalf("count %v, %d log items at step %d", res.Checkpoint.Values["count"], len(log), res.Checkpoint.Step)
				}
			}
			b.StopTimer()
			cpu = processCPU() - cpu
			goruntime.ReadMemStats(&after)
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*1000), "µs/step")
			// CPU time of the process (all threads, GC included) per step:
			// steadier than elapsed time when other work shares the machine.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*1000), "cpu-µs/step")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N*1000), "allocs/step")
		})
	}
}

// BenchmarkMessages10k runs 10,000 supersteps, each adding a message to a
// messages field, and reports the mean step time of the first and of the
// last 1,000 steps and their ratio (flat: 1), in elapsed time and in CPU
// time of the process (steadier on a shared machine).
func BenchmarkMessages10k(b *testing.B) {
	g := benchGraph(b, benchMessagesGraph)
	for _, sk := range benchSavers[:2] {
		b.Run(sk.name, func(b *testing.B) {
			var at [4]time.Time
			var cpuAt [4]time.Duration
			marks := map[int]int{1: 0, 1001: 1, 9000: 2, 10000: 3}
			r := &runtime.Runner{Graph: g, Saver: sk.new(b), Version: "bench", Events: func(e runtime.Event) {
				if i, ok := marks[e.Step]; ok && e.Kind == runtime.EvCheckpoint {
					at[i], cpuAt[i] = time.Now(), processCPU()
				}
			}}
			ctx := context.Background()
			var first, last, cpuFirst, cpuLast time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := r.Run(ctx, runtime.RunOptions{Thread: benchThreadID()})
				if err != nil {
					b.Fatal(err)
				}
				if n := len(res.Checkpoint.Values["messages"].([]any)); n != 10000 {
					b.Fatalf("%d messages", n)
				}
				first += at[1].Sub(at[0])
				last += at[3].Sub(at[2])
				cpuFirst += cpuAt[1] - cpuAt[0]
				cpuLast += cpuAt[3] - cpuAt[2]
			}
			b.ReportMetric(float64(first.Microseconds())/float64(b.N*1000), "µs/step-first")
			b.ReportMetric(float64(last.Microseconds())/float64(b.N*1000), "µs/step-last")
			b.ReportMetric(float64(last)/float64(first), "last/first")
			b.ReportMetric(float64(cpuLast)/float64(cpuFirst), "cpu-last/first")
		})
	}
}

// BenchmarkFanout8 runs an 8-way fan-out and join (3 checkpoints and a
// status mark per run) and reports runs/s, one run at a time.
func BenchmarkFanout8(b *testing.B) {
	g := benchGraph(b, benchFanoutGraph(8))
	for _, sk := range benchSavers {
		b.Run(sk.name, func(b *testing.B) {
			r := &runtime.Runner{Graph: g, Saver: sk.new(b), Version: "bench"}
			ctx := context.Background()
			cpu := processCPU()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := r.Run(ctx, runtime.RunOptions{Thread: benchThreadID()})
				if err != nil {
					b.Fatal(err)
				}
				if res.Checkpoint.Values["total"] != 8 {
					b.Fatalf("total %v", res.Checkpoint.Values["total"])
				}
			}
			b.StopTimer()
			cpu = processCPU() - cpu
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
			// Runs per CPU-second of the process (all threads, GC
			// included): steadier than runs/s on a shared machine.
			b.ReportMetric(float64(b.N)/cpu.Seconds(), "runs/cpu-s")
		})
	}
}

// BenchmarkFanout8Turn is BenchmarkFanout8 on threads that exist: each
// run is the second turn of a done thread (made before the timer starts),
// the path of multi-turn runs and of the server's runs.
func BenchmarkFanout8Turn(b *testing.B) {
	g := benchGraph(b, benchFanoutGraph(8))
	for _, sk := range benchSavers[1:] {
		b.Run(sk.name, func(b *testing.B) {
			r := &runtime.Runner{Graph: g, Saver: sk.new(b), Version: "bench"}
			ctx := context.Background()
			threads := make([]string, b.N)
			for i := range threads {
				threads[i] = benchThreadID()
				if _, err := r.Run(ctx, runtime.RunOptions{Thread: threads[i]}); err != nil {
					b.Fatal(err)
				}
			}
			cpu := processCPU()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := r.Run(ctx, runtime.RunOptions{Thread: threads[i]})
				if err != nil {
					b.Fatal(err)
				}
				if res.Checkpoint.Values["total"] != 16 {
					b.Fatalf("total %v", res.Checkpoint.Values["total"])
				}
			}
			b.StopTimer()
			cpu = processCPU() - cpu
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
			b.ReportMetric(float64(b.N)/cpu.Seconds(), "runs/cpu-s")
		})
	}
}

// BenchmarkFanout8Parallel is BenchmarkFanout8 with runs of different
// threads in parallel (GOMAXPROCS goroutines sharing one saver).
func BenchmarkFanout8Parallel(b *testing.B) {
	g := benchGraph(b, benchFanoutGraph(8))
	for _, sk := range benchSavers[1:] {
		b.Run(sk.name, func(b *testing.B) {
			r := &runtime.Runner{Graph: g, Saver: sk.new(b), Version: "bench"}
			ctx := context.Background()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := r.Run(ctx, runtime.RunOptions{Thread: benchThreadID()}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
		})
	}
}

// BenchmarkProcessStart builds the lgrun binary and measures a whole
// process: start, load and check a 1-node graph, run it, exit. Variants:
// --no-db (memory saver) and a SQLite database (created on the first run,
// reused after, each run a new thread).
func BenchmarkProcessStart(b *testing.B) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		b.Skip("go tool not found")
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "lgrun")
	build := exec.Command(goTool, "build", "-o", bin, "github.com/lgrun/lgrun/cmd/lgrun")
	if out, err := build.CombinedOutput(); err != nil {
		b.Skipf("cannot build lgrun: %v\n%s", err, out)
	}
	graph := filepath.Join(dir, "x.yaml")
	src := "version: 1\nname: x\nstate:\n  out: {type: string}\nnodes:\n  only:\n    kind: set\n    set:\n      out: '\"done\"'\nedges:\n  - {from: START, to: only}\n  - {from: only, to: END}\n"
	if err := os.WriteFile(graph, []byte(src), 0o644); err != nil {
		b.Fatal(err)
	}
	db := filepath.Join(dir, "lgrun.db")
	for _, v := range []struct {
		name string
		args []string
	}{
		{"no-db", []string{"run", graph, "--no-db", "-q"}},
		{"sqlite", []string{"--db", db, "run", graph, "-q"}},
	} {
		b.Run(v.name, func(b *testing.B) {
			var stderr bytes.Buffer
			run := func() {
				cmd := exec.Command(bin, v.args...)
				cmd.Dir = dir
				cmd.Env = append(os.Environ(), "NO_COLOR=1")
				cmd.Stderr = &stderr
				if out, err := cmd.Output(); err != nil {
					b.Fatalf("lgrun %s: %v\n%s%s", strings.Join(v.args, " "), err, out, stderr.Bytes())
				}
			}
			run() // warm the page cache; create the database
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				run()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/run")
		})
	}
}
