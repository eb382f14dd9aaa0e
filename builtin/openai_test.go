package builtin

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// chatGraph is a one-node chat graph whose model m is configured by the
// given model settings (YAML lines, indented by 4).
func chatGraph(t testing.TB, model string, extraModels ...string) *spec.Graph {
	t.Helper()
	src := `version: 1
name: chat
state:
  messages: {type: messages}
  answer: {type: string}
models:
  m:
` + model + strings.Join(extraModels, "") + `
nodes:
  chat: {kind: llm, model: m, store: answer}
edges:
  - {from: START, to: chat}
  - {from: chat, to: END}
`
	return mustGraph(t, src, nil)
}

// modelAt returns model settings for a server at url.
func modelAt(url string, more ...string) string {
	s := fmt.Sprintf("    base_url: %s\n    model: test-model\n    api_key_env: TEST_KEY\n    price: {input_per_million: 1, output_per_million: 2}\n    retry: {max_attempts: 3, initial_backoff: 1ms, max_backoff: 5s}\n", url)
	for _, m := range more {
		s += "    " + m + "\n"
	}
	return s
}

func keyEnv() func(string) string { return envOf("TEST_KEY", testKey) }

func TestOpenAITextReply(t *testing.T) {
	srv := newFakeServer(t, fakeReply{Content: "Hello there.", In: 12, Out: 3})
	g := chatGraph(t, modelAt(srv.URL(), "stream: false", "temperature: 0", "max_tokens: 50"))
	res, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", map[string]any{"messages": []any{userMsg("hi")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Writes[1]; got.Field != "answer" || got.Value != "Hello there." {
		t.Fatalf("store write %v", got)
	}
	if len(res.Usage) != 1 || res.Usage[0].ID == "" {
		t.Fatalf("usage %+v: want one call with an id", res.Usage)
	}
	res.Usage[0].ID = ""
	if res.Usage[0] != (runtime.Usage{Node: "chat", Model: "m", InputTokens: 12, OutputTokens: 3, CostUSD: (12*1 + 3*2) / 1e6}) {
		t.Fatalf("usage %+v", res.Usage)
	}
	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	b := reqs[0].Body
	if reqs[0].Header.Get("Authorization") != "Bearer "+testKey {
		t.Errorf("auth header %q", reqs[0].Header.Get("Authorization"))
	}
	if b["model"] != "test-model" || b["max_tokens"] != float64(50) || b["stream"] != false {
		t.Errorf("request %v", b)
	}
	// A zero temperature must reach the server (go-openai omits 0).
	if temp, ok := b["temperature"].(float64); !ok || temp > 1e-30 || temp < 0 {
		t.Errorf("temperature %v, want ~0", b["temperature"])
	}
	msgs := b["messages"].([]any)
	if len(msgs) != 1 || msgs[0].(map[string]any)["content"] != "hi" {
		t.Errorf("messages %v", msgs)
	}
}

func TestOpenAIStreamsTokensAndUsage(t *testing.T) {
	srv := newFakeServer(t, fakeReply{Content: "one two three four", In: 20, Out: 4})
	g := chatGraph(t, modelAt(srv.URL()))
	res, ev, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", map[string]any{"messages": []any{userMsg("count")}})
	if err != nil {
		t.Fatal(err)
	}
	var toks []string
	for _, e := range ev.list() {
		if e.Kind == runtime.EvToken {
			toks = append(toks, e.Token)
		}
	}
	if strings.Join(toks, "|") != "one |two |three |four" {
		t.Fatalf("tokens %q", toks)
	}
	if res.Usage[0].InputTokens != 20 || res.Usage[0].OutputTokens != 4 {
		t.Fatalf("usage %+v", res.Usage)
	}
	b := srv.requests()[0].Body
	so, _ := b["stream_options"].(map[string]any)
	if b["stream"] != true || so["include_usage"] != true {
		t.Fatalf("request did not ask for a stream with usage: %v", b)
	}
}

