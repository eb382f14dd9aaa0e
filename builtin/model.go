package builtin

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// chatClient is one model endpoint: the go-openai client or the mock. The
// llm node talks to both through this interface only.
type chatClient interface {
	// chat sends one request and returns the reply. onToken, when not nil,
	// receives streamed content as it arrives. Errors worth retrying are
	// *callError with Retry set.
	chat(ctx context.Context, req *chatRequest, onToken func(string)) (*chatReply, error)
}

// chatRequest is a provider-neutral chat completion request.
type chatRequest struct {
	Thread string // for the observer
	Node   string
	Step   int
	// Turn is the node's turn in its conversation: the number of replies
	// it already has in its messages field, plus the structured-output
	// attempt. The mock provider picks its scripted reply by it.
	Turn     int
	Messages []map[string]any // canonical messages, system prompt first
	Tools    []*spec.Tool
	Schema   map[string]any // structured output; nil for free text
	Strict   bool
}

// chatReply is a model's answer.
type chatReply struct {
	Content   string     `json:"content,omitempty"`
	ToolCalls []toolCall `json:"tool_calls,omitempty"`
	In        int        `json:"in,omitempty"`
	Out       int        `json:"out,omitempty"`
	// Estimated is set when the server sent no usage and In and Out were
	// estimated from the text.
	Estimated bool `json:"estimated,omitempty"`
	// Finish and RespModel are the server's finish reason and the model
	// it says answered, when it says so (for tracing; not recorded).
	Finish    string `json:"-"`
	RespModel string `json:"-"`
}

// toolCall is one tool call of a reply; Arguments is JSON text as the
// model wrote it (possibly malformed).
type toolCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// callError is a failed model request, classified for the retry loop.
type callError struct {
	Err   error
	Retry bool // 429, 5xx, timeout or connection error
	// Billed is the usage (In, Out, Estimated) of a request the server
	// answered with a 2xx status before it failed (a cut stream, an error
	// event, a timeout while the body was read): the server billed it.
	// Nil when it did not answer (an HTTP error status, no answer).
	Billed *chatReply
}

func (e *callError) Error() string { return e.Err.Error() }
func (e *callError) Unwrap() error { return e.Err }

// Defaults of the model settings.
const (
	defaultAttempts    = 3
	defaultBackoff     = 500 * time.Millisecond
	defaultMaxBackoff  = 30 * time.Second
	defaultCallTimeout = 2 * time.Minute
)

// meter bills the attempts of one node's model calls on the step's ledger
// (see [runtime.Ledger]). Every attempt, retries and fallbacks included,
// reserves one call before its request is sent. An attempt the server
// answered with a 2xx status is a billed call, whatever happened after
// (a whole reply, a cut stream, an error event, a timeout while the body
// was read): it is settled with the server's usage, or estimated tokens
// marked Estimated. An attempt answered with an HTTP error status, or not
// answered at all, is released: it costs nothing and counts nothing.
type meter struct {
	ledger *runtime.Ledger
	node   string
	usage  []runtime.Usage // the billed attempts, in order
}

// reserve takes one call from the budget for the next attempt; a
// *runtime.BudgetError when the budget refuses it.
func (mt *meter) reserve() (*runtime.Reservation, error) {
	return mt.ledger.Reserve()
}

// settle ends the reservation of an attempt of model m that returned
// reply and err: settled with its usage when the server billed it (a
// reply, or a *callError with Billed), else released. It reports whether
// the attempt was billed.
func (mt *meter) settle(rsv *runtime.Reservation, m *spec.Model, reply *chatReply, err error) bool {
	spent := reply
	if err != nil {
		spent = nil
		var ce *callError
		if errors.As(err, &ce) {
			spent = ce.Billed
		}
	}
	if spent == nil {
		rsv.Release()
		return false
	}
	mt.usage = append(mt.usage, rsv.Settle(runtime.Usage{
		Node: mt.node, Model: m.Name, InputTokens: spent.In, OutputTokens: spent.Out,
		CostUSD: costUSD(m, spent.In, spent.Out), Estimated: spent.Estimated,
	}))
	return true
}

// complete asks model m, then its fallbacks in order, each with its own
// retries, and returns the reply and the model that gave it. Each attempt
// is billed on mt. When the budget refuses an attempt, complete stops
// with the *runtime.BudgetError (no further retry or fallback).
func (e *engine) complete(ctx context.Context, g *spec.Graph, m *spec.Model, req *chatRequest, mt *meter, emit func(runtime.Event)) (*chatReply, *spec.Model, error) {
	// A test script answers its nodes; a node it does not script answers
	// from its mock model's fixtures, as in a normal offline run.
	if e.script != nil && (e.script.scripts(req.Node) || e.provider(m) != "mock") {
		rsv, err := mt.reserve()
		if err != nil {
			return nil, nil, err
		}
		reply, err := e.script.chat(ctx, req, func(s string) { emit(runtime.Event{Kind: runtime.EvToken, Token: s}) })
		mt.settle(rsv, m, reply, err)
		return reply, m, err
	}
	chain := []*spec.Model{m}
	for _, f := range m.Fallbacks {
		if fm := g.Models[f.Name]; fm != nil {
			chain = append(chain, fm)
		}
	}
	var fails []string
	for i, cm := range chain {
		if i > 0 {
			emit(runtime.Event{Kind: runtime.EvMessage, Message: fmt.Sprintf("model %q failed; falling back to %q", chain[i-1].Name, cm.Name)})
		}
		reply, err := e.withRetries(ctx, cm, req, mt, emit)
		if err == nil {
			return reply, cm, nil
		}
		what := "model"
		if i > 0 {
			what = "fallback"
		}
		var be *runtime.BudgetError
		if errors.As(err, &be) {
			if len(fails) == 0 {
				return nil, nil, err
			}
			return nil, nil, fmt.Errorf("%s; %s %q: %w", strings.Join(fails, "; "), what, cm.Name, err)
		}
		if ctx.Err() != nil {
			return nil, nil, err
		}
		fails = append(fails, fmt.Sprintf("%s %q: %v", what, cm.Name, err))
	}
	return nil, nil, errors.New(strings.Join(fails, "; "))
}

