package server_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/server"
)

// TestCopyHistory: a copied thread (read in one history walk) has the
// original's history, checkpoint by checkpoint: the same values, nodes
// next, sources and steps, newest first; and the history's filters
// (limit, before, metadata) select the same checkpoints on both.
func TestCopyHistory(t *testing.T) {
	hs := newTestServer(t)
	_, th := do(t, hs, "POST", "/threads", `{}`)
	tid := th["thread_id"].(string)
	if run := runTo(t, hs, tid, `{"assistant_id": "loop", "input": {"target": 4}}`); run["status"] != "success" {
		t.Fatalf("run: %v", run)
	}
	_, cp := do(t, hs, "POST", "/threads/"+tid+"/copy", `{}`)
	cid := cp["thread_id"].(string)
	strip := func(states []any) []any {
		var out []any
		for _, s := range states {
			s := s.(map[string]any)
			md := s["metadata"].(map[string]any)
			out = append(out, []any{s["values"], s["next"], md["source"], md["step"]})
		}
		return out
	}
	for _, body := range []string{`{"limit": 100}`, `{"limit": 2}`, `{"metadata": {"source": "loop"}}`, `{"metadata": {"step": 2}}`} {
		status, a := doList(t, hs, "POST", "/threads/"+tid+"/history", body)
		status2, b := doList(t, hs, "POST", "/threads/"+cid+"/history", body)
		if status != 200 || status2 != 200 || len(a) == 0 {
			t.Fatalf("history %s: %d %d, %d states", body, status, status2, len(a))
		}
		if !reflect.DeepEqual(strip(a), strip(b)) {
			t.Fatalf("history %s of the copy differs:\n got  %v\n want %v", body, strip(b), strip(a))
		}
	}
	_, all := doList(t, hs, "POST", "/threads/"+tid+"/history", `{"limit": 100}`)
	if len(all) < 5 {
		t.Fatalf("%d checkpoints, want at least 5", len(all))
	}
	before := all[1].(map[string]any)["checkpoint"].(map[string]any)["checkpoint_id"].(string)
	_, older := doList(t, hs, "GET", "/threads/"+tid+"/history?limit=100&before="+before, ``)
	if !reflect.DeepEqual(strip(older), strip(all[2:])) {
		t.Fatalf("history before %s:\n got  %v\n want %v", before, strip(older), strip(all[2:]))
	}
}

// TestCopyKeepsDeltas: a copy stores each checkpoint as the source stored
// it, a delta against its parent, so copying a long thread costs its
// history's size, not a whole state per checkpoint; and every copied
// checkpoint reads back with the source's values, parent and delta.
func TestCopyKeepsDeltas(t *testing.T) {
	var saver runtime.Saver
	hs := newTestServerWith(t, func(o *server.Options) { saver = o.Saver })
	_, th := do(t, hs, "POST", "/threads", `{}`)
	tid := th["thread_id"].(string)
	if run := runTo(t, hs, tid, `{"assistant_id": "loop", "input": {"target": 6}}`); run["status"] != "success" {
		t.Fatalf("run: %v", run)
	}
	_, cp := do(t, hs, "POST", "/threads/"+tid+"/copy", `{}`)
	cid := cp["thread_id"].(string)
	ctx := context.Background()
	src, err := runtime.ReadHistory(ctx, saver, tid, runtime.HistoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dst, err := runtime.ReadHistory(ctx, saver, cid, runtime.HistoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(src) < 7 || len(dst) != len(src) {
		t.Fatalf("source %d checkpoints, copy %d", len(src), len(dst))
	}
	for i := range src {
		a, b := src[i], dst[i]
		if b.ID != a.ID || b.ParentID != a.ParentID || b.Step != a.Step {
			t.Errorf("checkpoint %d: copy %s (parent %q, step %d), source %s (parent %q, step %d)", i, b.ID, b.ParentID, b.Step, a.ID, a.ParentID, a.Step)
		}
		if !reflect.DeepEqual(b.Values, a.Values) {
			t.Errorf("checkpoint %s: copy's values %v, source's %v", a.ID, b.Values, a.Values)
		}
		if !reflect.DeepEqual(b.Delta, a.Delta) {
			t.Errorf("checkpoint %s: copy stores delta %v, source %v", a.ID, b.Delta, a.Delta)
		}
		got, err := saver.Get(ctx, cid, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Values, a.Values) {
			t.Errorf("Get %s of the copy: %v, want %v", a.ID, got.Values, a.Values)
		}
	}
}
