package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// execOpts are the flags shared by commands that execute a graph.
type execOpts struct {
	thread   string
	graph    string
	maxSteps int
	before   []string
	after    []string
	timeout  time.Duration
	llmCalls int
	tokens   int
	costUSD  float64
	stream   string
	output   string
	quiet    bool
	strict   bool
	sets     []string
	memory   bool

	// stateSize is --max-state-size as given; check parses it.
	stateSize      string
	stateSizeBytes int64
	// fields are the state fields the flags write, each with the flag
	// that names it, and asNode the node of --as-node: checked against
	// the graph before anything runs.
	fields []flagField
	asNode string
}

// flagField is a state field written by a flag (--input or --set).
type flagField struct {
	flag, field string
	value       any
}

func (o *execOpts) addRunFlags(c *cobra.Command) {
	f := c.Flags()
	f.IntVar(&o.maxSteps, "max-steps", 0, "superstep limit per turn (default: the graph's limits.steps, else 25)")
	f.StringSliceVar(&o.before, "interrupt-before", nil, "pause before these nodes (kept with the thread; none clears)")
	f.StringSliceVar(&o.after, "interrupt-after", nil, "pause after these nodes (kept with the thread; none clears)")
	f.DurationVar(&o.timeout, "timeout", 0, "wall-time limit of the run")
	f.IntVar(&o.llmCalls, "max-llm-calls", 0, "budget: LLM calls per thread")
	f.IntVar(&o.tokens, "max-tokens", 0, "budget: tokens per thread")
	f.Float64Var(&o.costUSD, "max-cost", 0, "budget: USD per thread")
	f.StringVar(&o.stateSize, "max-state-size", "", "largest state a checkpoint may hold, as JSON, e.g. 64KiB or 32MiB (default: the graph's limits.state_size, else 16MiB)")
	f.StringVar(&o.stream, "stream", "", "write events as JSON lines: values, updates, debug or messages")
	_ = c.RegisterFlagCompletionFunc("stream", fixedValues("values", "updates", "debug", "messages"))
	addOutputFlag(c, &o.output)
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print only the outcome")
	f.BoolVar(&o.strict, "strict", false, "fail instead of warning when the graph changed since the thread began")
}

func (o *execOpts) config() runtime.Config {
	return runtime.Config{
		StepLimit: o.maxSteps, InterruptBefore: o.before, InterruptAfter: o.after,
		Timeout: runtime.Duration(o.timeout), LLMCalls: o.llmCalls, Tokens: o.tokens, CostUSD: o.costUSD,
		StateSize: o.stateSizeBytes,
	}
}

func (o *execOpts) check() error {
	switch o.stream {
	case "", "values", "updates", "debug", "messages":
	default:
		return usagef("--stream: want values, updates, debug or messages, got %q", o.stream)
	}
	if err := checkOutput(o.output); err != nil {
		return err
	}
	if o.maxSteps < 0 || o.llmCalls < 0 || o.tokens < 0 || o.costUSD < 0 || o.timeout < 0 {
		return usagef("limits must not be negative")
	}
	if o.stateSize != "" {
		n, err := spec.ParseSize(o.stateSize)
		if err != nil {
			return usagef("--max-state-size: %v", err)
		}
		o.stateSizeBytes = n
	}
	return nil
}

func newRunCmd(io *IO, g *globalOpts) *cobra.Command {
	o := &execOpts{}
	var input string
	c := &cobra.Command{
		Use:   "run GRAPH.yaml",
		Short: "Run a graph (a new thread, or a new turn on a finished thread)",
		Example: `  lgrun run graphs/loop.yaml
  lgrun run graphs/memory-chat.yaml --thread chat1 --input '{"question": "hi"}'
  lgrun run graphs/loop.yaml --set target=5 --stream updates`,
		Args: exactArgs(1, "a graph file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			in, err := parseInput(io, input, o.sets)
			if err != nil {
				return err
			}
			o.fields = inputFields(in, o.sets)
			gr, err := loadGraph(io, args[0])
			if err != nil {
				return err
			}
			if err := checkFields(gr, o.fields); err != nil {
				return err
			}
			if o.thread == "" {
				o.thread = newThreadID()
			}
			if err := checkThreadID(o.thread); err != nil {
				return err
			}
			return withRunner(cmd, io, g, o, gr, args[0], func(r *runtime.Runner) (*runtime.Result, error) {
				return r.Run(cmd.Context(), runtime.RunOptions{Thread: o.thread, Input: in, Config: o.config()})
			})
		},
	}
	c.Flags().StringVarP(&o.thread, "thread", "t", "", "thread id (default: a new random id)")
	c.Flags().StringVarP(&input, "input", "i", "", "input state as a JSON object, @file.json, or - for stdin")
	c.Flags().StringArrayVar(&o.sets, "set", nil, "input field as field=JSON (repeatable; a value that is not JSON is a string)")
	c.Flags().BoolVar(&o.memory, "no-db", false, "keep checkpoints in memory only (nothing is saved)")
	o.addRunFlags(c)
	return c
}

