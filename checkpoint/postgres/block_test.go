package postgres_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/checkpoint/postgres"
	"github.com/lgrun/lgrun/runtime"
)

// chainThread commits checkpoints of one thread as the tests ask and
// remembers what each must read back: the messages of its chain.
type chainThread struct {
	t      *testing.T
	s      *postgres.Postgres
	id     string
	head   string
	values map[string][]any
}

func newChain(t *testing.T, s *postgres.Postgres, id string) *chainThread {
	return &chainThread{t: t, s: s, id: id, values: map[string][]any{}}
}

// commitID commits a child of parent with the given id (a fresh one when
// empty), expecting the current head.
func (c *chainThread) commitID(parent, id string) (string, error) {
	now := time.Now()
	step := len(c.values[parent])
	d := runtime.Delta{"messages": {Kind: runtime.OpAppend, Value: []any{fmt.Sprintf("message %s", id)}}}
	if parent == "" {
		d = runtime.Delta{"messages": {Kind: runtime.OpSet, Value: []any{}}}
	}
	if id == "" {
		id = ids.Next(now, parent)
		d["messages"] = runtime.Op{Kind: d["messages"].Kind, Value: []any{fmt.Sprintf("message %s", id)}}
		if parent == "" {
			d["messages"] = runtime.Op{Kind: runtime.OpSet, Value: []any{}}
		}
	}
	msgs := []any{}
	if parent != "" {
		msgs = append(append(msgs, c.values[parent]...), d["messages"].Value.([]any)...)
	}
	cp := &runtime.Checkpoint{Thread: c.id, ID: id, ParentID: parent, Step: step, Values: map[string]any{"messages": msgs}, Delta: d,
		Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g", GraphHash: "h", Version: "v", Time: now}}
	err := c.s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: c.head,
		Thread: runtime.Thread{ID: c.id, Status: runtime.StatusRunning, Graph: "g", Updated: now}})
	if err != nil {
		return "", err
	}
	c.head = id
	c.values[id] = msgs
	return id, nil
}

func (c *chainThread) commit(parent string) string {
	c.t.Helper()
	id, err := c.commitID(parent, "")
	if err != nil {
		c.t.Fatal(err)
	}
	return id
}

// check loads every checkpoint with Get, lists them and walks the history.
func (c *chainThread) check(label string) {
	c.t.Helper()
	for id, want := range c.values {
		cp, err := c.s.Get(bg, c.id, id)
		if err != nil {
			c.t.Fatalf("%s: get %s: %v", label, id, err)
		}
		if got, _ := cp.Values["messages"].([]any); !reflect.DeepEqual(got, want) {
			c.t.Fatalf("%s: checkpoint %s reads %v, want %v", label, id, got, want)
		}
	}
	list, err := c.s.List(bg, c.id, 0)
	if err != nil || len(list) != len(c.values) {
		c.t.Fatalf("%s: list: %d checkpoints, %v; want %d", label, len(list), err, len(c.values))
	}
	h, err := c.s.History(bg, c.id, runtime.HistoryOptions{})
	if err != nil || len(h) != len(c.values) {
		c.t.Fatalf("%s: history: %d checkpoints, %v", label, len(h), err)
	}
	for _, cp := range h {
		if got, _ := cp.Values["messages"].([]any); !reflect.DeepEqual(got, c.values[cp.ID]) {
			c.t.Fatalf("%s: history of %s reads %v", label, cp.ID, got)
		}
	}
}

// blockRow is a blocks or open_blocks row as the tests see it.
type blockRow struct {
	open                bool
	first, last, parent string
	n                   int
	snapshot            bool
}

