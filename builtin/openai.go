package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"

	openai "github.com/sashabaranov/go-openai"

	"github.com/lgrun/lgrun/spec"
)

// Environment variables the openai provider reads (through Options.Getenv).
const (
	EnvBaseURL = "OPENAI_BASE_URL"
	EnvAPIKey  = "OPENAI_API_KEY"
)

const officialBaseURL = "https://api.openai.com/v1"

// azureAPIVersion is the Azure OpenAI API version used when a model sets none.
const azureAPIVersion = "2024-06-01"

// baseURL is the model's base_url, else $OPENAI_BASE_URL, else OpenAI's.
func baseURL(m *spec.Model, getenv func(string) string) string {
	if m.BaseURL != "" {
		return strings.TrimRight(m.BaseURL, "/")
	}
	if u := getenv(EnvBaseURL); u != "" {
		return strings.TrimRight(u, "/")
	}
	return officialBaseURL
}

// openaiClient talks to an OpenAI-compatible server with go-openai.
type openaiClient struct {
	model    *spec.Model
	client   *openai.Client
	red      *redactor // the API key, out of every reply, token and error
	stream   bool
	official bool
	caps     *serverCaps
}

// serverCaps remembers, per [Environment], what a server turned out not to
// support, so later calls do not ask again.
type serverCaps struct {
	mu               sync.Mutex
	noResponseFormat bool
}

// capsRegistry holds the serverCaps of an [Environment] by server and model.
type capsRegistry struct {
	mu sync.Mutex
	m  map[string]*serverCaps
}

func newCapsRegistry() *capsRegistry { return &capsRegistry{m: map[string]*serverCaps{}} }

func (cr *capsRegistry) capsFor(key string) *serverCaps {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	c := cr.m[key]
	if c == nil {
		c = &serverCaps{}
		cr.m[key] = c
	}
	return c
}

func (c *serverCaps) responseFormat() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.noResponseFormat
}

func newOpenAIClient(m *spec.Model, opts Options, caps *capsRegistry) (*openaiClient, error) {
	if m.Model == "" {
		return nil, fmt.Errorf("no model id; set models.%s.model to use it with provider openai", m.Name)
	}
	base := baseURL(m, opts.Getenv)
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("base URL %q is not an http(s) URL", base)
	}
	env := m.APIKeyEnv
	if env == "" {
		env = EnvAPIKey
	}
	key := opts.Getenv(env)
	official := base == officialBaseURL
	azure := m.Provider == "azure"
	if key == "" && (official || azure) {
		return nil, fmt.Errorf("no API key: environment variable %s is empty (or point %s or models.%s.base_url at another server)", env, EnvBaseURL, m.Name)
	}
	hc := *opts.HTTPClient
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	hc.Transport = &hintTransport{base: rt}
	cfg := openai.DefaultConfig(key)
	if azure {
		// Azure OpenAI: the api-key header, deployment paths and an
		// api-version query; the model id is the deployment name, as given.
		cfg = openai.DefaultAzureConfig(key, base)
		cfg.APIVersion = azureAPIVersion
		if m.APIVersion != "" {
			cfg.APIVersion = m.APIVersion
		}
		cfg.AzureModelMapperFunc = func(model string) string { return model }
	}
	cfg.BaseURL = base
	cfg.HTTPClient = &hc
	return &openaiClient{
		model:    m,
		client:   openai.NewClientWithConfig(cfg),
		red:      newRedactor(key),
		stream:   m.Stream == nil || *m.Stream,
		official: official,
		caps:     caps.capsFor(base + "|" + m.Model),
	}, nil
}

// chat is the reply boundary of the client: what it returns or streams
// has the API key redacted (see [redactor]).
func (c *openaiClient) chat(ctx context.Context, req *chatRequest, onToken func(string)) (*chatReply, error) {
	useFormat := req.Schema != nil && c.caps.responseFormat()
	toks := c.red.tokens(onToken)
	reply, err := c.send(ctx, c.request(req, useFormat), toks.write)
	if err != nil && useFormat && rejectsResponseFormat(err) {
		// The server does not do structured output: ask in the prompt
		// instead (the node validates the reply either way).
		c.caps.mu.Lock()
		c.caps.noResponseFormat = true
		c.caps.mu.Unlock()
		toks = c.red.tokens(onToken)
		reply, err = c.send(ctx, c.request(req, false), toks.write)
	}
	if err != nil {
		ce := c.classify(ctx, err)
		if reply != nil {
			// The server answered 2xx and then failed: it billed the
			// attempt, for what it sent before the failure.
			estimateUsage(req, reply)
			ce.Billed = &chatReply{In: reply.In, Out: reply.Out, Estimated: reply.Estimated}
		}
		return nil, ce
	}
	toks.flush()
	c.red.reply(reply)
	estimateUsage(req, reply)
	return reply, nil
}

