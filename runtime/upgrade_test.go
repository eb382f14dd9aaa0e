package runtime_test

import (
	"context"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// A stored value that no longer fits its field's changed type is replaced
// by the default, with a warning; the old value stays in history.
func TestChangedFieldTypeWarns(t *testing.T) {
	const v1 = `
version: 1
name: up
state:
  x: {type: string, default: abc}
nodes:
  a: {kind: noop}
edges:
  - {from: START, to: a}
  - {from: a, to: END}
interrupts: {before: [a]}
`
	ctx := context.Background()
	saver := checkpoint.NewMemory()
	g1, errs := spec.Parse("up.yaml", []byte(v1), nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	if _, err := (&runtime.Runner{Graph: g1, Saver: saver}).Run(ctx, runtime.RunOptions{Thread: "t"}); err != nil {
		t.Fatal(err)
	}
	g2, errs := spec.Parse("up.yaml", []byte(strings.Replace(v1, "{type: string, default: abc}", "{type: int, default: 7}", 1)), nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	var warnings []string
	r2 := &runtime.Runner{Graph: g2, Saver: saver, Events: func(e runtime.Event) {
		if e.Kind == runtime.EvWarning {
			warnings = append(warnings, e.Message)
		}
	}}
	res, err := r2.Resume(ctx, runtime.ResumeOptions{Thread: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Checkpoint.Values["x"] != 7 {
		t.Fatalf("x = %v, want the new default 7", res.Checkpoint.Values["x"])
	}
	found := false
	for _, w := range warnings {
		found = found || strings.Contains(w, `stored value of field "x" does not fit its type int`)
	}
	if !found {
		t.Fatalf("warnings %q", warnings)
	}
}
