package checkpointtest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

func testMark(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "mark")
	a := th.commit("", first())
	row := th.row(runtime.StatusFailed)
	row.Head = a
	row.Error = "node x failed"
	row.Config.StepLimit = 99
	w1 := runtime.PendingWrite{Node: "x", Kind: runtime.PendingError, Error: "node x failed"}
	if err := s.Mark(bg, &runtime.Mark{Thread: row, Writes: []runtime.PendingWrite{w1}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Thread(bg, "mark")
	if err != nil {
		t.Fatal(err)
	}
	if got.Head != a || got.Status != runtime.StatusFailed || got.Error != "node x failed" || got.Config.StepLimit != 99 || !got.Updated.Equal(row.Updated) {
		t.Fatalf("Thread after Mark: %+v", got)
	}
	if !got.Created.Equal(base) {
		t.Fatalf("Mark changed created to %v", got.Created)
	}
	if list, _ := s.List(bg, "mark", 0); len(list) != 1 {
		t.Fatalf("Mark created a checkpoint: %d", len(list))
	}
	// Without ClearWrites, writes accumulate in order.
	w2 := runtime.PendingWrite{Node: "y", Kind: runtime.PendingInterrupt, Interrupt: &runtime.Interrupt{Node: "y", When: runtime.InterruptBefore}}
	row.Status, row.Error = runtime.StatusInterrupted, ""
	if err := s.Mark(bg, &runtime.Mark{Thread: row, Writes: []runtime.PendingWrite{w2}}); err != nil {
		t.Fatal(err)
	}
	cp, _ := s.Get(bg, "mark", "")
	if len(cp.Pending) != 2 || cp.Pending[0].Node != "x" || cp.Pending[1].Node != "y" {
		t.Fatalf("pending after two marks: %s", js(cp.Pending))
	}
	got, _ = s.Thread(bg, "mark")
	if got.Status != runtime.StatusInterrupted || got.Error != "" {
		t.Fatalf("status after second mark: %s %q", got.Status, got.Error)
	}
	// Wrong head.
	stale := row
	stale.Head = "0000000000000001"
	stale.Status = runtime.StatusDone
	if err := s.Mark(bg, &runtime.Mark{Thread: stale}); !errors.Is(err, runtime.ErrConflict) {
		t.Fatalf("Mark with a stale head: %v, want ErrConflict", err)
	}
	if got, _ := s.Thread(bg, "mark"); got.Status != runtime.StatusInterrupted {
		t.Fatalf("a refused Mark changed the status to %s", got.Status)
	}
	// Unknown thread.
	missing := row
	missing.ID = "missing"
	if err := s.Mark(bg, &runtime.Mark{Thread: missing}); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("Mark of a missing thread: %v, want ErrNotFound", err)
	}
	// A mark with no writes keeps the pending ones.
	row.Status = runtime.StatusDone
	if err := s.Mark(bg, &runtime.Mark{Thread: row}); err != nil {
		t.Fatal(err)
	}
	if cp, _ := s.Get(bg, "mark", ""); len(cp.Pending) != 2 {
		t.Fatalf("Mark without writes dropped pending writes: %s", js(cp.Pending))
	}
}

