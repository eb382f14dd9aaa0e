package checkpointtest

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

func testCommitGet(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "t1")
	id := th.commit("", first(), runtime.PendingWrite{Node: "a", Kind: runtime.PendingError, Error: "boom"})
	got := th.checkOne(id)
	checkPlain(t, "values", got.Values)
	if len(got.Pending) != 1 || got.Pending[0].Error != "boom" {
		t.Errorf("pending writes of the commit: %s", js(got.Pending))
	}
	head, err := s.Get(bg, "t1", "")
	if err != nil || head.ID != id {
		t.Fatalf("Get head: %v, %v", head, err)
	}
	row, err := s.Thread(bg, "t1")
	if err != nil {
		t.Fatal(err)
	}
	want := th.row(runtime.StatusRunning)
	if row.ID != "t1" || row.Head != id || row.Status != runtime.StatusRunning || row.Graph != want.Graph ||
		row.GraphHash != want.GraphHash || row.GraphFile != want.GraphFile || !reflect.DeepEqual(row.Config, want.Config) {
		t.Errorf("Thread: %+v", row)
	}
	if !row.Created.Equal(base) {
		t.Errorf("Thread created %v, want %v", row.Created, base)
	}
	if !row.Updated.Equal(base.Add(2 * time.Second)) {
		t.Errorf("Thread updated %v, want %v (the commit's Thread.Updated)", row.Updated, base.Add(2*time.Second))
	}

	id2 := th.commit(id, runtime.Delta{"count": set(1), "ratio": set(2.0)})
	th.check()
	got2, _ := s.Get(bg, "t1", "")
	if got2.ID != id2 || len(got2.Pending) != 0 {
		t.Errorf("new head %s pending %s: want %s without pending writes", got2.ID, js(got2.Pending), id2)
	}
	checkPlain(t, "values", got2.Values)
	// The first checkpoint keeps its pending write.
	old, _ := s.Get(bg, "t1", id)
	if len(old.Pending) != 1 {
		t.Errorf("earlier checkpoint lost its pending writes: %s", js(old.Pending))
	}
}

func testDeltaOps(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "ops")
	prev := th.commit("", first())
	deltas := []runtime.Delta{
		{"count": set(1), "log": {Kind: runtime.OpAppend, Value: []any{"a", "b"}}},
		{"log": {Kind: runtime.OpAppend, Value: []any{map[string]any{"nested": []any{1, 2.5, "x"}}}}},
		{"meta": {Kind: runtime.OpMerge, Value: map[string]any{"b": map[string]any{"c": true}}}},
		{"messages": {Kind: runtime.OpMessages, Value: []any{msg("m1", "hello"), msg("m2", "world")}}},
		{"messages": {Kind: runtime.OpMessages, Value: []any{msg("m1", "hello again")}}}, // replace by id
		{"messages": {Kind: runtime.OpMessages, Value: []any{map[string]any{"id": "m2", "remove": true}, msg("m3", "third")}}},
		{"meta": {Kind: runtime.OpMerge, Value: map[string]any{"a": 2}}, "name": set("über ✓ <&>")},
		{"log": set([]any{"reset"})},
		{"log": {Kind: runtime.OpAppend, Value: []any{"after reset"}}, "count": set(-3), "ratio": set(1e-9)},
		{},
	}
	for _, d := range deltas {
		prev = th.commit(prev, d)
	}
	th.check()
	got, _ := s.Get(bg, "ops", "")
	checkPlain(t, "values", got.Values)
	want := map[string]any{
		"count": -3, "ratio": 1e-9, "name": "über ✓ <&>",
		"log":      []any{"reset", "after reset"},
		"messages": []any{msg("m1", "hello again"), msg("m3", "third")},
		"meta":     map[string]any{"a": 2, "b": map[string]any{"c": true}},
		"nothing":  nil,
	}
	if !equalJSON(got.Values, want) {
		t.Fatalf("final values\n got  %s\n want %s", js(got.Values), js(want))
	}
}

