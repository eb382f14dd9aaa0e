package builtin

import (
	"context"
	"errors"

	"github.com/lgrun/lgrun/spec"
)

// Provider makes the [ChatModel] of one model declared with a custom
// provider (see [Environment.AddProvider]). It is called once per model
// and environment engine, when the model is first used.
type Provider func(m *spec.Model) (ChatModel, error)

// ChatModel answers the chat completion requests of one model.
type ChatModel interface {
	// Chat answers req. It may stream the reply's text through
	// req.OnToken (when set) as it arrives. The llm node retries a failed
	// call under the model's retry policy when the error wraps
	// [ErrRetryable], and otherwise fails it (or goes to a fallback).
	Chat(ctx context.Context, req *ChatRequest) (*ChatReply, error)
}

// ErrRetryable marks an error of [ChatModel.Chat] as worth retrying (a
// rate limit, a server error).
var ErrRetryable = errors.New("retryable")

// ChatRequest is one chat completion request of an llm node.
type ChatRequest struct {
	// Node is the llm node; Turn counts its replies so far in its
	// conversation (plus the structured-output attempt).
	Node string
	Turn int
	// Messages are the conversation, system prompt first, each a map with
	// role, content and (for assistant messages) tool_calls, (for tool
	// messages) tool_call_id.
	Messages []map[string]any
	// Tools the model may call.
	Tools []ToolDef
	// Schema is the JSON Schema the reply's content must match (structured
	// output), nil for free text.
	Schema map[string]any
	// OnToken receives streamed text; nil when nobody listens.
	OnToken func(string)
}

// ToolDef is a tool offered to a model.
type ToolDef struct {
	Name        string
	Description string
	Parameters  map[string]any
}

// ChatReply is a model's answer.
type ChatReply struct {
	Content   string
	ToolCalls []ToolCall
	// InputTokens and OutputTokens are the call's usage, counted in the
	// run's totals and budgets.
	InputTokens, OutputTokens int
}

// ToolCall is one tool call of a reply; Arguments is JSON text.
type ToolCall struct {
	ID, Name, Arguments string
}

// customClient adapts a [ChatModel] to the llm node's client interface.
type customClient struct {
	model ChatModel
}

func (c *customClient) chat(ctx context.Context, req *chatRequest, onToken func(string)) (*chatReply, error) {
	in := &ChatRequest{Node: req.Node, Turn: req.Turn, Messages: req.Messages, Schema: req.Schema, OnToken: onToken}
	for _, t := range req.Tools {
		in.Tools = append(in.Tools, ToolDef{Name: t.Name, Description: t.Description, Parameters: t.Parameters})
	}
	out, err := c.model.Chat(ctx, in)
	if err != nil {
		return nil, &callError{Err: err, Retry: errors.Is(err, ErrRetryable)}
	}
	if out == nil {
		return nil, &callError{Err: errors.New("the provider returned no reply")}
	}
	reply := &chatReply{Content: out.Content, In: out.InputTokens, Out: out.OutputTokens}
	for _, tc := range out.ToolCalls {
		reply.ToolCalls = append(reply.ToolCalls, toolCall{ID: tc.ID, Name: tc.Name, Arguments: tc.Arguments})
	}
	return reply, nil
}
