package runtime_test

import (
	"reflect"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// reloaded checks that every checkpoint of thread reads back from saver with
// the values the run reported for it (the checkpoint events), and returns
// the head's values.
func reloaded(t *testing.T, saver runtime.Saver, rec *recorder, thread string) map[string]any {
	t.Helper()
	live := map[string]map[string]any{}
	for _, e := range rec.ofKind(runtime.EvCheckpoint) {
		if e.Thread == thread {
			live[e.Checkpoint] = e.Values
		}
	}
	if len(live) == 0 {
		t.Fatalf("no checkpoint events for thread %q", thread)
	}
	for id, want := range live {
		cp, err := saver.Get(bg, thread, id)
		if err != nil {
			t.Fatalf("reload checkpoint %s: %v", id, err)
		}
		if !reflect.DeepEqual(cp.Values, want) {
			t.Fatalf("checkpoint %s reloaded:\n  %#v\nlive:\n  %#v", id, cp.Values, want)
		}
	}
	_, cp := head(t, saver, thread)
	return cp.Values
}

// An empty list written to an append, add or messages field changes
// nothing, and the thread stays readable: its checkpoints reload, and a
// new turn runs (item 1 of "The core keeps every promise").
func TestEmptyListWriteKeepsThreadReadable(t *testing.T) {
	for _, decl := range []string{
		`{type: list, items: string, reducer: append, default: [a]}`,
		`{type: list, items: string, reducer: add, default: [a]}`,
		`{type: messages, default: [{id: m1, role: user, content: hi}]}`,
	} {
		src := `
version: 1
name: empty
state:
  f: ` + decl + `
nodes:
  trim: {kind: set, set: {f: '[]'}}
edges:
  - {from: START, to: trim}
  - {from: trim, to: END}
`
		for _, sk := range saverKinds {
			t.Run(sk.name+"/"+decl, func(t *testing.T) {
				saver, reopen := sk.open(t)
				r := &runtime.Runner{Graph: mustGraph(t, src), Saver: saver, Version: "test"}
				rec := &recorder{}
				r.Events = rec.add
				before := mustDone(t)(r.Run(bg, runtime.RunOptions{Thread: "t"})).Values["f"]
				r.Saver = reopen()
				if got := reloaded(t, r.Saver, rec, "t")["f"]; !reflect.DeepEqual(got, before) {
					t.Fatalf("f = %#v, want %#v", got, before)
				}
				// A second turn and an update writing [] load the state too.
				mustDone(t)(r.Run(bg, runtime.RunOptions{Thread: "t"}))
				mustDone(t)(r.Resume(bg, runtime.ResumeOptions{Thread: "t", Set: []runtime.Write{w("f", []any{})}}))
				if got := reloaded(t, r.Saver, rec, "t")["f"]; !reflect.DeepEqual(got, before) {
					t.Fatalf("after more turns f = %#v, want %#v", got, before)
				}
			})
		}
	}
}

// childGraphs is a parent that says something, then runs a subgraph whose
// node has the same name, then maps a graph over three items, each item
// saying one thing.
var childGraphs = map[string]string{
	"main.yaml": `
version: 1
name: parent
state:
  messages: {type: messages}
  items: {type: list, items: string, default: [x, y, z]}
nodes:
  say: {kind: set, set: {messages: '{"role": "assistant", "content": "parent"}'}}
  sub: {kind: subgraph, graph: child.yaml}
  fan: {kind: map, over: state.items, graph: item.yaml, item_as: item}
edges:
  - {from: START, to: say}
  - {from: say, to: sub}
  - {from: sub, to: fan}
  - {from: fan, to: END}
`,
	"child.yaml": `
version: 1
name: child
state:
  messages: {type: messages}
nodes:
  say: {kind: set, set: {messages: '{"role": "assistant", "content": "child"}'}}
edges:
  - {from: START, to: say}
  - {from: say, to: END}
`,
	"item.yaml": `
version: 1
name: item
state:
  messages: {type: messages}
  item: {type: string}
nodes:
  say: {kind: set, set: {messages: '{"role": "assistant", "content": "item " + state.item}'}}
edges:
  - {from: START, to: say}
  - {from: say, to: END}
`,
}

// Messages made in a subgraph or a map item get ids of their own: the
// parent's message survives a child node of the same name, every map item's
// message is kept, and the state reloaded from the saver equals the live
// one (item 2 of "The core keeps every promise").
func TestMessageIDsUniqueAcrossChildRuns(t *testing.T) {
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			rec := &recorder{}
			r := &runtime.Runner{Graph: writeGraphs(t, childGraphs), Saver: saver, Version: "test", Events: rec.add}
			cp := mustDone(t)(r.Run(bg, runtime.RunOptions{Thread: "t"}))
			var contents []any
			ids := map[string]bool{}
			for _, m := range cp.Values["messages"].([]any) {
				mm := m.(map[string]any)
				contents = append(contents, mm["content"])
				ids[mm["id"].(string)] = true
			}
			want := []any{"parent", "child", "item x", "item y", "item z"}
			if !reflect.DeepEqual(contents, want) || len(ids) != len(want) {
				t.Fatalf("messages %v (ids %v), want contents %v with distinct ids", contents, ids, want)
			}
			if got := reloaded(t, reopen(), rec, "t"); !reflect.DeepEqual(got, cp.Values) {
				t.Fatalf("reloaded head %#v, want %#v", got, cp.Values)
			}
		})
	}
}

