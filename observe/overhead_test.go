package observe_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	runtimepkg "runtime"
	"runtime/debug"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/observe"
	"github.com/lgrun/lgrun/runtime"
)

// loopSteps is how many supersteps a run of the overhead tests takes.
const loopSteps = 200

// runAllocs is the average number of allocations of one run of the loop
// graph (loopSteps supersteps of a set node) on a fresh in-memory saver,
// through an engine made with opts.
func runAllocs(t *testing.T, opts ...lgrun.Option) float64 {
	t.Helper()
	eng, err := lgrun.New(append([]lgrun.Option{lgrun.WithGetenv(func(string) string { return "" })}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "counter.yaml")
	if err := os.WriteFile(file, []byte(benchLoopGraph), 0o644); err != nil {
		t.Fatal(err)
	}
	g, diags := eng.Load(file)
	if g == nil {
		t.Fatal(diags)
	}
	ctx := context.Background()
	input := map[string]any{"target": loopSteps}
	i := 0
	run := func() {
		i++
		res, err := eng.Run(ctx, g, checkpoint.NewMemory(), fmt.Sprintf("t%04d", i), input)
		if err != nil || res.Status != runtime.StatusDone {
			t.Fatalf("run: %v %v", res, err)
		}
	}
	run() // caches, lazily built tables
	// No collection while counting: a collection empties the sync.Pools
	// (fmt's printers), and refilling them would count as the run's.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	runtimepkg.GC()
	return testing.AllocsPerRun(5, run)
}

// TestOffIsFree: with no OTEL endpoint (or OTEL_SDK_DISABLED=true) Setup
// configures nothing, the CLI installs no observer, and a run allocates
// exactly what a run of an engine without an observer does (up to
// allocSlack under the race detector, half of one a step). An observer
// that is installed, even one reporting to the no-op providers, costs
// allocations at every step: the check is sensitive to it.
func TestOffIsFree(t *testing.T) {
	base := runAllocs(t)
	for _, env := range []map[string]string{
		{},
		{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
		{"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
	} {
		tel, err := observe.Setup(context.Background(), observe.SetupOptions{Getenv: func(k string) string { return env[k] }})
		if err != nil || tel != nil {
			t.Fatalf("Setup(%v) = %v, %v; want nothing configured", env, tel, err)
		}
		// As cmd/lgrun does: an observer only with a Telemetry.
		var opts []lgrun.Option
		if tel != nil {
			opts = append(opts, lgrun.WithObserver(tel.Observer))
		}
		if got := runAllocs(t, opts...); math.Abs(got-base) > allocSlack {
			t.Errorf("Setup(%v): %.0f allocations a run, want %.0f as without an observer", env, got, base)
		}
	}

	noop, err := observe.New(observe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := runAllocs(t, lgrun.WithObserver(noop))
	if got < base+loopSteps {
		t.Errorf("an installed no-op observer: %.0f allocations a run, want at least %.0f + 1 a step (the check is blind)", got, base)
	}
	t.Logf("allocations a run: %.0f without an observer, %.0f with a no-op one", base, got)
}

// TestUnsampledRunIsCheap: a run the sampler drops starts no step or node
// span; its observer records only the metrics, at two allocations a step
// (the step's and the node's context), whatever the number of nodes and
// attributes.
func TestUnsampledRunIsCheap(t *testing.T) {
	base := runAllocs(t)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	t.Cleanup(func() { tp.Shutdown(context.Background()); mp.Shutdown(context.Background()) })
	obs, err := observe.New(observe.Options{TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	got := runAllocs(t, lgrun.WithObserver(obs))
	perRun := 40.0 // the run span's context, LinkRun's traceparent, the run metrics
	if max := base + 2*loopSteps + perRun + allocSlack; got > max {
		t.Errorf("unsampled: %.0f allocations a run, %.2f a step more than without an observer; want at most 2 (+%.0f a run)", got, (got-base)/loopSteps, perRun)
	}
	t.Logf("allocations a run: %.0f without an observer, %.0f unsampled (%.2f a step more)", base, got, (got-base)/loopSteps)
}