func TestOpenAIStreamedToolCallsAssemble(t *testing.T) {
	srv := newFakeServer(t, fakeReply{ToolCalls: []fakeCall{
		{ID: "call_a", Name: "get_weather", Args: `{"city":"Paris"}`},
		{ID: "call_b", Name: "get_weather", Args: `{"city":"Rome"}`},
	}})
	g := mustGraph(t, `version: 1
name: agent
state:
  messages: {type: messages}
models:
  m:
`+modelAt(srv.URL())+`
tools:
  get_weather:
    kind: expr
    description: Weather of a city.
    parameters: {type: object, properties: {city: {type: string}}, required: [city]}
    expr: '"sunny in " + args.city'
nodes:
  agent: {kind: llm, model: m, tools: [get_weather]}
edges:
  - {from: START, to: agent}
  - {from: agent, to: END}
`, nil)
	res, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "agent", map[string]any{"messages": []any{userMsg("weather?")}})
	if err != nil {
		t.Fatal(err)
	}
	msg := res.Writes[0].Value.([]any)[0].(map[string]any)
	want := `[{"arguments":"{\"city\":\"Paris\"}","id":"call_a","name":"get_weather"},{"arguments":"{\"city\":\"Rome\"}","id":"call_b","name":"get_weather"}]`
	if got := jsonOf(t, msg["tool_calls"]); got != want {
		t.Fatalf("tool calls\n got %s\nwant %s", got, want)
	}
	// The tool is offered to the model as a function with its schema.
	tools := srv.requests()[0].Body["tools"].([]any)
	fn := tools[0].(map[string]any)["function"].(map[string]any)
	if fn["name"] != "get_weather" || fn["description"] != "Weather of a city." || jsonOf(t, fn["parameters"]) != `{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"}` {
		t.Fatalf("tool definition %v", fn)
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	srv := newFakeServer(t,
		fakeReply{Status: 429, RetryAfter: "1", ErrMsg: "rate limited"},
		fakeReply{Content: "ok", In: 1, Out: 1},
	)
	g := chatGraph(t, modelAt(srv.URL()))
	start := time.Now()
	res, ev, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", map[string]any{"messages": []any{userMsg("hi")}})
	if err != nil {
		t.Fatal(err)
	}
	reqs := srv.requests()
	if len(reqs) != 2 || res.Writes[1].Value != "ok" {
		t.Fatalf("%d requests, writes %v", len(reqs), res.Writes)
	}
	// initial_backoff is 1ms: only Retry-After explains a one-second wait.
	if gap := reqs[1].At.Sub(reqs[0].At); gap < 950*time.Millisecond || gap > 3*time.Second {
		t.Fatalf("retried after %s, want the server's Retry-After of 1s", gap)
	}
	if !strings.Contains(ev.messages(), "retry 1 of 2 in 1s") {
		t.Errorf("no retry message: %q", ev.messages())
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("too slow")
	}
}

func TestRetryHonoursRetryAfterMs(t *testing.T) {
	srv := newFakeServer(t,
		fakeReply{Status: 503, RetryMs: "300", ErrMsg: "overloaded"},
		fakeReply{Content: "ok"},
	)
	g := chatGraph(t, modelAt(srv.URL()))
	if _, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil); err != nil {
		t.Fatal(err)
	}
	reqs := srv.requests()
	if gap := reqs[1].At.Sub(reqs[0].At); gap < 280*time.Millisecond || gap > 2*time.Second {
		t.Fatalf("retried after %s, want retry-after-ms 300", gap)
	}
}

func TestRetryExponentialBackoffOn5xx(t *testing.T) {
	srv := newFakeServer(t,
		fakeReply{Status: 500, ErrMsg: "boom"},
		fakeReply{Status: 502, ErrMsg: "bad gateway"},
		fakeReply{Content: "finally"},
	)
	g := chatGraph(t, strings.Replace(modelAt(srv.URL()), "initial_backoff: 1ms", "initial_backoff: 100ms", 1))
	res, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Writes[1].Value != "finally" {
		t.Fatalf("writes %v", res.Writes)
	}
	reqs := srv.requests()
	// Jittered: the first wait is in [50ms, 100ms], the second in [100ms, 200ms].
	g1, g2 := reqs[1].At.Sub(reqs[0].At), reqs[2].At.Sub(reqs[1].At)
	if g1 < 45*time.Millisecond || g1 > time.Second || g2 < 95*time.Millisecond || g2 > 1500*time.Millisecond {
		t.Fatalf("waits %s then %s, want ~[50,100]ms then ~[100,200]ms", g1, g2)
	}
}

