package builtin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Defaults of the tool settings.
const (
	defaultToolTimeout = 30 * time.Second
	defaultMaxOutput   = 64 << 10
)

// toolOutcome is what one tool call gave the model.
type toolOutcome struct {
	content string
	isErr   bool
}

// runTools executes a tools node: it runs the tool calls of the last
// assistant message that have no result yet (in parallel unless parallel:
// false) and appends one tool message per call. Whatever goes wrong with a
// call (unknown tool, invalid arguments, timeout, tool failure) becomes an
// error result the model can react to; only a cancelled run fails the node.
func (e *engine) runTools(ctx context.Context, call *runtime.NodeCall) (*runtime.NodeResult, error) {
	node, ok := spec.ConfigOf[*spec.ToolsConfig](call.Node)
	if !ok {
		return nil, fmt.Errorf("node %q of kind %s has a %T config", call.Node.Name, call.Node.Kind, call.Node.Config)
	}
	emit := emitter(call)
	msgs := history(call.State, node.Messages)
	last := -1
	for i := len(msgs) - 1; i >= 0; i-- {
		if str(msgs[i], "role") == "assistant" {
			last = i
			break
		}
	}
	if last < 0 || len(calls(msgs[last])) == 0 {
		emit(runtime.Event{Kind: runtime.EvMessage, Message: "no tool calls to run: the last assistant message has none"})
		return &runtime.NodeResult{}, nil
	}
	done := map[string]bool{}
	for _, m := range msgs[last+1:] {
		if str(m, "role") == "tool" {
			done[str(m, "tool_call_id")] = true
		}
	}
	var todo []map[string]any
	for _, c := range calls(msgs[last]) {
		if !done[str(c, "id")] {
			todo = append(todo, c)
		}
	}
	var recorded map[string]record
	if len(call.Replay) > 0 {
		recs, err := decodeRecords(call.Replay)
		if err != nil {
			return nil, err
		}
		recorded = map[string]record{}
		for _, r := range recs {
			if r.Kind == recordTool {
				recorded[r.CallID] = r
			}
		}
	}
	// The functions of mcp sources come from their servers, except when
	// every call is answered by a script or a record. A server that cannot
	// be reached fails the calls, not the node.
	bound := map[string]*spec.Tool{}
	var unreachable error
	for _, ref := range node.Tools {
		fns, err := e.functions(ctx, call.Graph, []spec.NameRef{ref}, e.script != nil || recorded != nil)
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		if err != nil {
			unreachable = errors.Join(unreachable, err)
			continue
		}
		for _, fn := range fns {
			bound[fn.Name] = fn
		}
	}
	if unreachable != nil {
		emit(runtime.Event{Kind: runtime.EvMessage, Message: "tools unavailable: " + unreachable.Error()})
	}

	outs := make([]toolOutcome, len(todo))
	errs := make([]error, len(todo))
	one := func(i int) {
		outs[i], errs[i] = e.runTool(ctx, call, bound, unreachable, todo[i], recorded)
	}
	if node.Parallel && len(todo) > 1 {
		var wg sync.WaitGroup
		for i := range todo {
			wg.Add(1)
			go func() {
				defer wg.Done()
				one(i)
			}()
		}
		wg.Wait()
	} else {
		for i := range todo {
			one(i)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	res := &runtime.NodeResult{}
	tms := make([]any, len(todo))
	for i, c := range todo {
		id, name := str(c, "id"), str(c, "name")
		tms[i] = map[string]any{"role": "tool", "tool_call_id": id, "name": name, "content": outs[i].content}
		res.Records = append(res.Records, record{Kind: recordTool, CallID: id, Tool: name, Content: outs[i].content, Error: outs[i].isErr})
	}
	res.Writes = []runtime.Write{{Field: node.Messages, Value: tms}}
	return res, nil
}

// runTool runs one call. Its error is only for what fails the whole node: a
// cancelled run, or a replay that has no recorded result for the call.
func (e *engine) runTool(ctx context.Context, call *runtime.NodeCall, bound map[string]*spec.Tool, unreachable error, c map[string]any, recorded map[string]record) (out toolOutcome, err error) {
	id, name, args := str(c, "id"), str(c, "name"), str(c, "arguments")
	emit := emitter(call)
	if obs := e.opts.Observer; obs != nil {
		tc := &ToolCallInfo{Thread: call.Thread, Node: call.Node.Name, Step: call.Step, Name: name, ID: id, Tool: bound[name]}
		if obs.CaptureContent() {
			tc.Input = args
		}
		ctx = obs.StartToolCall(ctx, tc)
		defer func() {
			tc.IsError = out.isErr
			if obs.CaptureContent() {
				tc.Output = out.content
			}
			obs.EndToolCall(ctx, tc, err)
		}()
	}
	defer func() {
		if err == nil {
			note := "→"
			if out.isErr {
				note = "→ error:"
			}
			emit(runtime.Event{Kind: runtime.EvMessage, Message: fmt.Sprintf("tool %s(%s) %s %s", name, clip(args, 80), note, clip(out.content, 120))})
		}
	}()
	if recorded != nil {
		r, ok := recorded[id]
		if !ok {
			return out, fmt.Errorf("replay: tool call %q (%s): %w", id, name, runtime.ErrNotRecorded)
		}
		return toolOutcome{content: r.Content, isErr: r.Error}, nil
	}
	fail := func(format string, a ...any) (toolOutcome, error) {
		return toolOutcome{content: errorContent(fmt.Sprintf(format, a...)), isErr: true}, nil
	}
	defer func() {
		if p := recover(); p != nil {
			out, err = fail("tool %q crashed: %v", name, p)
		}
	}()
	t := bound[name]
	if t == nil && unreachable != nil {
		return fail("tool %q is not available: %v", name, unreachable)
	}
	if t == nil {
		names := spec.SortedKeys(bound)
		if len(names) == 0 {
			return fail("unknown tool %q: this node has no tools", name)
		}
		return fail("unknown tool %q; available tools: %s", name, strings.Join(names, ", "))
	}
	if strings.TrimSpace(args) == "" {
		args = "{}"
	}
	v, perr := parseJSON(args)
	if perr != nil {
		return fail("arguments of %q are not valid JSON: %v", name, perr)
	}
	argv, ok := v.(map[string]any)
	if !ok {
		return fail("arguments of %q must be a JSON object, got %s", name, spec.TypeName(v))
	}
	sc, serr := e.schema(t, t.Parameters)
	if serr != nil {
		return fail("tool %q has an invalid parameters schema: %v", name, serr)
	}
	if verr := sc.Validate(argv); verr != nil {
		return fail("arguments of %q do not match its parameters: %s", name, validationText(verr))
	}
	if e.script != nil {
		content, ok, err := e.script.tool(t)
		if err != nil {
			return out, err
		}
		if ok {
			return toolOutcome{content: content}, nil
		}
	}
	timeout := durOr(t.Timeout, defaultToolTimeout)
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	content, terr := e.callTool(tctx, call.Graph, t, argv, args)
	if ctx.Err() != nil {
		return out, context.Cause(ctx)
	}
	if errors.Is(tctx.Err(), context.DeadlineExceeded) {
		return fail("tool %q timed out after %s", name, timeout)
	}
	if terr != nil {
		return fail("tool %q failed: %v", name, terr)
	}
	return toolOutcome{content: content}, nil
}

// callTool runs tool t by kind; its result and error have the secrets the
// tool was given redacted.
func (e *engine) callTool(ctx context.Context, g *spec.Graph, t *spec.Tool, args map[string]any, raw string) (string, error) {
	red := newRedactor(e.toolSecrets(t)...)
	out, err := e.runKind(ctx, g, t, args, raw)
	return red.String(out), red.Error(err)
}

// toolSecrets lists what tool t is given that must not come back: the
// values of an http tool's headers_env (and the token of a
// "Bearer <token>"-style value). An exec tool gets only the allowlisted
// environment ([execEnv]) and an expr tool nothing.
func (e *engine) toolSecrets(t *spec.Tool) []string {
	var out []string
	if t.Kind == "http" || t.Kind == "mcp" {
		for _, name := range t.HeadersEnv {
			v := e.opts.Getenv(name)
			out = append(out, v)
			if _, tok, ok := strings.Cut(v, " "); ok {
				out = append(out, strings.TrimSpace(tok))
			}
		}
	}
	return out
}

// runKind runs tool t with the environment's runner of its kind.
func (e *engine) runKind(ctx context.Context, g *spec.Graph, t *spec.Tool, args map[string]any, raw string) (string, error) {
	run := e.env.toolKinds[t.Kind]
	if run == nil {
		return "", fmt.Errorf("unknown tool kind %q", t.Kind)
	}
	return run(ctx, e, g, t, args, raw)
}

// toolRunner runs a tool of one kind: args are the checked arguments, raw
// their JSON text.
type toolRunner func(ctx context.Context, e *engine, g *spec.Graph, t *spec.Tool, args map[string]any, raw string) (string, error)

// builtinToolKinds are the tool kinds of the language, and the runner of
// the tools registered in Go.
func builtinToolKinds() map[string]toolRunner {
	return map[string]toolRunner{
		"expr": func(_ context.Context, _ *engine, _ *spec.Graph, t *spec.Tool, args map[string]any, _ string) (string, error) {
			v, err := t.Expr.Eval(map[string]any{"args": args})
			if err != nil {
				return "", err
			}
			return text(v), nil
		},
		"http": func(ctx context.Context, e *engine, _ *spec.Graph, t *spec.Tool, args map[string]any, _ string) (string, error) {
			return e.httpTool(ctx, t, args)
		},
		"exec": func(ctx context.Context, e *engine, g *spec.Graph, t *spec.Tool, _ map[string]any, raw string) (string, error) {
			return e.execTool(ctx, g, t, raw)
		},
		"mcp": func(ctx context.Context, e *engine, g *spec.Graph, t *spec.Tool, args map[string]any, _ string) (string, error) {
			return e.mcpCall(ctx, g, t, args)
		},
		spec.ToolKindGo: func(ctx context.Context, e *engine, _ *spec.Graph, t *spec.Tool, args map[string]any, _ string) (string, error) {
			fn := e.env.tools[t.Name]
			if fn == nil {
				return "", fmt.Errorf("Go tool %q is not registered in this environment", t.Name)
			}
			v, err := fn(ctx, args)
			if err != nil {
				return "", err
			}
			return text(v), nil
		},
	}
}

// jsonText encodes v as compact JSON without HTML escaping.
func jsonText(v any) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// clip shortens s for progress messages.
func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
