package checkpointtest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// testForks commits two children of one parent, then grows both branches.
func testForks(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "fork")
	root := th.commit("", first())
	p := th.commit(root, runtime.Delta{"count": set(1), "log": {Kind: runtime.OpAppend, Value: []any{"p"}}})
	a := th.commit(p, runtime.Delta{"count": set(2), "log": {Kind: runtime.OpAppend, Value: []any{"a"}}})
	// Second child of p while a is the head (a fork: parent is not the head).
	b := th.commit(p, runtime.Delta{"count": set(20), "log": {Kind: runtime.OpAppend, Value: []any{"b"}}, "messages": {Kind: runtime.OpMessages, Value: []any{msg("b1", "on b")}}})
	if row, _ := s.Thread(bg, "fork"); row.Head != b {
		t.Fatalf("head %s, want the fork %s", row.Head, b)
	}
	// Grow a from b's head, then b again, interleaved.
	ha, hb := a, b
	for i := 0; i < 5; i++ {
		ha = th.commit(ha, runtime.Delta{"log": {Kind: runtime.OpAppend, Value: []any{fmt.Sprintf("a%d", i)}}, "messages": {Kind: runtime.OpMessages, Value: []any{msg(fmt.Sprintf("a%d", i), "x")}}})
		hb = th.commit(hb, runtime.Delta{"log": {Kind: runtime.OpAppend, Value: []any{fmt.Sprintf("b%d", i)}}, "meta": {Kind: runtime.OpMerge, Value: map[string]any{fmt.Sprint(i): i}}})
	}
	// A fork of the root too.
	th.commit(root, runtime.Delta{"name": set("third branch")})
	th.check()
	if got, _ := s.Get(bg, "fork", ha); !equalJSON(got.Values["log"], []any{"p", "a", "a0", "a1", "a2", "a3", "a4"}) {
		t.Fatalf("branch a log %v", got.Values["log"])
	}
	if got, _ := s.Get(bg, "fork", hb); !equalJSON(got.Values["log"], []any{"p", "b", "b0", "b1", "b2", "b3", "b4"}) {
		t.Fatalf("branch b log %v", got.Values["log"])
	}
	if n := len(mustList(t, s, "fork")); n != len(th.want) {
		t.Fatalf("List: %d checkpoints, want %d across all branches", n, len(th.want))
	}
}

// testLongChainForks grows a thread with large steps (so savers that store
// deltas and periodic snapshots cross several snapshots), forks from the
// middle of it, and loads every checkpoint of every branch.
func testLongChainForks(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "long")
	pad := strings.Repeat("lorem ipsum ", 100) // ~1.2 KB a step
	prev := th.commit("", first())
	var trunk []string
	for i := 0; i < 150; i++ {
		d := runtime.Delta{
			"count":    set(i),
			"messages": {Kind: runtime.OpMessages, Value: []any{msg(fmt.Sprintf("m%d", i), fmt.Sprintf("%d %s", i, pad))}},
		}
		switch i % 10 {
		case 3:
			d["messages"] = runtime.Op{Kind: runtime.OpMessages, Value: []any{msg(fmt.Sprintf("m%d", i-1), "edited"), msg(fmt.Sprintf("m%d", i), pad)}}
		case 7:
			d["messages"] = runtime.Op{Kind: runtime.OpMessages, Value: []any{map[string]any{"id": fmt.Sprintf("m%d", i-2), "remove": true}}}
		case 9:
			d["log"] = runtime.Op{Kind: runtime.OpAppend, Value: []any{pad}}
		}
		prev = th.commit(prev, d)
		trunk = append(trunk, prev)
	}
	// Forks from three points, each grown past the next snapshot distance.
	for _, at := range []int{20, 75, 140} {
		h := trunk[at]
		for j := 0; j < 40; j++ {
			h = th.commit(h, runtime.Delta{"name": set(fmt.Sprintf("fork %d.%d", at, j)), "log": {Kind: runtime.OpAppend, Value: []any{pad}}})
		}
	}
	th.check()
}
