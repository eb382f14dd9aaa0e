package checkpoint_test

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

var update = flag.Bool("update", false, "rewrite the database fixtures in testdata (of the current layout only)")

// Database fixtures: testdata/vN.db is a small database in layout version
// N and testdata/vN.json everything lgrun reads back from it. Every
// fixture stays in testdata when the layout changes, so this test shows
// that databases written by older lgrun versions still load (or are
// refused clearly). Regenerate the current one with
//
//	go test ./checkpoint -run TestCompat -update

func TestCompat(t *testing.T) {
	current := filepath.Join("testdata", fmt.Sprintf("v%d.db", checkpoint.SchemaVersion))
	if *update {
		writeFixture(t, current)
	}
	fixtures, _ := filepath.Glob(filepath.Join("testdata", "v*.db"))
	if len(fixtures) == 0 {
		t.Fatal("no fixtures in testdata; run with -update")
	}
	found := false
	for _, f := range fixtures {
		found = found || f == current
		t.Run(filepath.Base(f), func(t *testing.T) {
			// Opening a database may write to it (WAL files): use a copy.
			path := filepath.Join(t.TempDir(), filepath.Base(f))
			copyFile(t, f, path)
			s := MustOpenPath(t, path, nil)
			got := dump(t, s)
			golden := strings.TrimSuffix(f, ".db") + ".json"
			if *update && f == current {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s reads differently from %s:\n%s", f, golden, firstDiff(string(got), string(want)))
			}
			// The old database is still writable: resume a thread, then
			// collect garbage, and the head still loads.
			c := newChain(t, s, "chat")
			head, err := s.Get(bg, "chat", "")
			if err != nil {
				t.Fatal(err)
			}
			c.head, c.at, c.values = head.ID, head.Step, head.Values
			c.step(3)
			// Rows written now carry checksums; the fixture's own rows
			// carry them only if its layout had them.
			var old, unsummed int
			if err := s.DB().QueryRow(`SELECT count(*) FILTER (WHERE id <= ?), count(*) FILTER (WHERE sum IS NULL OR (snapshot IS NULL) != (snap_sum IS NULL)) FROM checkpoints WHERE thread = 'chat'`, head.ID).Scan(&old, &unsummed); err != nil {
				t.Fatal(err)
			}
			if want := fixtureUnsummed(f, old); unsummed != want {
				t.Errorf("%d checkpoint rows without a (complete) checksum, want %d (of the %d rows of the fixture)", unsummed, want, old)
			}
			var n, new, linked int
			if err := s.DB().QueryRow(`SELECT count(*), count(sum), count(link_sum) FROM checkpoints WHERE thread = 'chat' AND id > ?`, head.ID).Scan(&n, &new, &linked); err != nil || n != 3 || new != 3 || linked != 3 {
				t.Errorf("the 3 new checkpoint rows: %d of %d have a checksum, %d a chain checksum (%v)", new, n, linked, err)
			}
			if _, err := s.GC(bg, checkpoint.GCOptions{Keep: 2}); err != nil {
				t.Fatal(err)
			}
			if cp, err := s.Get(bg, "chat", ""); err != nil || cp.Values["n"] != c.at {
				t.Fatalf("after resuming and GC: %v %v", cp, err)
			}
		})
	}
	if !found {
		t.Errorf("no fixture for the current layout version %d (%s); run with -update", checkpoint.SchemaVersion, current)
	}
}

// fixtureUnsummed is how many of the rows of fixture f have no checksum:
// all of them in layout version 1, none after.
func fixtureUnsummed(f string, rows int) int {
	if filepath.Base(f) == "v1.db" {
		return rows
	}
	return 0
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func firstDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(la) || i < len(lb); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n got  %s\n want %s", i+1, x, y)
		}
	}
	return "(no difference)"
}

