package checkpoint_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// historyPaths are the ways of reading a history with values that
// BenchmarkHistoryValues500 compares: get is one Get per checkpoint (the
// path before the history walk), walk is the saver's HistoryReader with
// values of their own, shared the same with shared values.
var historyPaths = []struct {
	name string
	read func(ctx context.Context, s runtime.Saver, thread string) ([]*runtime.Checkpoint, error)
}{
	{"get", func(ctx context.Context, s runtime.Saver, thread string) ([]*runtime.Checkpoint, error) {
		return runtime.HistoryByGet(ctx, s, thread, runtime.HistoryOptions{})
	}},
	{"walk", func(ctx context.Context, s runtime.Saver, thread string) ([]*runtime.Checkpoint, error) {
		return runtime.ReadHistory(ctx, s, thread, runtime.HistoryOptions{})
	}},
	{"shared", func(ctx context.Context, s runtime.Saver, thread string) ([]*runtime.Checkpoint, error) {
		return runtime.ReadHistory(ctx, s, thread, runtime.HistoryOptions{Shared: true})
	}},
}

// runChat runs chatGraph for n steps on s, as thread "chat".
func runChat(tb testing.TB, s runtime.Saver, n int) {
	tb.Helper()
	r := &runtime.Runner{Graph: mustParse(tb, chatGraph), Saver: s, Version: "bench"}
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "chat", Input: map[string]any{"target": n}})
	if err != nil {
		tb.Fatal(err)
	}
	if res.Checkpoint.Step != n {
		tb.Fatalf("ran %d steps, want %d", res.Checkpoint.Step, n)
	}
}

// BenchmarkHistoryValues500 reads the whole history of a 500-step
// messages thread (chatGraph: 501 checkpoints, one ~205-byte message
// more in each) with every checkpoint's values, on SQLite and in memory,
// by each of historyPaths. The Postgres figures are in
// checkpoint/postgres.
func BenchmarkHistoryValues500(b *testing.B) {
	for _, saver := range []string{"sqlite", "memory"} {
		var s runtime.Saver
		if saver == "sqlite" {
			s = MustOpenPath(b, filepath.Join(benchDir(b), "history.db"), nil)
		} else {
			s = checkpoint.NewMemory()
		}
		runChat(b, s, 500)
		for _, p := range historyPaths {
			b.Run(saver+"/"+p.name, func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					h, err := p.read(context.Background(), s, "chat")
					if err != nil || len(h) != 501 {
						b.Fatal(len(h), err)
					}
				}
			})
		}
	}
}