func newResumeCmd(io *IO, g *globalOpts) *cobra.Command {
	o := &execOpts{}
	var value string
	c := &cobra.Command{
		Use:   "resume --thread ID",
		Short: "Continue a paused, failed, crashed or limited thread from its last checkpoint",
		Example: `  lgrun resume --thread t1 --value '{"approved": true}'
  lgrun resume --thread t1 --set draft='"shorter please"'
  lgrun resume --thread t1 --max-steps 100`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if o.thread == "" {
				return usagef("resume needs --thread")
			}
			sets, err := parseSets(o.sets)
			if err != nil {
				return err
			}
			o.fields = setFields(sets)
			opts := runtime.ResumeOptions{Thread: o.thread, Set: sets, AsNode: o.asNode, Config: o.config()}
			if cmd.Flags().Changed("value") {
				opts.Value, err = parseValue(io, value)
				if err != nil {
					return err
				}
				opts.HasValue = true
			}
			return withThreadRunner(cmd, io, g, o, func(r *runtime.Runner) (*runtime.Result, error) {
				return r.Resume(cmd.Context(), opts)
			})
		},
	}
	c.Flags().StringVarP(&o.thread, "thread", "t", "", "thread id (required)")
	c.Flags().StringVar(&value, "value", "", "answer for the interrupt node(s): JSON, @file.json, or - for stdin (a string is '\"text\"')")
	c.Flags().StringArrayVar(&o.sets, "set", nil, "change a field before continuing, as field=JSON (repeatable)")
	c.Flags().StringVar(&o.asNode, "as-node", "", "apply --set as if this node wrote it (its edges decide what runs next)")
	c.Flags().StringVar(&o.graph, "graph", "", "graph file (default: the file the thread was started with)")
	o.addRunFlags(c)
	return c
}

func newReplayCmd(io *IO, g *globalOpts) *cobra.Command {
	o := &execOpts{}
	var cpID string
	var live bool
	c := &cobra.Command{
		Use:   "replay --thread ID --checkpoint C",
		Short: "Re-execute a thread from a checkpoint as a new branch (the original history stays)",
		Long: `Re-execute a thread from checkpoint C as a new branch. Model replies and tool
results recorded by the original run are reused (offline, free, deterministic);
--live calls the models and tools again.`,
		Example: `  lgrun replay --thread t1 --checkpoint 1f0c2a9e4b7d3c10
  lgrun replay --thread t1 --checkpoint 1f0c2a9e4b7d3c10 --live --stream updates`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if o.thread == "" || cpID == "" {
				return usagef("replay needs --thread and --checkpoint")
			}
			return withThreadRunner(cmd, io, g, o, func(r *runtime.Runner) (*runtime.Result, error) {
				r.ReuseRecords = !live
				return r.Replay(cmd.Context(), o.thread, cpID, o.config())
			})
		},
	}
	c.Flags().StringVarP(&o.thread, "thread", "t", "", "thread id (required)")
	c.Flags().StringVarP(&cpID, "checkpoint", "c", "", "checkpoint id to replay from (required; see lgrun history)")
	c.Flags().BoolVar(&live, "live", false, "call models and tools again instead of reusing recorded results")
	c.Flags().StringVar(&o.graph, "graph", "", "graph file (default: the file the thread was started with)")
	o.addRunFlags(c)
	return c
}

