package checkpoint_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/lgrun/lgrun/builtin"
	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// TestProperty runs generated graphs — fan-out, joins, loops, every
// reducer with empty and removal writes, messages, subgraphs whose nodes
// share the parent's names, maps over graphs and nodes, interrupts,
// failing nodes, resumes, updates and new turns — on the Memory and the
// SQLite saver in lockstep, and checks that at every checkpoint the state
// the run reported equals the state each saver reads back, and that both
// savers hold the same states.
//
// CI runs a fixed budget of seeds. Run more by hand, or one seed again:
//
//	LGRUN_PROPERTY_N=5000 go test ./checkpoint -run TestProperty
//	LGRUN_PROPERTY_SEED=1234 go test ./checkpoint -run TestProperty -v
//
// A failure names its seed and prints the graph.
func TestProperty(t *testing.T) {
	seeds := make([]uint64, 0, 40)
	if s := os.Getenv("LGRUN_PROPERTY_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LGRUN_PROPERTY_SEED: %v", err)
		}
		seeds = append(seeds, seed)
	} else {
		n := 40
		if s := os.Getenv("LGRUN_PROPERTY_N"); s != "" {
			var err error
			if n, err = strconv.Atoi(s); err != nil {
				t.Fatalf("LGRUN_PROPERTY_N: %v", err)
			}
		}
		for i := range n {
			seeds = append(seeds, uint64(i+1))
		}
	}
	// What the runs went through: each status, and child runs.
	covered := map[string]int{}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			gen := newGraphGen(seed)
			files := gen.files()
			defer func() {
				if t.Failed() {
					t.Logf("seed %d (LGRUN_PROPERTY_SEED=%d); graphs:", seed, seed)
					for _, name := range []string{"main.yaml", "child.yaml", "item.yaml"} {
						t.Logf("-- %s --\n%s", name, files[name])
					}
				}
			}()
			if strings.Contains(files["main.yaml"], "when:") {
				covered["loop"]++
			}
			checkProperty(t, seed, files, covered)
		})
	}
	t.Logf("covered: %v", covered)
	if len(seeds) >= 40 {
		// The generator must keep reaching every path.
		for _, k := range []string{"interrupted", "failed", "done", "budget-exceeded", "subgraph", "map item", "tool result", "loop"} {
			if covered[k] == 0 {
				t.Errorf("no run of %d seeds went through %q", len(seeds), k)
			}
		}
	}
}

// graphGen generates a graph and its subgraphs from a seed.
type graphGen struct {
	rnd   *rand.Rand
	nodes []string // node definitions, in order
	edges []string
	n     int
	// counts holds the nodes that add to state.count, which loops test.
	counts map[string]bool
}

func newGraphGen(seed uint64) *graphGen {
	return &graphGen{rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), counts: map[string]bool{}}
}

const propState = `state:
  count: {type: int, reducer: add, default: 0}
  log: {type: list, items: string, reducer: append}
  nums: {type: list, items: int, reducer: add}
  obj: {type: object, reducer: merge}
  cust: {type: string, reducer: {custom: "current + update"}}
  last: {type: string}
  messages: {type: messages}
  items: {type: list, items: string, default: [a, b, c]}
  item: {type: string}
  broken: {type: bool, default: false}
  answer: {type: any}
`

func (g *graphGen) pick(options ...string) string { return options[g.rnd.IntN(len(options))] }