// A write naming an existing message by id replaces it, whatever the id
// looks like: an id of the form the runtime mints for the current step is
// no exception.
func TestMessageIDOfMintedFormReplaces(t *testing.T) {
	src := reducerGraph(`{type: messages}`)
	for _, sk := range saverKinds {
		t.Run(sk.name, func(t *testing.T) {
			saver, reopen := sk.open(t)
			h := newHarness(t, src, saver)
			h.fk.writes("a", w("f", msg("1.a.0", "user", "new")))
			cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"f": []any{msg("1.a.0", "user", "old")}}}))
			want := []any{msg("1.a.0", "user", "new")}
			if !reflect.DeepEqual(cp.Values["f"], want) {
				t.Fatalf("live f = %#v, want %#v", cp.Values["f"], want)
			}
			if got := reloaded(t, reopen(), h.rec, "t")["f"]; !reflect.DeepEqual(got, want) {
				t.Fatalf("reloaded f = %#v, want %#v", got, want)
			}
		})
	}
}

// A message the runtime names never takes the id of a message the state
// already has (one given by the user, say): it gets the next free one.
func TestMintedIDSkipsTakenIDs(t *testing.T) {
	src := reducerGraph(`{type: messages}`)
	h := newHarness(t, src, nil)
	h.fk.writes("a", w("f", map[string]any{"role": "assistant", "content": "made"}))
	cp := mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t", Input: map[string]any{"f": []any{msg("1.a.0", "user", "given")}}}))
	want := []any{msg("1.a.0", "user", "given"), msg("1.a.1", "assistant", "made")}
	if !reflect.DeepEqual(cp.Values["f"], want) {
		t.Fatalf("f = %#v, want %#v", cp.Values["f"], want)
	}
}

// The delta of a merge, applied to the base, gives the merged values, also
// for a field that holds nothing yet and writes that change nothing.
func TestMergeEqualsApplyDelta(t *testing.T) {
	for _, decl := range []string{
		`{type: list, items: string, reducer: append}`,
		`{type: list, items: string, reducer: add}`,
		`{type: messages}`,
		`{type: object, reducer: merge}`,
	} {
		g := mustGraph(t, reducerGraph(decl))
		for _, v := range []any{[]any{}, map[string]any{}, []any{map[string]any{"id": runtime.RemoveAllMessages, "remove": true}}} {
			for _, base := range []map[string]any{{}, {"f": nil}} {
				got, delta, _, err := runtime.Merge(g, 1, base, []runtime.NodeWrites{{Node: "a", Writes: []runtime.Write{w("f", v), w("f", v)}}})
				if err != nil {
					continue // a write that does not fit the field
				}
				replayed := map[string]any{}
				for k, x := range base {
					replayed[k] = x
				}
				if err := runtime.ApplyDelta(replayed, delta); err != nil {
					t.Fatalf("%s: write %v: apply delta %v: %v", decl, v, delta, err)
				}
				if !reflect.DeepEqual(got, replayed) {
					t.Fatalf("%s: write %v to %v: merged %#v, delta %v replays as %#v", decl, v, base, got, delta, replayed)
				}
			}
		}
	}
}