// request builds the go-openai request.
func (c *openaiClient) request(req *chatRequest, useFormat bool) openai.ChatCompletionRequest {
	m := c.model
	msgs := make([]openai.ChatCompletionMessage, 0, len(req.Messages)+1)
	for _, x := range req.Messages {
		msgs = append(msgs, toOpenAI(x))
	}
	if req.Schema != nil && !useFormat {
		b, _ := json.Marshal(req.Schema)
		note := "Reply with only a JSON value (no prose, no code fence) that matches this JSON Schema:\n" + string(b)
		if len(msgs) > 0 && msgs[0].Role == openai.ChatMessageRoleSystem {
			msgs[0].Content += "\n\n" + note
		} else {
			msgs = append([]openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleSystem, Content: note}}, msgs...)
		}
	}
	r := openai.ChatCompletionRequest{Model: m.Model, Messages: msgs}
	if m.Temperature != nil {
		t := float32(*m.Temperature)
		if t == 0 {
			// go-openai omits a zero temperature; the smallest positive
			// float32 is zero for every server.
			t = math.SmallestNonzeroFloat32
		}
		r.Temperature = t
	}
	if m.MaxTokens > 0 {
		if c.official {
			r.MaxCompletionTokens = m.MaxTokens
		} else {
			r.MaxTokens = m.MaxTokens
		}
	}
	for _, t := range req.Tools {
		r.Tools = append(r.Tools, openai.Tool{Type: openai.ToolTypeFunction, Function: &openai.FunctionDefinition{
			Name: t.Name, Description: t.Description, Parameters: t.Parameters,
		}})
	}
	if req.Schema != nil && useFormat {
		b, _ := json.Marshal(req.Schema)
		r.ResponseFormat = &openai.ChatCompletionResponseFormat{
			Type: openai.ChatCompletionResponseFormatTypeJSONSchema,
			JSONSchema: &openai.ChatCompletionResponseFormatJSONSchema{
				Name: "reply", Schema: json.RawMessage(b), Strict: req.Strict,
			},
		}
	}
	return r
}

// toOpenAI converts a canonical message.
func toOpenAI(m map[string]any) openai.ChatCompletionMessage {
	s := func(k string) string { v, _ := m[k].(string); return v }
	out := openai.ChatCompletionMessage{Role: s("role"), Content: s("content")}
	switch out.Role {
	case "tool":
		out.ToolCallID = s("tool_call_id")
	case "assistant":
		calls, _ := m["tool_calls"].([]any)
		for _, x := range calls {
			cm, _ := x.(map[string]any)
			id, _ := cm["id"].(string)
			name, _ := cm["name"].(string)
			args, _ := cm["arguments"].(string)
			out.ToolCalls = append(out.ToolCalls, openai.ToolCall{ID: id, Type: openai.ToolTypeFunction, Function: openai.FunctionCall{Name: name, Arguments: args}})
		}
	default:
		out.Name = s("name")
	}
	return out
}

