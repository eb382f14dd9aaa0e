package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

func newThreadID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "t-" + hex.EncodeToString(b)
}

func absPath(p string) (string, error) { return filepath.Abs(p) }

// style wraps text in ANSI colour when enabled.
type style struct{ on bool }

func (s style) c(code, text string) string {
	if !s.on {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}
func (s style) bold(t string) string  { return s.c("1", t) }
func (s style) dim(t string) string   { return s.c("2", t) }
func (s style) red(t string) string   { return s.c("31", t) }
func (s style) green(t string) string { return s.c("32", t) }
func (s style) cyan(t string) string  { return s.c("36", t) }
func (s style) yellow(t string) string {
	return s.c("33", t)
}

// progress renders run events: for humans as progress lines on stderr
// (the final state goes to stdout in finish), or as JSON lines on stdout
// with --stream.
type progress struct {
	io     *IO
	o      *execOpts
	g      *spec.Graph
	st     style // for stdout
	est    style // for stderr
	enc    *json.Encoder
	thread string
	steps  int
	start  time.Time

	// The nodes running now, for the "running" line of slow nodes.
	mu      sync.Mutex
	running map[string]*runningNode
	status  bool          // a live status line is on the terminal
	stop    chan struct{} // closed to end the ticker
	done    chan struct{} // closed when the ticker ended
}

func newProgress(io *IO, o *execOpts, g *spec.Graph) *progress {
	p := &progress{io: io, o: o, g: g, st: style{on: io.Color}, est: style{on: io.ErrColor}, running: map[string]*runningNode{}}
	p.start = p.now()
	if o.stream != "" {
		p.enc = json.NewEncoder(io.Out)
		p.enc.SetEscapeHTML(false)
	}
	return p
}

func (p *progress) event(e runtime.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.Thread != "" {
		p.thread = e.Thread
	}
	if e.Kind == runtime.EvWarning {
		p.clearStatus()
		fmt.Fprintf(p.io.Err, "lgrun: warning: %s\n", e.Message)
		return
	}
	if p.enc != nil {
		p.stream(e)
		return
	}
	if !p.text() {
		return
	}
	w, st := p.io.Err, p.est
	if e.Namespace != "" {
		// Events of subgraph runs: show the node under its subgraph path.
		e.Node = e.Namespace + "/" + e.Node
		if e.Kind == runtime.EvRunStart || e.Kind == runtime.EvCheckpoint {
			return
		}
	}
	key := fmt.Sprint(e.Step, "\x00", e.Node)
	switch e.Kind {
	case runtime.EvNodeStart:
		p.running[key] = &runningNode{step: e.Step, name: e.Node, since: p.now()}
		return
	case runtime.EvNodeEnd, runtime.EvNodeError:
		delete(p.running, key)
	case runtime.EvCheckpoint:
		p.steps++
		return
	}
	p.clearStatus()
	// A progress line: "  step N   node             what happened  time".
	head := fmt.Sprintf("  %s %-16s ", fmt.Sprintf("step %-3d", e.Step), e.Node)
	room := func(tail string) int {
		if p.io.Width <= 0 {
			return 0
		}
		return max(p.io.Width-runeLen(head)-runeLen(tail)-1, 10)
	}
	switch e.Kind {
	case runtime.EvRunStart:
		fmt.Fprintf(w, "%s thread %s %s graph %s\n", st.cyan("▶"), st.bold(e.Thread), st.dim("·"), p.g.Name)
	case runtime.EvNodeEnd:
		dur := formatDur(e.Duration)
		writes := st.yellow("waiting for input")
		if e.Interrupt == nil {
			writes = fitWidth(formatWrites(p.g, e.Writes), room(dur))
		}
		fmt.Fprintf(w, "  %s %-16s %s %s\n", st.dim(fmt.Sprintf("step %-3d", e.Step)), st.bold(e.Node), writes, st.dim(dur))
	case runtime.EvNodeError:
		fmt.Fprintf(w, "  %s %-16s %s\n", st.dim(fmt.Sprintf("step %-3d", e.Step)), st.bold(e.Node), st.red(fitWidth("failed: "+e.Error, room(""))))
	case runtime.EvMessage:
		fmt.Fprintf(w, "  %s %-16s %s\n", st.dim(fmt.Sprintf("step %-3d", e.Step)), e.Node, st.dim(fitWidth(e.Message, room(""))))
	}
}

func (p *progress) stream(e runtime.Event) {
	switch p.o.stream {
	case "values":
		if e.Kind == runtime.EvCheckpoint || e.Kind == runtime.EvRunStart {
			_ = p.enc.Encode(map[string]any{"step": e.Step, "checkpoint": e.Checkpoint, "values": e.Values, "next": e.Next})
		}
	case "updates":
		if e.Kind == runtime.EvNodeEnd {
			_ = p.enc.Encode(map[string]any{"step": e.Step, "node": e.Node, "writes": e.Writes})
		}
	case "messages":
		line := map[string]any{"step": e.Step, "node": e.Node}
		if e.Namespace != "" {
			// Which subgraph run or map item: a reset voids only its tokens.
			line["namespace"] = e.Namespace
		}
		switch e.Kind {
		case runtime.EvToken:
			line["token"] = e.Token
			_ = p.enc.Encode(line)
		case runtime.EvTokenReset:
			// The node's tokens so far are void: a line of its own, so
			// readers drop them instead of gluing attempts together.
			line["reset"], line["message"] = true, e.Message
			_ = p.enc.Encode(line)
		}
	case "debug":
		_ = p.enc.Encode(e)
	}
	switch e.Kind {
	case runtime.EvInterrupt, runtime.EvDone, runtime.EvError:
		if p.o.stream != "debug" {
			_ = p.enc.Encode(e)
		}
	}
}

// finish prints the outcome of a run on stdout and returns the error that
// decides the exit code.
func (p *progress) finish(res *runtime.Result, err error) error {
	p.stopTicker()
	w, st := p.io.Out, p.st
	if res == nil {
		return err
	}
	if p.o.output == outJSON && p.enc == nil {
		ints := res.Interrupts
		if ints == nil {
			ints = []runtime.Interrupt{}
		}
		out := map[string]any{"thread": res.Thread, "status": res.Status, "checkpoint": res.Checkpoint.ID, "step": res.Checkpoint.Step,
			"values": res.Checkpoint.Values, "next": orEmpty(res.Checkpoint.Next), "interrupts": ints, "saved": !p.o.memory}
		if err != nil {
			out["error"] = p.noDB(err).Error()
		}
		_ = writeJSON(p.io, out)
	}
	text := p.o.output == outText && p.enc == nil
	switch res.Status {
	case runtime.StatusDone:
		if text {
			fmt.Fprintf(w, "%s %s in %s %s checkpoint %s\n", st.green("✔"), "done", plural(res.Checkpoint.Step-res.Checkpoint.TurnStep, "step"), st.dim("·"), res.Checkpoint.ID)
			if !p.o.quiet {
				printValues(w, p.g, res.Checkpoint.Values, st, p.io.OutWidth)
			}
		}
		return p.noDB(err)
	case runtime.StatusInterrupted:
		// Always say how to resume: on stdout in text mode, on stderr when
		// stdout carries JSON.
		{
			out, st := w, st
			if !text {
				out, st = p.io.Err, p.est
			}
			for _, in := range res.Interrupts {
				if in.Path != "" {
					// Inside subgraphs: name the innermost node and the path.
					in.Node = in.Path
				}
				switch in.When {
				case runtime.InterruptBefore:
					fmt.Fprintf(out, "%s paused before node %s (step %d)\n", st.yellow("⏸"), st.bold(in.Node), res.Checkpoint.Step)
				case runtime.InterruptAfter:
					fmt.Fprintf(out, "%s paused after node %s (step %d)\n", st.yellow("⏸"), st.bold(in.Node), res.Checkpoint.Step)
				default:
					fmt.Fprintf(out, "%s paused at interrupt node %s (step %d)\n", st.yellow("⏸"), st.bold(in.Node), res.Checkpoint.Step)
				}
				if in.Payload != nil {
					fmt.Fprintf(out, "  payload: %s\n", compactJSON(in.Payload))
				}
			}
			if p.o.memory {
				fmt.Fprintf(out, "  nothing was saved (--no-db): run without --no-db to pause and resume\n")
			} else {
				fmt.Fprintf(out, "  resume with: %s\n", resumeHint(res))
			}
		}
		return pausedError{}
	}
	if p.o.memory {
		return p.noDB(err)
	}
	if err != nil {
		if h := runHint(err, res); h != "" {
			return &hintError{err, h}
		}
	}
	return err
}

// runHint says how to continue a run that stopped with err, on the command
// line; "" when there is nothing to add.
func runHint(err error, res *runtime.Result) string {
	var sl *runtime.StepLimitError
	var se *runtime.StateSizeError
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Sprintf("the state is saved at step %d: resume with `lgrun resume --thread %s`", res.Checkpoint.Step, res.Thread)
	case errors.As(err, &sl):
		return fmt.Sprintf("resume with a higher step limit, e.g. `lgrun resume --thread %s --max-steps %d`", res.Thread, 2*sl.Limit)
	case errors.As(err, &se):
		return fmt.Sprintf("resume with a higher state size limit, e.g. `lgrun resume --thread %s --max-state-size %s`", res.Thread, sizeFlag(2*se.Limit))
	}
	return ""
}

