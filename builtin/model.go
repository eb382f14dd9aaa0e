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
	Node string
	Step int
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

// complete asks model m, then its fallbacks in order, each with its own
// retries, and returns the reply and the model that gave it.
func (e *engine) complete(ctx context.Context, g *spec.Graph, m *spec.Model, req *chatRequest, emit func(runtime.Event)) (*chatReply, *spec.Model, error) {
	// A test script answers its nodes; a node it does not script answers
	// from its mock model's fixtures, as in a normal offline run.
	if e.script != nil && (e.script.scripts(req.Node) || e.provider(m) != "mock") {
		reply, err := e.script.chat(ctx, req, func(s string) { emit(runtime.Event{Kind: runtime.EvToken, Token: s}) })
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
		reply, err := e.withRetries(ctx, cm, req, emit)
		if err == nil {
			return reply, cm, nil
		}
		if ctx.Err() != nil {
			return nil, nil, err
		}
		what := "model"
		if i > 0 {
			what = "fallback"
		}
		fails = append(fails, fmt.Sprintf("%s %q: %v", what, cm.Name, err))
	}
	return nil, nil, errors.New(strings.Join(fails, "; "))
}

// withRetries calls model m with its rate limit, per-call timeout and
// retry policy: exponential backoff with jitter on 429, 5xx, timeouts and
// connection errors, waiting what a Retry-After header asks instead. An
// attempt that streamed tokens and then failed is followed by an
// [runtime.EvTokenReset] event.
func (e *engine) withRetries(ctx context.Context, m *spec.Model, req *chatRequest, emit func(runtime.Event)) (*chatReply, error) {
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
	lim := limiterFor(limiterKey(e.provider(m), m, e.opts.Getenv), m.RPM)
	for attempt := 1; ; attempt++ {
		if err := lim.wait(ctx); err != nil {
			return nil, err
		}
		h := &hint{}
		actx, cancel := context.WithTimeout(withHint(ctx, h), timeout)
		streamed := false
		onToken := func(s string) {
			streamed = true
			emit(runtime.Event{Kind: runtime.EvToken, Token: s})
		}
		reply, err := cl.chat(actx, req, onToken)
		timedOut := errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
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
		}
		if !retry || attempt >= attempts {
			if attempt > 1 {
				return nil, fmt.Errorf("failed after %d attempts: %w", attempt, err)
			}
			return nil, err
		}
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
