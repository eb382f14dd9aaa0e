// The "running" line of slow nodes, terminal width, and the wording of
// --no-db outcomes: the parts of run progress beside render.go.

package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// runningNode is a node that started and has not ended.
type runningNode struct {
	step  int
	name  string
	since time.Time
	shown bool // its "running" line was printed (not a terminal)
}

// slowNode is how long a node runs before progress says it is running.
const slowNode = time.Second

func (p *progress) now() time.Time {
	if p.io.Now != nil {
		return p.io.Now()
	}
	return time.Now()
}

// text reports whether progress lines are printed.
func (p *progress) text() bool {
	return p.enc == nil && !p.o.quiet && p.o.output == outText
}

// startTicker refreshes the "running" line until finish: every 100ms on a
// terminal (the elapsed time ticks), every 250ms otherwise.
func (p *progress) startTicker() {
	if !p.text() {
		return
	}
	every := 250 * time.Millisecond
	if p.io.ErrTTY {
		every = 100 * time.Millisecond
	}
	stop, done := make(chan struct{}), make(chan struct{})
	p.stop, p.done = stop, done
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.refresh()
			case <-stop:
				return
			}
		}
	}()
}

// stopTicker ends the ticker (waiting for its last refresh) and clears
// the status line.
func (p *progress) stopTicker() {
	if p.stop != nil {
		close(p.stop)
		<-p.done
		p.stop, p.done = nil, nil
	}
	p.mu.Lock()
	p.clearStatus()
	p.mu.Unlock()
}

// refresh shows the nodes running for longer than slowNode: on a terminal
// as one status line with their elapsed times, rewritten in place;
// otherwise as one plain "running" line per node, once.
func (p *progress) refresh() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	var slow []*runningNode
	for _, k := range spec.SortedKeys(p.running) {
		if rn := p.running[k]; now.Sub(rn.since) >= slowNode {
			slow = append(slow, rn)
		}
	}
	if !p.io.ErrTTY {
		for _, rn := range slow {
			if !rn.shown {
				rn.shown = true
				fmt.Fprintf(p.io.Err, "  %s %-16s %s\n", p.est.dim(fmt.Sprintf("step %-3d", rn.step)), p.est.bold(rn.name), p.est.dim("running…"))
			}
		}
		return
	}
	if len(slow) == 0 {
		p.clearStatus()
		return
	}
	parts := make([]string, 0, len(slow))
	for _, rn := range slow {
		parts = append(parts, fmt.Sprintf("%s %.1fs", rn.name, now.Sub(rn.since).Truncate(100*time.Millisecond).Seconds()))
	}
	line := fitWidth("  running "+strings.Join(parts, ", "), p.io.Width)
	fmt.Fprint(p.io.Err, "\r\x1b[K"+p.est.dim(line))
	p.status = true
}

// clearStatus erases the live status line (p.mu held).
func (p *progress) clearStatus() {
	if p.status {
		fmt.Fprint(p.io.Err, "\r\x1b[K")
		p.status = false
	}
}

// fitWidth cuts s to width runes with an ellipsis; width 0 is no limit.
func fitWidth(s string, width int) string {
	if width <= 0 {
		return s
	}
	return truncate(s, width)
}

func runeLen(s string) int { return len([]rune(s)) }

// noDB rewords the limit errors of a --no-db run, whose messages would say
// that the state is saved and can be resumed: nothing was saved.
func (p *progress) noDB(err error) error {
	if !p.o.memory || err == nil {
		return err
	}
	var sl *runtime.StepLimitError
	var be *runtime.BudgetError
	switch {
	case errors.As(err, &sl):
		return &rewordedError{err, fmt.Sprintf("step limit of %d reached at step %d (nodes still scheduled: %s); nothing was saved (--no-db)", sl.Limit, sl.Step, strings.Join(sl.Nodes, ", "))}
	case errors.As(err, &be):
		return &rewordedError{err, fmt.Sprintf("budget %s reached (limit %s, used %s); nothing was saved (--no-db)", be.What, be.Limit, be.Used)}
	}
	return err
}

// rewordedError shows msg instead of err's message; errors.Is and As still
// see err (so the exit code is err's).
type rewordedError struct {
	err error
	msg string
}

func (e *rewordedError) Error() string { return e.msg }
func (e *rewordedError) Unwrap() error { return e.err }