// errorText renders an error for stderr: the library's message (positions
// and steps stated once, see spec.FormatChain), then what to do next on
// the command line. Library errors carry facts in fields (thread, last
// good checkpoint, limit); this is the one place that turns them into
// lgrun commands and flags.
func errorText(err error) string {
	msg := err.Error()
	if errors.As(err, new(*hintError)) {
		return msg // the run's outcome already says how to go on
	}
	if h := cliHint(err); h != "" {
		msg += "; " + h
	}
	return msg
}

// printError writes err to w as errorText renders it, each line (a map's
// failed items give one each) after "lgrun: ".
func printError(w io.Writer, err error) {
	for _, line := range strings.Split(errorText(err), "\n") {
		fmt.Fprintf(w, "lgrun: %s\n", line)
	}
}

// cliHint is the command-line advice for a library error, or "".
func cliHint(err error) string {
	var (
		paused     *runtime.PausedError
		unfinished *runtime.UnfinishedError
		needValue  *runtime.NeedValueError
		done       *runtime.DoneError
		conflict   *runtime.CommitConflictError
		corrupt    *runtime.CorruptError
	)
	switch {
	case errors.As(err, &paused):
		return fmt.Sprintf("continue it with `lgrun resume --thread %s [--value JSON]`, or start over with a new --thread (or `lgrun threads delete %s`)", paused.Thread, paused.Thread)
	case errors.As(err, &unfinished):
		return fmt.Sprintf("resume it with `lgrun resume --thread %s`, or start over with a new --thread", unfinished.Thread)
	case errors.As(err, &needValue):
		return "pass --value JSON (the answer)"
	case errors.Is(err, runtime.ErrValueNotNeeded):
		return "--value answers interrupt nodes only (change the state with --set field=JSON)"
	case errors.As(err, &done):
		return fmt.Sprintf("start a new turn with `lgrun run GRAPH --thread %s --input ...`", done.Thread)
	case errors.As(err, &conflict):
		return fmt.Sprintf("inspect it with `lgrun history --thread %s`", conflict.Thread)
	case errors.As(err, &corrupt) && corrupt.LastGood != "":
		return fmt.Sprintf("continue from it with `lgrun fork --thread %s --checkpoint %s`", corrupt.Thread, corrupt.LastGood)
	case errors.Is(err, checkpoint.ErrSchemaVersion), errors.Is(err, checkpoint.ErrNotCheckpointDB):
		return "use another database with --db"
	case errors.Is(err, runtime.ErrNotRecorded):
		return "replay with --live to call the model and run the tools again"
	}
	return ""
}

