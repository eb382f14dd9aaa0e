package checkpoint_test

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// samePacked fails unless every checkpoint of thread reads the same
// through packs (Get) as from its rows alone, and the history walk agrees
// with Get.
func samePacked(t *testing.T, s *checkpoint.SQLite, thread string) {
	t.Helper()
	cps, err := s.List(bg, thread, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cps {
		cp, err := s.Get(bg, thread, c.ID)
		if err != nil {
			t.Fatalf("Get %s: %v", c.ID, err)
		}
		want, err := checkpoint.ValuesByRows(s, thread, c.ID)
		if err != nil {
			t.Fatalf("rows of %s: %v", c.ID, err)
		}
		if !reflect.DeepEqual(cp.Values, want) {
			t.Fatalf("checkpoint %s (step %d) reads through packs as\n  %v\nand from its rows as\n  %v", c.ID, c.Step, cp.Values, want)
		}
	}
	sameHistory(t, s, "packed")
}

// TestPacks commits a long thread and reads its head through packs: few
// rows, the same values as row by row, in Get and in the history walk.
func TestPacks(t *testing.T) {
	t.Parallel()
	s := MustOpen(t, nil)
	ids := commitMessages(t, s, "t", 300, 300)
	if n := checkpoint.PackCount(s, "t"); n < 3 {
		t.Fatalf("%d packs for 300 checkpoints, want several", n)
	}
	st, err := checkpoint.ChainStatsOf(s, "t", ids[len(ids)-1])
	if err != nil {
		t.Fatal(err)
	}
	if st.Packs == 0 || st.Rows > 64+1 {
		t.Errorf("the head's chain read %d rows and %d packs, want packs and at most a pack's worth of rows", st.Rows, st.Packs)
	}
	samePacked(t, s, "t")
}

// TestPacksAcrossHandles resumes a thread from another handle (a new
// process) in the middle of a run, and forks it inside a packed run.
func TestPacksAcrossHandles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := dir + "/lgrun.db"
	a := MustOpenPath(t, path, nil)
	checkpoint.SetPackRows(a, 5)
	ids := commitMessages(t, a, "t", 23, 100)
	b := MustOpenPath(t, path, nil)
	checkpoint.SetPackRows(b, 5)
	// b continues the thread: its first commit starts a new run, and the
	// rows between a's last pack and it are read one by one.
	head := ids[len(ids)-1]
	c := newChain(t, b, "t")
	cp, err := b.Get(bg, "t", head)
	if err != nil {
		t.Fatal(err)
	}
	c.head, c.at, c.values = cp.ID, cp.Step, cp.Values
	c.step(12)
	samePacked(t, b, "t")
	// A fork from the middle of a packed run.
	forkAt, err := b.Get(bg, "t", ids[7])
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	m := map[string]any{"id": "fork", "role": "user", "content": "a fork"}
	fork := &runtime.Checkpoint{Thread: "t", ParentID: forkAt.ID, Step: forkAt.Step + 1, Delta: runtime.Delta{"messages": {Kind: runtime.OpMessages, Value: []any{m}}},
		Values: map[string]any{"n": forkAt.Values["n"], "messages": append(forkAt.Values["messages"].([]any), m)},
		Next:   []string{"talk"}, Metadata: runtime.Metadata{Source: runtime.SourceFork, Graph: "chat", Time: now}}
	var clock runtime.IDClock
	fork.ID = clock.Next(now, c.head)
	if err := b.Commit(bg, &runtime.Commit{Checkpoint: fork, ExpectHead: c.head, Thread: runtime.Thread{ID: "t", Status: runtime.StatusRunning, Graph: "chat", Updated: now}}); err != nil {
		t.Fatal(err)
	}
	f := newChain(t, b, "t")
	f.head, f.at, f.values = fork.ID, fork.Step, fork.Values
	f.step(9)
	samePacked(t, b, "t")
	samePacked(t, a, "t")
}

