package observe_test

// Per-step overhead of tracing; results in BENCHMARKS.md. Besides the
// wall clock (µs/step) they report the CPU time of the whole process,
// exporter and collector goroutines included (cpu-µs/step), which other
// processes on a shared machine disturb far less.
//
//	go test ./observe -run XXX -bench 'StepOverhead|AgentOverhead' -benchtime 5x -count 5

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/observe"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// The graph of runtime's BenchmarkLoop1000: a set node looping 1,000
// supersteps.
const benchLoopGraph = `
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

// BenchmarkStepOverhead runs the 1,000-step loop with no observer (off),
// with an observer whose spans and metrics go by OTLP/HTTP to a local
// receiver that drops them (on; the export is flushed inside each
// iteration, so its cost counts), with one without superstep spans
// (nosteps) and with one whose sampler drops every run (unsampled: the
// metrics only), on the in-memory saver and on SQLite.
func BenchmarkStepOverhead(b *testing.B) {
	g, errs := spec.Parse("counter.yaml", []byte(benchLoopGraph), nil)
	if g == nil {
		b.Fatal(errs)
	}
	savers := []struct {
		name string
		new  func(b *testing.B) runtime.Saver
	}{
		{"memory", func(*testing.B) runtime.Saver { return checkpoint.NewMemory() }},
		{"sqlite", func(b *testing.B) runtime.Saver {
			s, err := checkpoint.OpenSQLite(filepath.Join(b.TempDir(), "bench.db"), nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
	}
	for _, sv := range savers {
		for _, mode := range []string{"off", "on", "nosteps", "unsampled"} {
			b.Run(sv.name+"/"+mode, func(b *testing.B) {
				ctx := context.Background()
				r := &runtime.Runner{Graph: g, Saver: sv.new(b)}
				var flush func()
				if mode != "off" {
					// A receiver that reads and drops the payloads: a
					// collector's decoding runs elsewhere, not on the
					// runner's CPU.
					rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						io.Copy(io.Discard, r.Body)
						w.Header().Set("Content-Type", "application/x-protobuf")
					}))
					b.Cleanup(rcv.Close)
					te, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(rcv.URL+"/v1/traces"))
					if err != nil {
						b.Fatal(err)
					}
					me, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpointURL(rcv.URL+"/v1/metrics"))
					if err != nil {
						b.Fatal(err)
					}
					sampler := sdktrace.ParentBased(sdktrace.AlwaysSample())
					if mode == "unsampled" {
						sampler = sdktrace.ParentBased(sdktrace.NeverSample())
					}
					tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(te, sdktrace.WithMaxQueueSize(8192)), sdktrace.WithSampler(sampler))
					mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(me)))
					b.Cleanup(func() { tp.Shutdown(ctx); mp.Shutdown(ctx) })
					obs, err := observe.New(observe.Options{TracerProvider: tp, MeterProvider: mp, NoStepSpans: mode == "nosteps"})
					if err != nil {
						b.Fatal(err)
					}
					r.Observer = obs
					flush = func() {
						if err := tp.ForceFlush(ctx); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				cpu := cpuTime()
				for i := 0; i < b.N; i++ {
					res, err := r.Run(ctx, runtime.RunOptions{Thread: fmt.Sprintf("b%d", i)})
					if err != nil || res.Status != runtime.StatusDone {
						b.Fatalf("run: %v %v", res, err)
					}
					if flush != nil {
						flush()
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "µs/step")
				b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N)/1000, "cpu-µs/step")
			})
		}
	}
}

// BenchmarkAgentOverhead runs a one-step graph whose llm node calls a
// local fake OpenAI server over HTTP (the real go-openai client; a node
// span, a chat span, the GenAI metrics) with tracing off and on, on the
// in-memory saver. "off" and "on" answer at once (the fake takes ~0.1 ms,
// a real model 100×–10,000× longer: this is the cost of tracing a run,
// not a realistic ratio); "model10ms/…" answer after 10 ms, faster than
// any hosted model.
func BenchmarkAgentOverhead(b *testing.B) {
	for _, mode := range []string{"off", "on", "model10ms/off", "model10ms/on"} {
		fake := &fakeOpenAI{}
		if strings.HasPrefix(mode, "model10ms/") {
			fake.delay = 10 * time.Millisecond
		}
		fake.srv = httptest.NewServer(http.HandlerFunc(fake.serve))
		b.Cleanup(fake.srv.Close)
		env := map[string]string{"LGRUN_PROVIDER": "openai", "OPENAI_BASE_URL": fake.srv.URL + "/v1", "OPENAI_API_KEY": "sk-test"}
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			opts := []lgrun.Option{lgrun.WithGetenv(func(k string) string { return env[k] })}
			var flush func()
			if strings.HasSuffix(mode, "on") {
				rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					w.Header().Set("Content-Type", "application/x-protobuf")
				}))
				b.Cleanup(rcv.Close)
				te, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(rcv.URL+"/v1/traces"))
				if err != nil {
					b.Fatal(err)
				}
				me, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpointURL(rcv.URL+"/v1/metrics"))
				if err != nil {
					b.Fatal(err)
				}
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(te, sdktrace.WithMaxQueueSize(8192)))
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(me)))
				b.Cleanup(func() { tp.Shutdown(ctx); mp.Shutdown(ctx) })
				obs, err := observe.New(observe.Options{TracerProvider: tp, MeterProvider: mp})
				if err != nil {
					b.Fatal(err)
				}
				opts = append(opts, lgrun.WithObserver(obs))
				flush = func() {
					if err := tp.ForceFlush(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			eng, err := lgrun.New(opts...)
			if err != nil {
				b.Fatal(err)
			}
			file := filepath.Join(b.TempDir(), "flaky.yaml")
			if err := os.WriteFile(file, []byte(fmt.Sprintf(flakyGraph, fake.srv.URL)), 0o644); err != nil {
				b.Fatal(err)
			}
			g, diags := eng.Load(file)
			if g == nil {
				b.Fatal(diags)
			}
			saver := checkpoint.NewMemory()
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for i := 0; i < b.N; i++ {
				res, err := eng.Run(ctx, g, saver, fmt.Sprintf("a%d", i), nil)
				if err != nil || res.Status != runtime.StatusDone {
					b.Fatalf("run: %v %v", res, err)
				}
			}
			if flush != nil {
				flush() // the spans export in batches, as a server's do
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/step")
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/step")
		})
	}
}