// sizeFlag renders n bytes as a --max-state-size value, in the largest
// unit that holds it whole.
func sizeFlag(n int64) string {
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n%u.n == 0 {
			return fmt.Sprintf("%d%s", n/u.n, u.suffix)
		}
	}
	return strconv.FormatInt(n, 10)
}

// hintError adds what to do next to an error's message.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() + "; " + e.hint }
func (e *hintError) Unwrap() error { return e.err }

func resumeHint(res *runtime.Result) string {
	for _, in := range res.Interrupts {
		if in.When == runtime.InterruptNode {
			return fmt.Sprintf("lgrun resume --thread %s --value 'JSON'", res.Thread)
		}
	}
	return fmt.Sprintf("lgrun resume --thread %s", res.Thread)
}

func plural(n int, s string) string {
	if n == 1 {
		return "1 " + s
	}
	return fmt.Sprintf("%d %ss", n, s)
}

func formatDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	}
	return d.Round(10 * time.Millisecond).String()
}

// formatWrites renders a node's writes compactly: "count=3 log+=[...]".
func formatWrites(g *spec.Graph, ws []runtime.Write) string {
	if len(ws) == 0 {
		return "(no writes)"
	}
	parts := make([]string, 0, len(ws))
	for _, w := range ws {
		op := "="
		if f := g.Field(w.Field); f != nil && f.Reducer.Kind != spec.ReduceReplace {
			op = "+="
		}
		parts = append(parts, w.Field+op+truncate(compactJSON(w.Value), 60))
	}
	return strings.Join(parts, " ")
}

