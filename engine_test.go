package lgrun_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

const toolGraph = `version: 1
name: t
state:
  messages: {type: messages}
models:
  m: {provider: openai, model: x}
nodes:
  agent: {kind: llm, model: m, tools: [word_cuont]}
edges:
  - {from: START, to: agent}
  - {from: agent, to: END}
`

// A graph naming a Go tool the engine does not have is invalid, and the
// error lists the tools it knows.
func TestUnknownGoTool(t *testing.T) {
	eng, err := lgrun.New(
		lgrun.WithTool("word_count", "", nil, func(context.Context, map[string]any) (any, error) { return 0, nil }),
		lgrun.WithTool("char_count", "", nil, func(context.Context, map[string]any) (any, error) { return 0, nil }),
	)
	if err != nil {
		t.Fatal(err)
	}
	_, diags := eng.Parse("t.yaml", []byte(toolGraph))
	if !strings.Contains(diags.Error(), `unknown tool "word_cuont"; did you mean "word_count"?`) {
		t.Fatalf("diagnostics %v", diags)
	}
	_, diags = eng.Parse("t.yaml", []byte(strings.Replace(toolGraph, "word_cuont", "lookup", 1)))
	if !strings.Contains(diags.Error(), `unknown tool "lookup" (known tools: char_count, word_count)`) {
		t.Fatalf("diagnostics %v", diags)
	}
	// Registering a name twice is an error of New.
	_, err = lgrun.New(
		lgrun.WithTool("x", "", nil, func(context.Context, map[string]any) (any, error) { return 0, nil }),
		lgrun.WithTool("x", "", nil, func(context.Context, map[string]any) (any, error) { return 0, nil }),
	)
	if err == nil || !strings.Contains(err.Error(), `tool "x" is already registered`) {
		t.Fatalf("New: %v", err)
	}
}

// Two engines in one process keep their own id clocks and kinds, also when
// they run at the same time on one saver (run with -race).
func TestTwoEnginesDoNotInterfere(t *testing.T) {
	src := `version: 1
name: two
state:
  n: {type: int, reducer: add}
nodes:
  a: {kind: bump}
  b: {kind: bump}
edges:
  - {from: START, to: a}
  - {from: a, to: b}
  - {from: b, to: END}
`
	bump := func(by int) lgrun.Option {
		return lgrun.WithNodeKind(spec.NodeKindDecl{Name: "bump", Doc: "adds to n", Writes: []string{"n"}}, func(context.Context, *runtime.NodeCall) (*runtime.NodeResult, error) {
			return &runtime.NodeResult{Writes: []runtime.Write{{Field: "n", Value: by}}}, nil
		})
	}
	one, err := lgrun.New(bump(1))
	if err != nil {
		t.Fatal(err)
	}
	ten, err := lgrun.New(bump(10))
	if err != nil {
		t.Fatal(err)
	}
	saver := lgrun.NewMemorySaver()
	var wg sync.WaitGroup
	for i, eng := range []*lgrun.Engine{one, ten, one, ten} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, diags := eng.Parse("two.yaml", []byte(src))
			if diags.HasErrors() {
				t.Error(diags)
				return
			}
			res, err := eng.Run(context.Background(), g, saver, fmt.Sprint("t", i), nil)
			if err != nil {
				t.Error(err)
				return
			}
			want := 2
			if eng == ten {
				want = 20
			}
			if res.Checkpoint.Values["n"] != want {
				t.Errorf("thread %d: n = %v, want %d", i, res.Checkpoint.Values["n"], want)
			}
		}()
	}
	wg.Wait()
}
