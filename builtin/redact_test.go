package builtin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// TestTokenRedactorSplitSecrets: a secret split anywhere across tokens
// never reaches the output, not even in part, and the output is the
// redacted text, all of it.
func TestTokenRedactorSplitSecrets(t *testing.T) {
	r := newRedactor(testKey, "tok-9876")
	for _, text := range []string{
		"key=" + testKey + ".",
		testKey + testKey,
		"sk-test- is not the key, " + testKey[:10] + " neither; but " + testKey,
		"tok-9876" + testKey + " tok-98",
	} {
		want := r.String(text)
		for i := 0; i <= len(text); i++ {
			for j := i; j <= len(text); j++ {
				var out []string
				tr := r.tokens(func(s string) { out = append(out, s) })
				for _, tok := range []string{text[:i], text[i:j], text[j:]} {
					tr.write(tok)
				}
				tr.flush()
				got := strings.Join(out, "")
				if got != want {
					t.Fatalf("split %d,%d of %q: streamed %q, want %q", i, j, text, got, want)
				}
				for _, s := range out {
					if strings.Contains(s, "SECRET") {
						t.Fatalf("split %d,%d: token %q shows part of the key", i, j, s)
					}
				}
			}
		}
	}
}

// TestRedactorCoversEveryReplyString fills every string of a chatReply
// (found by reflection, so a new field is covered too) with the key.
func TestRedactorCoversEveryReplyString(t *testing.T) {
	rep := &chatReply{ToolCalls: make([]toolCall, 2)}
	var fill func(v reflect.Value)
	fill = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			v.SetString("x" + testKey + "y")
		case reflect.Struct:
			for i := range v.NumField() {
				fill(v.Field(i))
			}
		case reflect.Slice:
			for i := range v.Len() {
				fill(v.Index(i))
			}
		case reflect.Pointer:
			if !v.IsNil() {
				fill(v.Elem())
			}
		}
	}
	fill(reflect.ValueOf(rep))
	newRedactor(testKey).reply(rep)
	if s := jsonOf(t, rep); strings.Contains(s, "SECRET") || !strings.Contains(s, "x[REDACTED]y") {
		t.Fatalf("reply after redaction: %s", s)
	}
}

// TestAPIKeyRedactedEverywhereInReplies: a server that puts the key into
// tool-call ids and names, and splits it across streamed chunks, leaks it
// into no state, checkpoint, record or event.
func TestAPIKeyRedactedEverywhereInReplies(t *testing.T) {
	half := len(testKey) / 2
	call := func(stream bool) string {
		fn := `{"name":"` + testKey + `","arguments":"{\"k\":\"` + testKey + `\"}"}`
		if stream {
			return `{"index":0,"id":"call_` + testKey + `","type":"function","function":` + fn + `}`
		}
		return `{"id":"call_` + testKey + `","type":"function","function":` + fn + `}`
	}
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			url, _ := rawServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if !stream {
					w.Header().Set("Content-Type", "application/json")
					fmt.Fprint(w, `{"id":"c","object":"chat.completion","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"key `+testKey+`","tool_calls":[`+call(false)+`]}}]}`)
					return
				}
				sse(w,
					`{"choices":[{"index":0,"delta":{"role":"assistant","content":"your key is `+testKey[:half]+`"}}]}`,
					`{"choices":[{"index":0,"delta":{"content":"`+testKey[half:]+`, keep it"}}]}`,
					`{"choices":[{"index":0,"delta":{"tool_calls":[`+call(true)+`]}}]}`,
					chunkStop, "[DONE]")
			})
			g := chatGraph(t, modelAt(url, fmt.Sprintf("stream: %v", stream)))
			r, ev := newRunner(t, g, Options{Getenv: keyEnv()})
			ctx := context.Background()
			runGraph(t, r, "th", map[string]any{"messages": []any{userMsg("hi")}})
			var dump strings.Builder
			cps, _ := r.Saver.List(ctx, "th", 0)
			for _, c := range cps {
				full, _ := r.Saver.Get(ctx, "th", c.ID)
				dump.WriteString(jsonOf(t, full))
			}
			dump.WriteString(jsonOf(t, ev.list()))
			if strings.Contains(dump.String(), "SECRET") || strings.Contains(dump.String(), testKey[half:]) {
				t.Fatalf("the key (or part of it) was stored or emitted:\n%s", dump.String())
			}
			if !strings.Contains(dump.String(), `call_[REDACTED]`) {
				t.Fatalf("the tool call is missing:\n%s", dump.String())
			}
			if stream {
				if got := tokenLog(ev); got != "your key is [REDACTED], keep it" {
					t.Fatalf("tokens %q", got)
				}
			}
		})
	}
}

// TestHTTPToolSecretsRedacted: an http tool's server that echoes the
// header token back (in a result or an error) shows [REDACTED].
func TestHTTPToolSecretsRedacted(t *testing.T) {
	const token = "wk-777-SECRET-abc"
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/deny" {
			http.Error(w, "bad token "+r.Header.Get("Authorization"), http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "you sent %q and %q", r.Header.Get("X-Api-Key"), r.Header.Get("Authorization"))
	}))
	defer api.Close()
	tools := `  echo:
    kind: http
    url: '` + api.URL + `/{{ args.path }}'
    headers_env: {X-Api-Key: WEATHER_KEY, Authorization: WEATHER_AUTH}
    allow_hosts: [127.0.0.1]
`
	g := toolsGraph(t, tools, ", parallel: false")
	got := results(t, g, Options{Getenv: envOf("WEATHER_KEY", token, "WEATHER_AUTH", "Bearer "+token+"-2")},
		withCalls("echo", `{"path": "ok"}`, "echo", `{"path": "deny"}`))
	all := strings.Join(got, "\n")
	if strings.Contains(all, "SECRET") {
		t.Fatalf("a header token came back:\n%s", all)
	}
	if got[0] != `you sent "[REDACTED]" and "[REDACTED]"` || !strings.Contains(got[1], "401 Unauthorized: bad token [REDACTED]") {
		t.Fatalf("results:\n%s", all)
	}
}