func testListOrder(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "list")
	var ids []string
	prev := ""
	for i := 0; i < 12; i++ {
		d := first()
		if prev != "" {
			d = runtime.Delta{"count": set(i), "log": {Kind: runtime.OpAppend, Value: []any{fmt.Sprint(i)}}}
		}
		prev = th.commit(prev, d)
		ids = append(ids, prev)
	}
	other := newThread(t, s, "other")
	other.commit("", first())

	all, err := s.List(bg, "list", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(ids) {
		t.Fatalf("List: %d checkpoints, want %d", len(all), len(ids))
	}
	for i, cp := range all {
		want := ids[len(ids)-1-i]
		if cp.ID != want {
			t.Fatalf("List[%d] = %s, want %s (newest first)", i, cp.ID, want)
		}
		if cp.Values != nil {
			t.Errorf("List[%d] has Values; List must not load them", i)
		}
		if cp.Thread != "list" || cp.ParentID != th.cps[want].ParentID || cp.Step != th.cps[want].Step {
			t.Errorf("List[%d]: thread/parent/step %s/%s/%d", i, cp.Thread, cp.ParentID, cp.Step)
		}
		checkMeta(t, "List", cp, th.cps[want])
	}
	for _, limit := range []int{1, 5, 12, 50, -1} {
		got, err := s.List(bg, "list", limit)
		if err != nil {
			t.Fatal(err)
		}
		n := min(len(ids), limit)
		if limit <= 0 {
			n = len(ids)
		}
		if len(got) != n {
			t.Fatalf("List limit %d: %d checkpoints, want %d", limit, len(got), n)
		}
		for i := range got {
			if got[i].ID != all[i].ID {
				t.Fatalf("List limit %d [%d] = %s, want %s", limit, i, got[i].ID, all[i].ID)
			}
		}
	}
}

func testConflict(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "cas")
	a := th.commit("", first())
	b := th.commit(a, runtime.Delta{"count": set(1)})

	// Stale head.
	if _, err := th.try(a, a, runtime.Delta{"count": set(99)}); !errors.Is(err, runtime.ErrConflict) {
		t.Fatalf("commit on stale head: %v, want ErrConflict", err)
	}
	// A new thread expected, but it exists.
	if _, err := th.try(b, "", runtime.Delta{"count": set(99)}); !errors.Is(err, runtime.ErrConflict) {
		t.Fatalf("commit expecting a new thread: %v, want ErrConflict", err)
	}
	// An existing thread expected, but it does not exist.
	nt := newThread(t, s, "new")
	if _, err := nt.try("", "0000000000000001", first()); !errors.Is(err, runtime.ErrConflict) {
		t.Fatalf("commit expecting a head on a missing thread: %v, want ErrConflict", err)
	}
	if _, err := s.Thread(bg, "new"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("a refused first commit created the thread: %v", err)
	}
	row, err := s.Thread(bg, "cas")
	if err != nil || row.Head != b {
		t.Fatalf("head after refused commits: %v %v, want %s", row, err, b)
	}
	if cps, _ := s.List(bg, "cas", 0); len(cps) != 2 {
		t.Fatalf("refused commits stored checkpoints: %d, want 2", len(cps))
	}
	th.check()
	// The right head still works.
	th.commit(b, runtime.Delta{"count": set(2)})
	th.check()
}

func testUnknownParent(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "orphan")
	a := th.commit("", first())
	th.cps["nope"] = th.cps[a]
	th.want["nope"] = th.want[a]
	_, err := th.try("nope", a, runtime.Delta{"count": set(5)})
	if !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("commit whose parent is not a checkpoint of the thread: %v, want ErrNotFound", err)
	}
	if row, _ := s.Thread(bg, "orphan"); row.Head != a {
		t.Fatalf("head moved to %s", row.Head)
	}
}

// testDuplicateID commits a checkpoint whose id exists: it fails and
// leaves no trace, and the next commit (of the same new graph) works.
func testDuplicateID(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "dup")
	a := th.commit("", first())
	b := th.commit(a, runtime.Delta{"count": set(1)})
	now := th.now()
	cp := &runtime.Checkpoint{Thread: "dup", ID: a, ParentID: b, Step: 2, Values: th.want[b], Delta: runtime.Delta{},
		Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "other", GraphHash: "h2", Version: "v2", Time: now}}
	if err := s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: b, Thread: th.row(runtime.StatusRunning)}); err == nil {
		t.Fatalf("committing the existing id %s again succeeded", a)
	}
	if row, _ := s.Thread(bg, "dup"); row.Head != b {
		t.Fatalf("a failed commit moved the head to %s", row.Head)
	}
	cp.ID = th.ids.Next(now, b)
	if err := s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: b, Thread: th.row(runtime.StatusRunning)}); err != nil {
		t.Fatalf("commit after a failed one: %v", err)
	}
	got, err := s.Get(bg, "dup", "")
	if err != nil || got.ID != cp.ID || got.Metadata.Graph != "other" || got.Metadata.GraphHash != "h2" || got.Metadata.Version != "v2" {
		t.Fatalf("head after the failed commit: %+v %v", got, err)
	}
	if list := mustList(t, s, "dup"); len(list) != 3 {
		t.Fatalf("%d checkpoints, want 3", len(list))
	}
}

