package runtime_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// nestedFailure is a map over a graph whose subgraph's node fails: the
// error crosses a node, the map's items, two child runs and two more nodes.
var nestedFailure = map[string]string{
	"main.yaml": `
version: 1
name: outer
state:
  xs: {type: list, items: int}
  out: {type: list, reducer: append}
nodes:
  m: {kind: map, over: state.xs, graph: child.yaml, item_as: x, output_map: {out: x}}
edges:
  - {from: START, to: m}
  - {from: m, to: END}
`,
	"child.yaml": `
version: 1
name: child
state:
  x: {type: int}
  l: {type: list, items: int}
nodes:
  c1: {kind: subgraph, graph: grand.yaml}
edges:
  - {from: START, to: c1}
  - {from: c1, to: END}
`,
	"grand.yaml": `
version: 1
name: grand
state:
  x: {type: int}
  l: {type: list, items: int}
nodes:
  g1: {kind: noop}
  g2: {kind: set, set: {x: 'state.l[3]'}}
edges:
  - {from: START, to: g1}
  - {from: g1, to: g2}
  - {from: g2, to: END}
`,
}

var (
	varyingRE = regexp.MustCompile(`/\S+/(grand|child)\.yaml|\(run [^)]+\)`)
	posRE     = regexp.MustCompile(`[\w./-]+\.yaml:\d+:\d+`)
	stepRE    = regexp.MustCompile(`step \d+:`)
)

// TestErrorsStatePiecesOnce walks representative failures and checks that
// the rendered message states one position, the most precise, in front,
// has one "step N:" (the nodes of child runs name their step in
// parentheses), and carries no command-line advice (that is the CLI's to
// add).
func TestErrorsStatePiecesOnce(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		run  func(t *testing.T) error
		want []string // each rendered line, exactly
	}{
		{"edge expression", func(t *testing.T) error {
			r := newRunner(t, `
version: 1
name: e
state:
  items: {type: list, items: int}
nodes:
  a: {kind: noop}
  b: {kind: noop}
edges:
  - {from: START, to: a}
  - {from: a, to: b, when: 'state.items[5] == 1'}
  - {from: a, to: END, when: 'true'}
  - {from: b, to: END}
`)
			_, err := r.Run(ctx, runtime.RunOptions{Thread: "t"})
			wantErrAs[*runtime.EdgeError](t, err)
			return err
		}, []string{`test.yaml:11:28: edge from "a": evaluate "state.items[5] == 1": index out of range: 5 (array length is 0)`}},
		{"merge conflict", func(t *testing.T) error {
			r := newRunner(t, `
version: 1
name: c
state:
  x: {type: int}
nodes:
  a: {kind: set, set: {x: '1'}}
  b: {kind: set, set: {x: '2'}}
edges:
  - {from: START, to: [a, b]}
  - {from: a, to: END}
  - {from: b, to: END}
`)
			_, err := r.Run(ctx, runtime.RunOptions{Thread: "t"})
			wantErrAs[*runtime.ConflictError](t, err)
			return err
		}, []string{`step 1: nodes "a" and "b" both wrote replace field "x" in the same superstep; give the field a reducer (append, add, merge, custom) or order the nodes`}},
		{"node in a subgraph in a map", func(t *testing.T) error {
			g := writeGraphs(t, nestedFailure)
			r := &runtime.Runner{Graph: g, Saver: checkpoint.NewMemory(), Version: "test"}
			_, err := r.Run(ctx, runtime.RunOptions{Thread: "t", Input: map[string]any{"xs": []any{1, 2}}})
			ne := wantErrAs[*runtime.NodeError](t, err)
			if ne.Node != "m" || ne.Step != 1 {
				t.Errorf("outer node error %+v", ne)
			}
			return err
		}, []string{
			`GRAND:9:28: step 1: node "m": item 0: subgraph child (run RUN): node "c1" (step 1): subgraph grand (run RUN): node "g2" (step 2): set x: evaluate "state.l[3]": index out of range: 3 (array length is 0)`,
			`GRAND:9:28: step 1: node "m": item 1: subgraph child (run RUN): node "c1" (step 1): subgraph grand (run RUN): node "g2" (step 2): set x: evaluate "state.l[3]": index out of range: 3 (array length is 0)`,
		}},
		{"budget in a child", func(t *testing.T) error {
			g := writeGraphs(t, map[string]string{
				"main.yaml": `
version: 1
name: outer
nodes:
  sub: {kind: subgraph, graph: child.yaml}
edges:
  - {from: START, to: sub}
  - {from: sub, to: END}
`,
				"child.yaml": `
version: 1
name: child
nodes:
  spend: {kind: noop}
edges:
  - {from: START, to: spend}
  - {from: spend, to: END}
`})
			fk := newFakes().on("spend", func(_ context.Context, call *runtime.NodeCall) (*runtime.NodeResult, error) {
				// Reserve without settling: the second call passes the limit.
				for range 2 {
					if _, err := call.Ledger.Reserve(); err != nil {
						return nil, err
					}
				}
				return &runtime.NodeResult{}, nil
			})
			r := &runtime.Runner{Graph: g, Saver: checkpoint.NewMemory(), Version: "test", Kinds: fk.kinds()}
			_, err := r.Run(ctx, runtime.RunOptions{Thread: "t", Config: runtime.Config{LLMCalls: 1}})
			wantErrAs[*runtime.BudgetError](t, err)
			return err
		}, []string{`CHILD:5:3: step 1: node "sub": subgraph child (run RUN): node "spend" (step 1): budget llm_calls reached (limit 1, used 1); the state is saved: resume with a raised limit`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(t)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			lines := strings.Split(msg, "\n")
			// Temp paths and run ids vary.
			stable := strings.Split(varyingRE.ReplaceAllStringFunc(msg, func(s string) string {
				switch {
				case strings.HasSuffix(s, "grand.yaml"):
					return "GRAND"
				case strings.HasSuffix(s, "child.yaml"):
					return "CHILD"
				}
				return "(run RUN)"
			}), "\n")
			if tc.want != nil && !slicesEqual(stable, tc.want) {
				t.Errorf("error\n%s\nwant\n%s", msg, strings.Join(tc.want, "\n"))
			}
			for _, line := range lines {
				if ps := posRE.FindAllString(line, -1); len(ps) > 1 {
					t.Errorf("%d positions %v in %q", len(ps), ps, line)
				} else if len(ps) == 1 && !strings.HasPrefix(line, ps[0]+": ") {
					t.Errorf("position %s not in front of %q", ps[0], line)
				}
				if ss := stepRE.FindAllString(line, -1); len(ss) > 1 {
					t.Errorf("%d step prefixes %v in %q", len(ss), ss, line)
				}
				for _, advice := range []string{"lgrun ", "--"} {
					if strings.Contains(line, advice) {
						t.Errorf("CLI advice %q in library error %q", advice, line)
					}
				}
			}
			t.Log(msg)
		})
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
