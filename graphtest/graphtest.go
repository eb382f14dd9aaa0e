// Package graphtest runs graph test files (x.test.yaml beside x.yaml): each
// case runs the graph offline, with scripted model replies and tool
// results, answers its interrupts, and checks the outcome. It also
// measures which nodes and conditional branches the cases exercised.
package graphtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/builtin"
	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Options configure a test run.
type Options struct {
	// Run selects cases whose "file/case" name matches.
	Run *regexp.Regexp
	// Update rewrites the expected final states with the actual ones.
	Update bool
	// Parallel is the number of cases run at once (at least 1).
	Parallel int
	// Timeout bounds each case.
	Timeout time.Duration
	// Saver is where the cases keep their checkpoints: SaverMemory (the
	// default) or SaverSQLite.
	Saver Saver
	// TempDir holds the cases' SQLite databases (os.TempDir() when empty).
	TempDir string
	// Engine loads and runs the graphs: its custom kinds (Go tools, node
	// kinds, providers) are known to the test files. Nil means an engine
	// with the built-in kinds that reads no environment variables. Model
	// and tool calls are answered by each case's script either way.
	Engine *lgrun.Engine
}

// engine returns the engine of opts.
func (o *Options) engine() (*lgrun.Engine, error) {
	if o.Engine != nil {
		return o.Engine, nil
	}
	return lgrun.New(lgrun.WithVersion("test"))
}

// Saver names a checkpoint saver the cases can run on.
type Saver string

// Savers.
const (
	// SaverMemory keeps each case's checkpoints in memory.
	SaverMemory Saver = "memory"
	// SaverSQLite gives each case a fresh SQLite database file in a
	// temporary directory of its own, removed when the case ends. Every
	// resume then reads the state back from the file.
	SaverSQLite Saver = "sqlite"
)

// newSaver opens a fresh saver of kind k; release closes and removes it.
func newSaver(k Saver, tempDir string) (s runtime.Saver, release func(), err error) {
	switch k {
	case "", SaverMemory:
		return checkpoint.NewMemory(), func() {}, nil
	case SaverSQLite:
		dir, err := os.MkdirTemp(tempDir, "lgrun-test-")
		if err != nil {
			return nil, nil, fmt.Errorf("create the case's database directory: %w", err)
		}
		db, err := checkpoint.OpenSQLite(filepath.Join(dir, "lgrun.db"), nil)
		if err != nil {
			os.RemoveAll(dir)
			return nil, nil, err
		}
		return db, func() { db.Close(); os.RemoveAll(dir) }, nil
	}
	return nil, nil, fmt.Errorf("unknown saver %q (want memory or sqlite)", k)
}

// FileResult is the outcome of one test file.
type FileResult struct {
	File  string
	Graph *spec.Graph
	// Diags are the test file's (and graph's) diagnostics; with errors, no case ran.
	Diags spec.ErrorList
	Cases []*CaseResult
	// Nodes and Branches map what the graph has to whether a case exercised it.
	Nodes    map[string]bool
	Branches map[string]bool
	// Updated is set when --update rewrote the file.
	Updated bool
}

// CaseResult is the outcome of one case.
type CaseResult struct {
	Name     string
	Pos      spec.Pos
	Skipped  bool
	Failures []string
	Duration time.Duration
	Status   runtime.Status
	Values   map[string]any
	Path     []string
	Err      error
}

// Passed reports whether the case ran and met every expectation.
func (c *CaseResult) Passed() bool { return !c.Skipped && len(c.Failures) == 0 }

// Failed reports whether the file had errors or a failing case.
func (f *FileResult) Failed() bool {
	if f.Diags.HasErrors() {
		return true
	}
	for _, c := range f.Cases {
		if !c.Skipped && !c.Passed() {
			return true
		}
	}
	return false
}