func testConcurrentCAS(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "race")
	a := th.commit("", first())
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	cps := make([]*runtime.Checkpoint, n)
	for i := 0; i < n; i++ {
		d := runtime.Delta{"count": set(i + 1)}
		values := spec.DeepCopy(th.want[a]).(map[string]any)
		runtime.ApplyDelta(values, d)
		now := base.Add(time.Hour)
		cps[i] = &runtime.Checkpoint{
			Thread: "race", ParentID: a, Step: 1, Values: values, Delta: d,
			Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g", Time: now},
			ID:       th.ids.Next(now, a),
		}
	}
	commitRow := th.row(runtime.StatusRunning)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = s.Commit(bg, &runtime.Commit{Checkpoint: cps[i], ExpectHead: a, Thread: commitRow})
		}(i)
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if won >= 0 {
				t.Fatalf("commits %d and %d on the same head both succeeded", won, i)
			}
			won = i
		case !errors.Is(err, runtime.ErrConflict):
			t.Fatalf("commit %d: %v, want nil or ErrConflict", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no commit succeeded")
	}
	row, _ := s.Thread(bg, "race")
	if row.Head != cps[won].ID {
		t.Fatalf("head %s, want the winner %s", row.Head, cps[won].ID)
	}
	got, err := s.Get(bg, "race", "")
	if err != nil || !equalJSON(got.Values, cps[won].Values) {
		t.Fatalf("head values %v (%v), want %v", got, err, cps[won].Values)
	}
	if list, _ := s.List(bg, "race", 0); len(list) != 2 {
		t.Fatalf("%d checkpoints stored, want 2", len(list))
	}
}

func testParallelThreads(t *testing.T, s runtime.Saver) {
	const threads, steps = 4, 25
	var wg sync.WaitGroup
	ths := make([]*thread, threads)
	errc := make(chan error, threads)
	for i := range ths {
		ths[i] = newThread(t, s, fmt.Sprintf("p%d", i))
		wg.Add(1)
		go func(th *thread) {
			defer wg.Done()
			prev := ""
			for j := 0; j < steps; j++ {
				d := first()
				if prev != "" {
					d = runtime.Delta{"count": set(j), "log": {Kind: runtime.OpAppend, Value: []any{th.id + fmt.Sprint(j)}}}
				}
				cp, err := th.try(prev, th.head, d)
				if err != nil {
					errc <- fmt.Errorf("thread %s step %d: %w", th.id, j, err)
					return
				}
				prev = cp.ID
			}
		}(ths[i])
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for _, th := range ths {
		th.check()
	}
}

func testNotFound(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "here")
	a := th.commit("", first())
	row := th.row(runtime.StatusDone)
	row.ID, row.Head = "nope", a
	for name, err := range map[string]error{
		"Get missing thread":         second(s.Get(bg, "nope", "")),
		"Get missing thread with id": second(s.Get(bg, "nope", a)),
		"Get missing checkpoint":     second(s.Get(bg, "here", "ffffffffffffffff")),
		"List missing thread":        second(s.List(bg, "nope", 0)),
		"Thread missing":             second(s.Thread(bg, "nope")),
		"DeleteThread missing":       s.DeleteThread(bg, "nope"),
		"Mark missing thread":        s.Mark(bg, &runtime.Mark{Thread: row}),
	} {
		if !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}
	ts, err := s.Threads(bg)
	if err != nil || len(ts) != 1 || ts[0].ID != "here" {
		t.Fatalf("Threads: %v %v", ts, err)
	}
}

func testDeleteThread(t *testing.T, s runtime.Saver) {
	keep := newThread(t, s, "keep")
	k := keep.commit("", first())
	keep.commit(k, runtime.Delta{"count": set(1)})
	del := newThread(t, s, "del")
	d := del.commit("", first())
	d = del.commit(d, runtime.Delta{"count": set(2)}, runtime.PendingWrite{Node: "a", Kind: runtime.PendingError, Error: "x"})
	if err := s.DeleteThread(bg, "del"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Thread(bg, "del"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("Thread after delete: %v", err)
	}
	if _, err := s.Get(bg, "del", d); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("Get after delete: %v", err)
	}
	if _, err := s.List(bg, "del", 0); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("List after delete: %v", err)
	}
	ts, _ := s.Threads(bg)
	if len(ts) != 1 || ts[0].ID != "keep" {
		t.Fatalf("Threads after delete: %v", ts)
	}
	keep.check()
	// The id can be used again, from scratch.
	again := newThread(t, s, "del")
	a := again.commit("", runtime.Delta{"count": set(7)})
	again.check()
	if cp, _ := s.Get(bg, "del", a); len(cp.Pending) != 0 {
		t.Fatalf("recreated thread inherited pending writes: %s", js(cp.Pending))
	}
	if list, _ := s.List(bg, "del", 0); len(list) != 1 {
		t.Fatalf("recreated thread has %d checkpoints, want 1", len(list))
	}
}

