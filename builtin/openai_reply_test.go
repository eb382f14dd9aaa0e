package builtin

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// rawServer answers every chat request with handle (n counts requests
// from 1) and returns the base URL and a request counter.
func rawServer(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, n int)) (string, func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		i := n
		mu.Unlock()
		handle(w, r, i)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1", func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// sse writes server-sent event lines (each a data payload) and flushes.
func sse(w http.ResponseWriter, payloads ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	for _, p := range payloads {
		fmt.Fprintf(w, "data: %s\n\n", p)
	}
	w.(http.Flusher).Flush()
}

// cut drops the connection without ending the response.
func cut(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

const (
	chunkHel  = `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}`
	chunkLo   = `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo"}}]}`
	chunkStop = `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`
	plainJSON = `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}]}`
)

// TestIncompleteRepliesAreRetriedErrors: a reply that did not arrive whole
// is never stored as a success; each case is retried (3 attempts) and the
// final error says what the server did or said.
func TestIncompleteRepliesAreRetriedErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream bool
		handle func(w http.ResponseWriter, r *http.Request)
		want   string // in the final error
	}{
		{"stream without finish_reason or [DONE]", true, func(w http.ResponseWriter, r *http.Request) {
			sse(w, chunkHel, chunkLo)
		}, "the stream ended before the reply was complete"},
		{"JSON reply to a stream request", true, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, plainJSON)
		}, "answered the streaming request with a plain JSON reply"},
		{"200 with an error object, streamed", true, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, `{"error": {"message": "engine overloaded (obj)", "type": "server_error"}}`)
		}, "engine overloaded (obj)"},
		{"200 with an error string, streamed", true, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, `{"error": "engine overloaded (str)"}`)
		}, "engine overloaded (str)"},
		{"200 with an error object", false, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, `{"error": {"message": "engine overloaded (obj)", "type": "server_error"}}`)
		}, "engine overloaded (obj)"},
		{"200 with an error string", false, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, `{"error": "engine overloaded (str)"}`)
		}, "engine overloaded (str)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, count := rawServer(t, func(w http.ResponseWriter, r *http.Request, _ int) { tc.handle(w, r) })
			g := chatGraph(t, modelAt(url, fmt.Sprintf("stream: %v", tc.stream)))
			res, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
			if err == nil {
				t.Fatalf("stored as a success: %v", res.Writes)
			}
			if !strings.Contains(err.Error(), "failed after 3 attempts") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\nwant it to say %q after 3 attempts", err, tc.want)
			}
			if n := count(); n != 3 {
				t.Fatalf("%d requests, want 3 (retried as transient)", n)
			}
		})
	}
}

// TestIncompleteStreamThenWholeReply: the retry's whole reply is stored,
// nothing of the cut attempt.
func TestIncompleteStreamThenWholeReply(t *testing.T) {
	url, count := rawServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			sse(w, chunkHel)
			return
		}
		sse(w, chunkHel, chunkLo, chunkStop, "[DONE]")
	})
	g := chatGraph(t, modelAt(url))
	res, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Writes[1].Value != "Hello" || count() != 2 {
		t.Fatalf("writes %v after %d requests", res.Writes, count())
	}
}

// TestFinishReasonCompletesAStream: once the server has sent a
// finish_reason, the reply is complete even if the connection drops
// before [DONE] (only the usage report can be missing).
func TestFinishReasonCompletesAStream(t *testing.T) {
	url, count := rawServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		sse(w, chunkHel, chunkLo, chunkStop)
		cut(w)
	})
	g := chatGraph(t, modelAt(url))
	res, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Writes[1].Value != "Hello" || count() != 1 {
		t.Fatalf("writes %v after %d requests", res.Writes, count())
	}
	// [DONE] without a finish_reason (some local servers) completes it too.
	url, count = rawServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		sse(w, chunkHel, chunkLo, "[DONE]")
	})
	g = chatGraph(t, modelAt(url))
	res, _, err = callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Writes[1].Value != "Hello" || count() != 1 {
		t.Fatalf("writes %v after %d requests", res.Writes, count())
	}
}