// RunFile loads and runs one test file.
func RunFile(ctx context.Context, path string, opts Options) *FileResult {
	res := &FileResult{File: path}
	eng, err := opts.engine()
	if err != nil {
		res.Diags = spec.ErrorList{{Pos: spec.Pos{File: path}, Msg: err.Error()}}
		return res
	}
	opts.Engine = eng
	tf, diags := eng.LoadTestFile(path)
	res.Diags = diags
	if tf == nil {
		return res
	}
	res.Graph = tf.Graph
	res.Nodes = map[string]bool{}
	for _, n := range tf.Graph.NodeOrder {
		res.Nodes[n] = false
	}
	res.Branches = map[string]bool{}
	for _, b := range tf.Graph.Branches() {
		res.Branches[b.ID] = false
	}
	res.Cases = make([]*CaseResult, len(tf.Cases))
	par := max(opts.Parallel, 1)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, c := range tf.Cases {
		cr := &CaseResult{Name: c.Name, Pos: c.Pos}
		res.Cases[i] = cr
		if opts.Run != nil && !opts.Run.MatchString(path+"/"+c.Name) && !opts.Run.MatchString(c.Name) {
			cr.Skipped = true
			continue
		}
		wg.Add(1)
		go func(c *spec.TestCase, cr *CaseResult) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			defer func() {
				// A panic fails its case, not the whole test run.
				if p := recover(); p != nil {
					cr.Failures = append(cr.Failures, fmt.Sprintf("panic: %v\n%s", p, debug.Stack()))
				}
			}()
			nodes, branches := runCase(ctx, tf.Graph, c, cr, opts)
			mu.Lock()
			for n := range nodes {
				res.Nodes[n] = true
			}
			for b := range branches {
				if _, ok := res.Branches[b]; ok {
					res.Branches[b] = true
				}
			}
			mu.Unlock()
		}(c, cr)
	}
	wg.Wait()
	if opts.Update {
		updateStates(res, tf)
	}
	return res
}

// updateStates rewrites the expected states of the cases that list one and ran:
// the fields whose values differ, or every field when the list is empty
// (`state: {}`). Other cases and the rest of the file are left as written.
func updateStates(res *FileResult, tf *spec.TestFile) {
	states := map[int]map[string]any{}
	for i, c := range tf.Cases {
		cr := res.Cases[i]
		if cr.Skipped || cr.Values == nil || !c.Expect.HasState {
			continue
		}
		st := map[string]any{}
		for k, v := range cr.Values {
			if want, listed := c.Expect.State[k]; len(c.Expect.State) == 0 || listed && !reflect.DeepEqual(want, v) {
				st[k] = v
			}
		}
		if len(st) > 0 {
			states[i] = jsonable(st)
		}
	}
	if len(states) == 0 {
		return
	}
	out, err := tf.WithStates(states)
	if err == nil {
		err = os.WriteFile(res.File, out, 0o644)
	}
	if err != nil {
		res.Diags.Add(spec.Pos{File: res.File}, "update: %v", err)
		return
	}
	res.Updated = true
}

// jsonable round-trips v through JSON so YAML encodes plain values.
func jsonable(m map[string]any) map[string]any {
	b, err := json.Marshal(m)
	if err != nil {
		return m
	}
	var out map[string]any
	if json.Unmarshal(b, &out) != nil {
		return m
	}
	return spec.Normalize(out).(map[string]any)
}