// testDeleteThreadChildren deletes a thread with child runs
// ("<id>/...", see [runtime.ChildSep]): they go too; threads that merely
// share a prefix, or differ in case, stay.
func testDeleteThreadChildren(t *testing.T, s runtime.Saver) {
	gone := []string{"p", "p/sub@1-", "p/sub@1-/inner@2-", "p/map@3-#0"}
	stay := []string{"P", "P/x", "pq", "p_", "p_/x", "p%/x", "q/p", "p.x", "p0"}
	for _, id := range append(append([]string{}, gone...), stay...) {
		th := newThread(t, s, id)
		a := th.commit("", first())
		th.commit(a, runtime.Delta{"count": set(1)}, runtime.PendingWrite{Node: "n", Kind: runtime.PendingError, Error: "x"})
	}
	if err := s.DeleteThread(bg, "p"); err != nil {
		t.Fatal(err)
	}
	for _, id := range gone {
		if _, err := s.Thread(bg, id); !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("thread %q survived the deletion of its parent: %v", id, err)
		}
		if _, err := s.Get(bg, id, ""); !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("checkpoints of %q survived the deletion of its parent: %v", id, err)
		}
	}
	for _, id := range stay {
		if _, err := s.Thread(bg, id); err != nil {
			t.Errorf("deleting %q deleted %q: %v", "p", id, err)
		}
		if cp, err := s.Get(bg, id, ""); err != nil || len(cp.Pending) != 1 {
			t.Errorf("deleting %q changed %q: %v", "p", id, err)
		}
	}
	// A child alone can go too, leaving its parent.
	if err := s.DeleteThread(bg, "P/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Thread(bg, "P"); err != nil {
		t.Fatalf("deleting a child deleted its parent: %v", err)
	}
}

func testThreads(t *testing.T, s runtime.Saver) {
	if ts, err := s.Threads(bg); err != nil || len(ts) != 0 {
		t.Fatalf("Threads of an empty saver: %v %v", ts, err)
	}
	a := newThread(t, s, "a")
	b := newThread(t, s, "b")
	c := newThread(t, s, "c")
	b.tick, c.tick = 10, 20
	ah := a.commit("", first()) // updated +2s
	b.commit("", first())       // updated +12s
	c.commit("", first())       // updated +22s
	order := func() string {
		ts, err := s.Threads(bg)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, th := range ts {
			ids = append(ids, th.ID)
		}
		return strings.Join(ids, ",")
	}
	if got := order(); got != "c,b,a" {
		t.Fatalf("Threads order %s, want c,b,a (most recently updated first)", got)
	}
	a.tick = 100
	row := a.row(runtime.StatusDone)
	row.Head = ah
	if err := s.Mark(bg, &runtime.Mark{Thread: row}); err != nil {
		t.Fatal(err)
	}
	if got := order(); got != "a,c,b" {
		t.Fatalf("Threads order after Mark %s, want a,c,b", got)
	}
	ts, _ := s.Threads(bg)
	if ts[0].Status != runtime.StatusDone || ts[0].Head != ah {
		t.Fatalf("Threads row: %+v", ts[0])
	}
}

func testCreatedKept(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "created")
	a := th.commit("", first())
	// Later commits may leave Created zero; the first one's stays.
	d := runtime.Delta{"count": set(1)}
	values := spec.DeepCopy(th.want[a]).(map[string]any)
	runtime.ApplyDelta(values, d)
	cp := &runtime.Checkpoint{Thread: "created", ParentID: a, Step: 1, Values: values, Delta: d,
		Metadata: runtime.Metadata{Source: runtime.SourceLoop, Time: base}, ID: th.ids.Next(base, a)}
	row := th.row(runtime.StatusRunning)
	row.Created = time.Time{}
	if err := s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: a, Thread: row}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Thread(bg, "created")
	if !got.Created.Equal(base) || got.Head != cp.ID {
		t.Fatalf("created %v head %s, want %v %s", got.Created, got.Head, base, cp.ID)
	}
}