// writes returns the set: lines of a node; parallel nodes write no replace
// field and remove no message another branch may remove too.
func (g *graphGen) writes(name string, parallel bool) string {
	q := func(s string) string { return strconv.Quote(s) }
	menu := map[string][]string{
		"count": {`1`, `2`},
		"log":   {q(name), `[]`, `["` + name + `", "` + name + `+"]`},
		"nums":  {`[1, 2]`, `[]`},
		"obj":   {`{"` + name + `": 1}`, `{}`},
		"cust":  {q(name)},
		"messages": {
			`{role: "user", content: "` + name + `"}`,
			`[]`,
			`[{role: "assistant", content: "` + name + `"}, {role: "user", content: "` + name + `+"}]`,
			`{id: "3.` + name + `.0", role: "user", content: "given"}`,
		},
	}
	if !parallel {
		menu["last"] = []string{q(name)}
		menu["messages"] = append(menu["messages"],
			`[{id: "__remove_all__", remove: true}, {role: "system", content: "summary `+name+`"}]`,
			`[{id: "__remove_all__", remove: true}]`,
			`len(state.messages) > 0 ? [{id: state.messages[0].id, remove: true}] : []`,
			`len(state.messages) > 0 ? [{id: state.messages[0].id, remove: true}, {id: state.messages[0].id, role: "user", content: "again"}] : []`,
			`len(state.messages) > 0 ? [{id: state.messages[len(state.messages)-1].id, role: "assistant", content: "edited"}] : []`,
		)
	}
	fields := []string{"count", "log", "nums", "obj", "cust", "last", "messages", "messages"}
	var b strings.Builder
	seen := map[string]bool{}
	for range 1 + g.rnd.IntN(3) {
		f := fields[g.rnd.IntN(len(fields))]
		if seen[f] || menu[f] == nil {
			continue
		}
		seen[f] = true
		fmt.Fprintf(&b, "      %s: %s\n", f, q(g.pick(menu[f]...)))
	}
	if !seen["count"] {
		b.WriteString("      count: '1'\n")
	}
	return b.String()
}

// node adds a node and returns its name.
func (g *graphGen) node(parallel bool) string {
	g.n++
	name := fmt.Sprintf("n%d", g.n)
	var def string
	switch r := g.rnd.IntN(20); {
	case r < 11:
		def = "    kind: set\n    set:\n" + g.writes(name, parallel)
		g.counts[name] = true
	case r < 13:
		// Fails while state.broken is true.
		def = "    kind: set\n    set:\n      log: 'state.broken ? state.items[99] : \"" + name + " ok\"'\n"
	case r < 15:
		def = "    kind: interrupt\n    payload: state.count\n    resume: answer\n"
	case r < 17:
		def = "    kind: subgraph\n    graph: child.yaml\n"
	case r < 19:
		def = "    kind: map\n    over: state.items\n    graph: item.yaml\n    item_as: item\n"
	default:
		def = "    kind: map\n    over: state.items\n    node: work\n    item_as: item\n"
	}
	g.nodes = append(g.nodes, "  "+name+":\n"+def)
	return name
}

// main generates the parent graph: stages of one node or a fan-out of
// two or three, joined or not, sometimes looping back.
func (g *graphGen) main() string {
	type stage struct {
		nodes []string // run first
		tail  []string // run last: nodes, or the agent's tools node
		join  bool
	}
	var stages []stage
	for range 2 + g.rnd.IntN(4) {
		if r := g.rnd.IntN(20); r < 3 {
			// An agent: an llm node asking for a tool call or not, then
			// (mostly) a tools node; a call left unanswered is filled in
			// by the next llm node.
			llm := g.llm()
			s := stage{nodes: []string{llm}, tail: []string{llm}}
			if r < 2 {
				g.n++
				tools := fmt.Sprintf("n%d", g.n)
				g.nodes = append(g.nodes, "  "+tools+":\n    kind: tools\n    tools: [echo]\n")
				g.edges = append(g.edges, fmt.Sprintf("  - {from: %s, to: %s}", llm, tools))
				s.tail = []string{tools}
			}
			stages = append(stages, s)
			continue
		} else if r < 12 {
			n := g.node(false)
			stages = append(stages, stage{nodes: []string{n}, tail: []string{n}})
			continue
		}
		var s stage
		for range 2 + g.rnd.IntN(2) {
			s.nodes = append(s.nodes, g.node(true))
		}
		s.tail = s.nodes
		s.join = g.rnd.IntN(2) == 0
		stages = append(stages, s)
	}
	target := func(nodes []string) string {
		if len(nodes) == 1 {
			return nodes[0]
		}
		return "[" + strings.Join(nodes, ", ") + "]"
	}
	prev := stage{tail: []string{"START"}}
	for i := 0; i <= len(stages); i++ {
		next := []string{"END"}
		if i < len(stages) {
			next = stages[i].nodes
		}
		switch {
		case prev.join && len(next) == 1:
			g.edges = append(g.edges, fmt.Sprintf("  - {from: %s, to: %s}", target(prev.tail), next[0]))
		case len(prev.tail) == 1 && g.counts[prev.tail[0]] && len(next) == 1 && i > 1 && g.rnd.IntN(3) == 0:
			// A loop back to the first stage while the count is low.
			first := stages[0].nodes
			if len(first) == 1 {
				g.edges = append(g.edges, fmt.Sprintf("  - {from: %s, when: state.count < 8, to: %s, else: %s}", prev.tail[0], first[0], next[0]))
				break
			}
			fallthrough
		default:
			for _, p := range prev.tail {
				g.edges = append(g.edges, fmt.Sprintf("  - {from: %s, to: %s}", p, target(next)))
			}
		}
		if i < len(stages) {
			prev = stages[i]
		}
	}
	work := "  work:\n    kind: set\n    set:\n      log: '\"w \" + state.item'\n      messages: '{role: \"user\", content: state.item}'\n      count: '1'\n"
	return "version: 1\nname: prop\nlimits: {steps: 40}\n" + propState + propModels +
		"nodes:\n" + strings.Join(g.nodes, "") + work + "edges:\n" + strings.Join(g.edges, "\n") + "\n"
}

