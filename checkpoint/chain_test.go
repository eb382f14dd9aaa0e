package checkpoint

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// randomDelta returns a delta over fields a..d with random ops, valid for
// values built by earlier deltas of the same generator.
func randomDelta(r *rand.Rand, live map[string]bool, step int) runtime.Delta {
	d := runtime.Delta{}
	for _, f := range []string{"a", "b", "c", "d"} {
		if r.IntN(3) == 0 {
			continue
		}
		switch r.IntN(5) {
		case 0:
			d[f] = runtime.Op{Kind: runtime.OpSet, Value: []any{fmt.Sprintf("set%d", step)}}
			if f == "d" {
				d[f] = runtime.Op{Kind: runtime.OpSet, Value: map[string]any{"s": step}}
			}
		case 1:
			d[f] = runtime.Op{Kind: runtime.OpAppend, Value: []any{step, fmt.Sprint(step)}}
		case 2:
			d[f] = runtime.Op{Kind: runtime.OpMerge, Value: map[string]any{fmt.Sprint(r.IntN(4)): step}}
		default:
			var items []any
			for i := 0; i < 1+r.IntN(3); i++ {
				id := fmt.Sprintf("m%d", r.IntN(6))
				if r.IntN(12) == 0 {
					items = append(items, map[string]any{"id": runtime.RemoveAllMessages, "remove": true})
					for i := range 6 {
						live[f+fmt.Sprintf("m%d", i)] = false
					}
					continue
				}
				if live[f+id] && r.IntN(3) == 0 {
					items = append(items, map[string]any{"id": id, "remove": true})
					live[f+id] = false
					continue
				}
				items = append(items, map[string]any{"id": id, "role": "user", "content": fmt.Sprint(step)})
				live[f+id] = true
			}
			d[f] = runtime.Op{Kind: runtime.OpMessages, Value: items}
		}
	}
	return d
}

// TestComposerMatchesApplyDelta applies random chains of deltas both one by
// one with runtime.ApplyDelta and composed, and compares.
func TestComposerMatchesApplyDelta(t *testing.T) {
	total := 0
	defer func() {
		if total < 1000 {
			t.Errorf("only %d deltas in all chains: the generator stops too early", total)
		}
	}()
	for seed := uint64(0); seed < 300; seed++ {
		r := rand.New(rand.NewPCG(seed, 1))
		live := map[string]bool{}
		base := map[string]any{"a": []any{}, "b": []any{"x"}, "c": map[string]any{"k": 1}, "d": nil}
		want := spec.DeepCopy(base).(map[string]any)
		comp := newComposer(spec.DeepCopy(base).(map[string]any))
		var chain []runtime.Delta
		for step := 0; step < 1+r.IntN(30); step++ {
			d := randomDelta(r, live, step)
			chain = append(chain, d)
			next := spec.DeepCopy(want).(map[string]any)
			if err := runtime.ApplyDelta(next, d); err != nil {
				// A message removed after a set of its field: not a valid
				// chain; stop here for both.
				chain = chain[:len(chain)-1]
				break
			}
			want = next
			// The composer owns (and may extend) what it is given.
			if err := comp.add(cloneDelta(d)); err != nil {
				t.Fatalf("seed %d step %d: composer: %v", seed, step, err)
			}
		}
		total += len(chain)
		got, err := comp.result()
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if !reflect.DeepEqual(got, want) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			c, _ := json.Marshal(chain)
			t.Fatalf("seed %d: composed\n %s\nwant\n %s\nchain %s", seed, g, w, c)
		}
	}
}

func cloneDelta(d runtime.Delta) runtime.Delta {
	out := runtime.Delta{}
	for k, op := range d {
		out[k] = runtime.Op{Kind: op.Kind, Value: spec.DeepCopy(op.Value)}
	}
	return out
}

// TestComposerErrors reports a malformed op like ApplyDelta does.
func TestComposerErrors(t *testing.T) {
	comp := newComposer(map[string]any{"m": []any{}})
	if err := comp.add(runtime.Delta{"m": {Kind: runtime.OpMessages, Value: []any{map[string]any{"id": "x", "remove": true}}}}); err != nil {
		t.Fatal(err) // reported when applied
	}
	if _, err := comp.result(); err == nil {
		t.Fatal("removing an unknown message: no error")
	}
	comp = newComposer(map[string]any{})
	comp.add(runtime.Delta{"l": {Kind: runtime.OpAppend, Value: "not a list"}})
	if err := comp.add(runtime.Delta{"l": {Kind: runtime.OpAppend, Value: []any{1}}}); err == nil {
		t.Fatal("append of a non-list: no error")
	}
}
