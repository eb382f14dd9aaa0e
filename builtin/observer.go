package builtin

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/lgrun/lgrun/spec"
)

// Observer watches the model and tool calls of the builtin kinds for
// tracing and metrics ([Options].Observer; nil by default, and then
// nothing is called). Start returns the context the call runs in; End
// gets it back. Hooks are called concurrently. Package observe implements
// it with OpenTelemetry.
type Observer interface {
	// StartModelCall begins one attempt of a model call.
	StartModelCall(ctx context.Context, c *ModelCallInfo) context.Context
	// EndModelCall ends it; c holds the reply's fields, err the failure.
	EndModelCall(ctx context.Context, c *ModelCallInfo, err error)
	// StartToolCall begins one tool call.
	StartToolCall(ctx context.Context, c *ToolCallInfo) context.Context
	// EndToolCall ends it; c holds the result. A tool failure reported to
	// the model is c.IsError, err is what fails the node.
	EndToolCall(ctx context.Context, c *ToolCallInfo, err error)
	// CaptureContent reports whether prompts, replies, tool arguments and
	// results go into c.Input and c.Output (redacted of secrets).
	CaptureContent() bool
}

// ModelCallInfo describes one attempt of a model call to an [Observer].
type ModelCallInfo struct {
	Thread, Node string
	Step         int
	Model        *spec.Model // as declared in the graph
	Provider     string      // the provider that answers (LGRUN_PROVIDER applied)
	Attempt      int         // 1 for the first attempt of this model
	// Set by EndModelCall's caller:
	InputTokens, OutputTokens int
	CostUSD                   float64
	FinishReason              string
	ResponseModel             string
	// Retry is set when the failed attempt will be retried.
	Retry bool
	// Input and Output are the request messages and the reply as JSON,
	// only when CaptureContent; redacted of the model's API key.
	Input, Output string
}

// ToolCallInfo describes one tool call to an [Observer].
type ToolCallInfo struct {
	Thread, Node string
	Step         int
	Name, ID     string
	Tool         *spec.Tool // nil for an unknown tool
	IsError      bool       // the result reports a failure to the model
	// Input and Output are the arguments and the result, only when
	// CaptureContent; results are redacted like every tool result.
	Input, Output string
}

// observeModel starts the observation of an attempt of model m.
func (e *engine) observeModel(ctx context.Context, req *chatRequest, m *spec.Model, attempt int) (context.Context, *ModelCallInfo) {
	obs := e.opts.Observer
	c := &ModelCallInfo{Thread: req.Thread, Node: req.Node, Step: req.Step, Model: m, Provider: e.provider(m), Attempt: attempt}
	if obs.CaptureContent() {
		b, _ := json.Marshal(req.Messages)
		c.Input = e.modelRedactor(m).String(string(b))
	}
	return obs.StartModelCall(ctx, c), c
}

// endModel ends the observation of an attempt with its reply.
func (e *engine) endModel(ctx context.Context, c *ModelCallInfo, m *spec.Model, reply *chatReply, err error, retry bool) {
	r := reply
	var ce *callError
	if r == nil && errors.As(err, &ce) {
		r = ce.Billed // what a failed attempt cost
	}
	if r != nil {
		c.InputTokens, c.OutputTokens = r.In, r.Out
		c.CostUSD = costUSD(m, r.In, r.Out)
		c.FinishReason, c.ResponseModel = r.Finish, r.RespModel
		if c.FinishReason == "" && reply != nil {
			c.FinishReason = "stop"
			if len(reply.ToolCalls) > 0 {
				c.FinishReason = "tool_calls"
			}
		}
		if reply != nil && e.opts.Observer.CaptureContent() {
			b, _ := json.Marshal(reply)
			c.Output = e.modelRedactor(m).String(string(b))
		}
	}
	c.Retry = retry
	e.opts.Observer.EndModelCall(ctx, c, err)
}

// modelRedactor redacts model m's API key.
func (e *engine) modelRedactor(m *spec.Model) *redactor {
	env := m.APIKeyEnv
	if env == "" {
		env = EnvAPIKey
	}
	return newRedactor(e.opts.Getenv(env))
}

// isRetryable reports whether a failed model attempt is of the kind the
// retry loop retries.
func isRetryable(err error) bool {
	var ce *callError
	return errors.As(err, &ce) && ce.Retry
}
