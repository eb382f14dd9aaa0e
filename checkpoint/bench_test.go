package checkpoint_test

// Storage benchmarks; results and how to run them are in BENCHMARKS.md.
//
//	go test ./checkpoint -run XXX -bench . -benchtime 1x

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// chatGraph adds one message of about 200 bytes of content per superstep
// until n reaches target.
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

func mustParse(tb testing.TB, src string) *spec.Graph {
	tb.Helper()
	g, errs := spec.Parse("bench.yaml", []byte(src), nil)
	if errs.HasErrors() {
		tb.Fatalf("graph does not check:\n%v", errs)
	}
	return g
}

// diskBytes checkpoints the WAL into the database and returns the size of
// the database file plus its WAL.
func diskBytes(tb testing.TB, s *checkpoint.SQLite) int64 {
	tb.Helper()
	if _, err := s.DB().Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		tb.Fatal(err)
	}
	var n int64
	for _, suffix := range []string{"", "-wal"} {
		if fi, err := os.Stat(s.Path() + suffix); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// benchDir is a temporary directory for databases: in $LGRUN_BENCH_DIR when
// set (e.g. /dev/shm, to leave the disk's fsync latency out), else in the
// test's temporary directory.
func benchDir(tb testing.TB) string {
	root := os.Getenv("LGRUN_BENCH_DIR")
	if root == "" {
		return tb.TempDir()
	}
	dir, err := os.MkdirTemp(root, "lgrun-bench-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

type messagesRun struct {
	bytes int64
	// Mean and median step times of the first and last 50 steps.
	early, late       time.Duration
	earlyMed, lateMed time.Duration
	load, list        time.Duration
	chainRows         int
	chainPacks        int // packs read with the rows (see checkpoint/pack.go)
}

func meanMedian(ds []time.Duration) (time.Duration, time.Duration) {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return sum / time.Duration(len(ds)), s[len(s)/2]
}

// runMessages runs chatGraph for n steps on a fresh SQLite database.
func runMessages(tb testing.TB, n int) messagesRun {
	tb.Helper()
	s := MustOpenPath(tb, filepath.Join(benchDir(tb), "chat.db"), nil)
	var stamps []time.Time
	r := &runtime.Runner{Graph: mustParse(tb, chatGraph), Saver: s, Version: "bench",
		Events: func(e runtime.Event) {
			if e.Kind == runtime.EvCheckpoint || e.Kind == runtime.EvRunStart {
				stamps = append(stamps, time.Now())
			}
		}}
	ctx := context.Background()
	res, err := r.Run(ctx, runtime.RunOptions{Thread: "chat", Input: map[string]any{"target": n}})
	if err != nil {
		tb.Fatal(err)
	}
	if res.Checkpoint.Step != n {
		tb.Fatalf("ran %d steps, want %d", res.Checkpoint.Step, n)
	}
	out := messagesRun{bytes: diskBytes(tb, s)}
	var steps []time.Duration
	for i := 1; i < len(stamps); i++ {
		steps = append(steps, stamps[i].Sub(stamps[i-1]))
	}
	w := min(50, len(steps)/2)
	out.early, out.earlyMed = meanMedian(steps[:w])
	out.late, out.lateMed = meanMedian(steps[len(steps)-w:])

	const reps = 5
	start := time.Now()
	for i := 0; i < reps; i++ {
		cp, err := s.Get(ctx, "chat", "")
		if err != nil {
			tb.Fatal(err)
		}
		if len(cp.Values["messages"].([]any)) != n {
			tb.Fatalf("%d messages, want %d", len(cp.Values["messages"].([]any)), n)
		}
	}
	out.load = time.Since(start) / reps
	start = time.Now()
	for i := 0; i < reps; i++ {
		list, err := s.List(ctx, "chat", 0)
		if err != nil {
			tb.Fatal(err)
		}
		if len(list) != n+1 {
			tb.Fatalf("listed %d checkpoints, want %d", len(list), n+1)
		}
	}
	out.list = time.Since(start) / reps
	st, err := checkpoint.ChainStatsOf(s, "chat", res.Checkpoint.ID)
	if err != nil {
		tb.Fatal(err)
	}
	out.chainRows, out.chainPacks = st.Rows, st.Packs
	return out
}

// BenchmarkMessagesThread runs a thread whose messages list gains one
// ~200-byte message per step, and reports bytes on disk, step time early
// and late, the latest state's load time and the full history's listing
// time. Run with -benchtime 1x: one iteration is a whole thread.
func BenchmarkMessagesThread(b *testing.B) {
	for _, n := range []int{100, 500, 1000, 5000, 10000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var m messagesRun
			for i := 0; i < b.N; i++ {
				m = runMessages(b, n)
			}
			b.ReportMetric(float64(m.bytes)/1024, "KB-on-disk")
			b.ReportMetric(float64(m.early.Microseconds()), "µs/step-first50")
			b.ReportMetric(float64(m.late.Microseconds()), "µs/step-last50")
			b.ReportMetric(float64(m.late)/float64(m.early), "late/early")
			b.ReportMetric(float64(m.earlyMed.Microseconds()), "µs/step-first50-median")
			b.ReportMetric(float64(m.lateMed.Microseconds()), "µs/step-last50-median")
			b.ReportMetric(float64(m.load.Microseconds())/1000, "ms-load")
			b.ReportMetric(float64(m.list.Microseconds())/1000, "ms-list")
			b.ReportMetric(float64(m.chainRows), "chain-rows")
			b.ReportMetric(float64(m.chainPacks), "chain-packs")
		})
	}
}

// commitChain commits n checkpoints of a counter-like thread straight to
// the saver.
func benchCommit(b *testing.B, s runtime.Saver, thread string, n int) {
	ctx := context.Background()
	head := ""
	now := time.Now()
	var clock runtime.IDClock
	row := runtime.Thread{ID: thread, Status: runtime.StatusRunning, Graph: "bench", GraphHash: "h", Created: now, Updated: now}
	for i := 0; i < n; i++ {
		d := runtime.Delta{"count": {Kind: runtime.OpSet, Value: i}}
		cp := &runtime.Checkpoint{Thread: thread, ParentID: head, Step: i, Values: map[string]any{"count": i}, Delta: d,
			Next: []string{"inc"}, Metadata: runtime.Metadata{Source: runtime.SourceLoop, Writes: map[string][]string{"inc": {"count"}},
				Graph: "bench", GraphHash: "h", Version: "bench", Time: now}}
		cp.ID = clock.Next(now, head)
		if err := s.Commit(ctx, &runtime.Commit{Checkpoint: cp, ExpectHead: head, Thread: row}); err != nil {
			b.Fatal(err)
		}
		head = cp.ID
	}
}

// BenchmarkCommit measures one SQLite step commit (a small delta).
func BenchmarkCommit(b *testing.B) {
	for _, d := range []checkpoint.Durability{checkpoint.DurabilityProcess, checkpoint.DurabilityPower} {
		b.Run(string(d), func(b *testing.B) {
			s := MustOpenPath(b, filepath.Join(benchDir(b), "bench.db"), &checkpoint.Options{Durability: d})
			b.ResetTimer()
			benchCommit(b, s, "t", b.N)
		})
	}
}

// BenchmarkList500 lists a 500-checkpoint history.
func BenchmarkList500(b *testing.B) {
	s := MustOpenPath(b, filepath.Join(benchDir(b), "bench.db"), nil)
	benchCommit(b, s, "t", 500)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if l, err := s.List(ctx, "t", 0); err != nil || len(l) != 500 {
			b.Fatal(len(l), err)
		}
	}
}

