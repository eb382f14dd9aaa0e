package builtin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeReply scripts one answer of the fake OpenAI-compatible server.
type fakeReply struct {
	Status     int    // an error status (429, 500, ...); 0 answers normally
	RetryAfter string // Retry-After header of an error
	RetryMs    string // retry-after-ms header of an error
	ErrMsg     string // error message of an error answer

	Content   string
	ToolCalls []fakeCall
	In, Out   int // usage; both 0 reports none

	Delay time.Duration // wait before answering (a slow server)
	// EchoAuth puts the request's Authorization header into the content
	// (or the error message): a server that leaks the key back.
	EchoAuth bool
	// RejectFormat answers 400 when the request asks for response_format.
	RejectFormat bool

	// A 200 answer that fails after its content (the server bills it):
	// Cut ends it there (a stream with no finish_reason, usage or [DONE];
	// a JSON body cut in half), StreamErr sends an error event with this
	// message instead (streaming only), and Stall waits until the client
	// gives up.
	Cut       bool
	StreamErr string
	Stall     bool
	// Reset drops the connection before any answer (nothing billed).
	Reset bool
}

type fakeCall struct{ ID, Name, Args string }

// fakeRequest is what the server received.
type fakeRequest struct {
	Header http.Header
	Body   map[string]any
	At     time.Time
}

// fakeServer is an OpenAI-compatible chat completions server for tests:
// it answers scripted replies in order, as JSON or as a stream of
// server-sent events when the request asks to stream.
type fakeServer struct {
	*httptest.Server
	mu      sync.Mutex
	replies []fakeReply
	reqs    []fakeRequest
}

func newFakeServer(t *testing.T, replies ...fakeReply) *fakeServer {
	t.Helper()
	f := &fakeServer{replies: replies}
	f.Server = httptest.NewServer(http.HandlerFunc(f.handle))
	t.Cleanup(f.Close)
	return f
}

// URL returns the base URL to configure (…/v1).
func (f *fakeServer) URL() string { return f.Server.URL + "/v1" }

func (f *fakeServer) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.reqs...)
}

func (f *fakeServer) handle(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, fakeRequest{Header: r.Header.Clone(), Body: body, At: time.Now()})
	var rep fakeReply
	if len(f.replies) == 0 {
		rep = fakeReply{Status: 500, ErrMsg: "fake server: no scripted reply left"}
	} else {
		rep, f.replies = f.replies[0], f.replies[1:]
	}
	f.mu.Unlock()

	if rep.Delay > 0 {
		select {
		case <-time.After(rep.Delay):
		case <-r.Context().Done():
			return
		}
	}
	if rep.Reset {
		cut(w)
		return
	}
	if rep.RejectFormat && body["response_format"] != nil {
		rep = fakeReply{Status: 400, ErrMsg: "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model."}
	}
	auth := r.Header.Get("Authorization")
	if rep.Status != 0 {
		msg := rep.ErrMsg
		if rep.EchoAuth {
			msg += " (you sent " + auth + ")"
		}
		if rep.RetryAfter != "" {
			w.Header().Set("Retry-After", rep.RetryAfter)
		}
		if rep.RetryMs != "" {
			w.Header().Set("Retry-After-Ms", rep.RetryMs)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rep.Status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": "fake_error"}})
		return
	}
	content := rep.Content
	if rep.EchoAuth {
		content += " " + auth
	}
	model, _ := body["model"].(string)
	if stream, _ := body["stream"].(bool); stream {
		f.stream(w, r, body, model, content, rep)
		return
	}
	msg := map[string]any{"role": "assistant", "content": content}
	if len(rep.ToolCalls) > 0 {
		var calls []any
		for _, c := range rep.ToolCalls {
			calls = append(calls, map[string]any{"id": c.ID, "type": "function", "function": map[string]any{"name": c.Name, "arguments": c.Args}})
		}
		msg["tool_calls"] = calls
	}
	resp := map[string]any{
		"id": "chatcmpl-fake", "object": "chat.completion", "model": model,
		"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": "stop"}},
	}
	if rep.In+rep.Out > 0 {
		resp["usage"] = map[string]any{"prompt_tokens": rep.In, "completion_tokens": rep.Out, "total_tokens": rep.In + rep.Out}
	}
	w.Header().Set("Content-Type", "application/json")
	if rep.Cut || rep.Stall {
		b, _ := json.Marshal(resp)
		_, _ = w.Write(b[:len(b)/2])
		if rep.Stall {
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
		return
	}
	_ = json.NewEncoder(w).Encode(resp)
}

// stream answers as server-sent events: the content in small pieces, each
// tool call's arguments in two pieces, then usage when asked for.
func (f *fakeServer) stream(w http.ResponseWriter, r *http.Request, body map[string]any, model, content string, rep fakeReply) {
	w.Header().Set("Content-Type", "text/event-stream")
	fl, _ := w.(http.Flusher)
	send := func(v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "data: %s\n\n", b)
		if fl != nil {
			fl.Flush()
		}
	}
	chunk := func(delta map[string]any, finish any) map[string]any {
		return map[string]any{
			"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
		}
	}
	send(chunk(map[string]any{"role": "assistant"}, nil))
	for _, piece := range splitPieces(content) {
		send(chunk(map[string]any{"content": piece}, nil))
	}
	for i, c := range rep.ToolCalls {
		half := len(c.Args) / 2
		send(chunk(map[string]any{"tool_calls": []any{map[string]any{"index": i, "id": c.ID, "type": "function", "function": map[string]any{"name": c.Name, "arguments": c.Args[:half]}}}}, nil))
		send(chunk(map[string]any{"tool_calls": []any{map[string]any{"index": i, "function": map[string]any{"arguments": c.Args[half:]}}}}, nil))
	}
	switch {
	case rep.Cut:
		return
	case rep.StreamErr != "":
		send(map[string]any{"error": map[string]any{"message": rep.StreamErr, "type": "server_error"}})
		return
	case rep.Stall:
		<-r.Context().Done()
		return
	}
	send(chunk(map[string]any{}, "stop"))
	if so, _ := body["stream_options"].(map[string]any); so["include_usage"] == true && rep.In+rep.Out > 0 {
		send(map[string]any{"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model, "choices": []any{},
			"usage": map[string]any{"prompt_tokens": rep.In, "completion_tokens": rep.Out, "total_tokens": rep.In + rep.Out}})
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	if fl != nil {
		fl.Flush()
	}
}

// splitPieces cuts s after each space, as a tokenizer would stream it.
func splitPieces(s string) []string {
	if s == "" {
		return nil
	}
	return strings.SplitAfter(s, " ")
}