// propModels is a mock model that calls the echo tool when the prompt
// says "call", and the tool.
const propModels = `models:
  m: {provider: mock, fixtures: mock.yaml, model: x}
tools:
  echo:
    kind: expr
    description: Echo.
    parameters: {type: object, properties: {x: {type: string}}}
    expr: '"echo " + string(args.x)'
`

const propFixtures = `match:
  - contains: call
    reply:
      tool_calls: [{name: echo, arguments: {x: hi}}]
  - reply: {text: ok}
`

// llm adds an llm node and returns its name.
func (g *graphGen) llm() string {
	g.n++
	name := fmt.Sprintf("n%d", g.n)
	prompt := "p " + name
	if g.rnd.IntN(2) == 0 {
		prompt += " call"
	}
	def := "    kind: llm\n    model: m\n    tools: [echo]\n    prompt: " + prompt + "\n"
	if g.rnd.IntN(3) == 0 {
		def += "    trim: {keep_last: " + strconv.Itoa(2+g.rnd.IntN(4)) + "}\n"
	}
	g.nodes = append(g.nodes, "  "+name+":\n"+def)
	return name
}

// child generates the subgraph: nodes named like the parent's.
func (g *graphGen) child() string {
	g.n, g.nodes, g.edges = 0, nil, nil
	a := "  n1:\n    kind: set\n    set:\n" + g.writes("n1", false)
	b := "  n2:\n    kind: set\n    set:\n" + g.writes("n2", false)
	if g.rnd.IntN(3) == 0 {
		b = "  n2:\n    kind: interrupt\n    payload: state.count\n    resume: answer\n"
	}
	return "version: 1\nname: child\n" + propState + "nodes:\n" + a + b +
		"edges:\n  - {from: START, to: n1}\n  - {from: n1, to: n2}\n  - {from: n2, to: END}\n"
}

func (g *graphGen) files() map[string]string {
	main := g.main()
	return map[string]string{
		"main.yaml":  main,
		"mock.yaml":  propFixtures,
		"child.yaml": g.child(),
		"item.yaml": `version: 1
name: item
state:
  count: {type: int, reducer: add, default: 0}
  log: {type: list, items: string, reducer: append}
  messages: {type: messages}
  item: {type: string}
nodes:
  n1:
    kind: set
    set:
      messages: '{role: "assistant", content: "item " + state.item}'
      log: state.item
      count: '1'
edges:
  - {from: START, to: n1}
  - {from: n1, to: END}
`,
	}
}

// seen is what a run reported: the values of every checkpoint it made,
// by thread.
type seen struct {
	mu  sync.Mutex
	cps map[string][]reported // thread (child tags removed) → checkpoints in order
}