func newForkCmd(io *IO, g *globalOpts) *cobra.Command {
	o := &execOpts{}
	var cpID string
	c := &cobra.Command{
		Use:   "fork --thread ID --checkpoint C --set field=JSON",
		Short: "Write an edited checkpoint branching from C and continue from it",
		Example: `  lgrun fork --thread t1 --checkpoint 1f0c2a9e4b7d3c10 --set target=5
  lgrun fork --thread t1 --checkpoint 1f0c2a9e4b7d3c10 --set draft='"shorter"' --as-node write`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if o.thread == "" || cpID == "" {
				return usagef("fork needs --thread and --checkpoint")
			}
			sets, err := parseSets(o.sets)
			if err != nil {
				return err
			}
			o.fields = setFields(sets)
			return withThreadRunner(cmd, io, g, o, func(r *runtime.Runner) (*runtime.Result, error) {
				return r.Fork(cmd.Context(), o.thread, cpID, sets, o.asNode, o.config())
			})
		},
	}
	c.Flags().StringVarP(&o.thread, "thread", "t", "", "thread id (required)")
	c.Flags().StringVarP(&cpID, "checkpoint", "c", "", "checkpoint id to fork from (required)")
	c.Flags().StringArrayVar(&o.sets, "set", nil, "field=JSON to write in the fork (repeatable)")
	c.Flags().StringVar(&o.asNode, "as-node", "", "write as if this node wrote it (its edges decide what runs next)")
	c.Flags().StringVar(&o.graph, "graph", "", "graph file (default: the file the thread was started with)")
	o.addRunFlags(c)
	return c
}

// withThreadRunner loads the thread's graph (or --graph) and runs fn.
func withThreadRunner(cmd *cobra.Command, io *IO, g *globalOpts, o *execOpts, fn func(*runtime.Runner) (*runtime.Result, error)) error {
	saver, err := g.openExisting(io, o.thread)
	if err != nil {
		return err
	}
	defer saver.Close()
	path := o.graph
	if path == "" {
		th, err := saver.Thread(cmd.Context(), o.thread)
		if err != nil {
			if errors.Is(err, runtime.ErrNotFound) {
				return fmt.Errorf("thread %q not found in %s (list threads with `lgrun threads`)", o.thread, saver.Path())
			}
			return err
		}
		if th.GraphFile == "" {
			return usagef("thread %q does not record its graph file; pass --graph", o.thread)
		}
		path = th.GraphFile
		if _, err := os.Stat(path); err != nil {
			return usagef("thread %q was started with graph %s, which cannot be read now (%v); pass --graph FILE", o.thread, path, unwrapPath(err))
		}
	}
	gr, err := loadGraph(io, path)
	if err != nil {
		return err
	}
	if err := checkFields(gr, o.fields); err != nil {
		return err
	}
	if o.asNode != "" && gr.Nodes[o.asNode] == nil {
		return usagef("--as-node %s: graph %q has no node %q (nodes: %s)", o.asNode, gr.Name, o.asNode, strings.Join(gr.NodeOrder, ", "))
	}
	return execute(cmd, io, saver, o, gr, path, fn)
}

// withRunner opens the saver and runs fn on a runner for graph gr.
func withRunner(cmd *cobra.Command, io *IO, g *globalOpts, o *execOpts, gr *spec.Graph, path string, fn func(*runtime.Runner) (*runtime.Result, error)) error {
	var saver runtime.Saver
	if o.memory {
		saver = checkpoint.NewMemory()
	} else {
		s, err := g.openSaver(io)
		if err != nil {
			return err
		}
		defer s.Close()
		saver = s
	}
	return execute(cmd, io, saver, o, gr, path, fn)
}

func execute(cmd *cobra.Command, io *IO, saver runtime.Saver, o *execOpts, gr *spec.Graph, path string, fn func(*runtime.Runner) (*runtime.Result, error)) error {
	abs := path
	if a, err := absPath(path); err == nil {
		abs = a
	}
	p := newProgress(io, o, gr)
	tel, flush, err := io.telemetry(cmd.Context())
	if err != nil {
		return err
	}
	defer flush()
	eng := io.engine(tel...)
	// The sessions with MCP servers end with the command (a stdio server
	// gets its stdin closed, then SIGTERM).
	defer func() { _ = eng.CloseMCP() }()
	r, err := eng.Runner(gr, saver, lgrun.RunnerOptions{GraphFile: abs, Strict: o.strict, Events: p.event})
	if err != nil {
		return err
	}
	p.startTicker()
	res, err := fn(r)
	return p.finish(res, err)
}

// parseInput builds the input state from --input (JSON, @file or - for
// stdin) and --set.
func parseInput(io *IO, input string, sets []string) (map[string]any, error) {
	in := map[string]any{}
	if input != "" {
		data, err := readArg(io, "--input", input)
		if err != nil {
			return nil, err
		}
		v, err := decodeJSON(data)
		if err != nil {
			return nil, usagef("--input: not valid JSON: %v", err)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, usagef("--input: want a JSON object of field values, got %s", spec.TypeName(v))
		}
		in = m
	}
	ws, err := parseSets(sets)
	if err != nil {
		return nil, err
	}
	for _, w := range ws {
		in[w.Field] = w.Value
	}
	return in, nil
}

