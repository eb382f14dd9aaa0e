package runtime_test

import (
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

const optionalGraph = `version: 1
name: optional
state:
  answer: {type: string, optional: true}
  tally: {type: int, optional: true, reducer: add}
  name: {type: string}
nodes:
  a: {kind: noop}
  b: {kind: noop}
edges:
  - {from: START, to: a}
  - {from: a, to: b}
  - {from: b, to: END}
`

// An optional field starts as null and keeps a null write, through a
// checkpoint reload; other reducers build on null as on the zero value; a
// null written to a field that is not optional fails the step.
func TestOptionalFields(t *testing.T) {
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			s, reopen := sk.open(t)
			h := newHarness(t, optionalGraph, s)
			h.fk.writes("a", w("answer", "yes"), w("tally", 2))
			h.fk.writes("b", w("answer", nil))
			cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
			wantValues(t, cp.Values, map[string]any{"answer": nil, "tally": 2, "name": ""})
			r := reopen()
			first, err := r.Get(bg, "t", history(t, r, "t")[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			if v, ok := first.Values["answer"]; !ok || v != nil {
				t.Errorf("input checkpoint: answer = %#v (present %v), want null", v, ok)
			}
			if v := first.Values["tally"]; v != nil {
				t.Errorf("input checkpoint: tally = %#v, want null", v)
			}
			_, cp = head(t, reopen(), "t")
			wantValues(t, cp.Values, map[string]any{"answer": nil, "tally": 2, "name": ""})

			h2 := newHarness(t, optionalGraph, nil)
			h2.fk.writes("a", w("name", nil))
			_, err = h2.Run(bg, runtime.RunOptions{Thread: "t2"})
			we := wantErrAs[*runtime.WriteError](t, err)
			if we.Field != "name" || !strings.Contains(we.Error(), `field "name" is not optional`) {
				t.Errorf("error %v", err)
			}
		})
	}
}
