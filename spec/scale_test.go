package spec_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/spec"
)

// TestDeepNestingIsAnError checks that an expression nested far deeper than
// expr's recursive parser can take is rejected with a positioned error
// instead of overflowing the stack (700,000 brackets killed the process).
func TestDeepNestingIsAnError(t *testing.T) {
	for _, open := range []string{"(", "[", "{"} {
		closeB := map[string]string{"(": ")", "[": "]", "{": "}"}[open]
		inner := "1"
		if open == "{" {
			inner = "a: 1"
		}
		deep := strings.Repeat(open, 700_000) + inner + strings.Repeat(closeB, 700_000)
		src := "version: 1\nname: deep\nstate:\n  x: {type: any}\nnodes:\n  a:\n    kind: set\n    set:\n      x: '" + deep + "'\nedges:\n  - {from: START, to: a}\n  - {from: a, to: END}\n"
		g, errs := spec.Parse("deep.yaml", []byte(src), nil)
		if g != nil || len(errs) != 1 {
			t.Fatalf("%s: got graph %v, %d diagnostics:\n%v", open, g != nil, len(errs), errs)
		}
		want := fmt.Sprintf("deep.yaml:9:%d: error: nodes.a.set.x: brackets nest more than %d deep", 11+spec.ExprMaxDepth, spec.ExprMaxDepth)
		if got := errs[0].Error(); got != want {
			t.Errorf("%s:\n got %s\nwant %s", open, got, want)
		}
	}
	// Brackets inside string literals do not count.
	src := "version: 1\nname: deep\nstate:\n  x: {type: string}\nnodes:\n  a:\n    kind: set\n    set:\n      x: '\"" + strings.Repeat("(", 500) + "\" + `" + strings.Repeat("[", 500) + "`'\nedges:\n  - {from: START, to: a}\n  - {from: a, to: END}\n"
	if g, errs := spec.Parse("strings.yaml", []byte(src), nil); g == nil || len(errs) > 0 {
		t.Errorf("brackets in string literals rejected:\n%v", errs)
	}
}