// runCase runs one case and records failures in cr. It returns the nodes
// run and branches taken.
func runCase(ctx context.Context, g *spec.Graph, c *spec.TestCase, cr *CaseResult, opts Options) (map[string]bool, map[string]bool) {
	start := time.Now()
	defer func() { cr.Duration = time.Since(start) }()
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	fail := func(format string, args ...any) { cr.Failures = append(cr.Failures, fmt.Sprintf(format, args...)) }

	nodes := map[string]bool{}
	branches := map[string]bool{}
	type visit struct {
		step int
		node string
	}
	var mu sync.Mutex
	var visits []visit
	var ints []runtime.Interrupt
	caseTurn := false
	events := func(e runtime.Event) {
		if e.Namespace != "" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch e.Kind {
		case runtime.EvNodeEnd:
			nodes[e.Node] = true
			if caseTurn && e.Interrupt == nil {
				visits = append(visits, visit{e.Step, e.Node})
			}
		case runtime.EvRoute:
			branches[e.Message] = true
		case runtime.EvInterrupt:
			if caseTurn && e.Interrupt != nil {
				ints = append(ints, *e.Interrupt)
			}
		}
	}
	saver, release, err := newSaver(opts.Saver, opts.TempDir)
	if err != nil {
		fail("set up the %s saver: %v", opts.Saver, err)
		return nodes, branches
	}
	defer release()
	r, err := opts.Engine.Runner(g, saver, lgrun.RunnerOptions{
		Events: events,
		Script: &builtin.Script{Models: c.Models, Tools: c.Tools},
	})
	if err != nil {
		fail("set up models and tools: %v", err)
		return nodes, branches
	}
	cfg := runtime.Config{StepLimit: c.Limits.Steps, LLMCalls: c.Limits.LLMCalls, Tokens: c.Limits.Tokens, CostUSD: c.Limits.CostUSD}
	const thread = "test"

	// turn runs one turn of the thread, answering its interrupts with the
	// resume values in order; label prefixes the failures it records.
	turn := func(label string, input map[string]any, resume []any) (*runtime.Result, error) {
		res, err := r.Run(ctx, runtime.RunOptions{Thread: thread, Input: input, Config: cfg})
		used := 0
		for ; err == nil && res.Status == runtime.StatusInterrupted && used < len(resume); used++ {
			opts := runtime.ResumeOptions{Thread: thread}
			if hasNodeInterrupt(res.Interrupts) {
				opts.Value, opts.HasValue = resume[used], true
			} else if resume[used] != nil {
				fail("%sresume[%d]: the run paused at a static breakpoint (%s), which takes no value; give null", label, used, describeInts(res.Interrupts))
			}
			res, err = r.Resume(ctx, opts)
		}
		if err == nil && used < len(resume) {
			fail("%sresume: %d of %d values unused; the run ended %s after %d", label, len(resume)-used, len(resume), res.Status, used)
		}
		if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("the case timed out after %s: %w", opts.Timeout, err)
		}
		return res, err
	}
	for i, t := range c.Turns {
		label := fmt.Sprintf("earlier turn %d: ", i+1)
		res, err := turn(label, t.Input, t.Resume)
		if err != nil {
			fail("%srun failed: %v", label, err)
			return nodes, branches
		}
		if res.Status != runtime.StatusDone {
			fail("%sthe run ended %s, want done (give it resume values)", label, res.Status)
			return nodes, branches
		}
	}
	mu.Lock()
	caseTurn = true
	mu.Unlock()
	res, err := turn("", c.Input, c.Resume)
	cr.Err = err
	if res != nil {
		cr.Status = res.Status
		cr.Values = res.Checkpoint.Values
		// The state the next resume would start from is the saved one.
		if saved, gerr := saver.Get(ctx, thread, res.Checkpoint.ID); gerr != nil {
			fail("read back the final checkpoint: %v", gerr)
		} else if !reflect.DeepEqual(saved.Values, res.Checkpoint.Values) {
			fail("the saver reads back a different final state:\n%s", diff(res.Checkpoint.Values, saved.Values))
		}
	} else {
		cr.Status = runtime.StatusFailed
	}
	mu.Lock()
	sort.SliceStable(visits, func(i, j int) bool {
		if visits[i].step != visits[j].step {
			return visits[i].step < visits[j].step
		}
		return visits[i].node < visits[j].node
	})
	for _, v := range visits {
		cr.Path = append(cr.Path, v.node)
	}
	gotInts := append([]runtime.Interrupt(nil), ints...)
	mu.Unlock()

	e := c.Expect
	switch {
	case e.Error != nil:
		if err == nil {
			fail("want an error matching %q, the run ended %s", e.Error, cr.Status)
		} else if !e.Error.MatchString(err.Error()) {
			fail("error %q does not match %q", err, e.Error)
		}
	case err != nil && e.Status != string(cr.Status):
		fail("run failed: %v", err)
	}
	wantStatus := e.Status
	if wantStatus == "" && e.Error == nil {
		wantStatus = string(runtime.StatusDone)
	}
	if wantStatus != "" && string(cr.Status) != wantStatus {
		fail("status %s, want %s", cr.Status, wantStatus)
	}
	if cr.Values != nil {
		for _, k := range spec.SortedKeys(e.State) {
			want, got := e.State[k], cr.Values[k]
			if !reflect.DeepEqual(want, got) {
				fail("state.%s (line %d):\n%s", k, e.StatePos[k].Line, diff(want, got))
			}
		}
		env := map[string]any{"state": cr.Values}
		for _, a := range e.Asserts {
			v, err := a.Eval(env)
			if err != nil {
				if u := errors.Unwrap(err); u != nil {
					err = u // Eval's error repeats the position and source
				}
				fail("assert %s (line %d): %v", a.Src, a.Pos.Line, err)
			} else if v != true {
				fail("assert %s (line %d) does not hold", a.Src, a.Pos.Line)
			}
		}
	}
	if e.HasPath && !reflect.DeepEqual(orEmpty(e.Path), orEmpty(cr.Path)) {
		fail("path:\n  want %s\n  got  %s", describePath(e.Path), describePath(cr.Path))
	}
	if e.HasInts {
		if len(gotInts) != len(e.Interrupts) {
			fail("interrupts: want %d, got %d (%s)", len(e.Interrupts), len(gotInts), describeInts(gotInts))
		} else {
			for i, w := range e.Interrupts {
				g := gotInts[i]
				if w.Node != g.Node || (w.When != "" && w.When != string(g.When)) {
					fail("interrupt %d: want %s %s, got %s %s", i+1, w.When, w.Node, g.When, g.Node)
				}
				if w.HasPayload && !reflect.DeepEqual(w.Payload, spec.Normalize(g.Payload)) {
					fail("interrupt %d payload:\n%s", i+1, diff(w.Payload, g.Payload))
				}
			}
		}
	}
	if res != nil {
		t := res.Checkpoint.Metadata.Totals
		if e.LLMCalls != nil && *e.LLMCalls != t.LLMCalls {
			fail("llm_calls: want %d, got %d", *e.LLMCalls, t.LLMCalls)
		}
		if e.Tokens != nil && *e.Tokens != t.InputTokens+t.OutputTokens {
			fail("tokens: want %d, got %d", *e.Tokens, t.InputTokens+t.OutputTokens)
		}
		if e.CostUSD != nil && fmt.Sprintf("%.6f", *e.CostUSD) != fmt.Sprintf("%.6f", t.CostUSD) {
			fail("cost_usd: want %.6f, got %.6f", *e.CostUSD, t.CostUSD)
		}
	}
	return nodes, branches
}

