package checkpoint_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/checkpoint/checkpointtest"
	"github.com/lgrun/lgrun/runtime"
)

var bg = context.Background()

func TestSQLiteConformance(t *testing.T) {
	t.Parallel()
	checkpointtest.Run(t, func(t *testing.T) runtime.Saver { return MustOpen(t, nil) })
}

// TestSQLiteConformancePacked runs the suite on a saver that seals a
// pack every two checkpoints of a run (see pack.go), so that its chain
// reads go through packs.
func TestSQLiteConformancePacked(t *testing.T) {
	t.Parallel()
	checkpointtest.Run(t, func(t *testing.T) runtime.Saver {
		s := MustOpen(t, nil)
		checkpoint.SetPackRows(s, 2)
		return s
	})
}

func TestSQLiteConformancePower(t *testing.T) {
	if testing.Short() {
		t.Skip("fsync per commit")
	}
	t.Parallel()
	checkpointtest.Run(t, func(t *testing.T) runtime.Saver {
		return MustOpen(t, &checkpoint.Options{Durability: checkpoint.DurabilityPower})
	})
}

// pragma reads a per-connection setting the saver's connections use.
func pragma(t *testing.T, s *checkpoint.SQLite, name string) string {
	t.Helper()
	var v string
	if err := s.DB().QueryRow("PRAGMA " + name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDurability(t *testing.T) {
	for _, tc := range []struct {
		d    checkpoint.Durability
		sync string // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{
		{"", "1"},
		{checkpoint.DurabilityProcess, "1"},
		{checkpoint.DurabilityPower, "2"},
	} {
		t.Run(string(tc.d), func(t *testing.T) {
			s := MustOpen(t, &checkpoint.Options{Durability: tc.d, BusyTimeout: 1234 * time.Millisecond})
			if got := pragma(t, s, "synchronous"); got != tc.sync {
				t.Errorf("synchronous = %s, want %s", got, tc.sync)
			}
			if got := pragma(t, s, "journal_mode"); got != "wal" {
				t.Errorf("journal_mode = %s, want wal", got)
			}
			if got := pragma(t, s, "busy_timeout"); got != "1234" {
				t.Errorf("busy_timeout = %s, want 1234", got)
			}
			if got := pragma(t, s, "wal_autocheckpoint"); got != fmt.Sprint(checkpoint.WALCheckpointPages) {
				t.Errorf("wal_autocheckpoint = %s, want %d", got, checkpoint.WALCheckpointPages)
			}
			if got := pragma(t, s, "journal_size_limit"); got != fmt.Sprint(checkpoint.WALKeepBytes) {
				t.Errorf("journal_size_limit = %s, want %d", got, checkpoint.WALKeepBytes)
			}
			newChain(t, s, "t").step(3)
		})
	}
	path := filepath.Join(t.TempDir(), "x.db")
	_, err := checkpoint.OpenSQLite(path, &checkpoint.Options{Durability: "disk"})
	if err == nil || !strings.Contains(err.Error(), `"disk"`) || !strings.Contains(err.Error(), "process or power") {
		t.Fatalf("bad durability: %v, want an error naming the value and the choices", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused open created the file: %v", err)
	}
}

// chain commits steps to one thread straight through the saver.
type chain struct {
	t      testing.TB
	s      runtime.Saver
	thread string
	head   string
	at     int // step of the head
	values map[string]any
	ids    runtime.IDClock
}

func newChain(t testing.TB, s runtime.Saver, thread string) *chain {
	return &chain{t: t, s: s, thread: thread, at: -1, values: map[string]any{"n": 0, "messages": []any{}}}
}

var words = strings.Fields(`the of and to in is that for it as was with be by on not he this are or his
from at which but have an they you were her she there would their we him been has when who will more no
if out so said what up its about into than them can only other new some could time these two may then do
first any my now such like our over man me even most made after also did many before must through back`)

// message returns a message of about 200 bytes of text-like content.
func message(i int) map[string]any {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	var b strings.Builder
	fmt.Fprintf(&b, "reply %d:", i)
	for b.Len() < 200 {
		b.WriteByte(' ')
		b.WriteString(words[r.IntN(len(words))])
	}
	return map[string]any{"id": fmt.Sprintf("m%d", i), "role": "assistant", "content": b.String()}
}

// step commits n steps that each add one message.
func (c *chain) step(n int) {
	c.t.Helper()
	for i := 0; i < n; i++ {
		if err := c.try(); err != nil {
			c.t.Fatalf("commit step %d: %v", c.at+1, err)
		}
	}
}

// try commits one step on the head, returning the error.
func (c *chain) try() error {
	now := time.Now()
	values := map[string]any{"n": 0, "messages": []any{}}
	d := runtime.Delta{"n": {Kind: runtime.OpSet, Value: 0}, "messages": {Kind: runtime.OpSet, Value: []any{}}}
	src := runtime.SourceInput
	if c.head != "" {
		m := message(c.at + 1)
		// The list is shared between steps: the saver must not keep it.
		values = map[string]any{"n": c.at + 1, "messages": append(c.values["messages"].([]any), m)}
		d = runtime.Delta{"n": {Kind: runtime.OpSet, Value: c.at + 1}, "messages": {Kind: runtime.OpMessages, Value: []any{m}}}
		src = runtime.SourceLoop
	}
	cp := &runtime.Checkpoint{
		Thread: c.thread, ParentID: c.head, Step: c.at + 1, Values: values, Delta: d, Next: []string{"talk"},
		Metadata: runtime.Metadata{Source: src, Writes: map[string][]string{"talk": {"messages", "n"}},
			Graph: "chat", GraphHash: "h", Version: "test", Time: now},
	}
	cp.ID = c.ids.Next(now, c.head)
	row := runtime.Thread{ID: c.thread, Status: runtime.StatusRunning, Graph: "chat", GraphHash: "h", Updated: now}
	if err := c.s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: c.head, Thread: row}); err != nil {
		return err
	}
	c.head, c.at, c.values = cp.ID, c.at+1, values
	return nil
}

func fileBytes(t testing.TB, s *checkpoint.SQLite) int64 {
	t.Helper()
	return diskBytes(t, s)
}

// TestDeltaStorageIsLinear grows a thread by one ~200-byte message per
// step: storage must grow linearly, and loading the latest state must read
// one snapshot plus deltas whose volume is bounded by the state's size.
func TestDeltaStorageIsLinear(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 commits")
	}
	t.Parallel()
	s := MustOpen(t, nil)
	c := newChain(t, s, "chat")
	sizes := map[int]int64{}
	for _, n := range []int{1000, 10000} {
		c.step(n - c.at)
		sizes[n] = fileBytes(t, s)
		cp, err := s.Get(bg, "chat", "")
		if err != nil {
			t.Fatal(err)
		}
		msgs := cp.Values["messages"].([]any)
		if len(msgs) != n || cp.Values["n"] != n {
			t.Fatalf("step %d: %d messages, n = %v", n, len(msgs), cp.Values["n"])
		}
		for _, i := range []int{0, n / 2, n - 1} {
			if msgs[i].(map[string]any)["content"] != message(i + 1)["content"] {
				t.Fatalf("step %d: message %d is %v", n, i, msgs[i])
			}
		}
		st, err := checkpoint.ChainStatsOf(s, "chat", cp.ID)
		if err != nil {
			t.Fatal(err)
		}
		stateBytes := len(mustJSON(t, cp.Values))
		t.Logf("N=%d: %d KB on disk (%d B/step), state %d KB, load reads %d rows, %d KB",
			n, sizes[n]>>10, sizes[n]/int64(n), stateBytes>>10, st.Rows, st.Bytes>>10)
		// One snapshot, then deltas no larger in total than about twice the
		// snapshot: never a replay of all N steps.
		if st.Snapshots != 1 || st.Rows >= n*3/4 {
			t.Errorf("N=%d: loading the head read %d rows with %d snapshots; want 1 snapshot and well under %d rows", n, st.Rows, st.Snapshots, n)
		}
		if st.Bytes > 3*stateBytes+checkpoint.MinSnapshotBytes {
			t.Errorf("N=%d: loading the head read %d bytes, more than 3 × the state (%d)", n, st.Bytes, stateBytes)
		}
	}
	// ~250 bytes of message per step: a few hundred bytes a step at any N.
	if per := sizes[10000] / 10000; per > 800 {
		t.Errorf("10,000 steps take %d bytes (%d a step); want under 800 a step", sizes[10000], per)
	}
	if ratio := float64(sizes[10000]) / float64(sizes[1000]); ratio > 12 {
		t.Errorf("storage grew %.1fx from 1,000 to 10,000 steps; want about 10x (linear)", ratio)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeReal creates a database with a few threads at path and closes it.
func writeReal(t *testing.T, path string, threads, steps int) {
	t.Helper()
	s, err := checkpoint.OpenSQLite(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < threads; i++ {
		newChain(t, s, fmt.Sprintf("t%d", i)).step(steps)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); err == nil {
		t.Fatalf("closing left a WAL file")
	}
}

// useAll reads everything; it returns the first error.
func useAll(s *checkpoint.SQLite) error {
	ths, err := s.Threads(bg)
	if err != nil {
		return err
	}
	for _, th := range ths {
		if _, err := s.List(bg, th.ID, 0); err != nil {
			return err
		}
		if _, err := s.Get(bg, th.ID, ""); err != nil {
			return err
		}
	}
	if len(ths) == 0 {
		return errors.New("no threads")
	}
	return nil
}

func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	random := filepath.Join(dir, "random.db")
	junk := make([]byte, 64<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range junk {
		junk[i] = byte(r.UintN(256))
	}
	if err := os.WriteFile(random, junk, 0o644); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("hello, not a database\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{random, text} {
		_, err := checkpoint.OpenSQLite(path, nil)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not an lgrun checkpoint database") {
			t.Errorf("open %s: %v; want an error naming the file and saying it is not a checkpoint database", filepath.Base(path), err)
		}
	}

	// A real database cut short: the error may come at open or at the
	// first read of a lost page, but it must name the file and say
	// corrupt, and nothing may panic.
	for _, frac := range []float64{0.1, 0.5, 0.9} {
		t.Run(fmt.Sprintf("truncated%.0f%%", frac*100), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "real.db")
			writeReal(t, path, 3, 300)
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, int64(float64(fi.Size())*frac)); err != nil {
				t.Fatal(err)
			}
			s, err := checkpoint.OpenSQLite(path, nil)
			if err == nil {
				defer s.Close()
				err = useAll(s)
			}
			if err == nil {
				t.Fatal("no error reading a truncated database")
			}
			msg := err.Error()
			if !strings.Contains(msg, path) || !(strings.Contains(msg, "corrupt") || strings.Contains(msg, "not an lgrun checkpoint database")) {
				t.Errorf("truncated database: %v; want an error naming the file and saying it is corrupt", err)
			}
		})
	}
}

func TestForeignSQLiteRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = checkpoint.OpenSQLite(path, nil)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not an lgrun checkpoint database") {
		t.Fatalf("open another application's database: %v", err)
	}
	db, _ = sql.Open("sqlite3", path)
	defer db.Close()
	var n int
	db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'checkpoints'`).Scan(&n)
	if n != 0 {
		t.Fatal("lgrun created its tables in another application's database")
	}
}

func TestFutureSchemaVersionRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "future.db")
	writeReal(t, path, 1, 2)
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE meta SET value = ? WHERE key = 'schema_version'`, checkpoint.SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = checkpoint.OpenSQLite(path, nil)
	if !errors.Is(err, checkpoint.ErrSchemaVersion) {
		t.Fatalf("open a newer layout: %v, want ErrSchemaVersion", err)
	}
	for _, want := range []string{path, "newer lgrun", fmt.Sprintf("layout version %d", checkpoint.SchemaVersion+1), "upgrade lgrun"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestLockedDatabase holds the write lock from another connection: a
// commit waits for the busy timeout, then fails saying the file is
// locked, while reads go on.
func TestLockedDatabase(t *testing.T) {
	const busy = 150 * time.Millisecond
	path := filepath.Join(t.TempDir(), "locked.db")
	s := MustOpenPath(t, path, &checkpoint.Options{BusyTimeout: busy})
	c := newChain(t, s, "t")
	c.step(3)

	other, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(bg, `BEGIN EXCLUSIVE`); err != nil {
		t.Fatal(err)
	}

	// Readers are not blocked by a writer (WAL).
	start := time.Now()
	if _, err := s.Get(bg, "t", ""); err != nil {
		t.Fatalf("Get while another connection writes: %v", err)
	}
	if _, err := s.List(bg, "t", 0); err != nil {
		t.Fatalf("List while another connection writes: %v", err)
	}
	if el := time.Since(start); el >= busy {
		t.Errorf("reads waited %v for the writer", el)
	}

	start = time.Now()
	err = s.Commit(bg, &runtime.Commit{
		Checkpoint: &runtime.Checkpoint{Thread: "t", ID: c.ids.Next(time.Now(), c.head), ParentID: c.head, Step: 9,
			Values: map[string]any{}, Delta: runtime.Delta{}},
		ExpectHead: c.head, Thread: runtime.Thread{ID: "t", Status: runtime.StatusRunning, Updated: time.Now()},
	})
	el := time.Since(start)
	if err == nil {
		t.Fatal("commit succeeded while another connection held the write lock")
	}
	if !strings.Contains(err.Error(), "locked") || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), busy.String()) {
		t.Errorf("commit on a locked database: %v; want a \"locked\" error naming the file and the timeout", err)
	}
	if el < busy*8/10 || el > busy+5*time.Second {
		t.Errorf("commit gave up after %v; want about the busy timeout %v", el, busy)
	}
	row := runtime.Thread{ID: "t", Head: c.head, Status: runtime.StatusFailed, Updated: time.Now()}
	if err := s.Mark(bg, &runtime.Mark{Thread: row}); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("mark on a locked database: %v", err)
	}

	// Once the lock is gone, the thread goes on from the same head.
	if _, err := conn.ExecContext(bg, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	c.step(2)
	if cp, err := s.Get(bg, "t", ""); err != nil || cp.Values["n"] != 4 {
		t.Fatalf("after the lock: %v %v", cp, err)
	}
}
