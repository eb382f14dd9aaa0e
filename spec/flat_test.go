package spec

import (
	"fmt"
	"reflect"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

// flatFields is the state the flattening tests compile against.
var flatFields = []*Field{
	{Name: "count", Type: Type{Kind: KindInt}},
	{Name: "target", Type: Type{Kind: KindInt}},
	{Name: "name", Type: Type{Kind: KindString}, Optional: true},
	{Name: "items", Type: Type{Kind: KindList, Items: KindInt}},
	{Name: "obj", Type: Type{Kind: KindObject}},
	{Name: "anything", Type: Type{Kind: KindAny}},
	{Name: "messages", Type: Type{Kind: KindMessages}},
}

// flatStates are states the expressions run on: ordinary ones, fields
// missing or null, values of other types in the any field.
var flatStates = []map[string]any{
	{"count": 3, "target": 10, "name": "ann", "items": []any{1, 5, 9}, "obj": map[string]any{"name": "o", "n": 2}, "anything": map[string]any{"x": 1}, "messages": []any{map[string]any{"role": "assistant", "content": "", "tool_calls": []any{map[string]any{"id": "1"}}}}},
	{"count": 0, "target": 0, "name": nil, "items": []any{}, "obj": map[string]any{}, "anything": nil, "messages": []any{}},
	{"count": 1000, "items": []any{2}, "anything": "text"},
	{"count": -7, "target": 2, "items": []any{3, 4}, "obj": map[string]any{"name": 5}, "anything": []any{1, "a"}},
	{},
}

// TestFlattenSameResults checks that an expression flattened to run on the
// state map yields what its program over {"state": ...} yields (the same
// value or the same error) on every state, that flatten leaves alone what
// it must, and that the program the analysis reads (Program) keeps its
// tree.
func TestFlattenSameResults(t *testing.T) {
	tests := []struct {
		src  string
		flat bool
	}{
		{"state.count + 1", true},
		{`"step " + string(state.count)`, true},
		{"state.count < state.target", true},
		{`state["count"] * 2`, true},
		{"len(state.items) > 0 && state.items[0] == 1", true},
		{"filter(state.items, # > state.count)", true},
		{"map(state.items, # * state.target)", true},
		{"state.obj.name", true},
		{`state.obj["n"]`, true},
		{"state.obj?.name", true},
		{"state.anything?.x", true},
		{"state.anything.x", true}, // fails on a string, a list, nil
		{"state.name ?? 'none'", true},
		{"state.count in [1, 2, 3] ? state.name : 'x'", true},
		{"state.count % state.target", true}, // fails on 0
		{"sum(state.items) + state.count", true},
		{"has_tool_calls(state.messages)", true},
		{"last_message(state.messages).role", true},
		{"json(state.obj)", true},
		{"state.anything", true},
		{"[state.count, state.name, state.items]", true},
		{"{a: state.count, b: state.obj}", true},
		{"state.count > 2 and state.count < 100 or state.target == 0", true},
		// Not flattened: state itself, a computed key, $env, let (whose
		// variable could shadow a field).
		{"json(state)", false},
		{"len(state) > 0", false},
		{`state[state.name ?? "count"]`, false},
		{`state["co" + "unt"]`, true}, // the optimizer folds the key
		{"sort(keys(state))", false},
		{"$env.state.count", false},
		{"let target = 2; state.target + target", false},
		{"let x = state.count; x + state.target", false},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			var errs ErrorList
			ec := &exprCompiler{file: "f.yaml", src: []string{tt.src}, errs: &errs}
			env := stateEnv(flatFields)
			e := ec.compile(&yaml.Node{Kind: yaml.ScalarNode, Value: tt.src, Line: 1, Column: 1}, "e", env, nil)
			if e == nil {
				t.Fatalf("compile: %v", errs)
			}
			if got := e.flat != nil && e.flat.program() != nil; got != tt.flat {
				t.Fatalf("flattened = %v, want %v", got, tt.flat)
			}
			fresh, err := ec.compileSrc(tt.src, env)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := e.Program.Node().String(), fresh.Node().String(); got != want {
				t.Fatalf("the program's tree changed: %s, want %s", got, want)
			}
			for i, st := range flatStates {
				want, wantErr := e.run(e.Program, map[string]any{"state": st})
				for _, how := range []string{"Eval", "EvalState"} {
					var got any
					var err error
					if how == "Eval" {
						got, err = e.Eval(map[string]any{"state": st})
					} else {
						got, err = e.EvalState(st)
					}
					if fmt.Sprint(err) != fmt.Sprint(wantErr) {
						t.Errorf("state %d: %s error %v, want %v", i, how, err, wantErr)
					}
					if !reflect.DeepEqual(got, want) {
						t.Errorf("state %d: %s = %#v, want %#v", i, how, got, want)
					}
				}
			}
		})
	}
}