func blockRows(t *testing.T, s *postgres.Postgres, thread string) []blockRow {
	t.Helper()
	rows, err := s.Pool().Query(bg, `SELECT false, first, last, parent, n, snapshot IS NOT NULL FROM blocks WHERE thread = $1
		UNION ALL SELECT true, first, last, parent, n, false FROM open_blocks WHERE thread = $1 AND n > 0 ORDER BY 3`, thread)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []blockRow
	for rows.Next() {
		var b blockRow
		if err := rows.Scan(&b.open, &b.first, &b.last, &b.parent, &b.n, &b.snapshot); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// A thread's checkpoints go into its open block until it holds
// BlockRows; the next commit seals it as it is and starts a new one. The
// first checkpoint (a snapshot) ends a block of its own.
func TestBlockSealing(t *testing.T) {
	t.Parallel()
	s, _ := open(t, nil)
	c := newChain(t, s, "th")
	root := c.commit("")
	if got := blockRows(t, s, "th"); len(got) != 1 || got[0].open || !got[0].snapshot || got[0].n != 1 || got[0].first != root {
		t.Fatalf("after the first commit: %+v, want one sealed block holding its snapshot", got)
	}
	var run []string
	prev := root
	for range postgres.BlockRows {
		prev = c.commit(prev)
		run = append(run, prev)
	}
	got := blockRows(t, s, "th")
	if len(got) != 2 || !got[1].open || got[1].n != postgres.BlockRows || got[1].first != run[0] || got[1].last != prev || got[1].parent != root {
		t.Fatalf("after %d more commits: %+v, want a full open block", postgres.BlockRows, got)
	}
	c.check("full open block")
	next := c.commit(prev)
	got = blockRows(t, s, "th")
	if len(got) != 3 || got[1].open || got[1].n != postgres.BlockRows || got[1].last != prev ||
		!got[2].open || got[2].n != 1 || got[2].first != next || got[2].parent != prev {
		t.Fatalf("after the commit past a full block: %+v, want it sealed and a new open block", got)
	}
	c.check("sealed")
	// What was sealed moved as it was: every checkpoint is once in the
	// tables.
	var n int
	if err := s.Pool().QueryRow(bg, `SELECT (SELECT sum(n) FROM blocks) + (SELECT sum(n) FROM open_blocks)`).Scan(&n); err != nil || n != len(c.values) {
		t.Fatalf("%d records, %v; want %d", n, err, len(c.values))
	}
}

// A fork from inside a sealed block, or from inside the open block,
// seals the open block and starts a new one whose parent is the fork's;
// every checkpoint of every branch reads its own chain.
func TestBlockForks(t *testing.T) {
	t.Parallel()
	s, _ := open(t, nil)
	c := newChain(t, s, "th")
	prev := c.commit("")
	var trunk []string
	for range postgres.BlockRows + 10 {
		prev = c.commit(prev)
		trunk = append(trunk, prev)
	}
	// trunk[5] is in the sealed block, trunk[BlockRows+5] in the open one.
	for _, at := range []int{5, postgres.BlockRows + 5} {
		before := len(blockRows(t, s, "th"))
		f := c.commit(trunk[at])
		got := blockRows(t, s, "th")
		last := got[len(got)-1]
		if len(got) != before+1 || !last.open || last.first != f || last.parent != trunk[at] {
			t.Fatalf("fork from %s: blocks %+v", trunk[at], got)
		}
		for range 3 {
			f = c.commit(f)
		}
		c.check(fmt.Sprintf("fork from %d", at))
	}
	// A fork from the fork's own open block's middle, and back on the
	// trunk's head.
	f := c.commit(trunk[len(trunk)-1])
	c.commit(f)
	c.check("fork from the trunk's head")
}

// Ids made by clocks that disagree give blocks whose ranges overlap: the
// chain read's first guess (the block with the least last id at or after
// the id it needs) is then wrong, and the walk finds the right block.
func TestBlockRangesOverlap(t *testing.T) {
	t.Parallel()
	s, _ := open(t, nil)
	c := newChain(t, s, "th")
	id := func(n int) string { return fmt.Sprintf("%016x", n) }
	must := func(parent, child int) {
		t.Helper()
		p := ""
		if parent >= 0 {
			p = id(parent)
		}
		if _, err := c.commitID(p, id(child)); err != nil {
			t.Fatal(err)
		}
	}
	must(-1, 10)
	for n := 20; n <= 50; n += 10 {
		must(n-10, n)
	}
	must(20, 25) // seals 20…50
	must(25, 45)
	must(30, 60) // seals 25…45, whose range holds 30
	got := blockRows(t, s, "th")
	if len(got) != 4 {
		t.Fatalf("blocks %+v", got)
	}
	c.check("overlapping ranges")
	if _, err := c.commitID(id(60), id(55)); err == nil || !strings.Contains(err.Error(), "does not sort after") {
		t.Fatalf("a child with a smaller id than its parent's: %v", err)
	}
	if _, err := c.commitID(id(60), id(40)); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("a checkpoint whose id is in a sealed block: %v", err)
	}
	if _, err := c.commitID(id(60), id(60)); err == nil {
		t.Fatal("a checkpoint whose id is in the open block committed")
	}
	c.check("after refused commits")
}

// GC deletes the blocks whose checkpoints all go, rewrites those it keeps
// some of (a kept checkpoint whose parent goes gets a snapshot), and the
// kept checkpoints read as before.
func TestBlockGC(t *testing.T) {
	t.Parallel()
	s, _ := open(t, nil)
	c := newChain(t, s, "th")
	prev := c.commit("")
	var trunk []string
	for range 3 * postgres.BlockRows {
		prev = c.commit(prev)
		trunk = append(trunk, prev)
	}
	before := blockRows(t, s, "th")
	const keep = postgres.BlockRows / 2
	res, err := s.GC(bg, checkpoint.GCOptions{Keep: keep})
	if err != nil {
		t.Fatal(err)
	}
	if res.Checkpoints != len(c.values)-keep {
		t.Fatalf("GC deleted %d checkpoints, want %d", res.Checkpoints, len(c.values)-keep)
	}
	after := blockRows(t, s, "th")
	if len(after) >= len(before) {
		t.Fatalf("blocks before GC %+v, after %+v", before, after)
	}
	kept := map[string][]any{}
	for _, id := range trunk[len(trunk)-keep:] {
		kept[id] = c.values[id]
	}
	c.values = kept
	if first := after[0]; first.first != trunk[len(trunk)-keep] || !first.snapshot || first.n != 1 {
		t.Fatalf("after GC, the oldest block is %+v, want the oldest kept checkpoint with its snapshot", first)
	}
	c.check("after GC")
	c.commit(prev)
	c.check("a commit after GC")
	if err := s.DeleteThread(bg, "th"); err != nil {
		t.Fatal(err)
	}
	if got := blockRows(t, s, "th"); len(got) != 0 {
		t.Fatalf("blocks of a deleted thread: %+v", got)
	}
}

// A damaged block is a CorruptError naming its first checkpoint and the
// range it holds, from Get (of a checkpoint in it or built on it), from
// List (which returns the other checkpoints) and from History; a damaged
// open block fails the next commit rather than being sealed in.
func TestBlockDamaged(t *testing.T) {
	t.Parallel()
	s, _ := open(t, nil)
	c := newChain(t, s, "th")
	prev := c.commit("")
	for range postgres.BlockRows + 3 {
		prev = c.commit(prev)
	}
	blocks := blockRows(t, s, "th")
	bad := blocks[1] // sealed, full
	for _, q := range []string{
		`UPDATE blocks SET data = set_byte(data, 20, get_byte(data, 20) # 255) WHERE thread = 'th' AND last = $1`,
		`UPDATE blocks SET n = n - 1 WHERE thread = 'th' AND last = $1`,
	} {
		var undo []byte
		var n int
		if err := s.Pool().QueryRow(bg, `SELECT data, n FROM blocks WHERE thread = 'th' AND last = $1`, bad.last).Scan(&undo, &n); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Pool().Exec(bg, q, bad.last); err != nil {
			t.Fatal(err)
		}
		var ce *runtime.CorruptError
		for _, id := range []string{bad.last, prev} {
			_, err := s.Get(bg, "th", id)
			if !errors.As(err, &ce) || ce.Checkpoint != bad.first || !strings.Contains(err.Error(), bad.first+"…"+bad.last) {
				t.Fatalf("%s: Get %s over a damaged block: %v, want a CorruptError naming %s…%s", q, id, err, bad.first, bad.last)
			}
		}
		list, err := s.List(bg, "th", 0)
		if !errors.As(err, &ce) || ce.Checkpoint != bad.first || len(list) != len(c.values)-bad.n {
			t.Fatalf("%s: List with a damaged block: %d checkpoints, %v", q, len(list), err)
		}
		_, err = s.History(bg, "th", runtime.HistoryOptions{})
		if !errors.As(err, &ce) || ce.Checkpoint != bad.first {
			t.Fatalf("%s: History with a damaged block: %v", q, err)
		}
		if err := runtime.FindLastGood(bg, s, err); ce.LastGood != blocks[0].last {
			t.Fatalf("last good before the damaged block: %q (%v), want %s", ce.LastGood, err, blocks[0].last)
		}
		if _, err := s.Pool().Exec(bg, `UPDATE blocks SET data = $2, n = $3 WHERE thread = 'th' AND last = $1`, bad.last, undo, n); err != nil {
			t.Fatal(err)
		}
		c.check("repaired")
	}
	// The open block.
	if _, err := s.Pool().Exec(bg, `UPDATE open_blocks SET data = set_byte(data, 5, get_byte(data, 5) # 255) WHERE thread = 'th'`); err != nil {
		t.Fatal(err)
	}
	var ce *runtime.CorruptError
	if _, err := c.commitID(prev, ""); !errors.As(err, &ce) || !strings.Contains(err.Error(), "open block") {
		t.Fatalf("commit onto a damaged open block: %v", err)
	}
	if th, err := s.Thread(bg, "th"); err != nil || th.Head != prev {
		t.Fatalf("head after the refused commit: %v %v", th, err)
	}
}

// A commit is one transaction: one that fails after sealing the open
// block (here, a trigger refuses the open block's rewrite), or whose
// compare-and-swap fails, leaves no partial block, loses nothing and
// duplicates nothing; the thread goes on.
func TestBlockSealAtomic(t *testing.T) {
	t.Parallel()
	s, _ := open(t, nil)
	c := newChain(t, s, "th")
	prev := c.commit("")
	for range postgres.BlockRows {
		prev = c.commit(prev)
	}
	before := blockRows(t, s, "th")
	// Stale head: refused in the compare-and-swap.
	stale := c.head
	c.head = before[0].last
	if _, err := c.commitID(prev, ""); !errors.Is(err, runtime.ErrConflict) {
		t.Fatalf("stale head: %v", err)
	}
	c.head = stale
	if got := blockRows(t, s, "th"); !reflect.DeepEqual(got, before) {
		t.Fatalf("after a refused commit: %+v, want %+v", got, before)
	}
	for _, q := range []string{
		`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$`,
		`CREATE TRIGGER refuse BEFORE UPDATE ON open_blocks FOR EACH ROW EXECUTE FUNCTION refuse()`,
	} {
		if _, err := s.Pool().Exec(bg, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.commitID(prev, ""); err == nil || !strings.Contains(err.Error(), "refused by the test") {
		t.Fatalf("commit whose open block rewrite fails: %v", err)
	}
	if got := blockRows(t, s, "th"); !reflect.DeepEqual(got, before) {
		t.Fatalf("after a commit that failed past the seal: %+v, want %+v", got, before)
	}
	if th, err := s.Thread(bg, "th"); err != nil || th.Head != prev {
		t.Fatalf("head after the failed commit: %v %v", th, err)
	}
	if _, err := s.Pool().Exec(bg, `DROP TRIGGER refuse ON open_blocks`); err != nil {
		t.Fatal(err)
	}
	c.commit(prev)
	if got := blockRows(t, s, "th"); len(got) != len(before)+1 {
		t.Fatalf("after the commit that sealed: %+v", got)
	}
	c.check("after the seal")
}

// A schema of layout version 2 with its checkpoints rows is migrated on
// open; the rows read as before, new commits go into blocks on top of
// them (a chain then crosses from blocks into rows), and GC and history
// handle both.
func TestMigrateFromVersion2(t *testing.T) {
	t.Parallel()
	s, u := open(t, nil)
	c := newChain(t, s, "th")
	prev := c.commit("")
	var old []string
	for range 40 {
		prev = c.commit(prev)
		old = append(old, prev)
	}
	if err := postgres.Unblock(bg, s, "th"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	raw := openURL(t, u, nil)
	for _, q := range []string{`DROP TABLE blocks`, `DROP TABLE open_blocks`, `DELETE FROM lgrun_migrations WHERE version > 2`} {
		if _, err := raw.Pool().Exec(bg, q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	s = openURL(t, u, nil)
	c.s = s
	var version, rows int
	if err := s.Pool().QueryRow(bg, `SELECT (SELECT max(version) FROM lgrun_migrations), (SELECT count(*) FROM checkpoints)`).Scan(&version, &rows); err != nil {
		t.Fatal(err)
	}
	if version != postgres.SchemaVersion || rows != len(c.values) {
		t.Fatalf("after migrating: version %d, %d checkpoints rows", version, rows)
	}
	c.check("version 2 rows")
	for range 10 {
		prev = c.commit(prev)
	}
	f := c.commit(old[20]) // a fork from a version 2 row
	c.commit(f)
	if got := blockRows(t, s, "th"); len(got) != 2 || got[0].parent != old[len(old)-1] {
		t.Fatalf("blocks on version 2 rows: %+v", got)
	}
	c.check("blocks on rows")
	if _, err := s.GC(bg, checkpoint.GCOptions{Keep: 8}); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(bg, "th", 0)
	if err != nil || len(list) != 8 {
		t.Fatalf("after GC: %d, %v", len(list), err)
	}
	kept := map[string][]any{}
	for _, cp := range list {
		kept[cp.ID] = c.values[cp.ID]
	}
	c.values = kept
	c.check("after GC")
}