func testMarkClearWrites(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "clear")
	a := th.commit("", first())
	b := th.commit(a, runtime.Delta{"count": set(1)},
		runtime.PendingWrite{Node: "keep", Kind: runtime.PendingWrites, Result: &runtime.NodeResult{Writes: []runtime.Write{{Field: "count", Value: 5}}}})
	row := th.row(runtime.StatusFailed)
	row.Head = b
	w := runtime.PendingWrite{Node: "z", Kind: runtime.PendingError, Error: "z failed"}
	if err := s.Mark(bg, &runtime.Mark{Thread: row, Writes: []runtime.PendingWrite{w}, ClearWrites: true}); err != nil {
		t.Fatal(err)
	}
	cp, _ := s.Get(bg, "clear", "")
	if len(cp.Pending) != 1 || cp.Pending[0].Node != "z" {
		t.Fatalf("pending after ClearWrites: %s, want only z", js(cp.Pending))
	}
	row.Status = runtime.StatusDone
	if err := s.Mark(bg, &runtime.Mark{Thread: row, ClearWrites: true}); err != nil {
		t.Fatal(err)
	}
	cp, _ = s.Get(bg, "clear", "")
	if len(cp.Pending) != 0 {
		t.Fatalf("pending after ClearWrites without writes: %s", js(cp.Pending))
	}
	// Sequence numbers restart cleanly after a clear.
	row.Status = runtime.StatusInterrupted
	ws := []runtime.PendingWrite{{Node: "p", Kind: runtime.PendingError, Error: "1"}, {Node: "q", Kind: runtime.PendingError, Error: "2"}}
	if err := s.Mark(bg, &runtime.Mark{Thread: row, Writes: ws[:1]}); err != nil {
		t.Fatal(err)
	}
	if err := s.Mark(bg, &runtime.Mark{Thread: row, Writes: ws[1:]}); err != nil {
		t.Fatal(err)
	}
	cp, _ = s.Get(bg, "clear", "")
	if !equalJSON(cp.Pending, ws) {
		t.Fatalf("pending %s, want %s", js(cp.Pending), js(ws))
	}
	// The parent's writes were never touched.
	if p, _ := s.Get(bg, "clear", a); len(p.Pending) != 0 {
		t.Fatalf("parent has pending writes %s", js(p.Pending))
	}
}

func testPendingRoundTrip(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "pending")
	a := th.commit("", first())
	ws := []runtime.PendingWrite{
		{Node: "done", Kind: runtime.PendingWrites, Result: &runtime.NodeResult{
			Writes: []runtime.Write{
				{Field: "count", Value: 41},
				{Field: "ratio", Value: 0.25},
				{Field: "messages", Value: []any{msg("x", "y"), map[string]any{"id": "z", "remove": true}}},
				{Field: "meta", Value: map[string]any{"deep": map[string]any{"list": []any{1, "two", nil, false}}}},
			},
			Goto:    []string{"next"},
			Usage:   []runtime.Usage{{Node: "done", Model: "m", InputTokens: 1, OutputTokens: 2, CostUSD: 0.001}},
			Records: []any{map[string]any{"reply": "r"}},
		}},
		{Node: "ask", Kind: runtime.PendingInterrupt, Interrupt: &runtime.Interrupt{Node: "ask", When: runtime.InterruptNode, Payload: map[string]any{"question": "ok?", "n": 3}}},
		{Node: "bad", Kind: runtime.PendingError, Error: "step 3: node \"bad\": boom"},
	}
	row := th.row(runtime.StatusInterrupted)
	row.Head = a
	if err := s.Mark(bg, &runtime.Mark{Thread: row, Writes: ws, ClearWrites: true}); err != nil {
		t.Fatal(err)
	}
	cp, err := s.Get(bg, "pending", "")
	if err != nil {
		t.Fatal(err)
	}
	if !equalJSON(cp.Pending, ws) {
		t.Fatalf("pending writes\n got  %s\n want %s", js(cp.Pending), js(ws))
	}
	// Interrupt is not serialised by NodeResult (json:"-"), but the write's
	// own Interrupt must be kept.
	if cp.Pending[1].Interrupt == nil || cp.Pending[1].Interrupt.When != runtime.InterruptNode {
		t.Fatalf("interrupt lost: %s", js(cp.Pending[1]))
	}
	for i, w := range cp.Pending[0].Result.Writes {
		checkPlain(t, fmt.Sprintf("pending write %d", i), w.Value)
	}
	checkPlain(t, "interrupt payload", cp.Pending[1].Interrupt.Payload)

	// Writes given with a Commit land on the new checkpoint.
	b := th.commit(a, runtime.Delta{"count": set(1)}, ws[0], ws[1])
	cp, _ = s.Get(bg, "pending", b)
	if !equalJSON(cp.Pending, ws[:2]) {
		t.Fatalf("commit writes\n got  %s\n want %s", js(cp.Pending), js(ws[:2]))
	}
	if old, _ := s.Get(bg, "pending", a); !equalJSON(old.Pending, ws) {
		t.Fatalf("parent's writes changed: %s", js(old.Pending))
	}
}
