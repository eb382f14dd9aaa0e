package checkpoint

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
)

// TestRebuildParallel holds the parallel rebuild of a long chain (see
// rebuildParallel) to the one-row-at-a-time rebuild: the same values, and
// on damage, the same error (it declines and rebuild names the row).
func TestRebuildParallel(t *testing.T) {
	if goruntime.GOMAXPROCS(0) < 2 {
		t.Skip("one core")
	}
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "lgrun.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Messages of random words (they compress about 3 times): the chain
	// of the head holds a snapshot of over 8 KB stored and over 64 KB of
	// deltas.
	rng := rand.New(rand.NewPCG(16, 4))
	words := strings.Fields("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud")
	var clock runtime.IDClock
	values := map[string]any{"messages": []any{}}
	parent := ""
	ctx := context.Background()
	var ids []string
	for i := 0; i < 400; i++ {
		var b strings.Builder
		for b.Len() < 300 {
			b.WriteString(words[rng.IntN(len(words))])
			b.WriteByte(' ')
		}
		m := map[string]any{"id": fmt.Sprint("m", i), "role": "user", "content": b.String()}
		d := runtime.Delta{"messages": {Kind: runtime.OpMessages, Value: []any{m}}, "n": {Kind: runtime.OpSet, Value: i}}
		if i%50 == 7 {
			d["notes"] = runtime.Op{Kind: runtime.OpMerge, Value: map[string]any{fmt.Sprint("k", i%3): i}}
		}
		if err := runtime.ApplyDelta(values, d); err != nil {
			t.Fatal(err)
		}
		now := time.Date(2026, 1, 1, 0, 0, 0, i, time.UTC)
		cp := &runtime.Checkpoint{Thread: "t", ID: clock.Next(now, parent), ParentID: parent, Step: i, Values: values, Delta: d,
			Metadata: runtime.Metadata{Source: runtime.SourceLoop, Graph: "g", Time: now}}
		if err := s.Commit(ctx, &runtime.Commit{Checkpoint: cp, ExpectHead: parent, Thread: runtime.Thread{ID: "t", Status: runtime.StatusRunning, Graph: "g", Updated: now}}); err != nil {
			t.Fatal(err)
		}
		copied := make(map[string]any, len(values))
		for k, v := range values {
			copied[k] = v
		}
		values, parent = copied, cp.ID
		ids = append(ids, cp.ID)
	}
	ran, packed := 0, 0
	for _, id := range ids[len(ids)-40:] {
		for _, withPacks := range []bool{true, false} {
			chain, _, ok, err := s.rangeChain(ctx, "t", id, withPacks)
			if err != nil || !ok {
				t.Fatalf("chain of %s: %v %v", id, ok, err)
			}
			par, _, ok := rebuildParallel(chain)
			if !ok {
				continue
			}
			ran++
			seq := sequentialRebuild(t, chain)
			if !reflect.DeepEqual(par, seq) {
				t.Fatalf("checkpoint %s: the parallel rebuild differs", id)
			}
			// A damaged pack in the middle of the chain: the parallel
			// rebuild declines, and rebuild names the pack's checkpoint.
			var mid []int
			for i := range chain {
				if chain[i].pack != nil {
					mid = append(mid, i)
				}
			}
			if len(mid) > 0 {
				packed++
				at := mid[len(mid)/2]
				bad := make([]chainRow, len(chain))
				copy(bad, chain)
				p := *chain[at].pack
				p.loaded, p.stored = false, append([]byte{}, p.stored...)
				p.stored[len(p.stored)/2] ^= 0x40
				bad[at].pack = &p
				if _, _, ok := rebuildParallel(bad); ok {
					t.Fatalf("checkpoint %s: the parallel rebuild of a chain with a damaged pack succeeded", id)
				}
				_, _, err := rebuild("t", id, "x", bad)
				var ce *runtime.CorruptError
				if !errors.As(err, &ce) || ce.Checkpoint != p.last {
					t.Fatalf("checkpoint %s: damaged pack %s: rebuild says %v", id, p.last, err)
				}
			}
			// Damage: a delta that does not decode, one that does not
			// apply, a snapshot that does not inflate.
			for _, damage := range []func(c []chainRow){
				func(c []chainRow) { c[len(c)/2].row.delta = []byte(`{"n":`) },
				func(c []chainRow) { c[len(c)-1].row.delta = []byte(`{"messages":{"op":"messages","v":"x"}}`) },
				func(c []chainRow) { c[0].snap = append([]byte{snapZ}, c[0].snap[len(c[0].snap)/2:]...) },
			} {
				bad := make([]chainRow, len(chain))
				copy(bad, chain)
				for i := range bad {
					bad[i].link = sqlNull() // damage is in memory: no checksum to catch it
				}
				damage(bad)
				if _, _, ok := rebuildParallel(bad); ok {
					t.Fatalf("checkpoint %s: the parallel rebuild of a damaged chain succeeded", id)
				}
				if _, _, err := rebuild("t", id, "x", bad); err == nil {
					t.Fatalf("checkpoint %s: a damaged chain rebuilds", id)
				}
			}
		}
	}
	if ran == 0 || packed == 0 {
		t.Fatalf("%d chains long enough for the parallel rebuild, %d with packs", ran, packed)
	}
}

// sequentialRebuild is rebuild without its parallel path.
func sequentialRebuild(t *testing.T, chain []chainRow) map[string]any {
	t.Helper()
	names := &jsonNames{}
	var comp *composer
	for _, r := range chain {
		if r.snap != nil {
			v, err := decodeSnapshotNames(r.snap, names)
			if err != nil {
				t.Fatal(err)
			}
			comp = newComposer(v)
			continue
		}
		js := r.row.delta
		if r.pack != nil {
			if !r.pack.load(r.row.thread) {
				t.Fatalf("pack %s does not load", r.pack.last)
			}
			js = r.pack.delta
		}
		d, err := decodeDeltaNames(js, names)
		if err != nil {
			t.Fatal(err)
		}
		if err := comp.add(d); err != nil {
			t.Fatal(err)
		}
	}
	v, err := comp.result()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func sqlNull() (n sql.NullInt64) { return n }
