package checkpointtest

import (
	"encoding/json"
	"testing"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// mutate changes every part of cp a caller could reach.
func mutate(cp *runtime.Checkpoint) {
	for k, v := range cp.Values {
		switch x := v.(type) {
		case []any:
			if len(x) > 0 {
				if m, ok := x[0].(map[string]any); ok {
					m["content"] = "MUTATED"
				}
				x[0] = "MUTATED"
			}
		case map[string]any:
			x["MUTATED"] = true
		}
		cp.Values[k+"_new"] = 1
	}
	if cp.Values != nil {
		cp.Values["count"] = 12345
	}
	for k, op := range cp.Delta {
		if l, ok := op.Value.([]any); ok && len(l) > 0 {
			if m, ok := l[0].(map[string]any); ok {
				m["content"] = "MUTATED"
			}
			l[0] = "MUTATED"
		}
		if m, ok := op.Value.(map[string]any); ok {
			m["MUTATED"] = true
		}
		cp.Delta[k] = set("MUTATED")
	}
	if cp.Delta != nil {
		cp.Delta["extra"] = set(1)
	}
	if len(cp.Next) > 0 {
		cp.Next[0] = "MUTATED"
	}
	for k, v := range cp.Waiting {
		if len(v) > 0 {
			v[0] = "MUTATED"
		}
		cp.Waiting[k+"x"] = nil
	}
	for k, v := range cp.Metadata.Writes {
		if len(v) > 0 {
			v[0] = "MUTATED"
		}
		cp.Metadata.Writes[k+"x"] = nil
	}
	if len(cp.Metadata.Usage) > 0 {
		cp.Metadata.Usage[0].Model = "MUTATED"
	}
	for k, v := range cp.Metadata.Records {
		if len(v) > 0 {
			if m, ok := v[0].(map[string]any); ok {
				m["reply"] = "MUTATED"
			}
		}
		cp.Metadata.Records[k+"x"] = nil
	}
	for i := range cp.Pending {
		p := &cp.Pending[i]
		if p.Result != nil {
			for j := range p.Result.Writes {
				if m, ok := p.Result.Writes[j].Value.(map[string]any); ok {
					m["MUTATED"] = true
				}
				p.Result.Writes[j].Field = "MUTATED"
			}
			if len(p.Result.Goto) > 0 {
				p.Result.Goto[0] = "MUTATED"
			}
		}
		if p.Interrupt != nil {
			if m, ok := p.Interrupt.Payload.(map[string]any); ok {
				m["MUTATED"] = true
			}
			p.Interrupt.Node = "MUTATED"
		}
		p.Node = "MUTATED"
	}
}

func richThread(t *testing.T, s runtime.Saver, id string) (*thread, []runtime.PendingWrite) {
	th := newThread(t, s, id)
	a := th.commit("", first())
	b := th.commit(a, runtime.Delta{
		"messages": {Kind: runtime.OpMessages, Value: []any{msg("m1", "hello")}},
		"log":      {Kind: runtime.OpAppend, Value: []any{map[string]any{"k": "v"}}},
		"meta":     {Kind: runtime.OpMerge, Value: map[string]any{"b": map[string]any{"c": 1}}},
	})
	ws := []runtime.PendingWrite{
		{Node: "w", Kind: runtime.PendingWrites, Result: &runtime.NodeResult{Writes: []runtime.Write{{Field: "meta", Value: map[string]any{"x": 1}}}, Goto: []string{"g"}}},
		{Node: "i", Kind: runtime.PendingInterrupt, Interrupt: &runtime.Interrupt{Node: "i", When: runtime.InterruptNode, Payload: map[string]any{"q": "?"}}},
	}
	row := th.row(runtime.StatusInterrupted)
	row.Head = b
	if err := s.Mark(bg, &runtime.Mark{Thread: row, Writes: ws}); err != nil {
		t.Fatal(err)
	}
	return th, ws
}

func testDeepCopy(t *testing.T, s runtime.Saver) {
	th, ws := richThread(t, s, "copy")
	for i := 0; i < 2; i++ { // twice: a saver may cache what it returned
		got, err := s.Get(bg, "copy", "")
		if err != nil {
			t.Fatal(err)
		}
		mutate(got)
		list, _ := s.List(bg, "copy", 0)
		for _, cp := range list {
			mutate(cp)
		}
		row, _ := s.Thread(bg, "copy")
		row.Config.InterruptBefore[0] = "MUTATED"
		rows, _ := s.Threads(bg)
		rows[0].Config.InterruptBefore[0] = "MUTATED"
	}
	th.check()
	got, _ := s.Get(bg, "copy", "")
	if !equalJSON(got.Pending, ws) {
		t.Fatalf("pending writes changed through a returned checkpoint:\n got  %s\n want %s", js(got.Pending), js(ws))
	}
	for _, cp := range mustList(t, s, "copy") {
		checkMeta(t, "List", cp, th.cps[cp.ID])
	}
	row, _ := s.Thread(bg, "copy")
	if row.Config.InterruptBefore[0] != "b" {
		t.Fatalf("thread config changed through a returned row: %v", row.Config)
	}
}

// testInputNotRetained mutates what the caller passed to Commit and Mark
// after they returned.
func testInputNotRetained(t *testing.T, s runtime.Saver) {
	th := newThread(t, s, "input")
	a := th.commit("", first())
	d := runtime.Delta{"messages": {Kind: runtime.OpMessages, Value: []any{msg("m1", "hello")}}, "meta": {Kind: runtime.OpMerge, Value: map[string]any{"z": 1}}}
	values := spec.DeepCopy(th.want[a]).(map[string]any)
	runtime.ApplyDelta(values, d)
	now := th.now()
	cp := &runtime.Checkpoint{
		Thread: "input", ParentID: a, Step: 1, Values: values, Delta: d,
		Next: []string{"n"}, Waiting: map[string][]string{"j": {"x"}},
		Metadata: runtime.Metadata{Source: runtime.SourceLoop, Writes: map[string][]string{"a": {"messages"}}, Time: now,
			Usage: []runtime.Usage{{Node: "a", Model: "m"}}, Records: map[string][]any{"a": {map[string]any{"reply": "r"}}}},
		ID: th.ids.Next(now, a),
	}
	ws := []runtime.PendingWrite{{Node: "w", Kind: runtime.PendingWrites, Result: &runtime.NodeResult{Writes: []runtime.Write{{Field: "meta", Value: map[string]any{"x": 1}}}, Goto: []string{"g"}}}}
	row := th.row(runtime.StatusRunning)
	if err := s.Commit(bg, &runtime.Commit{Checkpoint: cp, ExpectHead: a, Thread: row, Writes: ws}); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(cp)
	wantWS, _ := json.Marshal(ws)
	cp.Pending = ws
	mutate(cp)
	row.Config.InterruptBefore[0] = "MUTATED"
	got, err := s.Get(bg, "input", cp.ID)
	if err != nil {
		t.Fatal(err)
	}
	pending := got.Pending
	got.Pending = nil
	if g, _ := json.Marshal(got); !equalJSON(json.RawMessage(g), json.RawMessage(want)) {
		t.Fatalf("stored checkpoint changed with the caller's copy:\n got  %s\n want %s", g, want)
	}
	if !equalJSON(pending, json.RawMessage(wantWS)) {
		t.Fatalf("stored writes changed with the caller's copy:\n got  %s\n want %s", js(pending), wantWS)
	}
	if r, _ := s.Thread(bg, "input"); r.Config.InterruptBefore[0] != "b" {
		t.Fatalf("stored thread config changed with the caller's copy: %v", r.Config)
	}

	// Mark's writes too.
	mw := []runtime.PendingWrite{{Node: "i", Kind: runtime.PendingInterrupt, Interrupt: &runtime.Interrupt{Node: "i", When: runtime.InterruptNode, Payload: map[string]any{"q": "?"}}}}
	wantMW, _ := json.Marshal(mw)
	mrow := th.row(runtime.StatusInterrupted)
	mrow.Head = cp.ID
	if err := s.Mark(bg, &runtime.Mark{Thread: mrow, Writes: mw, ClearWrites: true}); err != nil {
		t.Fatal(err)
	}
	mw[0].Interrupt.Payload.(map[string]any)["q"] = "MUTATED"
	mw[0].Node = "MUTATED"
	got, _ = s.Get(bg, "input", "")
	if !equalJSON(got.Pending, json.RawMessage(wantMW)) {
		t.Fatalf("stored mark writes changed with the caller's copy:\n got  %s\n want %s", js(got.Pending), wantMW)
	}
}