func TestRetryGivesUpAndDoesNotRetryClientErrors(t *testing.T) {
	srv := newFakeServer(t,
		fakeReply{Status: 500, ErrMsg: "boom 1"},
		fakeReply{Status: 500, ErrMsg: "boom 2"},
		fakeReply{Status: 500, ErrMsg: "boom 3"},
	)
	g := chatGraph(t, modelAt(srv.URL()))
	_, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err == nil || !strings.Contains(err.Error(), `model "m": failed after 3 attempts`) || !strings.Contains(err.Error(), "boom 3") {
		t.Fatalf("error %v", err)
	}
	if n := len(srv.requests()); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}

	bad := newFakeServer(t, fakeReply{Status: 400, ErrMsg: "invalid request"}, fakeReply{Content: "never"})
	g = chatGraph(t, modelAt(bad.URL()))
	_, _, err = callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err == nil || !strings.Contains(err.Error(), "invalid request") || strings.Contains(err.Error(), "attempts") {
		t.Fatalf("error %v", err)
	}
	if n := len(bad.requests()); n != 1 {
		t.Fatalf("a 400 was retried: %d requests", n)
	}
}

func TestTimeoutIsRetried(t *testing.T) {
	srv := newFakeServer(t,
		fakeReply{Delay: 3 * time.Second, Content: "too late"},
		fakeReply{Content: "in time"},
	)
	g := chatGraph(t, modelAt(srv.URL(), "timeout: 150ms"))
	start := time.Now()
	res, ev, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Writes[1].Value != "in time" {
		t.Fatalf("writes %v", res.Writes)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %s: the timeout did not cut the slow reply", d)
	}
	if !strings.Contains(ev.messages(), "no reply within 150ms") {
		t.Errorf("messages %q", ev.messages())
	}
}

func TestTimeoutEveryAttemptFailsClearly(t *testing.T) {
	srv := newFakeServer(t, fakeReply{Delay: 3 * time.Second}, fakeReply{Delay: 3 * time.Second})
	g := chatGraph(t, strings.Replace(modelAt(srv.URL(), "timeout: 100ms"), "max_attempts: 3", "max_attempts: 2", 1))
	_, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err == nil || !strings.Contains(err.Error(), "failed after 2 attempts: no reply within 100ms") {
		t.Fatalf("error %v", err)
	}
}

func TestConnectionErrorsAreRetried(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL + "/v1"
	dead.Close()
	g := chatGraph(t, modelAt(url))
	_, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err == nil || !strings.Contains(err.Error(), "failed after 3 attempts") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("error %v", err)
	}
}

func TestMidStreamFailureIsRetried(t *testing.T) {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		if first {
			fmt.Fprint(w, `data: {"choices":[{"index":0,"delta":{"content":"par"}}]}`+"\n\n")
			w.(http.Flusher).Flush()
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			conn.Close() // the connection drops mid-stream
			return
		}
		fmt.Fprint(w, `data: {"choices":[{"index":0,"delta":{"content":"whole"}}]}`+"\n\ndata: [DONE]\n\n")
	}))
	defer srv.Close()
	g := chatGraph(t, modelAt(srv.URL+"/v1"))
	res, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Writes[1].Value != "whole" {
		t.Fatalf("writes %v", res.Writes)
	}
}

func TestFallbackModels(t *testing.T) {
	primary := newFakeServer(t, fakeReply{Status: 500, ErrMsg: "down"}, fakeReply{Status: 500, ErrMsg: "still down"})
	backup := newFakeServer(t, fakeReply{Content: "from backup", In: 5, Out: 2})
	g := chatGraph(t,
		strings.Replace(modelAt(primary.URL(), "fallbacks: [backup]"), "max_attempts: 3", "max_attempts: 2", 1),
		"  backup:\n"+modelAt(backup.URL()),
	)
	res, ev, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Writes[1].Value != "from backup" || res.Usage[0].Model != "backup" {
		t.Fatalf("writes %v usage %+v", res.Writes, res.Usage)
	}
	if len(primary.requests()) != 2 || len(backup.requests()) != 1 {
		t.Fatalf("requests: primary %d, backup %d", len(primary.requests()), len(backup.requests()))
	}
	if !strings.Contains(ev.messages(), `model "m" failed; falling back to "backup"`) {
		t.Errorf("messages %q", ev.messages())
	}

	// When every model fails, the error names each.
	p2 := newFakeServer(t, fakeReply{Status: 401, ErrMsg: "bad key"})
	b2 := newFakeServer(t, fakeReply{Status: 404, ErrMsg: "no such model"})
	g = chatGraph(t, modelAt(p2.URL(), "fallbacks: [backup]"), "  backup:\n"+modelAt(b2.URL()))
	_, _, err = callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err == nil || !strings.Contains(err.Error(), `model "m": `) || !strings.Contains(err.Error(), "bad key") ||
		!strings.Contains(err.Error(), `fallback "backup": `) || !strings.Contains(err.Error(), "no such model") {
		t.Fatalf("error %v", err)
	}
}

