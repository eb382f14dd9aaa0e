package observe

import (
	"errors"
	"sync"

	"go.opentelemetry.io/otel/attribute"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Bucket boundaries the GenAI semantic conventions advise.
var (
	tokenBuckets    = []float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}
	durationBuckets = []float64{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92}
	// lgrun's durations: steps, nodes and commits span a millisecond
	// (a set node, a SQLite commit) to minutes (an agent).
	lgrunBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
)

type instruments struct {
	tokens     metric.Int64Histogram
	opDuration metric.Float64Histogram
	runs       metric.Int64Counter
	active     metric.Int64UpDownCounter
	queued     metric.Int64UpDownCounter
	step       metric.Float64Histogram
	node       metric.Float64Histogram
	cost       metric.Float64Counter
	commit     metric.Float64Histogram
}

func newInstruments(m metric.Meter) (instruments, error) {
	var in instruments
	var errs [9]error
	in.tokens, errs[0] = m.Int64Histogram("gen_ai.client.token.usage", metric.WithUnit("{token}"),
		metric.WithDescription("Number of input and output tokens used."), metric.WithExplicitBucketBoundaries(tokenBuckets...))
	in.opDuration, errs[1] = m.Float64Histogram("gen_ai.client.operation.duration", metric.WithUnit("s"),
		metric.WithDescription("GenAI operation duration."), metric.WithExplicitBucketBoundaries(durationBuckets...))
	in.runs, errs[2] = m.Int64Counter("lgrun.runs", metric.WithUnit("{run}"),
		metric.WithDescription("Runs ended, by graph, status and operation."))
	in.active, errs[3] = m.Int64UpDownCounter("lgrun.runs.active", metric.WithUnit("{run}"),
		metric.WithDescription("Runs in progress."))
	in.queued, errs[4] = m.Int64UpDownCounter("lgrun.runs.queued", metric.WithUnit("{run}"),
		metric.WithDescription("Runs waiting for a worker (fed by the server)."))
	in.step, errs[5] = m.Float64Histogram("lgrun.step.duration", metric.WithUnit("s"),
		metric.WithDescription("Superstep duration, from its start to its commit (or failure or pause)."), metric.WithExplicitBucketBoundaries(lgrunBuckets...))
	in.node, errs[6] = m.Float64Histogram("lgrun.node.duration", metric.WithUnit("s"),
		metric.WithDescription("Node execution duration (all attempts), by node kind."), metric.WithExplicitBucketBoundaries(lgrunBuckets...))
	in.cost, errs[7] = m.Float64Counter("lgrun.cost", metric.WithUnit("USD"),
		metric.WithDescription("Cost of model calls, by provider and model."))
	in.commit, errs[8] = m.Float64Histogram("lgrun.checkpoint.commit.duration", metric.WithUnit("s"),
		metric.WithDescription("Checkpoint commit latency."), metric.WithExplicitBucketBoundaries(lgrunBuckets...))
	return in, errors.Join(errs[:]...)
}

func noopMeterProvider() metric.MeterProvider { return noop.NewMeterProvider() }

// setKey names a metric attribute set of up to three attributes (unset
// ones are the zero KeyValue).
type setKey [3]attribute.KeyValue

// setCache keeps the attribute sets of the per-step metrics: making a set
// sorts and copies, a lookup does not allocate.
type setCache struct {
	mu   sync.RWMutex
	sets map[setKey]attribute.Set
}

func (c *setCache) get(k setKey) attribute.Set {
	c.mu.RLock()
	s, ok := c.sets[k]
	c.mu.RUnlock()
	if ok {
		return s
	}
	var kvs []attribute.KeyValue
	for _, kv := range k {
		if kv.Key != "" {
			kvs = append(kvs, kv)
		}
	}
	s = attribute.NewSet(kvs...)
	c.mu.Lock()
	if c.sets == nil {
		c.sets = map[setKey]attribute.Set{}
	}
	c.sets[k] = s
	c.mu.Unlock()
	return s
}

// nameCache keeps the span names of steps and nodes ("superstep counter",
// "set inc"), made once instead of at every step.
type nameCache struct {
	mu    sync.RWMutex
	names map[[2]string]string
}

func (c *nameCache) get(op, name string) string {
	k := [2]string{op, name}
	c.mu.RLock()
	s, ok := c.names[k]
	c.mu.RUnlock()
	if ok {
		return s
	}
	s = op + " " + name
	c.mu.Lock()
	if c.names == nil {
		c.names = map[[2]string]string{}
	}
	c.names[k] = s
	c.mu.Unlock()
	return s
}