// TestDamagedPack damages each column of each pack in turn: reads go
// round it, row by row, and return what they did.
func TestDamagedPack(t *testing.T) {
	t.Parallel()
	s := MustOpen(t, nil)
	checkpoint.SetPackRows(s, 4)
	commitMessages(t, s, "t", 30, 200)
	want := readAll(t, s)
	for _, col := range []string{"last", "first", "parent", "rows", "delta", "sum"} {
		for _, damage := range []string{
			`UPDATE packs SET ` + col + ` = CAST(` + col + ` AS BLOB) || 'x' WHERE thread = 't'`,
			`UPDATE packs SET ` + col + ` = 7 WHERE thread = 't'`,
		} {
			t.Run(fmt.Sprintf("%s/%.30s", col, damage[len("UPDATE packs SET "+col+" = "):]), func(t *testing.T) {
				tx, err := s.DB().Begin()
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback()
				if _, err := tx.Exec(`CREATE TEMP TABLE saved AS SELECT * FROM packs`); err != nil {
					t.Fatal(err)
				}
				if _, err := tx.Exec(damage); err != nil {
					t.Skipf("cannot damage that way: %v", err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
				defer func() {
					for _, q := range []string{`DELETE FROM packs`, `INSERT INTO packs SELECT * FROM temp.saved`, `DROP TABLE temp.saved`} {
						if _, err := s.DB().Exec(q); err != nil {
							t.Fatal(err)
						}
					}
				}()
				got := readAll(t, s)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("reads changed with packs damaged by %s", damage)
				}
				samePacked(t, s, "t")
			})
		}
	}
}

// TestPacksGC collects a packed thread's old checkpoints: its packs go,
// and what is kept reads as before.
func TestPacksGC(t *testing.T) {
	t.Parallel()
	s := MustOpen(t, nil)
	checkpoint.SetPackRows(s, 4)
	ids := commitMessages(t, s, "t", 40, 200)
	before, err := s.Get(bg, "t", ids[len(ids)-1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(bg, checkpoint.GCOptions{Keep: 10}); err != nil {
		t.Fatal(err)
	}
	if n := checkpoint.PackCount(s, "t"); n != 0 {
		t.Errorf("%d packs left after GC", n)
	}
	after, err := s.Get(bg, "t", ids[len(ids)-1])
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(after.Values, before.Values) {
		t.Fatal("the head reads differently after GC")
	}
	// New commits make new packs.
	c := newChain(t, s, "t")
	c.head, c.at, c.values = after.ID, after.Step, after.Values
	c.step(9)
	if n := checkpoint.PackCount(s, "t"); n == 0 {
		t.Error("no pack after GC and 9 commits")
	}
	samePacked(t, s, "t")
	if err := s.DeleteThread(bg, "t"); err != nil {
		t.Fatal(err)
	}
	if n := checkpoint.PackCount(s, "t"); n != 0 {
		t.Errorf("%d packs left after DeleteThread", n)
	}
}

// TestPackKinds composes runs whose fields change op kind (a set, then
// appends; an append, then a set; merges), which a pack cannot always
// fold: the run ends there and a new one starts.
func TestPackKinds(t *testing.T) {
	t.Parallel()
	s := MustOpen(t, nil)
	checkpoint.SetPackRows(s, 3)
	var clock runtime.IDClock
	values := map[string]any{}
	parent := ""
	for i := 0; i < 40; i++ {
		d := runtime.Delta{"n": {Kind: runtime.OpSet, Value: i}}
		switch i % 7 {
		case 0, 1, 2:
			d["log"] = runtime.Op{Kind: runtime.OpAppend, Value: []any{i}}
		case 3:
			d["log"] = runtime.Op{Kind: runtime.OpSet, Value: []any{"reset", i}}
		case 4:
			d["obj"] = runtime.Op{Kind: runtime.OpMerge, Value: map[string]any{fmt.Sprint("k", i%3): i}}
		case 5:
			d["obj"] = runtime.Op{Kind: runtime.OpSet, Value: map[string]any{"x": i}}
			d["log"] = runtime.Op{Kind: runtime.OpAppend, Value: nil}
		case 6:
			d["obj"] = runtime.Op{Kind: runtime.OpMerge, Value: map[string]any{"y": []any{i}}}
		}
		if err := runtime.ApplyDelta(values, d); err != nil {
			t.Fatal(err)
		}
		now := benchTime(i)
		cp := &runtime.Checkpoint{Thread: "t", ID: clock.Next(now, parent), ParentID: parent, Step: i, Values: values, Delta: d,
			Next: []string{"a"}, Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g", Time: now}}
		if err := s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: parent, Thread: runtime.Thread{ID: "t", Status: runtime.StatusRunning, Graph: "g", Updated: now}}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(bg, "t", cp.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Values, values) {
			t.Fatalf("step %d reads as\n  %v\nwant\n  %v", i, got.Values, values)
		}
		copied := make(map[string]any, len(values))
		for k, v := range values {
			copied[k] = v
		}
		values, parent = copied, cp.ID
	}
	if n := checkpoint.PackCount(s, "t"); n == 0 {
		t.Error("no packs")
	}
	samePacked(t, s, "t")
}

// TestPacksCommitChain commits checkpoints two and three at a time in one
// transaction (CommitChain): runs extend, and packs seal, within one.
func TestPacksCommitChain(t *testing.T) {
	t.Parallel()
	for _, rows := range []int{2, 3, 5} {
		s := MustOpen(t, nil)
		checkpoint.SetPackRows(s, rows)
		var clock runtime.IDClock
		values := map[string]any{"log": []any{}}
		parent := ""
		for i := 0; i < 60; {
			var cs []*runtime.Commit
			for k := 0; k < 2+i%2 && i < 60; k, i = k+1, i+1 {
				d := runtime.Delta{"n": {Kind: runtime.OpSet, Value: i}, "log": {Kind: runtime.OpAppend, Value: []any{i, fmt.Sprint("item ", i)}}}
				next := map[string]any{"n": i, "log": append(values["log"].([]any)[:len(values["log"].([]any)):len(values["log"].([]any))], i, fmt.Sprint("item ", i))}
				now := benchTime(i)
				cp := &runtime.Checkpoint{Thread: "t", ID: clock.Next(now, parent), ParentID: parent, Step: i, Values: next, Delta: d,
					Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g", Time: now}}
				cs = append(cs, &runtime.Commit{Checkpoint: cp, ExpectHead: parent, Thread: runtime.Thread{ID: "t", Status: runtime.StatusRunning, Graph: "g", Updated: now}})
				values, parent = next, cp.ID
			}
			if _, err := s.CommitChain(bg, cs, false); err != nil {
				t.Fatal(err)
			}
		}
		head, err := s.Get(bg, "t", "")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(head.Values, values) {
			t.Fatalf("packs of %d: the head reads as\n  %v\nwant\n  %v", rows, head.Values, values)
		}
		if checkpoint.PackCount(s, "t") == 0 {
			t.Fatalf("packs of %d: none", rows)
		}
		samePacked(t, s, "t")
	}
}

// TestPackedForkPastSnapshot forks a thread before its latest snapshot:
// the fork's chain goes back past that snapshot (in id order) to an older
// one, and its read still goes through the packs on the way (the walk
// stops at the first snapshot on the chain, not at the latest in id
// order), with the values of the fork point plus the fork's deltas, in Get
// and in the history walk.
func TestPackedForkPastSnapshot(t *testing.T) {
	t.Parallel()
	s := MustOpen(t, nil)
	checkpoint.SetPackRows(s, 8)
	ids := commitMessages(t, s, "t", 300, 300)
	var snaps []string
	rows, err := s.DB().Query(`SELECT id FROM checkpoints WHERE thread = 't' AND snapshot IS NOT NULL ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, id)
	}
	rows.Close()
	if len(snaps) < 3 {
		t.Fatalf("%d snapshots, want at least 3", len(snaps))
	}
	// The fork point: 20 checkpoints after the second to last snapshot
	// (packs between, and the fork's deltas far from the next snapshot's
	// volume), before the last.
	prev, last := snaps[len(snaps)-2], snaps[len(snaps)-1]
	k := slices.Index(ids, prev) + 20
	if k >= len(ids) || ids[k] >= last {
		t.Fatalf("the snapshots %s and %s are too close", prev, last)
	}
	at := ids[k]
	forkAt, err := s.Get(bg, "t", at)
	if err != nil {
		t.Fatal(err)
	}
	values := forkAt.Values
	var clock runtime.IDClock
	parent, head := at, ids[len(ids)-1]
	for i := 0; i < 5; i++ {
		now := time.Now()
		m := map[string]any{"id": fmt.Sprint("fork", i), "role": "user", "content": "a fork"}
		d := runtime.Delta{"messages": {Kind: runtime.OpMessages, Value: []any{m}}}
		next := map[string]any{"count": values["count"], "messages": append(append([]any{}, values["messages"].([]any)...), m)}
		cp := &runtime.Checkpoint{Thread: "t", ID: clock.Next(now, head), ParentID: parent, Step: forkAt.Step + 1 + i, Delta: d, Values: next,
			Next: []string{"a"}, Metadata: runtime.Metadata{Source: runtime.SourceFork, Graph: "g", Time: now}}
		if err := s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: head, Thread: runtime.Thread{ID: "t", Status: runtime.StatusRunning, Graph: "g", Updated: now}}); err != nil {
			t.Fatal(err)
		}
		values, parent, head = next, cp.ID, cp.ID
	}
	got, err := s.Get(bg, "t", head)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Values, values) {
		t.Fatalf("the fork's head reads as\n  %v\nwant\n  %v", got.Values, values)
	}
	st, err := checkpoint.ChainStatsOf(s, "t", head)
	if err != nil {
		t.Fatal(err)
	}
	if st.Packs == 0 || st.Snapshots != 1 {
		t.Errorf("the fork's chain read %d rows, %d packs, %d snapshots; want packs and one snapshot", st.Rows, st.Packs, st.Snapshots)
	}
	sameHistory(t, s, "fork past a snapshot")
}

// TestPacksReadInBatches reads a thread with many more packs than a
// chain read takes in one batch (packs of two checkpoints, snapshots
// between them): every checkpoint reads the same through packs as from its
// rows, and still does with the last checkpoint of the pack that ends the
// first batch damaged (it is passed over, and the walk goes on below it);
// forks off old checkpoints, whose chains go back past later snapshots,
// read as they were committed.
func TestPacksReadInBatches(t *testing.T) {
	t.Parallel()
	s := MustOpen(t, nil)
	checkpoint.SetPackRows(s, 2)
	ids := commitMessages(t, s, "t", 500, 100)
	if n := checkpoint.PackCount(s, "t"); n < 200 {
		t.Fatalf("%d packs, want hundreds", n)
	}
	if st, err := checkpoint.ChainStatsOf(s, "t", ids[len(ids)-1]); err != nil || st.Packs <= 32 {
		t.Fatalf("the head's chain reads %d packs (%v), want more than the first batch reads (32)", st.Packs, err)
	}
	samePacked(t, s, "t")
	want := map[string]map[string]any{}
	for k, at := range []int{40, 250, 470} {
		cp, err := s.Get(bg, "t", ids[at])
		if err != nil {
			t.Fatal(err)
		}
		values, parent := cp.Values, cp.ID
		var clock runtime.IDClock
		for i := 0; i < 9; i++ {
			d := runtime.Delta{"count": {Kind: runtime.OpSet, Value: 1000*k + i}}
			next := map[string]any{}
			for f, v := range values {
				next[f] = v
			}
			next["count"] = 1000*k + i
			now := benchTime(600 + 20*k + i)
			c := &runtime.Checkpoint{Thread: "t", ID: clock.Next(now, parent), ParentID: parent, Step: at + 1 + i, Values: next, Delta: d,
				Next: []string{"a"}, Metadata: runtime.Metadata{Source: runtime.SourceFork, Graph: "g", Time: now}}
			th, err := s.Thread(bg, "t")
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(bg, &runtime.Commit{Checkpoint: c, ExpectHead: th.Head, Thread: runtime.Thread{ID: "t", Status: runtime.StatusRunning, Graph: "g", Updated: now}}); err != nil {
				t.Fatal(err)
			}
			values, parent = next, c.ID
			want[c.ID] = next
		}
	}
	forks := func() {
		t.Helper()
		for id, w := range want {
			cp, err := s.Get(bg, "t", id)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cp.Values, w) {
				t.Fatalf("fork checkpoint %s reads as\n  %v\nwant\n  %v", id, cp.Values, w)
			}
		}
	}
	forks()
	if _, err := s.DB().Exec(`UPDATE packs SET last = 7 WHERE thread = 't' AND last = (
		SELECT last FROM packs WHERE thread = 't' AND last <= ?1 ORDER BY last DESC LIMIT 1 OFFSET 31)`, ids[len(ids)-1]); err != nil {
		t.Fatal(err)
	}
	forks()
	for _, id := range ids {
		cp, err := s.Get(bg, "t", id)
		if err != nil {
			t.Fatal(err)
		}
		w, err := checkpoint.ValuesByRows(s, "t", id)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cp.Values, w) {
			t.Fatalf("with a pack damaged, checkpoint %s reads through packs as\n  %v\nand from its rows as\n  %v", id, cp.Values, w)
		}
	}
}
