package spec

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzFlatSameResults is TestFlattenSameResults over generated
// expressions and states: whatever expression compiles against the test
// state, its flat program (when it has one) yields what its program over
// {"state": ...} yields, value or error, on the fixed states and on the
// fuzzed one.
func FuzzFlatSameResults(f *testing.F) {
	for _, src := range []string{
		"state.count + 1", `"step " + string(state.count)`, `state["count"] * 2`,
		"filter(state.items, # > state.count)", "state.obj?.name", "state.anything.x",
		"state.name ?? 'none'", "state.count % state.target", "last_message(state.messages).role",
		"{a: state.count, b: state.obj}", `state["co" + "unt"]`, "let x = state.count; x + state.target",
		"json(state)", "state.items[state.count]", "state.count > 2 and state.target == 0",
	} {
		f.Add(src, `{"count": 3, "target": 0, "items": [1, 2], "anything": {"x": 1}}`)
	}
	env := stateEnv(flatFields)
	f.Fuzz(func(t *testing.T, src, stateJSON string) {
		if len(src) > 200 || strings.Contains(src, "..") {
			// Ranges are bounded by expr's memory budget, but a
			// million-element one is too slow for a fuzzing round.
			return
		}
		var errs ErrorList
		ec := &exprCompiler{file: "f.yaml", src: []string{src}, errs: &errs}
		e := ec.compile(&yaml.Node{Kind: yaml.ScalarNode, Value: src, Line: 1, Column: 1}, "e", env, nil)
		if e == nil {
			return // not an expression over this state
		}
		states := flatStates
		var st map[string]any
		if json.Unmarshal([]byte(stateJSON), &st) == nil && st != nil {
			states = append(states[:len(states):len(states)], Normalize(st).(map[string]any))
		}
		for i, st := range states {
			want, wantErr := e.run(e.Program, map[string]any{"state": st})
			got, err := e.EvalState(st)
			if fmt.Sprint(err) != fmt.Sprint(wantErr) {
				t.Fatalf("%q on state %d (%v): EvalState error %v, program's %v", src, i, st, err, wantErr)
			}
			// NaN is not DeepEqual to itself; its %#v is.
			if !reflect.DeepEqual(got, want) && fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", want) {
				t.Fatalf("%q on state %d (%v): EvalState = %#v, program's %#v", src, i, st, got, want)
			}
		}
	})
}
