package runtime_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden trace files in testdata")

// renderTrace renders events one per line: kind, step, node, next nodes,
// writes, interrupt, error. Node events of one superstep come from
// concurrent goroutines in any order; they are sorted by node name (start
// before end) so the trace is deterministic. Checkpoint ids, times and
// durations are left out.
func renderTrace(events []runtime.Event) string {
	var b strings.Builder
	var batch []runtime.Event
	flush := func() {
		sort.SliceStable(batch, func(i, j int) bool {
			if batch[i].Node != batch[j].Node {
				return batch[i].Node < batch[j].Node
			}
			return nodeEventRank(batch[i].Kind) < nodeEventRank(batch[j].Kind)
		})
		for _, e := range batch {
			writeEvent(&b, e)
		}
		batch = nil
	}
	for _, e := range events {
		if nodeEventRank(e.Kind) >= 0 {
			batch = append(batch, e)
			continue
		}
		flush()
		writeEvent(&b, e)
	}
	flush()
	return b.String()
}

func nodeEventRank(k runtime.EventKind) int {
	switch k {
	case runtime.EvNodeStart:
		return 0
	case runtime.EvMessage, runtime.EvToken:
		return 1
	case runtime.EvNodeEnd, runtime.EvNodeError:
		return 2
	}
	return -1
}

func writeEvent(b *strings.Builder, e runtime.Event) {
	fmt.Fprintf(b, "%-11s step=%d", e.Kind, e.Step)
	if e.Node != "" {
		fmt.Fprintf(b, " node=%s", e.Node)
	}
	switch e.Kind {
	case runtime.EvRunStart, runtime.EvStepStart, runtime.EvCheckpoint:
		fmt.Fprintf(b, " next=[%s]", strings.Join(e.Next, " "))
	}
	for _, wr := range e.Writes {
		v, _ := json.Marshal(wr.Value)
		fmt.Fprintf(b, " %s<-%s", wr.Field, v)
	}
	if e.Interrupt != nil {
		p, _ := json.Marshal(e.Interrupt.Payload)
		fmt.Fprintf(b, " interrupt=%s payload=%s", e.Interrupt.When, p)
	}
	if e.Error != "" {
		fmt.Fprintf(b, " error=%q", e.Error)
	}
	if e.Message != "" {
		fmt.Fprintf(b, " message=%q", e.Message)
	}
	if e.Kind == runtime.EvDone {
		v, _ := json.Marshal(e.Values)
		fmt.Fprintf(b, " values=%s", v)
	}
	b.WriteByte('\n')
}

// The event trace of whole runs, against golden files in testdata
// (rewrite them with go test ./runtime -run TestGoldenTrace -update).
func TestGoldenTrace(t *testing.T) {
	runToEnd := func(t *testing.T, h *harness) {
		mustDone(t)(h.Run(bg, runtime.RunOptions{Thread: "t"}))
	}
	tests := []struct {
		name  string
		graph string
		drive func(t *testing.T, h *harness)
	}{
		{name: "loop", graph: "../graphs/loop.yaml", drive: runToEnd},
		{name: "fanout", graph: "testdata/fanout.yaml", drive: runToEnd},
		{name: "interrupt", graph: "testdata/ask.yaml", drive: func(t *testing.T, h *harness) {
			res, err := h.Run(bg, runtime.RunOptions{Thread: "t"})
			wantPaused(t, res, err, runtime.Interrupt{Node: "ask", When: runtime.InterruptNode, Payload: map[string]any{"question": "ok?", "draft": "hello"}})
			mustDone(t)(h.Resume(bg, runtime.ResumeOptions{Thread: "t", Value: map[string]any{"approved": true}, HasValue: true}))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := os.ReadFile(tt.graph)
			if err != nil {
				t.Fatal(err)
			}
			// Several runs: the trace must not depend on scheduling.
			var first string
			for i := range 10 {
				h := newHarness(t, string(src), nil)
				tt.drive(t, h)
				got := renderTrace(h.rec.all())
				if i == 0 {
					first = got
				} else if got != first {
					t.Fatalf("run %d traced differently:\n%s\nfirst run:\n%s", i, got, first)
				}
			}
			golden := filepath.Join("testdata", tt.name+".trace")
			if *updateGolden {
				if err := os.WriteFile(golden, []byte(first), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (create it with -update)", err)
			}
			if first != string(want) {
				t.Errorf("trace differs from %s (rewrite with -update if intended):\n--- got\n%s--- want\n%s", golden, first, want)
			}
		})
	}
}
