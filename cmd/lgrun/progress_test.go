package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// fakeClock is the injected clock of progress.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock           { return &fakeClock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func loadLoop(t *testing.T) *spec.Graph {
	return mustLoad(t, filepath.Join("..", "..", "graphs", "loop.yaml"))
}
func textOpts() *execOpts { return &execOpts{output: outText} }
func nodeStart(step int, n string) runtime.Event {
	return runtime.Event{Kind: runtime.EvNodeStart, Step: step, Node: n}
}

func mustLoad(t *testing.T, path string) *spec.Graph {
	t.Helper()
	g, diags := spec.LoadFile(path, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return g
}

// TestSlowNodeShowsElapsedOnTerminal: on a terminal, a node running for
// more than a second shows a live status line with its elapsed time, which
// is erased before the next progress line.
func TestSlowNodeShowsElapsedOnTerminal(t *testing.T) {
	clock := newFakeClock()
	var errb bytes.Buffer
	io := &IO{Out: &bytes.Buffer{}, Err: &errb, ErrTTY: true, Now: clock.now}
	p := newProgress(io, textOpts(), loadLoop(t))
	p.event(nodeStart(1, "increment"))
	clock.add(900 * time.Millisecond)
	p.refresh()
	if errb.Len() != 0 {
		t.Fatalf("under a second: %q", errb.String())
	}
	clock.add(400 * time.Millisecond)
	p.refresh()
	if got, want := errb.String(), "\r\x1b[K  running increment 1.3s"; got != want {
		t.Fatalf("after 1.3s: %q, want %q", got, want)
	}
	errb.Reset()
	clock.add(2 * time.Second)
	p.refresh()
	if got, want := errb.String(), "\r\x1b[K  running increment 3.3s"; got != want {
		t.Fatalf("after 3.3s: %q, want %q", got, want)
	}
	errb.Reset()
	p.event(runtime.Event{Kind: runtime.EvNodeEnd, Step: 1, Node: "increment", Duration: 3300 * time.Millisecond,
		Writes: []runtime.Write{{Field: "count", Value: 1}}})
	if got := errb.String(); !strings.HasPrefix(got, "\r\x1b[K  step 1   increment        count=1 3.3s\n") {
		t.Fatalf("node end: %q, want the status line erased, then the step line", got)
	}
	errb.Reset()
	clock.add(5 * time.Second)
	p.refresh()
	if errb.Len() != 0 {
		t.Fatalf("nothing runs: %q", errb.String())
	}
}

// TestSlowNodeWithoutTerminal: when stderr is not a terminal there is no
// live line and no elapsed time: one plain "running…" line per slow node.
func TestSlowNodeWithoutTerminal(t *testing.T) {
	clock := newFakeClock()
	var errb bytes.Buffer
	io := &IO{Out: &bytes.Buffer{}, Err: &errb, Now: clock.now}
	p := newProgress(io, textOpts(), loadLoop(t))
	p.event(nodeStart(2, "increment"))
	clock.add(1500 * time.Millisecond)
	p.refresh()
	clock.add(5 * time.Second)
	p.refresh()
	if got, want := errb.String(), "  step 2   increment        running…\n"; got != want {
		t.Fatalf("stderr %q, want %q", got, want)
	}
	if strings.ContainsAny(errb.String(), "\r\x1b") {
		t.Fatalf("control characters without a terminal: %q", errb.String())
	}
}

// TestQuietAndJSONShowNoProgress: -q and -o json print no running line.
func TestQuietAndJSONShowNoProgress(t *testing.T) {
	for _, o := range []*execOpts{{output: outText, quiet: true}, {output: outJSON}} {
		clock := newFakeClock()
		var errb bytes.Buffer
		p := newProgress(&IO{Out: &bytes.Buffer{}, Err: &errb, ErrTTY: true, Now: clock.now}, o, loadLoop(t))
		p.event(nodeStart(1, "increment"))
		clock.add(3 * time.Second)
		p.refresh()
		if errb.Len() != 0 {
			t.Errorf("%+v: stderr %q", o, errb.String())
		}
	}
}

// TestLinesFitTheTerminal: with a terminal width, progress lines on stderr
// and the final values on stdout are cut to fit it.
func TestLinesFitTheTerminal(t *testing.T) {
	long := strings.Repeat("x", 300)
	var out, errb bytes.Buffer
	clock := newFakeClock()
	io := &IO{Out: &out, Err: &errb, ErrTTY: true, Width: 50, OutWidth: 48, Now: clock.now}
	g := loadLoop(t)
	p := newProgress(io, textOpts(), g)
	p.event(runtime.Event{Kind: runtime.EvRunStart, Thread: "t"})
	p.event(nodeStart(1, "increment"))
	p.event(runtime.Event{Kind: runtime.EvNodeEnd, Step: 1, Node: "increment", Duration: time.Millisecond,
		Writes: []runtime.Write{{Field: "log", Value: long}, {Field: "count", Value: 1}}})
	p.event(runtime.Event{Kind: runtime.EvNodeError, Step: 2, Node: "finish", Error: long})
	p.event(runtime.Event{Kind: runtime.EvMessage, Step: 2, Node: "finish", Message: long})
	p.event(nodeStart(3, "a-node-with-a-rather-long-name-indeed"))
	p.event(nodeStart(3, "another-node-with-a-long-name"))
	clock.add(2 * time.Second)
	p.refresh()
	res := &runtime.Result{Thread: "t", Status: runtime.StatusDone,
		Checkpoint: &runtime.Checkpoint{ID: "0123456789abcdef", Step: 2, Values: map[string]any{"log": []any{long}, "count": 1}}}
	if err := p.finish(res, nil); err != nil {
		t.Fatal(err)
	}
	check := func(what, s string, width int) {
		for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
			l = strings.NewReplacer("\x1b[K", "", "\r", "").Replace(l)
			if n := runeLen(l); n > width {
				t.Errorf("%s line of %d runes, wider than %d: %q", what, n, width, l)
			}
		}
	}
	check("stderr", errb.String(), 50)
	check("stdout", out.String(), 48) // the done line (47 runes) is never cut: it holds the checkpoint id
	if !strings.Contains(errb.String(), "running a-node-with") || !strings.Contains(errb.String(), "…") {
		t.Errorf("stderr %q: want the cut status line", errb.String())
	}
	if !strings.Contains(out.String(), "  log: [\"xxx") {
		t.Errorf("stdout %q", out.String())
	}
}
