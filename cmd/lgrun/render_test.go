package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// TestStreamMessagesMarksRetries: with --stream messages, the tokens of a
// failed attempt are followed by a reset line before the retry's tokens.
func TestStreamMessagesMarksRetries(t *testing.T) {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, `data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}`+"\n\n")
		if first {
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close() // the stream is cut mid-reply
			return
		}
		fmt.Fprint(w, `data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n")
	}))
	defer srv.Close()
	dir := t.TempDir()
	graph := filepath.Join(dir, "chat.yaml")
	src := `version: 1
name: chat
state:
  messages: {type: messages}
models:
  m:
    base_url: ` + srv.URL + `/v1
    model: test-model
    api_key_env: TEST_KEY
    retry: {max_attempts: 2, initial_backoff: 1ms}
nodes:
  chat: {kind: llm, model: m, prompt: hi}
edges:
  - {from: START, to: chat}
  - {from: chat, to: END}
`
	if err := os.WriteFile(graph, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"LGRUN_DB": filepath.Join(dir, "db"), "TEST_KEY": "k-test"}
	out, stderr, code := runCLI(t, false, env, "run", graph, "-t", "s1", "--stream", "messages")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
		switch {
		case m["token"] != nil:
			got = append(got, fmt.Sprint(m["node"], ":", m["token"]))
		case m["reset"] == true:
			if msg, _ := m["message"].(string); !strings.Contains(msg, "attempt 1 failed") {
				t.Errorf("reset line without its reason: %q", line)
			}
			got = append(got, fmt.Sprint(m["node"], ":RESET"))
		}
	}
	if want := "chat:Hel chat:RESET chat:Hel chat:lo"; strings.Join(got, " ") != want {
		t.Fatalf("--stream messages gave %q, want %q\n%s", strings.Join(got, " "), want, out)
	}
}

// TestStreamMessagesNamespace: token and reset lines of a subgraph run or
// map item say which one, so a reset voids only that run's tokens.
func TestStreamMessagesNamespace(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&IO{Out: &out, Err: io.Discard}, &execOpts{stream: "messages"}, nil)
	p.event(runtime.Event{Kind: runtime.EvToken, Step: 2, Node: "w", Namespace: "fan@1-0", Token: "a"})
	p.event(runtime.Event{Kind: runtime.EvTokenReset, Step: 2, Node: "w", Namespace: "fan@1-0", Message: "m"})
	p.event(runtime.Event{Kind: runtime.EvToken, Step: 2, Node: "w", Token: "b"})
	want := `{"namespace":"fan@1-0","node":"w","step":2,"token":"a"}
{"message":"m","namespace":"fan@1-0","node":"w","reset":true,"step":2}
{"node":"w","step":2,"token":"b"}
`
	if out.String() != want {
		t.Fatalf("got\n%swant\n%s", out.String(), want)
	}
}