// parseValue parses --value: JSON, @file or - for stdin. Text that is not
// JSON is an error (a string is written "text"), unlike --set.
func parseValue(io *IO, value string) (any, error) {
	data, err := readArg(io, "--value", value)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(string(data)) == "" {
		return nil, usagef("--value: empty; want JSON (a string is written '\"text\"')")
	}
	v, err := decodeJSON(data)
	if err != nil {
		if re := (*numberRangeError)(nil); errors.As(err, &re) {
			return nil, usagef("--value: %v", err)
		}
		return nil, usagef("--value: not valid JSON (a string is written '\"text\"'): %v", err)
	}
	return v, nil
}

// inputFields lists the fields --input and --set name (--set wins).
func inputFields(in map[string]any, sets []string) []flagField {
	fromSet := map[string]bool{}
	var out []flagField
	for _, s := range sets {
		k, _, _ := strings.Cut(s, "=")
		fromSet[k] = true
		out = append(out, flagField{"--set", k, in[k]})
	}
	for _, k := range spec.SortedKeys(in) {
		if !fromSet[k] {
			out = append(out, flagField{"--input", k, in[k]})
		}
	}
	return out
}

func setFields(ws []runtime.Write) []flagField {
	var out []flagField
	for _, w := range ws {
		out = append(out, flagField{"--set", w.Field, w.Value})
	}
	return out
}

// checkFields reports a flag that names a field the graph does not
// declare, or gives a value the field does not take (checked by the
// runtime's own merge, so the reducer's rules apply): a usage error, found
// before anything runs or is saved.
func checkFields(g *spec.Graph, fs []flagField) error {
	for _, f := range fs {
		if g.Field(f.field) == nil {
			names := make([]string, 0, len(g.Fields))
			for _, gf := range g.Fields {
				names = append(names, gf.Name)
			}
			return usagef("%s %s: graph %q has no state field %q (fields: %s)", f.flag, f.field, g.Name, f.field, strings.Join(names, ", "))
		}
		w := []runtime.NodeWrites{{Node: f.flag, Writes: []runtime.Write{{Field: f.field, Value: f.value}}}}
		if _, _, _, err := runtime.Merge(g, 0, nil, w); err != nil {
			if we := (*runtime.WriteError)(nil); errors.As(err, &we) {
				err = we.Err
			}
			return usagef("%s %s: %v", f.flag, f.field, err)
		}
	}
	return nil
}

func parseSets(sets []string) ([]runtime.Write, error) {
	var out []runtime.Write
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, usagef("--set %q: want field=JSON", s)
		}
		val, err := parseJSONValue(v)
		if err != nil {
			return nil, usagef("--set %s: %v", k, err)
		}
		out = append(out, runtime.Write{Field: k, Value: val})
	}
	return out, nil
}

// parseJSONValue parses s as JSON; text that is not JSON is taken as a string.
func parseJSONValue(s string) (any, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return s, nil
	}
	v, err := decodeJSON([]byte(t))
	if err != nil {
		if re := (*numberRangeError)(nil); errors.As(err, &re) {
			return nil, err
		}
		switch t[0] {
		case '{', '[', '"':
			return nil, fmt.Errorf("not valid JSON: %v", err)
		}
		return s, nil
	}
	return v, nil
}

func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if err := dec.Decode(new(any)); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the JSON value")
	}
	if err := checkNumbers(v); err != nil {
		return nil, err
	}
	return spec.Normalize(v), nil
}

// numberRangeError is a JSON number too large for float64.
type numberRangeError struct{ num string }

func (e *numberRangeError) Error() string { return "number " + e.num + " is out of range" }

// checkNumbers rejects numbers no float64 holds (1e400): they would become
// ±Inf, which no checkpoint can store.
func checkNumbers(v any) error {
	switch x := v.(type) {
	case json.Number:
		if _, err := x.Int64(); err == nil {
			return nil
		}
		if _, err := strconv.ParseFloat(string(x), 64); err != nil {
			return &numberRangeError{string(x)}
		}
	case []any:
		for _, e := range x {
			if err := checkNumbers(e); err != nil {
				return err
			}
		}
	case map[string]any:
		for _, e := range x {
			if err := checkNumbers(e); err != nil {
				return err
			}
		}
	}
	return nil
}

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %s (got %d arguments)", cmd.Name(), what, len(args))
		}
		return nil
	}
}

// checkThreadID rejects ids that would clash with child-run names.
func checkThreadID(id string) error {
	if runtime.CheckThreadID(id) != nil {
		return usagef("--thread %q: %s", id, runtime.ThreadIDRule)
	}
	return nil
}
