package observe

import (
	"errors"
	"slices"
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

// measureOpts are the options that record a measurement with one cached
// attribute set. Passing a stored slice to Record or Add allocates
// nothing; metric.WithAttributeSet at every call allocates its option.
type measureOpts struct {
	rec []metric.RecordOption
	add []metric.AddOption
}

// setCache keeps the attribute sets of the per-step metrics as ready-made
// options: making a set sorts and copies, a lookup does not allocate.
type setCache struct {
	mu   sync.RWMutex
	sets map[setKey]*measureOpts
}

func (c *setCache) get(k setKey) *measureOpts {
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
	opt := metric.WithAttributeSet(attribute.NewSet(kvs...))
	s = &measureOpts{rec: []metric.RecordOption{opt}, add: []metric.AddOption{opt}}
	c.mu.Lock()
	if c.sets == nil {
		c.sets = map[setKey]*measureOpts{}
	}
	if old, ok := c.sets[k]; ok {
		s = old
	} else {
		c.sets[k] = s
	}
	c.mu.Unlock()
	return s
}

// nameCache keeps span names ("superstep counter", "chat gpt-4o"), made
// once instead of at every span.
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

// nodeSpan is what every span of one node shares: its name and its
// attributes but the step (and, for agent nodes, the thread).
type nodeSpan struct {
	name  string
	agent bool
	attrs []attribute.KeyValue
}

// nodeCache keeps the [nodeSpan] of each node kind and name, and the
// lgrun.next attribute of each single next node, made once instead of at
// every step.
type nodeCache struct {
	mu    sync.RWMutex
	nodes map[[2]string]*nodeSpan
	next  map[string]attribute.KeyValue
}

func (c *nodeCache) node(kind, name string) *nodeSpan {
	k := [2]string{kind, name}
	c.mu.RLock()
	ns, ok := c.nodes[k]
	c.mu.RUnlock()
	if ok {
		return ns
	}
	ns = &nodeSpan{name: kind + " " + name, attrs: []attribute.KeyValue{keyNode.String(name), keyNodeKind.String(kind)}}
	if agentKinds[kind] {
		ns.agent = true
		ns.name = "invoke_agent " + name
		ns.attrs = append(ns.attrs, keyOperation.String("invoke_agent"), keyAgentName.String(name))
	}
	c.mu.Lock()
	if c.nodes == nil {
		c.nodes = map[[2]string]*nodeSpan{}
	}
	c.nodes[k] = ns
	c.mu.Unlock()
	return ns
}

// nextAttr is lgrun.next of a step that runs next.
func (c *nodeCache) nextAttr(next []string) attribute.KeyValue {
	if len(next) != 1 {
		return keyNext.StringSlice(next)
	}
	c.mu.RLock()
	kv, ok := c.next[next[0]]
	c.mu.RUnlock()
	if ok {
		return kv
	}
	kv = keyNext.StringSlice(next)
	c.mu.Lock()
	if c.next == nil {
		c.next = map[string]attribute.KeyValue{}
	}
	c.next[next[0]] = kv
	c.mu.Unlock()
	return kv
}

// genKey names the attribute sets of one model's call metrics: provider,
// request model, response model ("" when unknown) and error.type ("" for
// a success).
type genKey [4]string

// genOpts are the options of the GenAI client metrics of one [genKey].
type genOpts struct {
	dur, in, out []metric.RecordOption
	cost         []metric.AddOption
}

// genCache keeps the [genOpts] of each model seen.
type genCache struct {
	mu   sync.RWMutex
	opts map[genKey]*genOpts
}

func (c *genCache) get(k genKey) *genOpts {
	c.mu.RLock()
	g, ok := c.opts[k]
	c.mu.RUnlock()
	if ok {
		return g
	}
	base := []attribute.KeyValue{keyOperation.String("chat"), keyProvider.String(k[0]), keyRequestModel.String(k[1])}
	if k[2] != "" {
		base = append(base, keyResponseModel.String(k[2]))
	}
	with := func(kv attribute.KeyValue) []metric.RecordOption {
		return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(append(slices.Clip(base), kv)...))}
	}
	g = &genOpts{
		dur:  []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(base...))},
		in:   with(keyTokenType.String("input")),
		out:  with(keyTokenType.String("output")),
		cost: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(keyProvider.String(k[0]), keyRequestModel.String(k[1])))},
	}
	if k[3] != "" {
		g.dur = with(keyErrorType.String(k[3]))
	}
	c.mu.Lock()
	if c.opts == nil {
		c.opts = map[genKey]*genOpts{}
	}
	c.opts[k] = g
	c.mu.Unlock()
	return g
}

// runSetKey names the attribute set of lgrun.runs: graph, status,
// operation and whether the run is a child run.
type runSetKey struct {
	graph, status, op string
	child             bool
}

// runSetCache keeps the options of the lgrun.runs counter.
type runSetCache struct {
	mu   sync.RWMutex
	sets map[runSetKey]*measureOpts
}

func (c *runSetCache) get(k runSetKey) *measureOpts {
	c.mu.RLock()
	s, ok := c.sets[k]
	c.mu.RUnlock()
	if ok {
		return s
	}
	opt := metric.WithAttributeSet(attribute.NewSet(keyGraph.String(k.graph), keyStatus.String(k.status), keyOp.String(k.op), keyChild.Bool(k.child)))
	s = &measureOpts{rec: []metric.RecordOption{opt}, add: []metric.AddOption{opt}}
	c.mu.Lock()
	if c.sets == nil {
		c.sets = map[runSetKey]*measureOpts{}
	}
	c.sets[k] = s
	c.mu.Unlock()
	return s
}