// send makes one request. A reply is a success only when it arrived whole: a
// stream must end with a finish_reason or [DONE] (a connection lost after
// the finish_reason loses at most the usage report); a cut stream, a
// plain JSON answer to a streaming request, and an error object in a 200
// answer or inside the stream are errors, with the server's message.
//
// With an error, send returns what arrived of the reply (the content and
// tool calls streamed so far, and usage if the server sent it) when the
// server answered with a 2xx status, which bills the request whatever
// happened after it (a cut stream, an error event, a timeout while the
// body was read); nil when it did not (an HTTP error status, or no answer
// at all).
func (c *openaiClient) send(ctx context.Context, r openai.ChatCompletionRequest, onToken func(string)) (*chatReply, error) {
	tap := &bodyTap{}
	ctx = withTap(ctx, tap)
	// billed is what a failed request that the server answered cost.
	billed := func(part *chatReply) *chatReply {
		if !tap.answered() {
			return nil
		}
		if part == nil {
			part = &chatReply{}
		}
		return part
	}
	if !c.stream {
		resp, err := c.client.CreateChatCompletion(ctx, r)
		if err != nil {
			return billed(nil), fromHTTPError(err)
		}
		if len(resp.Choices) == 0 {
			part := billed(&chatReply{In: resp.Usage.PromptTokens, Out: resp.Usage.CompletionTokens})
			if err := tap.bodyError(); err != nil {
				return part, err
			}
			return part, errors.New("the server answered with no choices")
		}
		msg := resp.Choices[0].Message
		reply := &chatReply{Content: msg.Content, In: resp.Usage.PromptTokens, Out: resp.Usage.CompletionTokens,
			Finish: string(resp.Choices[0].FinishReason), RespModel: resp.Model}
		if reply.Content == "" {
			reply.Content = msg.Refusal
		}
		for _, tc := range msg.ToolCalls {
			reply.ToolCalls = append(reply.ToolCalls, toolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
		}
		return reply, nil
	}
	r.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
	st, err := c.client.CreateChatCompletionStream(ctx, r)
	if err != nil {
		return billed(nil), fromHTTPError(err)
	}
	defer st.Close()
	reply := &chatReply{}
	var content, refusal strings.Builder
	var calls []*toolCall
	byIndex := map[int]*toolCall{}
	// assemble puts what arrived into reply.
	assemble := func() *chatReply {
		reply.Content = content.String()
		if reply.Content == "" {
			reply.Content = refusal.String()
		}
		reply.ToolCalls = nil
		for _, tc := range calls {
			reply.ToolCalls = append(reply.ToolCalls, *tc)
		}
		return reply
	}
	finished := false // a finish_reason arrived
	for {
		chunk, err := st.Recv()
		if err != nil {
			if serr := tap.streamError(); serr != nil {
				return billed(assemble()), serr
			}
			if finished && (errors.Is(err, io.EOF) || transportError(err)) {
				break
			}
			if errors.Is(err, io.EOF) {
				if tap.done() {
					break
				}
				return billed(assemble()), errIncomplete
			}
			return billed(assemble()), err
		}
		if chunk.Usage != nil {
			reply.In, reply.Out = chunk.Usage.PromptTokens, chunk.Usage.CompletionTokens
		}
		if len(chunk.Choices) == 0 {
			continue
		}
		if chunk.Model != "" {
			reply.RespModel = chunk.Model
		}
		if chunk.Choices[0].FinishReason != "" {
			finished = true
			reply.Finish = string(chunk.Choices[0].FinishReason)
		}
		d := chunk.Choices[0].Delta
		if d.Content != "" {
			content.WriteString(d.Content)
			onToken(d.Content)
		}
		refusal.WriteString(d.Refusal)
		for _, tc := range d.ToolCalls {
			var cur *toolCall
			switch {
			case tc.Index != nil:
				cur = byIndex[*tc.Index]
				if cur == nil {
					cur = &toolCall{}
					byIndex[*tc.Index] = cur
					calls = append(calls, cur)
				}
			case len(calls) > 0 && (tc.ID == "" || tc.ID == calls[len(calls)-1].ID):
				cur = calls[len(calls)-1]
			default:
				cur = &toolCall{}
				calls = append(calls, cur)
			}
			if tc.ID != "" {
				cur.ID = tc.ID
			}
			if tc.Function.Name != "" {
				cur.Name = tc.Function.Name
			}
			cur.Arguments += tc.Function.Arguments
		}
	}
	return assemble(), nil
}

// classify wraps err as a *callError, deciding whether it is worth a retry,
// with the API key removed from its text.
func (c *openaiClient) classify(ctx context.Context, err error) *callError {
	retry := false
	var se *serverError
	var ae *openai.APIError
	switch {
	case ctx.Err() != nil:
		retry = errors.Is(ctx.Err(), context.DeadlineExceeded)
	case errors.As(err, &se):
		retry = se.Retry
	case errors.As(err, &ae):
		// An HTTP status was turned into a serverError by send: an
		// APIError left is one go-openai read from inside a stream.
		retry = ae.HTTPStatusCode == 0 || retryStatus(ae.HTTPStatusCode)
	case errors.Is(err, errIncomplete), errors.Is(err, errPlainJSON), transportError(err):
		retry = true
	}
	return &callError{Err: errors.New(c.red.String(err.Error())), Retry: retry}
}

// transportError reports whether err is the connection failing.
func transportError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

// rejectsResponseFormat reports whether err is a server refusing
// response_format (servers without structured output).
func rejectsResponseFormat(err error) bool {
	var se *serverError
	if !errors.As(err, &se) {
		return false
	}
	msg, status := strings.ToLower(se.Msg), se.Code
	return (status == http.StatusBadRequest || status == http.StatusUnprocessableEntity) &&
		(strings.Contains(msg, "response_format") || strings.Contains(msg, "json_schema"))
}