type reported struct {
	thread, id string
	values     map[string]any
}

// childTag matches the part of a child thread id that comes from a
// checkpoint id, which differs between savers.
var childTag = regexp.MustCompile(`@(\d+)-[0-9a-f]+`)

func (s *seen) add(e runtime.Event) {
	if (e.Kind != runtime.EvCheckpoint && e.Kind != runtime.EvRunStart) || e.Checkpoint == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := childTag.ReplaceAllString(e.Thread, "@$1")
	s.cps[key] = append(s.cps[key], reported{thread: e.Thread, id: e.Checkpoint, values: spec.DeepCopy(e.Values).(map[string]any)})
}

type propRun struct {
	name  string
	path  string // the database file of an SQLite saver
	saver runtime.Saver
	r     *runtime.Runner
	seen  *seen
}

func checkProperty(t *testing.T, seed uint64, files map[string]string, covered map[string]int) {
	dir := t.TempDir()
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g, errs := spec.LoadFile(filepath.Join(dir, "main.yaml"), nil)
	if errs.HasErrors() {
		t.Fatalf("generated graph does not check:\n%v", errs)
	}
	// The third saver seals a pack every two checkpoints of a run, so
	// that chain reads go through packs (see checkpoint/pack.go).
	packed := MustOpenPath(t, filepath.Join(dir, "packed.db"), nil)
	checkpoint.SetPackRows(packed, 2)
	runs := []*propRun{
		{name: "memory", saver: checkpoint.NewMemory()},
		{name: "sqlite", saver: MustOpenPath(t, filepath.Join(dir, "lgrun.db"), nil)},
		{name: "sqlite-packed", saver: packed, path: filepath.Join(dir, "packed.db")},
	}
	runs[1].path = filepath.Join(dir, "lgrun.db")
	for _, pr := range runs {
		kinds, err := builtin.Kinds(g, builtin.Options{Getenv: func(string) string { return "" }})
		if err != nil {
			t.Fatal(err)
		}
		pr.seen = &seen{cps: map[string][]reported{}}
		pr.r = &runtime.Runner{Graph: g, Saver: pr.saver, Kinds: kinds, Version: "test", Events: pr.seen.add}
	}
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(seed, 7))
	// step does the same operation on both savers and returns the status.
	step := func(what string, op func(r *runtime.Runner) (*runtime.Result, error)) runtime.Status {
		var statuses []runtime.Status
		for _, pr := range runs {
			res, err := op(pr.r)
			st := runtime.Status("error")
			if res != nil {
				st = res.Status
			}
			if res == nil && err != nil {
				st = runtime.Status("error: " + childTag.ReplaceAllString(err.Error(), "@$1"))
			}
			statuses = append(statuses, st)
		}
		if statuses[0] != statuses[1] {
			t.Fatalf("%s: memory saver %s, sqlite saver %s", what, statuses[0], statuses[1])
		}
		covered[string(statuses[0])]++
		return statuses[0]
	}
	input := func() map[string]any {
		in := map[string]any{}
		if rnd.IntN(3) == 0 {
			in["broken"] = true
		}
		switch rnd.IntN(4) {
		case 0:
			in["messages"] = []any{map[string]any{"role": "user", "content": "hi"}}
		case 1:
			in["messages"] = []any{}
		}
		if rnd.IntN(3) == 0 {
			in["log"] = []any{}
		}
		return in
	}
	in := input() // drawn once: both savers get the same operations
	var cfg runtime.Config
	if rnd.IntN(4) == 0 {
		cfg.StepLimit = 2 + rnd.IntN(3) // stops at the limit; resumed with more
	}
	st := step("run", func(r *runtime.Runner) (*runtime.Result, error) {
		return r.Run(ctx, runtime.RunOptions{Thread: "t", Input: in, Config: cfg})
	})
	failures, turns := 0, 1
	for i := 0; i < 12; i++ {
		var op func(r *runtime.Runner) (*runtime.Result, error)
		switch st {
		case runtime.StatusInterrupted:
			v := rnd.IntN(100)
			op = func(r *runtime.Runner) (*runtime.Result, error) {
				return r.Resume(ctx, runtime.ResumeOptions{Thread: "t", Value: v, HasValue: true})
			}
		case runtime.StatusFailed:
			if failures++; failures > 2 {
				i = 12
				continue
			}
			set := []runtime.Write{{Field: "broken", Value: false}}
			if rnd.IntN(2) == 0 {
				set = append(set, runtime.Write{Field: "messages", Value: []any{}})
			}
			op = func(r *runtime.Runner) (*runtime.Result, error) {
				return r.Resume(ctx, runtime.ResumeOptions{Thread: "t", Set: set})
			}
		case runtime.StatusBudget:
			op = func(r *runtime.Runner) (*runtime.Result, error) {
				return r.Resume(ctx, runtime.ResumeOptions{Thread: "t", Config: runtime.Config{StepLimit: 400}})
			}
		case runtime.StatusDone:
			if turns >= 3 {
				i = 12
				continue
			}
			turns++
			if rnd.IntN(3) == 0 {
				set := []runtime.Write{{Field: "log", Value: []any{}}, {Field: "messages", Value: map[string]any{"role": "user", "content": "update"}}}
				step("update", func(r *runtime.Runner) (*runtime.Result, error) {
					return r.Resume(ctx, runtime.ResumeOptions{Thread: "t", Set: set})
				})
			}
			in := input()
			op = func(r *runtime.Runner) (*runtime.Result, error) {
				return r.Run(ctx, runtime.RunOptions{Thread: "t", Input: in})
			}
		default:
			i = 12
			continue
		}
		st = step(fmt.Sprintf("operation %d after %s", i, st), op)
	}

	// Live equals reloaded, for each saver; a second SQLite handle reads
	// what is on disk.
	for _, pr := range runs {
		savers := []runtime.Saver{pr.saver}
		if pr.path != "" {
			savers = append(savers, MustOpenPath(t, pr.path, nil))
		}
		for _, cps := range pr.seen.cps {
			for _, c := range cps {
				for _, s := range savers {
					cp, err := s.Get(ctx, c.thread, c.id)
					if err != nil {
						t.Fatalf("%s saver: reload checkpoint %s of %s: %v", pr.name, c.id, c.thread, err)
					}
					if !reflect.DeepEqual(cp.Values, c.values) {
						t.Fatalf("%s saver: checkpoint %s of %s (step %d) reloads as\n  %v\nthe run reported\n  %v", pr.name, c.id, c.thread, cp.Step, cp.Values, c.values)
					}
				}
			}
		}
		// Every checkpoint stored was reported.
		ths, err := pr.saver.Threads(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, th := range ths {
			list, err := pr.saver.List(ctx, th.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			n += len(list)
		}
		m := 0
		for _, cps := range pr.seen.cps {
			m += len(cps)
		}
		if n != m {
			t.Fatalf("%s saver holds %d checkpoints, the run reported %d", pr.name, n, m)
		}
	}
	// Every saver went through the same states.
	mem := runs[0].seen.cps
	for th, cps := range mem {
		for _, m := range cps[len(cps)-1].values["messages"].([]any) {
			if m.(map[string]any)["role"] == "tool" {
				covered["tool result"]++
			}
		}
		switch {
		case strings.Contains(th, "#"):
			covered["map item"]++
		case strings.Contains(th, "/"):
			covered["subgraph"]++
		}
	}
	for _, pr := range runs[1:] {
		sql := pr.seen.cps
		if len(mem) != len(sql) {
			t.Fatalf("threads: memory %d, %s %d", len(mem), pr.name, len(sql))
		}
		for th, a := range mem {
			b := sql[th]
			if len(a) != len(b) {
				t.Fatalf("thread %s: memory %d checkpoints, %s %d", th, len(a), pr.name, len(b))
			}
			for i := range a {
				if !reflect.DeepEqual(a[i].values, b[i].values) {
					t.Fatalf("thread %s, checkpoint %d: memory\n  %v\n%s\n  %v", th, i, a[i].values, pr.name, b[i].values)
				}
			}
		}
	}
}