func compactJSON(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// printValues prints a state, one field per line, messages as a
// transcript. A field's line is cut at 200 runes, or to fit width when set.
func printValues(w io.Writer, g *spec.Graph, values map[string]any, st style, width int) {
	names := make([]string, 0, len(values))
	if g != nil {
		for _, f := range g.Fields {
			names = append(names, f.Name)
		}
	} else {
		names = spec.SortedKeys(values)
	}
	for _, name := range names {
		v, ok := values[name]
		if !ok {
			continue
		}
		if g != nil {
			if f := g.Field(name); f != nil && f.Type.Kind == spec.KindMessages {
				fmt.Fprintf(w, "  %s:\n", st.bold(name))
				printTranscript(w, v, "    ", st)
				continue
			}
		}
		n := 200
		if width > 0 {
			n = max(min(n, width-runeLen(name)-4), 10)
		}
		fmt.Fprintf(w, "  %s: %s\n", st.bold(name), truncate(compactJSON(v), n))
	}
}

// printTranscript renders a messages list: who said what, tool calls and results.
func printTranscript(w io.Writer, v any, indent string, st style) {
	l, _ := v.([]any)
	if len(l) == 0 {
		fmt.Fprintf(w, "%s(no messages)\n", indent)
	}
	for _, x := range l {
		m, _ := x.(map[string]any)
		role, _ := m["role"].(string)
		content, _ := m["content"].(string)
		label := role
		if name, _ := m["name"].(string); name != "" {
			label += " (" + name + ")"
		}
		if role == "tool" {
			id, _ := m["tool_call_id"].(string)
			label = "tool result"
			if name, _ := m["name"].(string); name != "" {
				label += " " + name
			}
			if id != "" {
				label += " [" + id + "]"
			}
		}
		lines := strings.Split(strings.TrimRight(content, "\n"), "\n")
		if content != "" {
			fmt.Fprintf(w, "%s%s %s\n", indent, st.cyan(label+":"), lines[0])
			for _, l := range lines[1:] {
				fmt.Fprintf(w, "%s  %s\n", indent, l)
			}
		} else if calls, _ := m["tool_calls"].([]any); len(calls) == 0 {
			fmt.Fprintf(w, "%s%s %s\n", indent, st.cyan(label+":"), st.dim("(empty)"))
		}
		calls, _ := m["tool_calls"].([]any)
		for _, c := range calls {
			cm, _ := c.(map[string]any)
			fmt.Fprintf(w, "%s%s %s(%s) [%s]\n", indent, st.cyan(label+" → tool call:"), cm["name"], cm["arguments"], cm["id"])
		}
	}
}

// printDiagnostics renders spec diagnostics with paths relative to cwd.
func printDiagnostics(w io.Writer, diags spec.ErrorList, cwd string) {
	for _, d := range diags {
		fmt.Fprintln(w, relDiag(d, cwd))
	}
}

func relDiag(d *spec.Error, cwd string) string {
	e := *d
	e.Pos.File = relPath(e.Pos.File, cwd)
	return e.Error()
}

func relPath(p, cwd string) string {
	if cwd == "" || !filepath.IsAbs(p) {
		return p
	}
	if r, err := filepath.Rel(cwd, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

// sortedWrites returns "node: f1, f2" lines of a checkpoint's writes.
func sortedWrites(w map[string][]string) string {
	var parts []string
	for _, n := range spec.SortedKeys(w) {
		fs := append([]string(nil), w[n]...)
		sort.Strings(fs)
		parts = append(parts, n+"("+strings.Join(fs, ",")+")")
	}
	return strings.Join(parts, " ")
}

var errNoThread = errors.New("no such thread")