// logLoopGraph is the 1000-step loop of issue 16: count++ and one item
// appended to the log list per superstep.
const logLoopGraph = `
version: 1
name: loglog
state:
  count: {type: int}
  target: {type: int, default: 1000}
  log: {type: list, items: int, reducer: append}
limits: {steps: 1000000}
nodes:
  inc:
    kind: set
    set:
      count: state.count + 1
      log: state.count + 1
edges:
  - {from: START, to: inc}
  - {from: inc, when: state.count < state.target, to: inc, else: END}
`

// floor is the storage floor of a step: the SQLite settings of the saver
// (WAL, synchronous=NORMAL, the same pragmas), the same JSON encoding of
// the step's delta, and one transaction per step that inserts the delta
// row, with no engine, no head, no snapshot and no checksum.
type floor struct {
	db   *sql.DB
	conn *sql.Conn
	ins  *sql.Stmt
}

func openFloor(tb testing.TB) *floor {
	tb.Helper()
	db, err := checkpoint.OpenFloor(filepath.Join(benchDir(tb), "floor.db"), checkpoint.DurabilityProcess)
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE steps (thread TEXT NOT NULL, id TEXT NOT NULL, parent TEXT NOT NULL, step INTEGER NOT NULL, delta BLOB NOT NULL, PRIMARY KEY (thread, id))`); err != nil {
		tb.Fatal(err)
	}
	ins, err := conn.PrepareContext(ctx, `INSERT INTO steps (thread, id, parent, step, delta) VALUES (?, ?, ?, ?, ?)`)
	if err != nil {
		tb.Fatal(err)
	}
	f := &floor{db: db, conn: conn, ins: ins}
	tb.Cleanup(func() { ins.Close(); conn.Close(); db.Close() })
	return f
}

// run writes n steps of the log loop to thread.
func (f *floor) run(tb testing.TB, thread string, n int) {
	ctx := context.Background()
	var clock runtime.IDClock
	head := ""
	for i := 1; i <= n; i++ {
		d := runtime.Delta{"count": {Kind: runtime.OpSet, Value: i}, "log": {Kind: runtime.OpAppend, Value: []any{i}}}
		b, err := checkpoint.Marshal(d)
		if err != nil {
			tb.Fatal(err)
		}
		id := clock.Next(time.Now(), head)
		if _, err := f.conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
			tb.Fatal(err)
		}
		if _, err := f.ins.ExecContext(ctx, thread, id, head, i, b); err != nil {
			tb.Fatal(err)
		}
		if _, err := f.conn.ExecContext(ctx, `COMMIT`); err != nil {
			tb.Fatal(err)
		}
		head = id
	}
}

var benchSeq int

func benchThread() string { benchSeq++; return fmt.Sprintf("bench-%d", benchSeq) }

// runLogLoop runs the log loop once on r and checks the result.
func runLogLoop(tb testing.TB, r *runtime.Runner) {
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: benchThread()})
	if err != nil {
		tb.Fatal(err)
	}
	if res.Checkpoint.Values["count"] != 1000 || len(res.Checkpoint.Values["log"].([]any)) != 1000 {
		tb.Fatalf("count %v, %d log items", res.Checkpoint.Values["count"], len(res.Checkpoint.Values["log"].([]any)))
	}
}

// BenchmarkLoop1000Log runs the log loop (1,000 supersteps of count++
// and one appended log item) per iteration: on the SQLite saver through
// the engine ("sqlite"), and the storage floor of the same 1,000 steps
// ("floor", see [floor]); "ratio" alternates the two within each
// iteration and reports engine ÷ floor from one run.
func BenchmarkLoop1000Log(b *testing.B) {
	g := mustParse(b, logLoopGraph)
	b.Run("sqlite", func(b *testing.B) {
		r := &runtime.Runner{Graph: g, Saver: MustOpenPath(b, filepath.Join(benchDir(b), "bench.db"), nil), Version: "bench"}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			runLogLoop(b, r)
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*1000), "µs/step")
	})
	b.Run("floor", func(b *testing.B) {
		f := openFloor(b)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			f.run(b, benchThread(), 1000)
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*1000), "µs/step")
	})
	b.Run("ratio", func(b *testing.B) {
		r := &runtime.Runner{Graph: g, Saver: MustOpenPath(b, filepath.Join(benchDir(b), "bench.db"), nil), Version: "bench"}
		f := openFloor(b)
		var engine, fl time.Duration
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			runLogLoop(b, r)
			mid := time.Now()
			f.run(b, benchThread(), 1000)
			engine, fl = engine+mid.Sub(start), fl+time.Since(mid)
		}
		b.ReportMetric(float64(engine.Microseconds())/float64(b.N*1000), "µs/step-engine")
		b.ReportMetric(float64(fl.Microseconds())/float64(b.N*1000), "µs/step-floor")
		b.ReportMetric(float64(engine)/float64(fl), "engine/floor")
	})
}

// BenchmarkColdHead builds an N-message thread (chatGraph) once, then
// per iteration opens the database afresh and reads the thread's latest
// state: what a new process pays to resume or show a long thread.
func BenchmarkColdHead(b *testing.B) {
	for _, n := range []int{10000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			path := filepath.Join(benchDir(b), "chat.db")
			s, err := checkpoint.OpenSQLite(path, nil)
			if err != nil {
				b.Fatal(err)
			}
			r := &runtime.Runner{Graph: mustParse(b, chatGraph), Saver: s, Version: "bench"}
			ctx := context.Background()
			res, err := r.Run(ctx, runtime.RunOptions{Thread: "chat", Input: map[string]any{"target": n}})
			if err != nil {
				b.Fatal(err)
			}
			st, err := checkpoint.ChainStatsOf(s, "chat", res.Checkpoint.ID)
			if err != nil {
				b.Fatal(err)
			}
			s.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s, err := checkpoint.OpenSQLite(path, nil)
				if err != nil {
					b.Fatal(err)
				}
				cp, err := s.Get(ctx, "chat", "")
				if err != nil {
					b.Fatal(err)
				}
				if len(cp.Values["messages"].([]any)) != n {
					b.Fatalf("%d messages", len(cp.Values["messages"].([]any)))
				}
				s.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/open+get")
			b.ReportMetric(float64(st.Rows), "chain-rows")
			b.ReportMetric(float64(st.Packs), "chain-packs")
			b.ReportMetric(float64(st.Bytes)/1024, "chain-KB")
		})
	}
}