// TestEvalStateAllocs guards the point of flattening and of the VM pool: a
// condition over two state fields allocates nothing (before: 4 objects
// with a shared environment map, the VM's stack and its growth and two
// reflect map reads, and 6 with a map of its own). Under -race, sync.Pool
// drops some VMs on purpose, so the bound there is one VM's worth.
func TestEvalStateAllocs(t *testing.T) {
	var errs ErrorList
	src := "state.count < state.target"
	ec := &exprCompiler{file: "f.yaml", src: []string{src}, errs: &errs}
	e := ec.compile(&yaml.Node{Kind: yaml.ScalarNode, Value: src, Line: 1, Column: 1}, "e", stateEnv(flatFields), nil)
	if e == nil || e.flat == nil || e.flat.program() == nil {
		t.Fatalf("compile: %v (flat %v)", errs, e != nil && e.flat != nil)
	}
	st := map[string]any{"count": 300, "target": 1000}
	allocs := testing.AllocsPerRun(200, func() {
		v, err := e.EvalState(st)
		if err != nil || v != true {
			t.Fatalf("EvalState = %v, %v", v, err)
		}
	})
	if max := maxEvalAllocs(); allocs > max {
		t.Fatalf("EvalState of %q allocates %.2f objects per run, want at most %.2f", src, allocs, max)
	}
}

// TestFlatFirstUseConcurrent evaluates the expressions of one compiler
// (sharing expr's config) for the first time from several goroutines at
// once, as concurrent runs of one graph do: each flat program is compiled
// once, and under -race nothing races.
func TestFlatFirstUseConcurrent(t *testing.T) {
	srcs := []string{"state.count + 1", "state.count < state.target", "len(state.items)", `"n" + string(state.count)`, "json(state)", "state.obj.n"}
	var errs ErrorList
	ec := &exprCompiler{file: "f.yaml", src: srcs, errs: &errs}
	env := stateEnv(flatFields)
	var exprs []*Expr
	for i, src := range srcs {
		e := ec.compile(&yaml.Node{Kind: yaml.ScalarNode, Value: src, Line: i + 1, Column: 1}, "e", env, nil)
		if e == nil {
			t.Fatalf("compile %q: %v", src, errs)
		}
		exprs = append(exprs, e)
	}
	st := flatStates[0]
	want := make([]any, len(exprs))
	for i, e := range exprs {
		v, err := e.run(e.Program, map[string]any{"state": st})
		if err != nil {
			t.Fatal(err)
		}
		want[i] = v
	}
	var wg sync.WaitGroup
	fails := make(chan string, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range exprs {
				i := (g + k) % len(exprs) // each starts on another
				e := exprs[i]
				if v, err := e.EvalState(st); err != nil || !reflect.DeepEqual(v, want[i]) {
					fails <- fmt.Sprintf("%s = %v, %v; want %v", e.Src, v, err, want[i])
				}
			}
		}()
	}
	wg.Wait()
	close(fails)
	for f := range fails {
		t.Error(f)
	}
	for _, e := range exprs {
		if flat := e.flat.program() != nil; flat != (e.Src != "json(state)") {
			t.Errorf("%s: flattened = %v", e.Src, flat)
		}
	}
}
