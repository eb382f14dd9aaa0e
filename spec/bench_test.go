package spec_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/spec"
)

// bigGraph generates a valid graph of about n nodes made of blocks of five:
// a set node with expressions, a conditional route that either skips ahead
// or fans out to two set nodes, a join of the two, and a noop that goes on
// to the next block.
func bigGraph(n int) []byte {
	var b strings.Builder
	b.WriteString("version: 1\nname: big\nstate:\n")
	b.WriteString("  count: {type: int, reducer: add}\n")
	b.WriteString("  total: {type: float}\n")
	b.WriteString("  mode: {type: string, enum: [fast, slow], default: fast}\n")
	b.WriteString("  log: {type: list, items: string, reducer: append}\n")
	b.WriteString("  meta: {type: object, reducer: merge}\n")
	blocks := max(n/5, 1)
	b.WriteString("nodes:\n")
	for i := range blocks {
		fmt.Fprintf(&b, "  s%d:\n    kind: set\n    set:\n", i)
		fmt.Fprintf(&b, "      count: \"1\"\n")
		fmt.Fprintf(&b, "      total: 'state.total * 1.5 + float(state.count) / %d'\n", i+1)
		fmt.Fprintf(&b, "      log: '\"step %d: \" + state.mode + string(len(state.log))'\n", i)
		fmt.Fprintf(&b, "  r%d: {kind: noop}\n", i)
		fmt.Fprintf(&b, "  a%d:\n    kind: set\n    set: {log: '[\"a%d\"]', meta: '{\"a\": %d}'}\n", i, i, i)
		fmt.Fprintf(&b, "  b%d:\n    kind: set\n    set: {log: '\"b%d\"', count: 'state.count > 10 ? 1 : 2'}\n", i, i)
		fmt.Fprintf(&b, "  j%d: {kind: noop}\n", i)
	}
	b.WriteString("edges:\n  - {from: START, to: s0}\n")
	for i := range blocks {
		next := "END"
		if i+1 < blocks {
			next = fmt.Sprintf("s%d", i+1)
		}
		fmt.Fprintf(&b, "  - {from: s%d, to: r%d}\n", i, i)
		fmt.Fprintf(&b, "  - from: r%d\n    routes:\n", i)
		fmt.Fprintf(&b, "      - {when: 'state.mode == \"fast\" && state.count > %d', to: %s}\n", i, next)
		fmt.Fprintf(&b, "    default: [a%d, b%d]\n", i, i)
		fmt.Fprintf(&b, "  - {from: [a%d, b%d], to: j%d}\n", i, i, i)
		fmt.Fprintf(&b, "  - {from: j%d, to: %s}\n", i, next)
	}
	return []byte(b.String())
}

func TestBigGraphIsValid(t *testing.T) {
	src := bigGraph(500)
	g, errs := spec.Parse("big.yaml", src, nil)
	if g == nil || len(errs) > 0 {
		t.Fatalf("generated graph does not check cleanly:\n%v", errs)
	}
	if len(g.Nodes) != 500 {
		t.Fatalf("%d nodes, want 500", len(g.Nodes))
	}
}

// BenchmarkValidate500 validates a 500-node graph; the target is well under
// 100ms per validation.
func BenchmarkValidate500(b *testing.B) {
	src := bigGraph(500)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		if g, errs := spec.Parse("big.yaml", src, nil); g == nil {
			b.Fatal(errs)
		}
	}
}
