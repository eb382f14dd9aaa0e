package builtin

import (
	"context"
	"errors"
	"fmt"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// runLLM executes an llm node: it builds the request from the node's
// messages field (missing tool results filled in, trimmed), the prompt
// template as a new user message (unless the node is answering tool
// results, continuing its exchange) and the system prompt, binds the node's
// tools, calls the model (or reuses recorded replies on replay), validates
// structured output, and writes the reply to the messages field, store and
// output fields.
func (e *engine) runLLM(ctx context.Context, call *runtime.NodeCall) (*runtime.NodeResult, error) {
	node, g := call.Node, call.Graph
	cfg, ok := spec.ConfigOf[*spec.LLMConfig](node)
	if !ok {
		return nil, fmt.Errorf("node %q of kind %s has a %T config", node.Name, node.Kind, node.Config)
	}
	md := g.Models[cfg.Model.Name]
	if md == nil {
		return nil, fmt.Errorf("model %q is not declared", cfg.Model.Name)
	}
	env := map[string]any{"state": call.State}
	res := &runtime.NodeResult{}
	cur := history(call.State, cfg.Messages)
	turn := 0
	for _, m := range cur {
		if str(m, "role") == "assistant" && str(m, "name") == node.Name {
			turn++
		}
	}
	msgs, filled := fillMissing(cur)
	if filled > 0 {
		emitter(call)(runtime.Event{Kind: runtime.EvMessage, Message: fmt.Sprintf("filled %d missing tool result(s) with errors so the conversation stays valid", filled)})
	}
	// The prompt starts an exchange; after tool results the node continues
	// the exchange instead of asking again.
	if cfg.Prompt != nil && (len(msgs) == 0 || str(msgs[len(msgs)-1], "role") != "tool") {
		prompt, err := cfg.Prompt.Render(env)
		if err != nil {
			return nil, fmt.Errorf("prompt: %w", err)
		}
		msgs = append(msgs, map[string]any{"role": "user", "content": prompt})
	}
	msgs = trimMessages(msgs, cfg.TrimKeepLast, cfg.TrimSystem)

	req := &chatRequest{Thread: call.Thread, Node: node.Name, Step: call.Step, Turn: turn, Schema: cfg.OutputSchema, Strict: cfg.OutputStrict}
	if cfg.System != nil {
		system, err := cfg.System.Render(env)
		if err != nil {
			return nil, fmt.Errorf("system: %w", err)
		}
		req.Messages = append(req.Messages, map[string]any{"role": "system", "content": system})
	}
	req.Messages = append(req.Messages, msgs...)
	tools, err := e.functions(ctx, g, cfg.Tools, e.script != nil || len(call.Replay) > 0)
	if err != nil {
		return nil, err
	}
	req.Tools = tools

	sp, err := newSpender(e, call, md, res)
	if err != nil {
		return nil, err
	}
	var reply *chatReply
	var structured any
	tries := max(cfg.OutputTries, 1)
	for attempt := 0; ; attempt++ {
		req.Turn = turn + attempt
		reply, err = sp.complete(ctx, req)
		if err != nil {
			// Calls already made still count against the thread's budgets.
			return spent(res), err
		}
		if cfg.OutputSchema == nil || len(reply.ToolCalls) > 0 {
			break
		}
		v, verr := e.checkStructured(cfg, reply.Content)
		if verr == nil {
			structured = v
			break
		}
		if attempt+1 >= tries {
			return spent(res), fmt.Errorf("structured output: reply %d of %d does not match output.schema: %v", attempt+1, tries, verr)
		}
		emitter(call)(runtime.Event{Kind: runtime.EvMessage, Message: fmt.Sprintf("reply does not match output.schema (%v); asking again (%d of %d)", verr, attempt+2, tries)})
		req.Messages = append(req.Messages,
			assistantMessage(node.Name, reply),
			map[string]any{"role": "user", "content": "Your reply does not match the required JSON Schema: " + verr.Error() + "\nReply again with only the corrected JSON value."},
		)
	}

	if cfg.Messages != "" {
		want := append(msgs, assistantMessage(node.Name, reply))
		for _, ws := range messageWrites(cur, want) {
			res.Writes = append(res.Writes, runtime.Write{Field: cfg.Messages, Value: ws})
		}
	}
	if cfg.Store != "" {
		res.Writes = append(res.Writes, runtime.Write{Field: cfg.Store, Value: reply.Content})
	}
	if cfg.OutputSchema != nil && len(reply.ToolCalls) == 0 {
		fenv := map[string]any{"state": call.State, "reply": structured}
		for _, a := range cfg.OutputFields {
			v, err := a.Expr.Eval(fenv)
			if err != nil {
				return spent(res), fmt.Errorf("output.fields.%s: %w", a.Field, err)
			}
			res.Writes = append(res.Writes, runtime.Write{Field: a.Field, Value: v})
		}
	}
	return res, nil
}

// checkStructured parses a reply as JSON and validates it against the
// node's output schema.
func (e *engine) checkStructured(cfg *spec.LLMConfig, content string) (any, error) {
	sc, err := e.schema(cfg, cfg.OutputSchema)
	if err != nil {
		return nil, fmt.Errorf("output.schema: %w", err)
	}
	v, err := parseJSON(stripFence(content))
	if err != nil {
		return nil, fmt.Errorf("the reply is not JSON: %v", err)
	}
	if err := sc.Validate(v); err != nil {
		return nil, errors.New(validationText(err))
	}
	return v, nil
}

// text renders a prompt value: strings as they are, anything else as JSON.
func text(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	s, err := jsonText(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return s
}

// spender makes a node's model calls: it reuses recorded replies on
// replay, reserves each attempt of a real call on the step's ledger (and
// so on every parent run's) before sending it (see [meter]), and reports
// usage and records into the node's result.
type spender struct {
	e      *engine
	call   *runtime.NodeCall
	model  *spec.Model
	res    *runtime.NodeResult
	replay []record
	reuse  bool
}

func newSpender(e *engine, call *runtime.NodeCall, md *spec.Model, res *runtime.NodeResult) (*spender, error) {
	sp := &spender{e: e, call: call, model: md, res: res}
	if len(call.Replay) > 0 {
		recs, err := decodeRecords(call.Replay)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			if r.Kind == recordModel && r.Reply != nil {
				sp.replay = append(sp.replay, r)
			}
		}
		sp.reuse = true
	}
	return sp, nil
}

func (sp *spender) complete(ctx context.Context, req *chatRequest) (*chatReply, error) {
	emit := emitter(sp.call)
	if sp.reuse {
		if len(sp.replay) == 0 {
			return nil, fmt.Errorf("replay: node %q made more model calls than the original run recorded: %w", req.Node, runtime.ErrNotRecorded)
		}
		r := sp.replay[0]
		sp.replay = sp.replay[1:]
		sp.res.Records = append(sp.res.Records, r)
		emit(runtime.Event{Kind: runtime.EvMessage, Message: fmt.Sprintf("reusing the recorded reply of model %q", r.Model)})
		if r.Reply.Content != "" {
			emit(runtime.Event{Kind: runtime.EvToken, Token: r.Reply.Content})
		}
		return r.Reply, nil
	}
	// Each attempt (retries and fallbacks included) is reserved and
	// billed on its own; the billed ones count even when the call fails.
	mt := &meter{ledger: sp.call.Ledger, node: req.Node}
	reply, m, err := sp.e.complete(ctx, sp.call.Graph, sp.model, req, mt, emit)
	sp.res.Usage = append(sp.res.Usage, mt.usage...)
	if err != nil {
		return nil, err
	}
	for i := range reply.ToolCalls {
		if reply.ToolCalls[i].ID == "" {
			// Some local servers leave ids out; the tools node needs them.
			reply.ToolCalls[i].ID = fmt.Sprintf("call_%d_%s_%d_%d", req.Step, req.Node, req.Turn, i)
		}
	}
	sp.res.Records = append(sp.res.Records, record{Kind: recordModel, Model: m.Name, Reply: reply})
	return reply, nil
}

// spent returns the usage of a failed node's calls, to return with its
// error: the runner counts it against the thread's budgets.
func spent(res *runtime.NodeResult) *runtime.NodeResult {
	if len(res.Usage) == 0 {
		return nil
	}
	return &runtime.NodeResult{Usage: res.Usage}
}
