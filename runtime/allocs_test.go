package runtime_test

import (
	"context"
	"fmt"
	goruntime "runtime"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// maxStepAllocs is the allocation budget of one superstep of the log loop
// (BenchmarkLoop1000Log's graph: a set node incrementing count and
// appending one string to an append list, a conditional edge) with a
// saver that keeps nothing. Measured 27.5 when last lowered (issue 16; 40
// before the expression work, 67.5 before that): about 3.5 are expr's
// results (boxing count + 1, the string and its concatenation; its VMs
// come from a pool and state fields are read without reflect, see
// spec.Expr.EvalState), 9 the merge (the new values and delta maps,
// who-wrote-what), 2 the state size record, 2 the node result and its
// writes, and one each for the checkpoint, its id, the commit, the
// ledger, the node call. Raise it only for a reason you can name. (An
// append that copies its list is one allocation like one that does not:
// TestStepBytesFlat catches that.)
const maxStepAllocs = 31

// TestStepAllocs fails when a superstep allocates more than maxStepAllocs
// objects. It counts allocations (testing.AllocsPerRun), not time, so it
// does not depend on the machine's load. The per-step figure is the
// difference between a 400-step and a 100-step run, which leaves out what
// a run costs once (the thread, the input checkpoint). It runs under
// -race too, where sync.Pool drops some of expr's VMs on purpose: the
// count there was 29.5 against 27.5 without.
func TestStepAllocs(t *testing.T) {
	g := mustGraph(t, benchLogGraph)
	r := &runtime.Runner{Graph: g, Saver: benchNopSaver{}}
	ctx := context.Background()
	allocs := func(steps int) float64 {
		return testing.AllocsPerRun(5, func() {
			res, err := r.Run(ctx, runtime.RunOptions{Thread: "allocs", Input: map[string]any{"target": steps}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Checkpoint.Step != steps {
				t.Fatalf("stopped at step %d", res.Checkpoint.Step)
			}
		})
	}
	short, long := allocs(100), allocs(400)
	perStep := (long - short) / 300
	t.Logf("%.2f allocations per superstep (100 steps: %.0f, 400 steps: %.0f)", perStep, short, long)
	if perStep > maxStepAllocs {
		t.Fatalf("a superstep of the log loop allocates %.2f objects, more than the budget of %d (see maxStepAllocs)", perStep, maxStepAllocs)
	}
}

// TestStepBytesFlat fails when the bytes a superstep of the log loop
// allocates grow with the length of its list: an append must share the
// list's items, not copy them. It compares the bytes per step of steps
// 400 to 1,600 with those of steps 100 to 400 (with a list copied on each
// append they would be about 2.7 times as many; shared, the same).
func TestStepBytesFlat(t *testing.T) {
	g := mustGraph(t, benchLogGraph)
	r := &runtime.Runner{Graph: g, Saver: benchNopSaver{}}
	ctx := context.Background()
	n := 0
	bytes := func(steps int) float64 {
		best := 0.0
		for try := 0; try < 3; try++ {
			var before, after goruntime.MemStats
			n++
			thread := fmt.Sprintf("bytes-%d", n)
			goruntime.ReadMemStats(&before)
			if _, err := r.Run(ctx, runtime.RunOptions{Thread: thread, Input: map[string]any{"target": steps}}); err != nil {
				t.Fatal(err)
			}
			goruntime.ReadMemStats(&after)
			if b := float64(after.TotalAlloc - before.TotalAlloc); try == 0 || b < best {
				best = b
			}
		}
		return best
	}
	b100, b400, b1600 := bytes(100), bytes(400), bytes(1600)
	early, late := (b400-b100)/300, (b1600-b400)/1200
	t.Logf("bytes per superstep: %.0f at steps 100-400, %.0f at steps 400-1600", early, late)
	if late > 1.3*early {
		t.Fatalf("a superstep allocates %.0f bytes at steps 400-1600 against %.0f at steps 100-400: appends copy the list", late, early)
	}
}