// The limiter is shared by every run of one environment.
func TestRateLimiterIsSharedAcrossRuns(t *testing.T) {
	var replies []fakeReply
	for range 6 {
		replies = append(replies, fakeReply{Content: "ok"})
	}
	srv := newFakeServer(t, replies...)
	// rpm 600: one request every 100ms, whichever run makes it.
	g := chatGraph(t, modelAt(srv.URL(), "rpm: 600"))
	env := NewEnvironment()
	r1, _ := newRunnerIn(t, env, g, Options{Getenv: keyEnv()})
	r2, _ := newRunnerIn(t, env, chatGraph(t, modelAt(srv.URL(), "rpm: 600")), Options{Getenv: keyEnv()})
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 6 {
		r := r1
		if i%2 == 1 {
			r = r2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Run(context.Background(), runtime.RunOptions{Thread: fmt.Sprint("t", i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	reqs := srv.requests()
	if len(reqs) != 6 {
		t.Fatalf("%d requests", len(reqs))
	}
	// The limiter grants one slot per 100ms, the first at start at the
	// earliest; a request can only arrive after its slot (a loaded machine
	// delays arrivals, never advances them), so the j-th arrival is at
	// least j slots after start. Without a shared limit all six would
	// arrive at once.
	at := make([]time.Time, len(reqs))
	for i, r := range reqs {
		at[i] = r.At
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	for j, a := range at {
		if min := time.Duration(j)*100*time.Millisecond - 5*time.Millisecond; a.Sub(start) < min {
			t.Fatalf("request %d arrived %s after the start, before its slot at %s: the limit is one per 100ms", j, a.Sub(start), min)
		}
	}
}

// Two environments (two engines in one process) keep separate limiters:
// one's rpm budget does not slow the other's runs down.
func TestRateLimitersPerEnvironment(t *testing.T) {
	srv := newFakeServer(t, fakeReply{Content: "ok"}, fakeReply{Content: "ok"}, fakeReply{Content: "ok"})
	// rpm 60: one request a second per environment.
	src := modelAt(srv.URL(), "rpm: 60")
	envA, envB := NewEnvironment(), NewEnvironment()
	ra, _ := newRunnerIn(t, envA, chatGraph(t, src), Options{Getenv: keyEnv()})
	rb, _ := newRunnerIn(t, envB, chatGraph(t, src), Options{Getenv: keyEnv()})
	rc, _ := newRunnerIn(t, envA.Clone(), chatGraph(t, src), Options{Getenv: keyEnv()})
	start := time.Now()
	var wg sync.WaitGroup
	for i, r := range []*runtime.Runner{ra, rb, rc} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Run(context.Background(), runtime.RunOptions{Thread: fmt.Sprint("t", i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(start); d > 700*time.Millisecond {
		t.Fatalf("three runs in three environments took %s: a limiter of one throttled another", d)
	}
	if n := len(srv.requests()); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
}

func TestLimiterWaitHonoursContext(t *testing.T) {
	ls := newLimiters()
	key := t.Name()
	l := ls.limiterFor(key, 1) // one a minute
	if err := l.wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second wait: %v, want the context's deadline", err)
	}
	// A stricter declaration of the same model wins.
	if l2 := ls.limiterFor(key, 600); l2 != l || l.interval() != time.Minute {
		t.Fatalf("limiter %p interval %s", l2, l.interval())
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		h    http.Header
		want time.Duration
	}{
		{http.Header{"Retry-After": {"2"}}, 2 * time.Second},
		{http.Header{"Retry-After": {"0.5"}}, 500 * time.Millisecond},
		{http.Header{"Retry-After": {now.Add(3 * time.Second).Format(http.TimeFormat)}}, 3 * time.Second},
		{http.Header{"Retry-After-Ms": {"250"}, "Retry-After": {"9"}}, 250 * time.Millisecond},
		{http.Header{"Retry-After": {"soon"}}, 0},
		{http.Header{}, 0},
	} {
		if got := parseRetryAfter(tc.h, now); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.h, got, tc.want)
		}
	}
}

func TestRetryAfterLongerThanMaxBackoffGivesUp(t *testing.T) {
	srv := newFakeServer(t, fakeReply{Status: 429, RetryAfter: "3600", ErrMsg: "quota"}, fakeReply{Content: "never"})
	g := chatGraph(t, modelAt(srv.URL()))
	start := time.Now()
	_, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", nil)
	if err == nil || !strings.Contains(err.Error(), "retry after 1h0m0s, longer than max_backoff 5s") {
		t.Fatalf("error %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("waited anyway")
	}
}

func TestResponseFormatFallsBackToPrompt(t *testing.T) {
	srv := newFakeServer(t,
		fakeReply{RejectFormat: true},
		fakeReply{Content: `{"n": 3}`},
		fakeReply{Content: `{"n": 4}`},
	)
	src := `version: 1
name: s
state:
  n: {type: int}
models:
  m:
` + modelAt(srv.URL()) + `
nodes:
  count:
    kind: llm
    model: m
    system: You count.
    prompt: How many?
    output:
      schema: {type: object, properties: {n: {type: integer}}, required: [n]}
      fields: {n: reply.n}
edges:
  - {from: START, to: count}
  - {from: count, to: END}
`
	g := mustGraph(t, src, nil)
	env := NewEnvironment()
	res, _, err := callNodeIn(t, env, g, Options{Getenv: keyEnv()}, "count", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Writes[0] != (runtime.Write{Field: "n", Value: 3}) {
		t.Fatalf("writes %v", res.Writes)
	}
	reqs := srv.requests()
	if reqs[0].Body["response_format"] == nil || reqs[1].Body["response_format"] != nil {
		t.Fatalf("response_format: first %v, second %v", reqs[0].Body["response_format"], reqs[1].Body["response_format"])
	}
	sys := reqs[1].Body["messages"].([]any)[0].(map[string]any)["content"].(string)
	if !strings.HasPrefix(sys, "You count.") || !strings.Contains(sys, `JSON Schema:`) || !strings.Contains(sys, `"required":["n"]`) {
		t.Fatalf("system prompt without the schema: %q", sys)
	}
	// The server's answer is remembered: the next call does not try again.
	if _, _, err := callNodeIn(t, env, g, Options{Getenv: keyEnv()}, "count", nil); err != nil {
		t.Fatal(err)
	}
	if rf := srv.requests()[2].Body["response_format"]; rf != nil {
		t.Fatalf("asked for response_format again: %v", rf)
	}
}

func TestAPIKeyNeededForOpenAI(t *testing.T) {
	g := chatGraph(t, "    model: gpt-4o-mini\n")
	_, _, err := callNode(t, g, Options{Getenv: envOf()}, "chat", nil)
	if err == nil || !strings.Contains(err.Error(), "environment variable OPENAI_API_KEY is empty") {
		t.Fatalf("error %v", err)
	}
	// OPENAI_BASE_URL points a model without base_url at another server.
	srv := newFakeServer(t, fakeReply{Content: "local"})
	res, _, err := callNode(t, g, Options{Getenv: envOf("OPENAI_BASE_URL", srv.URL())}, "chat", nil)
	if err != nil || res.Writes[1].Value != "local" {
		t.Fatalf("%v %v", res, err)
	}
	if h := srv.requests()[0].Header.Get("Authorization"); h != "" {
		t.Fatalf("sent Authorization %q without a key", h)
	}
}

func TestCostUsesThePriceOfTheAnsweringModel(t *testing.T) {
	m := &spec.Model{PriceIn: 0.15, PriceOut: 0.60}
	if got := costUSD(m, 1_000_000, 500_000); math.Abs(got-0.45) > 1e-12 {
		t.Fatalf("cost %v", got)
	}
}
