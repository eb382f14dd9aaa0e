package runtime

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// refMessages applies a messages delta's items to list the plain way, a
// linear search per item, as the meaning of a messages delta says (see
// [messageList.apply]): the model the indexed list must match.
func refMessages(list []any, items []any) ([]any, error) {
	out := append([]any{}, list...)
	find := func(id string) int {
		k := -1
		for i, m := range out {
			if id != "" && messageID(m) == id {
				k = i // the last one, as an index built in order has it
			}
		}
		return k
	}
	for _, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("message is not an object")
		}
		id, _ := m["id"].(string)
		if rm, _ := m["remove"].(bool); rm {
			if id == RemoveAllMessages {
				out = []any{}
				continue
			}
			k := find(id)
			if k < 0 {
				return nil, fmt.Errorf("cannot remove %q", id)
			}
			out = append(out[:k:k], out[k+1:]...)
			continue
		}
		if k := find(id); k >= 0 {
			out[k] = m
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// randomBatch makes the items of one messages delta on a list whose live
// ids are live: mostly runs of new messages (long enough, now and then, to
// take the path that indexes only them), with replacements, removals,
// repeated ids, messages without an id, a remove-all, and bad items
// (a non-object, the removal of an unknown id) in some.
func randomBatch(r *rand.Rand, live []string, next *int) []any {
	newMsg := func() map[string]any {
		*next++
		return map[string]any{"id": fmt.Sprintf("m%d", *next), "content": fmt.Sprint(*next)}
	}
	n := 1 + r.IntN(4)
	if r.IntN(3) == 0 {
		n = 1 + r.IntN(3*len(live)+8) // as many as the list or more
	}
	var items []any
	for range n {
		switch k := r.IntN(100); {
		case k < 80 || len(live) == 0 && k < 95:
			items = append(items, newMsg())
		case k < 85:
			items = append(items, map[string]any{"id": live[r.IntN(len(live))], "content": "replaced"})
		case k < 89:
			items = append(items, map[string]any{"id": live[r.IntN(len(live))], "remove": true})
		case k < 92:
			if len(items) > 0 { // an id twice in one delta
				if id := messageID(items[r.IntN(len(items))]); id != "" {
					items = append(items, map[string]any{"id": id, "content": "again"})
				}
			}
		case k < 95:
			items = append(items, map[string]any{"role": "user", "content": "no id"})
		case k < 97:
			items = append(items, map[string]any{"id": RemoveAllMessages, "remove": true})
		case k < 98:
			items = append(items, "not a message")
		default:
			items = append(items, map[string]any{"id": "unknown", "remove": true})
		}
	}
	return items
}

func liveIDs(list []any) []string {
	var ids []string
	for _, m := range list {
		if id := messageID(m); id != "" {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestMessagesIndexLazily checks the messages list that indexes only the
// messages appended in bulk (appendNew, and the index completed when a
// later change needs it) against the plain model: random chains of
// messages deltas applied by an Applier (values flowing from delta to
// delta, sometimes branching from an older snapshot), by ApplyDelta, and
// by a messageList directly with has probes in between give the model's
// lists and its errors, and the snapshots an Applier returned stay as
// they were.
func TestMessagesIndexLazily(t *testing.T) {
	bulk := 0
	for seed := uint64(0); seed < 400; seed++ {
		r := rand.New(rand.NewPCG(seed, 16))
		next := 0
		var start []any
		for range r.IntN(40) {
			next++
			m := map[string]any{"id": fmt.Sprintf("m%d", next), "content": "start"}
			if r.IntN(10) == 0 {
				delete(m, "id")
			}
			start = append(start, m)
		}
		start = start[:len(start):len(start)] // as lists in states are
		a := Applier{Decoded: seed%2 == 0}
		type snap struct {
			values map[string]any
			js     string
			want   []any
		}
		snaps := []snap{{map[string]any{"m": start}, js(t, start), start}}
		for step := 0; step < 30; step++ {
			from := snaps[len(snaps)-1]
			if r.IntN(5) == 0 {
				from = snaps[r.IntN(len(snaps))]
			}
			items := randomBatch(r, liveIDs(from.want), &next)
			if len(items) > len(from.want)/4 {
				bulk++
			}
			want, werr := refMessages(from.want, items)
			d := Delta{"m": {Kind: OpMessages, Value: items}}

			v := copyMap(from.values)
			err := a.Apply(v, d)
			if (err != nil) != (werr != nil) {
				t.Fatalf("seed %d step %d: Applier error %v, model %v; items %s", seed, step, err, werr, js(t, items))
			}
			plain := copyMap(from.values)
			perr := ApplyDelta(plain, d)
			if (perr != nil) != (werr != nil) {
				t.Fatalf("seed %d step %d: ApplyDelta error %v, model %v", seed, step, perr, werr)
			}
			// The list on its own, asked which ids it has before and
			// after (which completes the index at random points).
			cur, _ := from.values["m"].([]any)
			ml := newMessageList(cur, nil, nil)
			if r.IntN(3) == 0 && len(from.want) > 0 {
				id := liveIDs(from.want)
				if len(id) > 0 && !ml.has(id[r.IntN(len(id))]) {
					t.Fatalf("seed %d step %d: has: a live id missing", seed, step)
				}
			}
			merr := ml.apply(items)
			if (merr != nil) != (werr != nil) {
				t.Fatalf("seed %d step %d: messageList error %v, model %v", seed, step, merr, werr)
			}
			if werr != nil {
				continue // the values after a failed apply are not defined
			}
			for _, id := range liveIDs(want) {
				if !ml.has(id) {
					t.Fatalf("seed %d step %d: has(%q) false after apply", seed, step, id)
				}
			}
			for _, id := range []string{"unknown", fmt.Sprintf("m%d", next+1)} {
				if ml.has(id) {
					t.Fatalf("seed %d step %d: has(%q) true", seed, step, id)
				}
			}
			wantJS := js(t, want)
			for name, got := range map[string]any{"Applier": v["m"], "ApplyDelta": plain["m"], "messageList": ml.done()} {
				if g := js(t, got); g != wantJS {
					t.Fatalf("seed %d step %d: %s gives\n %s\nwant\n %s\nitems %s", seed, step, name, g, wantJS, js(t, items))
				}
			}
			if l := v["m"].([]any); cap(l) != len(l) {
				t.Fatalf("seed %d step %d: the list has spare capacity", seed, step)
			}
			snaps = append(snaps, snap{v, wantJS, want})
			for k, s := range snaps {
				if g := js(t, s.values["m"]); g != s.js {
					t.Fatalf("seed %d step %d: snapshot %d changed:\n %s\nwas\n %s", seed, step, k, g, s.js)
				}
			}
		}
	}
	if bulk < 1000 {
		t.Errorf("only %d bulk deltas: the generator does not reach appendNew enough", bulk)
	}
}

// TestMessagesAppendNewFallsBack gives appendNew the deltas it must leave
// to the plain loop, on a list it has not indexed: each gives the plain
// result and the index afterwards holds exactly the list's ids.
func TestMessagesAppendNewFallsBack(t *testing.T) {
	list := func() []any {
		return []any{msg("a", "1"), msg("b", "2"), map[string]any{"content": "no id"}, msg("c", "3")}
	}
	for _, c := range []struct {
		name  string
		items []any
		want  string // ids and contents, or the error's start
	}{
		{"all new", []any{msg("d", "4"), msg("e", "5")}, "a=1 b=2 _=no id c=3 d=4 e=5"},
		{"replaces an old one", []any{msg("d", "4"), msg("b", "B")}, "a=1 b=B _=no id c=3 d=4"},
		{"an id twice", []any{msg("d", "4"), msg("d", "D")}, "a=1 b=2 _=no id c=3 d=D"},
		{"a removal", []any{msg("d", "4"), map[string]any{"id": "a", "remove": true}}, "b=2 _=no id c=3 d=4"},
		{"remove all", []any{msg("d", "4"), map[string]any{"id": RemoveAllMessages, "remove": true}, msg("e", "5")}, "e=5"},
		{"without ids", []any{map[string]any{"content": "x"}, map[string]any{"content": "y"}}, "a=1 b=2 _=no id c=3 _=x _=y"},
		{"not an object", []any{msg("d", "4"), 7}, "error: message is int"},
		{"unknown removal", []any{msg("d", "4"), map[string]any{"id": "zz", "remove": true}}, `error: cannot remove message "zz"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			ml := newMessageList(list(), nil, nil)
			if err := ml.apply(c.items); err != nil {
				if !strings.HasPrefix("error: "+err.Error(), c.want) {
					t.Fatalf("error %v, want %s", err, c.want)
				}
				return
			}
			var got []string
			out := ml.done()
			for _, m := range out {
				mm := m.(map[string]any)
				id, _ := mm["id"].(string)
				if id == "" {
					id = "_"
				}
				got = append(got, id+"="+mm["content"].(string))
			}
			if g := strings.Join(got, " "); g != c.want {
				t.Fatalf("got %s, want %s", g, c.want)
			}
			if ml.index != nil {
				ml.indexAll(0)
				want := map[string]int{}
				for i, m := range out {
					if id := messageID(m); id != "" {
						want[id] = i
					}
				}
				if !reflect.DeepEqual(ml.index, want) {
					b, _ := json.Marshal(ml.index)
					t.Fatalf("index %s, want the list's ids", b)
				}
			}
		})
	}
}

// TestIDSet holds idSet to a map: ids added twice are refused, and has
// answers as the map does, for sets filled to their limit (n ids in 2n
// slots, so that probes run long) and ids around them.
func TestIDSet(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 16))
	for _, n := range []int{0, 1, 2, 3, 7, 8, 100, 1000} {
		var s idSet
		s.init(n)
		want := map[string]bool{}
		for len(want) < n {
			id := fmt.Sprintf("%d.n.%d", r.IntN(3*n), r.IntN(2))
			if s.add(id) == want[id] {
				t.Fatalf("n=%d: add(%q) reports new=%v, but the map had it: %v", n, id, !want[id], want[id])
			}
			want[id] = true
		}
		for i := 0; i < 6*n+10; i++ {
			id := fmt.Sprintf("%d.n.%d", r.IntN(3*n+3), r.IntN(2))
			if s.has(id) != want[id] {
				t.Fatalf("n=%d: has(%q) = %v, want %v", n, id, s.has(id), want[id])
			}
		}
	}
}
