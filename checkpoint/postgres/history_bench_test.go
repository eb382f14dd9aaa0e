package postgres_test

import (
	"context"
	"testing"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// BenchmarkHistoryValues500 reads the whole history of a 500-step
// messages thread (chatGraph: 501 checkpoints) with every checkpoint's
// values on Postgres (and SQLite, for comparison in one run): get is one
// Get per checkpoint (the path before the history walk), walk the saver's
// HistoryReader, shared the same with shared values.
func BenchmarkHistoryValues500(b *testing.B) {
	g, errs := spec.Parse("bench.yaml", []byte(chatGraph), nil)
	if errs.HasErrors() {
		b.Fatal(errs)
	}
	paths := []struct {
		name string
		o    runtime.HistoryOptions
		read func(context.Context, runtime.Saver, string, runtime.HistoryOptions) ([]*runtime.Checkpoint, error)
	}{
		{"get", runtime.HistoryOptions{}, runtime.HistoryByGet},
		{"walk", runtime.HistoryOptions{}, runtime.ReadHistory},
		{"shared", runtime.HistoryOptions{Shared: true}, runtime.ReadHistory},
	}
	for _, name := range []string{"postgres", "sqlite"} {
		s := savers(b)[name](b).Saver // the saver itself, with its HistoryReader
		if _, ok := s.(runtime.HistoryReader); !ok {
			b.Fatalf("%s has no HistoryReader", name)
		}
		r := &runtime.Runner{Graph: g, Saver: s, Version: "bench"}
		if _, err := r.Run(context.Background(), runtime.RunOptions{Thread: "chat", Input: map[string]any{"target": 500}}); err != nil {
			b.Fatal(err)
		}
		for _, p := range paths {
			b.Run(name+"/"+p.name, func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					h, err := p.read(bg, s, "chat", p.o)
					if err != nil || len(h) != 501 {
						b.Fatal(len(h), err)
					}
				}
			})
		}
	}
}
