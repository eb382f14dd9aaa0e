package spec_test

import (
	"fmt"
	"runtime"
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

// chainGraph generates a chain of n set nodes; every third edge is a
// condition that may end the run.
func chainGraph(n int) []byte {
	var b strings.Builder
	b.WriteString("version: 1\nname: chain\nstate:\n  count: {type: int, reducer: add}\n  log: {type: list, items: string, reducer: append}\n  last: {type: string}\n  ok: {type: bool}\nnodes:\n")
	for i := range n {
		fmt.Fprintf(&b, "  n%d: {kind: set, set: {count: '1', log: '\"n%d\"', last: '\"n%d\"'}}\n", i, i, i)
	}
	b.WriteString("edges:\n  - {from: START, to: n0}\n")
	for i := range n - 1 {
		if i%3 == 2 {
			fmt.Fprintf(&b, "  - {from: n%d, when: state.ok, to: n%d, else: END}\n", i, i+1)
		} else {
			fmt.Fprintf(&b, "  - {from: n%d, to: n%d}\n", i, i+1)
		}
	}
	fmt.Fprintf(&b, "  - {from: n%d, to: END}\n", n-1)
	return []byte(b.String())
}

// fanoutGraph generates START fanning out to n-1 set nodes at once, all
// joined by one node.
func fanoutGraph(n int) []byte {
	var b strings.Builder
	b.WriteString("version: 1\nname: fanout\nstate:\n  count: {type: int, reducer: add}\n  log: {type: list, items: string, reducer: append}\nnodes:\n")
	names := make([]string, n-1)
	for i := range n - 1 {
		names[i] = fmt.Sprintf("n%d", i)
		fmt.Fprintf(&b, "  n%d: {kind: set, set: {count: '1', log: '\"n%d\"'}}\n", i, i)
	}
	b.WriteString("  join: {kind: noop}\nedges:\n")
	fmt.Fprintf(&b, "  - {from: START, to: [%s]}\n", strings.Join(names, ", "))
	fmt.Fprintf(&b, "  - {from: [%s], to: join}\n", strings.Join(names, ", "))
	b.WriteString("  - {from: join, to: END}\n")
	return []byte(b.String())
}

// shapes are the generated graphs the scale benchmark and test use.
var shapes = []struct {
	name string
	gen  func(n int) []byte
}{
	{"chain", chainGraph},
	{"fanout", fanoutGraph},
	{"blocks", bigGraph},
}

// BenchmarkValidateScale validates generated graphs of 10k, 40k and 160k
// nodes: a chain, one wide fan-out with a join, and blocks of a route, a
// fan-out and a join (bigGraph). Time per node should stay about constant.
// See BENCHMARKS.md.
func BenchmarkValidateScale(b *testing.B) {
	for _, s := range shapes {
		for _, n := range []int{10_000, 40_000, 160_000} {
			b.Run(fmt.Sprintf("%s/n=%d", s.name, n), func(b *testing.B) {
				src := s.gen(n)
				b.SetBytes(int64(len(src)))
				b.ReportAllocs()
				for b.Loop() {
					if g, errs := spec.Parse("big.yaml", src, nil); g == nil {
						b.Fatal(errs)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(n), "µs/node")
			})
		}
	}
}

// allocatedBy returns the bytes Parse allocates validating src.
func allocatedBy(t *testing.T, src []byte) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g, errs := spec.Parse("big.yaml", src, nil)
	runtime.ReadMemStats(&after)
	if g == nil {
		t.Fatalf("generated graph does not load:\n%v", errs)
	}
	return after.TotalAlloc - before.TotalAlloc
}

// TestValidationScalesLinearly checks that the work of validating a graph
// grows about linearly with its size, counted as bytes allocated (which,
// unlike time, does not depend on the machine's load): 4 times the nodes
// may cost at most 6 times the memory. The concurrent-writer check used to
// build every pair of nodes of a fan-out (16 times the memory for 4 times
// the nodes).
func TestValidationScalesLinearly(t *testing.T) {
	const n = 1000
	for _, s := range shapes {
		small, large := allocatedBy(t, s.gen(n)), allocatedBy(t, s.gen(4*n))
		if ratio := float64(large) / float64(small); ratio > 6 {
			t.Errorf("%s: %d nodes allocate %d bytes, %d nodes %d: %.1f times, want at most 6", s.name, n, small, 4*n, large, ratio)
		} else {
			t.Logf("%s: %.2fx", s.name, ratio)
		}
	}
}
