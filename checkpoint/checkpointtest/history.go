package checkpointtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// gcSaver is a saver that collects garbage (the SQL savers).
type gcSaver interface {
	GC(ctx context.Context, o checkpoint.GCOptions) (checkpoint.GCResult, error)
}

// testHistory holds [runtime.ReadHistory] (the saver's [runtime.HistoryReader]
// if it has one) to one Get per checkpoint: on random threads with forks,
// every delta op (appends, merges, sets, messages upserts, removals and
// remove-alls), steps large enough to cross snapshots, pending writes and,
// on savers that have GC, collected checkpoints, with random limits,
// before ids and filters, the checkpoints must be deep-equal to what
// [runtime.HistoryByGet] returns, and no two of them may share memory
// unless Shared asks for it.
func testHistory(t *testing.T, s runtime.Saver) {
	for seed := uint64(1); seed <= 6; seed++ {
		rnd := rand.New(rand.NewPCG(seed, 77))
		th := newThread(t, s, fmt.Sprintf("hist%d", seed))
		randomThread(th, rnd, 40+rnd.IntN(40))
		if gc, ok := s.(gcSaver); ok && seed%2 == 0 {
			if _, err := gc.GC(bg, checkpoint.GCOptions{Thread: th.id, Keep: 10 + rnd.IntN(30)}); err != nil {
				t.Fatalf("GC: %v", err)
			}
		}
		all := mustList(t, s, th.id)
		opts := []runtime.HistoryOptions{{}, {Shared: true}, {Limit: 1}, {Limit: 7, Shared: true},
			{Before: all[len(all)/2].ID}, {Before: all[len(all)/3].ID, Limit: 5},
			{Filter: func(cp *runtime.Checkpoint) bool { return cp.Step%3 == 0 }},
			{Filter: func(cp *runtime.Checkpoint) bool { return cp.Metadata.Source == runtime.SourceInput }, Shared: true}}
		for i, o := range opts {
			want, err := runtime.HistoryByGet(bg, s, th.id, o)
			if err != nil {
				t.Fatalf("seed %d, options %d: HistoryByGet: %v", seed, i, err)
			}
			got, err := runtime.ReadHistory(bg, s, th.id, o)
			if err != nil {
				t.Fatalf("seed %d, options %d: ReadHistory: %v", seed, i, err)
			}
			if len(got) != len(want) {
				t.Fatalf("seed %d, options %d: %d checkpoints, want %d", seed, i, len(got), len(want))
			}
			for j := range want {
				if !reflect.DeepEqual(got[j], want[j]) {
					t.Fatalf("seed %d, options %d: checkpoint %d (%s) differs from Get:\n got  %s\n want %s", seed, i, j, want[j].ID, js(got[j]), js(want[j]))
				}
			}
			if len(got) < 2 {
				continue
			}
			// Changing one checkpoint's values changes no other's (with
			// Shared, only the top level is each one's own).
			if o.Shared {
				got[0].Values["count"] = "MUTATED"
				got[0].Values["new field"] = 1
				for j := 1; j < len(got); j++ {
					if !reflect.DeepEqual(got[j].Values, want[j].Values) {
						t.Fatalf("seed %d, options %d: changing the top level of one checkpoint's values changed checkpoint %s's", seed, i, want[j].ID)
					}
				}
				continue
			}
			for j := range got {
				if j%2 == 0 {
					mutateDeep(got[j].Values)
					mutate(got[j])
				}
			}
			for j := range got {
				if j%2 == 1 && !reflect.DeepEqual(got[j], want[j]) {
					t.Fatalf("seed %d, options %d: changing other checkpoints of the history changed checkpoint %s:\n got  %s\n want %s", seed, i, want[j].ID, js(got[j]), js(want[j]))
				}
			}
		}
		again, err := runtime.ReadHistory(bg, s, th.id, runtime.HistoryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want, _ := runtime.HistoryByGet(bg, s, th.id, runtime.HistoryOptions{})
		if !reflect.DeepEqual(again, want) {
			t.Fatalf("seed %d: changing what History returned changed the saver's checkpoints", seed)
		}
	}
	if _, err := runtime.ReadHistory(bg, s, "no such thread", runtime.HistoryOptions{}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("ReadHistory of a missing thread: %v, want not found", err)
	}
}

// randomThread commits n random checkpoints on th: mostly children of the
// head, some forks of older checkpoints, with pending writes on a few.
func randomThread(th *thread, rnd *rand.Rand, n int) {
	root := th.commit("", first())
	ids := []string{root}
	pad := strings.Repeat("history ", 200) // ~1.6 KB: crosses snapshots
	next := 0
	for i := 0; i < n; i++ {
		parent := th.head
		if rnd.IntN(6) == 0 {
			parent = ids[rnd.IntN(len(ids))]
		}
		d := runtime.Delta{}
		msgs, _ := th.want[parent]["messages"].([]any)
		for range 1 + rnd.IntN(3) {
			switch rnd.IntN(9) {
			case 0:
				d["count"] = set(rnd.IntN(100))
			case 1, 2:
				d["log"] = runtime.Op{Kind: runtime.OpAppend, Value: []any{fmt.Sprintf("l%d", i), rnd.Float64()}}
			case 3:
				d["meta"] = runtime.Op{Kind: runtime.OpMerge, Value: map[string]any{fmt.Sprint(rnd.IntN(5)): map[string]any{"i": i, "l": []any{i}}}}
			case 4:
				d["obj"] = set(map[string]any{"nested": []any{map[string]any{"i": i}}, "s": "x"})
			default:
				var items []any
				next++
				content := fmt.Sprint(i)
				if rnd.IntN(4) == 0 {
					content += pad
				}
				items = append(items, msg(fmt.Sprintf("m%d", next), content))
				if len(msgs) > 0 {
					old := msgs[rnd.IntN(len(msgs))].(map[string]any)["id"]
					switch rnd.IntN(8) {
					case 0:
						items = append(items, msg(old.(string), "edited"))
					case 1:
						items = append([]any{map[string]any{"id": old, "remove": true}}, items...)
					case 2:
						if rnd.IntN(3) == 0 {
							items = append([]any{map[string]any{"id": runtime.RemoveAllMessages, "remove": true}}, items...)
						}
					}
				}
				d["messages"] = runtime.Op{Kind: runtime.OpMessages, Value: items}
			}
		}
		var writes []runtime.PendingWrite
		if rnd.IntN(5) == 0 {
			writes = append(writes, runtime.PendingWrite{Node: "a", Kind: runtime.PendingInterrupt,
				Interrupt: &runtime.Interrupt{Node: "a", When: runtime.InterruptNode, Payload: map[string]any{"q": i}}})
		}
		th.head = th.commit(parent, d, writes...)
		ids = append(ids, th.head)
	}
	row := th.row(runtime.StatusFailed)
	row.Head = th.head
	if err := th.s.Mark(bg, &runtime.Mark{Thread: row, Writes: []runtime.PendingWrite{{Node: "b", Kind: runtime.PendingError, Error: "boom"}}}); err != nil {
		th.t.Fatalf("mark: %v", err)
	}
}

// mutateDeep changes every list and object inside v.
func mutateDeep(v any) {
	switch x := v.(type) {
	case []any:
		for i, e := range x {
			mutateDeep(e)
			if _, ok := e.(map[string]any); !ok {
				x[i] = "MUTATED"
			}
		}
	case map[string]any:
		for k, e := range x {
			mutateDeep(e)
			switch e.(type) {
			case map[string]any, []any:
			default:
				x[k] = "MUTATED"
			}
		}
		x["MUTATED"] = true
	}
}