// withRetries calls model m with its rate limit, per-call timeout and
// retry policy: exponential backoff with jitter on 429, 5xx, timeouts and
// connection errors, waiting what a Retry-After header asks instead. Each
// attempt is reserved on mt before it is sent and settled or released
// after (see [meter]); a refused retry ends the call with the
// *runtime.BudgetError. An attempt that streamed tokens and then failed is
// followed by an [runtime.EvTokenReset] event.
func (e *engine) withRetries(ctx context.Context, m *spec.Model, req *chatRequest, mt *meter, emit func(runtime.Event)) (*chatReply, error) {
	cl, err := e.client(m)
	if err != nil {
		return nil, err
	}
	attempts := m.Retry.MaxAttempts
	if attempts <= 0 {
		attempts = defaultAttempts
	}
	backoff := durOr(m.Retry.InitialBackoff, defaultBackoff)
	maxBackoff := durOr(m.Retry.MaxBackoff, defaultMaxBackoff)
	timeout := durOr(m.Timeout, defaultCallTimeout)
	lim := e.env.limiters.limiterFor(limiterKey(e.provider(m), m, e.opts.Getenv), m.RPM)
	var last error // the previous attempt's failure
	for attempt := 1; ; attempt++ {
		if err := lim.wait(ctx); err != nil {
			return nil, err
		}
		rsv, err := mt.reserve()
		if err != nil {
			if last != nil {
				return nil, fmt.Errorf("model %q: attempt %d failed (%v) and the budget refuses a retry: %w", m.Name, attempt-1, last, err)
			}
			return nil, err
		}
		h := &hint{}
		actx, cancel := context.WithTimeout(withHint(ctx, h), timeout)
		streamed := false
		onToken := func(s string) {
			streamed = true
			emit(runtime.Event{Kind: runtime.EvToken, Token: s})
		}
		var oc *ModelCallInfo
		if e.opts.Observer != nil {
			actx, oc = e.observeModel(actx, req, m, attempt)
		}
		reply, err := cl.chat(actx, req, onToken)
		timedOut := errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
		billed := mt.settle(rsv, m, reply, err)
		if oc != nil {
			e.endModel(actx, oc, m, reply, err, attempt < attempts && ctx.Err() == nil && (timedOut || isRetryable(err)))
		}
		cancel()
		if err == nil {
			return reply, nil
		}
		if streamed {
			// The tokens of this attempt belong to no reply: consumers
			// drop them before a retry or fallback streams again.
			emit(runtime.Event{Kind: runtime.EvTokenReset, Message: fmt.Sprintf("model %q: attempt %d failed; discard its streamed tokens", m.Name, attempt)})
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%v)", context.Cause(ctx), err)
		}
		var ce *callError
		retry := errors.As(err, &ce) && ce.Retry
		if timedOut {
			retry, err = true, fmt.Errorf("no reply within %s (the model's timeout)", timeout)
			if billed {
				err = fmt.Errorf("the reply did not complete within %s (the model's timeout)", timeout)
			}
		}
		if !retry || attempt >= attempts {
			if attempt > 1 {
				return nil, fmt.Errorf("failed after %d attempts: %w", attempt, err)
			}
			return nil, err
		}
		last = err
		wait := backoff/2 + rand.N(backoff/2+1)
		if ra := h.retryAfter(); ra > 0 {
			if ra > maxBackoff {
				return nil, fmt.Errorf("%w; the server asks to retry after %s, longer than max_backoff %s", err, ra, maxBackoff)
			}
			wait = ra
		}
		emit(runtime.Event{Kind: runtime.EvMessage, Message: fmt.Sprintf("model %q: %v; retry %d of %d in %s", m.Name, err, attempt, attempts-1, wait.Round(time.Millisecond))})
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (waiting to retry after: %v)", context.Cause(ctx), err)
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func durOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// costUSD prices a call with the model's prices per million tokens.
func costUSD(m *spec.Model, in, out int) float64 {
	return (float64(in)*m.PriceIn + float64(out)*m.PriceOut) / 1e6
}

// estimateUsage estimates the tokens of a reply whose server reported no
// usage: the input from the request's text, the output from the reply's
// (or what arrived of it), marked Estimated.
func estimateUsage(req *chatRequest, r *chatReply) {
	if r.In == 0 && r.Out == 0 {
		r.In, r.Out, r.Estimated = estimateTokens(requestText(req)), estimateTokens(replyText(r)), true
	}
}

// estimateTokens approximates a token count (four characters a token) for
// providers that report no usage.
func estimateTokens(s string) int {
	if s == "" {
		return 0
	}
	return (len(s) + 3) / 4
}

func requestText(req *chatRequest) string {
	var b strings.Builder
	for _, m := range req.Messages {
		c, _ := m["content"].(string)
		b.WriteString(c)
		b.WriteString("\n")
	}
	return b.String()
}

func replyText(r *chatReply) string {
	s := r.Content
	for _, c := range r.ToolCalls {
		s += c.Name + c.Arguments
	}
	return s
}