// TestServerErrorsWithAStringAreRetried: vLLM- and Ollama-style error
// bodies ({"error": "<a string>"}) on 429/5xx, and errors sent inside a
// 200 stream, are retried and show the server's message.
func TestServerErrorsWithAStringAreRetried(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream bool
		handle func(w http.ResponseWriter, r *http.Request)
		want   string
	}{
		{"429 error string", false, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprintln(w, `{"error": "too many requests, slow down"}`)
		}, "429 Too Many Requests: too many requests, slow down"},
		{"503 error string, streamed", true, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, `{"error": "model is loading"}`)
		}, "503 Service Unavailable: model is loading"},
		{"error object inside a stream", true, func(w http.ResponseWriter, r *http.Request) {
			sse(w, chunkHel, `{"error": {"message": "backend crashed (obj)", "type": "server_error"}}`)
		}, "backend crashed (obj)"},
		{"error string inside a stream", true, func(w http.ResponseWriter, r *http.Request) {
			sse(w, chunkHel, `{"error": "backend crashed (str)"}`)
		}, "backend crashed (str)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, count := rawServer(t, func(w http.ResponseWriter, r *http.Request, _ int) { tc.handle(w, r) })
			g := chatGraph(t, modelAt(url, fmt.Sprintf("stream: %v", tc.stream)))
			res, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
			if err == nil {
				t.Fatalf("stored as a success: %v", res.Writes)
			}
			if !strings.Contains(err.Error(), "failed after 3 attempts") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\nwant it to say %q after 3 attempts", err, tc.want)
			}
			if n := count(); n != 3 {
				t.Fatalf("%d requests, want 3", n)
			}
		})
	}
	// A 4xx error string is the caller's mistake: not retried, but shown.
	url, count := rawServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintln(w, `{"error": "unknown model test-model"}`)
	})
	_, _, err := callNode(t, chatGraph(t, modelAt(url)), Options{Getenv: keyEnv()}, "chat", nil)
	if err == nil || !strings.Contains(err.Error(), "400 Bad Request: unknown model test-model") || count() != 1 {
		t.Fatalf("error %v after %d requests", err, count())
	}
}

// tokenLog renders a node's token events, a reset as "⟲".
func tokenLog(ev *events) string {
	var b strings.Builder
	for _, e := range ev.list() {
		switch e.Kind {
		case runtime.EvToken:
			b.WriteString(e.Token)
		case runtime.EvTokenReset:
			b.WriteString("⟲")
		}
	}
	return b.String()
}

// TestRetriedStreamEmitsTokenReset: the tokens of a failed attempt are
// voided by a reset event before the retry (or the fallback) streams again.
func TestRetriedStreamEmitsTokenReset(t *testing.T) {
	url, _ := rawServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			sse(w, chunkHel)
			cut(w)
			return
		}
		sse(w, chunkHel, chunkLo, chunkStop, "[DONE]")
	})
	g := chatGraph(t, modelAt(url))
	res, ev, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := tokenLog(ev); got != "Hel⟲Hello" || res.Writes[1].Value != "Hello" {
		t.Fatalf("tokens %q, reply %v; want Hel⟲Hello", got, res.Writes[1].Value)
	}

	// A model that fails after streaming hands over to its fallback.
	primary, _ := rawServer(t, func(w http.ResponseWriter, r *http.Request, _ int) { sse(w, chunkHel) })
	backup, _ := rawServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		sse(w, chunkHel, chunkLo, chunkStop, "[DONE]")
	})
	g = chatGraph(t,
		strings.Replace(modelAt(primary, "fallbacks: [backup]"), "max_attempts: 3", "max_attempts: 2", 1),
		"  backup:\n"+modelAt(backup))
	_, ev, err = callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := tokenLog(ev); got != "Hel⟲Hel⟲Hello" {
		t.Fatalf("tokens %q, want Hel⟲Hel⟲Hello", got)
	}
	// A whole reply streams without a reset.
	srv := newFakeServer(t, fakeReply{Content: "one two"})
	_, ev, err = callNode(t, chatGraph(t, modelAt(srv.URL())), Options{Getenv: keyEnv()}, "chat", nil)
	if err != nil || tokenLog(ev) != "one two" {
		t.Fatalf("tokens %q, error %v", tokenLog(ev), err)
	}
}