func describePath(p []string) string {
	if len(p) == 0 {
		return "(no nodes)"
	}
	return strings.Join(p, " → ")
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// hasNodeInterrupt reports whether one of ints is an interrupt node's
// (which takes a resume value) rather than a static breakpoint.
func hasNodeInterrupt(ints []runtime.Interrupt) bool {
	for _, in := range ints {
		if in.When == runtime.InterruptNode {
			return true
		}
	}
	return false
}

func describeInts(ints []runtime.Interrupt) string {
	var parts []string
	for _, in := range ints {
		parts = append(parts, string(in.When)+" "+in.Node)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// diff renders expected and actual values as a line diff of their JSON:
// "-" lines only in the expected value, "+" lines only in the actual one.
// Lines are compared without their trailing commas, so a moved last item
// of a list or object is one line removed and one added.
func diff(want, got any) string {
	a := strings.Split(pretty(want), "\n")
	b := strings.Split(pretty(got), "\n")
	same := func(i, j int) bool { return strings.TrimSuffix(a[i], ",") == strings.TrimSuffix(b[j], ",") }
	// Longest common subsequence table, from the ends.
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if same(i, j) {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && same(i, j):
			fmt.Fprintf(&out, "      %s\n", b[j])
			i++
			j++
		case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
			fmt.Fprintf(&out, "    - %s\n", a[i])
			i++
		default:
			fmt.Fprintf(&out, "    + %s\n", b[j])
			j++
		}
	}
	return strings.TrimRight(out.String(), "\n")
}

func pretty(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