// dump reads everything a saver holds, as stable JSON.
func dump(t *testing.T, s runtime.Saver) []byte {
	t.Helper()
	type cpDump struct {
		*runtime.Checkpoint // as List returns it, and Get but for Values and Pending
		// Values from Get, for heads; the hash of their JSON for the others.
		Values       map[string]any `json:",omitempty"`
		ValuesSHA256 string         `json:",omitempty"`
		Pending      []runtime.PendingWrite
	}
	type threadDump struct {
		Row         *runtime.Thread
		Checkpoints []cpDump
	}
	var out []threadDump
	ths, err := s.Threads(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, th := range ths {
		d := threadDump{Row: th}
		for _, cp := range mustList(t, s, th.ID) {
			full, err := s.Get(bg, th.ID, cp.ID)
			if err != nil {
				t.Fatalf("Get %s %s: %v", th.ID, cp.ID, err)
			}
			cd := cpDump{Checkpoint: cp, Values: full.Values, Pending: full.Pending}
			if cp.ID != th.Head {
				b, err := json.Marshal(full.Values)
				if err != nil {
					t.Fatal(err)
				}
				cd.Values, cd.ValuesSHA256 = nil, fmt.Sprintf("%x", sha256.Sum256(b))
			}
			full.Values, full.Pending = nil, nil
			a, _ := json.Marshal(cp)
			b, _ := json.Marshal(full)
			if !bytes.Equal(a, b) {
				t.Fatalf("checkpoint %s: Get and List disagree:\n Get  %s\n List %s", cp.ID, b, a)
			}
			d.Checkpoints = append(d.Checkpoints, cd)
		}
		out = append(out, d)
	}
	b, err := json.MarshalIndent(out, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// fixtureClock makes ids and times that do not depend on when -update ran.
type fixtureClock struct{ n int }

func (c *fixtureClock) next() (string, time.Time) {
	c.n++
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(c.n) * time.Second)
	return fmt.Sprintf("%016x", at.UnixNano()), at
}

// writeFixture writes a small database that uses every part of the
// layout: threads in each status, run-time config, delta chains across a
// snapshot, forks, every delta op, pending writes of each kind, usage,
// totals and records metadata, two graphs.
func writeFixture(t *testing.T, path string) {
	t.Helper()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(path + suffix)
	}
	s, err := checkpoint.OpenSQLite(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Short runs, so that the fixture holds packs (layout version 4).
	checkpoint.SetPackRows(s, 8)
	clock := &fixtureClock{}
	commit := func(thread, parent, expect string, step int, values map[string]any, d runtime.Delta, meta runtime.Metadata, row runtime.Thread, writes ...runtime.PendingWrite) string {
		t.Helper()
		id, at := clock.next()
		meta.Time = at
		cp := &runtime.Checkpoint{Thread: thread, ID: id, ParentID: parent, Step: step, Values: values, Delta: d, Next: []string{"talk"}, Metadata: meta}
		row.ID, row.Updated = thread, at
		if row.Created.IsZero() {
			row.Created = at
		}
		if err := s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: expect, Thread: row, Writes: writes}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	chatMeta := runtime.Metadata{Source: runtime.SourceLoop, Graph: "chat", GraphHash: "hash-chat-1", Version: "0.1.0",
		Writes: map[string][]string{"talk": {"messages", "n"}}}
	chatRow := runtime.Thread{ID: "chat", Status: runtime.StatusRunning, Graph: "chat", GraphHash: "hash-chat-1", GraphFile: "graphs/chat.yaml",
		Config: runtime.Config{StepLimit: 100, InterruptAfter: []string{"talk"}, Timeout: runtime.Duration(90 * time.Second)}}

	// "chat": 40 steps of ~1 KB messages (past a snapshot), with an
	// edit and a removal, then a fork from step 30.
	pad := strings.Repeat("fixture text ", 70)
	values := map[string]any{"n": 0, "messages": []any{}}
	var ids []string
	head := commit("chat", "", "", 0, values, runtime.Delta{"n": {Kind: runtime.OpSet, Value: 0}, "messages": {Kind: runtime.OpSet, Value: []any{}}},
		runtime.Metadata{Source: runtime.SourceInput, Graph: "chat", GraphHash: "hash-chat-1", Version: "0.1.0", Writes: map[string][]string{"__input__": {"n"}}}, chatRow)
	ids = append(ids, head)
	for i := 1; i <= 40; i++ {
		items := []any{map[string]any{"id": fmt.Sprintf("m%d", i), "role": "assistant", "content": fmt.Sprintf("%d %s", i, pad)}}
		switch i {
		case 10:
			items = append(items, map[string]any{"id": "m3", "role": "assistant", "content": "edited"})
		case 20:
			items = append(items, map[string]any{"id": "m4", "remove": true})
		}
		v := map[string]any{"n": i, "messages": applyMessages(values["messages"].([]any), items)}
		d := runtime.Delta{"n": {Kind: runtime.OpSet, Value: i}, "messages": {Kind: runtime.OpMessages, Value: items}}
		m := chatMeta
		m.Usage = []runtime.Usage{{Node: "talk", Model: "mock", InputTokens: 10 * i, OutputTokens: i, CostUSD: 0.001}}
		m.Totals = runtime.Totals{LLMCalls: i, InputTokens: 5 * i * (i + 1), OutputTokens: i * (i + 1) / 2, CostUSD: 0.001 * float64(i)}
		m.Records = map[string][]any{"talk": {map[string]any{"reply": fmt.Sprintf("r%d", i), "tokens": i}}}
		head = commit("chat", head, head, i, v, d, m, chatRow)
		ids = append(ids, head)
		values = v
	}
	fork := commit("chat", ids[30], head, 31, map[string]any{"n": 99, "messages": []any{}},
		runtime.Delta{"n": {Kind: runtime.OpSet, Value: 99}, "messages": {Kind: runtime.OpSet, Value: []any{}}},
		runtime.Metadata{Source: runtime.SourceFork, Graph: "chat", GraphHash: "hash-chat-1", Version: "0.1.0", Writes: map[string][]string{"__human__": {"messages", "n"}}}, chatRow)
	chatRow.Head, chatRow.Status = fork, runtime.StatusInterrupted
	_, at := clock.next()
	chatRow.Updated = at
	if err := s.Mark(bg, &runtime.Mark{Thread: chatRow, Writes: []runtime.PendingWrite{
		{Node: "talk", Kind: runtime.PendingInterrupt, Interrupt: &runtime.Interrupt{Node: "talk", When: runtime.InterruptAfter}},
	}}); err != nil {
		t.Fatal(err)
	}

	// "ops": every delta op, a failed step with pending writes of each kind,
	// another graph version.
	opsMeta := runtime.Metadata{Source: runtime.SourceLoop, Graph: "ops", GraphHash: "hash-ops-2", Version: "0.1.1"}
	opsRow := runtime.Thread{ID: "ops", Status: runtime.StatusRunning, Graph: "ops", GraphHash: "hash-ops-2", GraphFile: "ops.yaml"}
	v0 := map[string]any{"log": []any{"a"}, "obj": map[string]any{"k": 1}, "ratio": 0.5, "flag": true, "none": nil}
	d0 := runtime.Delta{}
	for k, v := range v0 {
		d0[k] = runtime.Op{Kind: runtime.OpSet, Value: v}
	}
	o := commit("ops", "", "", 0, v0, d0, runtime.Metadata{Source: runtime.SourceInput, Graph: "ops", GraphHash: "hash-ops-2", Version: "0.1.1"}, opsRow)
	v1 := map[string]any{"log": []any{"a", "b", map[string]any{"nested": []any{1, 2.5}}}, "obj": map[string]any{"k": 2, "j": "x"}, "ratio": 0.5, "flag": false, "none": nil}
	o = commit("ops", o, o, 1, v1, runtime.Delta{
		"log":  {Kind: runtime.OpAppend, Value: []any{"b", map[string]any{"nested": []any{1, 2.5}}}},
		"obj":  {Kind: runtime.OpMerge, Value: map[string]any{"k": 2, "j": "x"}},
		"flag": {Kind: runtime.OpSet, Value: false},
	}, opsMeta, opsRow)
	opsRow.Head, opsRow.Status, opsRow.Error = o, runtime.StatusFailed, `ops.yaml:9:5: step 2: node "bad": boom`
	_, at = clock.next()
	opsRow.Updated = at
	if err := s.Mark(bg, &runtime.Mark{Thread: opsRow, ClearWrites: true, Writes: []runtime.PendingWrite{
		{Node: "good", Kind: runtime.PendingWrites, Result: &runtime.NodeResult{Writes: []runtime.Write{{Field: "log", Value: "c"}}, Goto: []string{"next"}}},
		{Node: "ask", Kind: runtime.PendingInterrupt, Interrupt: &runtime.Interrupt{Node: "ask", When: runtime.InterruptNode, Payload: map[string]any{"question": "ok?"}}},
		{Node: "bad", Kind: runtime.PendingError, Error: "boom"},
	}}); err != nil {
		t.Fatal(err)
	}

	// "done": a finished one-step thread.
	doneRow := runtime.Thread{ID: "done", Status: runtime.StatusRunning, Graph: "ops", GraphHash: "hash-ops-2"}
	dh := commit("done", "", "", 0, map[string]any{"x": 1}, runtime.Delta{"x": {Kind: runtime.OpSet, Value: 1}},
		runtime.Metadata{Source: runtime.SourceInput, Graph: "ops", GraphHash: "hash-ops-2", Version: "0.1.1"}, doneRow)
	doneRow.Head, doneRow.Status = dh, runtime.StatusDone
	_, at = clock.next()
	doneRow.Updated = at
	if err := s.Mark(bg, &runtime.Mark{Thread: doneRow, ClearWrites: true}); err != nil {
		t.Fatal(err)
	}

	// "live": a run in progress (layout version 5): its row follows its
	// greatest checkpoint (from its second commit on), three commits
	// behind it, whose commit left pending writes.
	liveMeta := runtime.Metadata{Source: runtime.SourceLoop, Graph: "ops", GraphHash: "hash-ops-2", Version: "0.1.1", Writes: map[string][]string{"a": {"log"}}}
	liveRow := runtime.Thread{ID: "live", Status: runtime.StatusRunning, Graph: "ops", GraphHash: "hash-ops-2", GraphFile: "ops.yaml"}
	lh := commit("live", "", "", 0, map[string]any{"log": []any{}}, runtime.Delta{"log": {Kind: runtime.OpSet, Value: []any{}}},
		runtime.Metadata{Source: runtime.SourceInput, Graph: "ops", GraphHash: "hash-ops-2", Version: "0.1.1"}, liveRow)
	for i := 1; i <= 4; i++ {
		var ws []runtime.PendingWrite
		if i == 4 {
			ws = []runtime.PendingWrite{{Node: "a", Kind: runtime.PendingWrites, Result: &runtime.NodeResult{Writes: []runtime.Write{{Field: "log", Value: "x"}}}}}
		}
		log := make([]any, i)
		for k := range log {
			log[k] = fmt.Sprint(k + 1)
		}
		lh = commit("live", lh, lh, i, map[string]any{"log": log}, runtime.Delta{"log": {Kind: runtime.OpAppend, Value: []any{fmt.Sprint(i)}}}, liveMeta, liveRow, ws...)
	}
	var rowHead string
	var follow sql.NullInt64
	if err := s.DB().QueryRow(`SELECT head, follow FROM threads WHERE id = 'live'`).Scan(&rowHead, &follow); err != nil || rowHead == lh || follow.Int64 != 1 {
		t.Fatalf("thread live: row head %s, follow %v (%v); want a row that follows, behind its head %s", rowHead, follow, err, lh)
	}

	var snaps int
	if err := s.DB().QueryRow(`SELECT count(*) FROM checkpoints WHERE thread = 'chat' AND parent != '' AND snapshot IS NOT NULL`).Scan(&snaps); err != nil || snaps == 0 {
		t.Fatalf("the fixture has no snapshot after the first checkpoint (%v): make its steps larger", err)
	}
	if _, err := s.DB().Exec(`VACUUM`); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// applyMessages is the messages reducer, for building fixture values.
func applyMessages(cur, items []any) []any {
	values := map[string]any{"m": cur}
	if err := runtime.ApplyDelta(values, runtime.Delta{"m": {Kind: runtime.OpMessages, Value: items}}); err != nil {
		panic(err)
	}
	return values["m"].([]any)
}
