package server_test

import (
	"reflect"
	"testing"
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
