package observe_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/observe"
	"github.com/lgrun/lgrun/observe/otlptest"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

const apiKey = "sk-test-secret-key-0123456789"

// fakeOpenAI is a local OpenAI-compatible server for the real go-openai
// client: it calls get_weather until the conversation has a tool result,
// then answers. The first fail requests answer 500.
type fakeOpenAI struct {
	srv   *httptest.Server
	fail  atomic.Int64
	calls atomic.Int64
	// delay is how long each answer takes (a model's latency).
	delay time.Duration
}

func newFakeOpenAI(t *testing.T) *fakeOpenAI {
	f := &fakeOpenAI{}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeOpenAI) serve(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	if f.fail.Add(-1) >= 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"error":{"message":"overloaded","type":"server_error"}}`)
		return
	}
	var req struct {
		Stream   bool             `json:"stream"`
		Messages []map[string]any `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	haveTool := false
	for _, m := range req.Messages {
		if m["role"] == "tool" {
			haveTool = true
		}
	}
	const model = "gpt-4o-mini-2024-07-18"
	delta := `{"role":"assistant","tool_calls":[{"index":0,"id":"call_w1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"San Francisco\"}"}}]}`
	msg := `{"role":"assistant","content":null,"tool_calls":[{"id":"call_w1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"San Francisco\"}"}}]}`
	finish, in, out := "tool_calls", 85, 17
	if haveTool {
		delta = `{"role":"assistant","content":"San Francisco: foggy, 57F."}`
		msg = `{"role":"assistant","content":"San Francisco: foggy, 57F."}`
		finish, in, out = "stop", 121, 9
	}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","model":%q,"choices":[{"index":0,"message":%s,"finish_reason":%q}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`, model, msg, finish, in, out, in+out)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[{\"index\":0,\"delta\":%s}]}\n\n", model, delta)
	fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":%q}]}\n\n", model, finish)
	fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n", model, in, out, in+out)
	io.WriteString(w, "data: [DONE]\n\n")
}

// telemetry points the OTLP exporters at rcv through the standard
// environment variables and sets the SDK up from them.
func telemetry(t *testing.T, rcv *otlptest.Receiver, extra map[string]string) *observe.Telemetry {
	t.Helper()
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_SERVICE_NAME":           "lgrun-test",
		"OTEL_METRIC_EXPORT_INTERVAL": "600000",
	}
	for k, v := range extra {
		env[k] = v
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	return setupFromEnv(t)
}

// setupFromEnv sets the SDK up from the process environment.
func setupFromEnv(t *testing.T) *observe.Telemetry {
	t.Helper()
	tel, err := observe.Setup(context.Background(), observe.SetupOptions{Getenv: os.Getenv, ServiceVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if tel == nil {
		t.Fatal("Setup returned no telemetry with an endpoint set")
	}
	return tel
}

type harness struct {
	t     *testing.T
	eng   *lgrun.Engine
	saver runtime.Saver
	tel   *observe.Telemetry
}

func newHarness(t *testing.T, tel *observe.Telemetry, env map[string]string) *harness {
	eng, err := lgrun.New(lgrun.WithGetenv(func(k string) string { return env[k] }), lgrun.WithObserver(tel.Observer))
	if err != nil {
		t.Fatal(err)
	}
	db, err := checkpoint.OpenSQLite(filepath.Join(t.TempDir(), "lgrun.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &harness{t: t, eng: eng, saver: db, tel: tel}
}

func (h *harness) load(path string) *spec.Graph {
	h.t.Helper()
	g, diags := h.eng.Load(path)
	if g == nil {
		h.t.Fatalf("load %s: %v", path, diags)
	}
	return g
}

func (h *harness) flush() {
	h.t.Helper()
	if err := h.tel.Shutdown(context.Background()); err != nil {
		h.t.Fatalf("shutdown: %v", err)
	}
}

func one(t *testing.T, spans []*otlptest.Span, name string) *otlptest.Span {
	t.Helper()
	got := otlptest.Named(spans, name)
	if len(got) != 1 {
		t.Fatalf("want one span %q, got %d; tree:\n%s", name, len(got), otlptest.Tree(spans))
	}
	return got[0]
}

func wantAttr(t *testing.T, s *otlptest.Span, key string, want any) {
	t.Helper()
	got := s.Attr(key)
	if g, ok := got.(float64); ok {
		if w, ok := want.(float64); ok && math.Abs(g-w) < 1e-12 {
			return
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("span %q: %s = %v (%T), want %v", s.Name, key, got, got, want)
	}
}

func hasEvent(s *otlptest.Span, name string) bool {
	for _, e := range s.Events {
		if e.Name == name {
			return true
		}
	}
	return false
}

// TestAgentRunTrace: a tool-calling agent run (graphs/weather-agent.yaml
// against a local OpenAI server through the real go-openai client) is one
// trace: invoke_workflow → superstep → invoke_agent → chat (CLIENT, with
// the GenAI attributes) and tools → execute_tool, plus the GenAI metrics.
func TestAgentRunTrace(t *testing.T) {
	rcv := otlptest.New(t)
	ai := newFakeOpenAI(t)
	tel := telemetry(t, rcv, nil)
	h := newHarness(t, tel, map[string]string{"LGRUN_PROVIDER": "openai", "OPENAI_BASE_URL": ai.srv.URL + "/v1", "OPENAI_API_KEY": apiKey})
	g := h.load("../graphs/weather-agent.yaml")
	res, err := h.eng.Run(context.Background(), g, h.saver, "t-agent", nil)
	if err != nil || res.Status != runtime.StatusDone {
		t.Fatalf("run: %v %v", res, err)
	}
	h.flush()
	spans := rcv.Spans()
	want := `invoke_workflow weather-agent
  superstep weather-agent
    invoke_agent agent
      chat gpt-4o-mini
  superstep weather-agent
    tools tools
      execute_tool get_weather
  superstep weather-agent
    set count
  superstep weather-agent
    invoke_agent agent
      chat gpt-4o-mini
`
	if got := otlptest.Tree(spans); got != want {
		t.Fatalf("span tree:\n%s\nwant:\n%s", got, want)
	}
	root := one(t, spans, "invoke_workflow weather-agent")
	wantAttr(t, root, "gen_ai.operation.name", "invoke_workflow")
	wantAttr(t, root, "gen_ai.conversation.id", "t-agent")
	wantAttr(t, root, "lgrun.status", "done")
	wantAttr(t, root, "lgrun.checkpoint.id", res.Checkpoint.ID)
	if root.Resource["service.name"] != "lgrun-test" || root.Resource["service.version"] != "test" {
		t.Errorf("resource = %v", root.Resource)
	}
	for i, s := range otlptest.Named(spans, "superstep weather-agent") {
		wantAttr(t, s, "lgrun.step", i+1)
		if s.Attr("lgrun.checkpoint.id") == nil {
			t.Errorf("step %d has no checkpoint id", i+1)
		}
	}
	chats := otlptest.Named(spans, "chat gpt-4o-mini")
	for i, c := range chats {
		if c.Kind != tracepb.Span_SPAN_KIND_CLIENT {
			t.Errorf("chat span kind %v, want CLIENT", c.Kind)
		}
		wantAttr(t, c, "gen_ai.operation.name", "chat")
		wantAttr(t, c, "gen_ai.provider.name", "openai")
		wantAttr(t, c, "gen_ai.request.model", "gpt-4o-mini")
		wantAttr(t, c, "gen_ai.request.temperature", 0.0)
		wantAttr(t, c, "gen_ai.response.model", "gpt-4o-mini-2024-07-18")
		wantAttr(t, c, "gen_ai.conversation.id", "t-agent")
		wantAttr(t, c, "lgrun.node", "agent")
		wantAttr(t, c, "lgrun.step", []int{1, 4}[i])
		if _, ok := c.Attrs["gen_ai.input.messages"]; ok {
			t.Errorf("content recorded without the opt-in")
		}
	}
	wantAttr(t, chats[0], "gen_ai.response.finish_reasons", []string{"tool_calls"})
	wantAttr(t, chats[0], "gen_ai.usage.input_tokens", 85)
	wantAttr(t, chats[0], "gen_ai.usage.output_tokens", 17)
	wantAttr(t, chats[0], "lgrun.cost_usd", (85*0.15+17*0.60)/1e6)
	wantAttr(t, chats[1], "gen_ai.response.finish_reasons", []string{"stop"})
	wantAttr(t, chats[1], "gen_ai.usage.input_tokens", 121)
	agent := otlptest.Named(spans, "invoke_agent agent")[0]
	wantAttr(t, agent, "gen_ai.operation.name", "invoke_agent")
	wantAttr(t, agent, "lgrun.node.kind", "llm")
	tool := one(t, spans, "execute_tool get_weather")
	wantAttr(t, tool, "gen_ai.operation.name", "execute_tool")
	wantAttr(t, tool, "gen_ai.tool.name", "get_weather")
	wantAttr(t, tool, "gen_ai.tool.call.id", "call_w1")
	wantAttr(t, tool, "lgrun.tool.kind", "expr")
	for _, s := range spans {
		if s.TraceID != root.TraceID {
			t.Errorf("span %q in another trace", s.Name)
		}
	}

	ms := rcv.Metrics()
	tok := ms["gen_ai.client.token.usage"]
	if tok == nil || tok.Unit != "{token}" {
		t.Fatalf("no gen_ai.client.token.usage in {token}: %v", tok)
	}
	sums := map[string]float64{}
	for _, dp := range tok.GetHistogram().DataPoints {
		for _, kv := range dp.Attributes {
			if kv.Key == "gen_ai.token.type" {
				sums[kv.Value.GetStringValue()] += dp.GetSum()
			}
		}
		if len(dp.ExplicitBounds) != 14 || dp.ExplicitBounds[0] != 1 || dp.ExplicitBounds[13] != 67108864 {
			t.Errorf("token buckets %v", dp.ExplicitBounds)
		}
	}
	if sums["input"] != 85+121 || sums["output"] != 17+9 {
		t.Errorf("token sums %v", sums)
	}
	dur := ms["gen_ai.client.operation.duration"]
	if dur == nil || dur.Unit != "s" || dur.GetHistogram().DataPoints[0].GetCount() != 2 {
		t.Errorf("gen_ai.client.operation.duration = %v", dur)
	}
	runs := ms["lgrun.runs"]
	if runs == nil || runs.GetSum().DataPoints[0].GetAsInt() != 1 {
		t.Errorf("lgrun.runs = %v", runs)
	}
	for _, name := range []string{"lgrun.step.duration", "lgrun.node.duration", "lgrun.cost", "lgrun.checkpoint.commit.duration", "lgrun.runs.active"} {
		if ms[name] == nil {
			t.Errorf("no metric %s", name)
		}
	}
}

// TestCaptureContent: with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT
// the prompts, replies and tool calls are recorded, with the API key
// redacted.
func TestCaptureContent(t *testing.T) {
	rcv := otlptest.New(t)
	ai := newFakeOpenAI(t)
	tel := telemetry(t, rcv, map[string]string{observe.EnvCaptureContent: "true"})
	h := newHarness(t, tel, map[string]string{"LGRUN_PROVIDER": "openai", "OPENAI_BASE_URL": ai.srv.URL + "/v1", "OPENAI_API_KEY": apiKey})
	g := h.load("../graphs/weather-agent.yaml")
	input := map[string]any{"messages": []any{map[string]any{"role": "user", "content": "Weather in SF? my key is " + apiKey}}}
	if _, err := h.eng.Run(context.Background(), g, h.saver, "t-content", input); err != nil {
		t.Fatal(err)
	}
	h.flush()
	spans := rcv.Spans()
	chat := otlptest.Named(spans, "chat gpt-4o-mini")[0]
	in, _ := chat.Attr("gen_ai.input.messages").(string)
	if !strings.Contains(in, "Weather in SF? my key is [REDACTED]") || strings.Contains(in, apiKey) {
		t.Errorf("gen_ai.input.messages = %q", in)
	}
	if out, _ := chat.Attr("gen_ai.output.messages").(string); !strings.Contains(out, "get_weather") {
		t.Errorf("gen_ai.output.messages = %q", out)
	}
	tool := one(t, spans, "execute_tool get_weather")
	wantAttr(t, tool, "gen_ai.tool.call.arguments", `{"city":"San Francisco"}`)
	wantAttr(t, tool, "gen_ai.tool.call.result", "foggy, 57F")
}

// TestSubgraphTrace: the run of a subgraph node is a child span of its
// node span, in the same trace.
func TestSubgraphTrace(t *testing.T) {
	rcv := otlptest.New(t)
	tel := telemetry(t, rcv, nil)
	h := newHarness(t, tel, map[string]string{})
	g := h.load("../graphs/team.yaml")
	res, err := h.eng.Run(context.Background(), g, h.saver, "t-team", nil)
	if err != nil || res.Status != runtime.StatusDone {
		t.Fatalf("run: %v %v", res, err)
	}
	h.flush()
	spans := rcv.Spans()
	root := one(t, spans, "invoke_workflow team")
	node := one(t, spans, "subgraph research")
	wantAttr(t, node, "lgrun.node.kind", "subgraph")
	kids := otlptest.Children(spans, node)
	if len(kids) != 1 || kids[0].Name != "invoke_workflow research-agent" {
		t.Fatalf("children of the subgraph node: %v; tree:\n%s", kids, otlptest.Tree(spans))
	}
	child := kids[0]
	wantAttr(t, child, "lgrun.child", true)
	if th, _ := child.Attr("lgrun.thread").(string); !runtime.IsChildThread(th) || !strings.HasPrefix(th, "t-team") {
		t.Errorf("child run thread %q", th)
	}
	if child.TraceID != root.TraceID {
		t.Errorf("child run in another trace")
	}
	// The child's model calls are below its own steps and nodes.
	var chats int
	for _, st := range otlptest.Children(spans, child) {
		if st.Name != "superstep research-agent" {
			t.Errorf("child run span %q under it", st.Name)
		}
		for _, n := range otlptest.Children(spans, st) {
			chats += len(otlptest.Children(spans, n))
		}
	}
	if chats == 0 {
		t.Errorf("no model call spans under the child run:\n%s", otlptest.Tree(spans))
	}
}

const flakyGraph = `version: 1
name: flaky
state:
  messages:
    type: messages
    default: [{role: user, content: "What's the weather?"}]
models:
  gpt:
    provider: openai
    base_url: %s/v1
    model: gpt-4o-mini
    max_tokens: 64
    stream: false
    retry: {max_attempts: 2, initial_backoff: 1ms, max_backoff: 2ms}
nodes:
  ask:
    kind: llm
    model: gpt
    retry: {max_attempts: 2, initial_backoff: 1ms, max_backoff: 2ms}
edges:
  - {from: START, to: ask}
  - {from: ask, to: END}
`

// TestFailedRetriedResumedTrace: model and node retries are span events,
// the failure sets the error status, and the resumed run's span links to
// the failed run's.
func TestFailedRetriedResumedTrace(t *testing.T) {
	rcv := otlptest.New(t)
	ai := newFakeOpenAI(t)
	tel := telemetry(t, rcv, nil)
	h := newHarness(t, tel, map[string]string{})
	path := filepath.Join(t.TempDir(), "flaky.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(flakyGraph, ai.srv.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	g := h.load(path)
	ai.fail.Store(4) // two node attempts of two model attempts each
	res, err := h.eng.Run(context.Background(), g, h.saver, "t-flaky", nil)
	if err == nil || res == nil || res.Status != runtime.StatusFailed {
		t.Fatalf("run: %v %v", res, err)
	}
	r, err := h.eng.Runner(g, h.saver, lgrun.RunnerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err = r.Resume(context.Background(), runtime.ResumeOptions{Thread: "t-flaky"})
	if err != nil || res.Status != runtime.StatusDone {
		t.Fatalf("resume: %v %v", res, err)
	}
	h.flush()
	spans := rcv.Spans()
	runs := otlptest.Named(spans, "invoke_workflow flaky")
	if len(runs) != 2 {
		t.Fatalf("want 2 runs, got:\n%s", otlptest.Tree(spans))
	}
	failed, resumed := runs[0], runs[1]
	if failed.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("failed run status %v", failed.Status)
	}
	wantAttr(t, failed, "lgrun.status", "failed")
	wantAttr(t, resumed, "lgrun.op", "resume")
	wantAttr(t, resumed, "lgrun.status", "done")
	if resumed.TraceID == failed.TraceID {
		t.Errorf("the resumed run shares the failed run's trace")
	}
	if len(resumed.Links) != 1 || fmt.Sprintf("%x", resumed.Links[0].TraceId) != failed.TraceID || fmt.Sprintf("%x", resumed.Links[0].SpanId) != failed.SpanID {
		t.Errorf("resumed run links %v, want the failed run %s/%s", resumed.Links, failed.TraceID, failed.SpanID)
	}
	nodes := otlptest.Named(spans, "invoke_agent ask")
	if len(nodes) != 2 {
		t.Fatalf("node spans: %d", len(nodes))
	}
	if !hasEvent(nodes[0], "lgrun.retry") || nodes[0].Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("failed node: events %v status %v", nodes[0].Events, nodes[0].Status)
	}
	chats := otlptest.Named(spans, "chat gpt-4o-mini")
	if len(chats) != 5 {
		t.Fatalf("want 5 model attempts, got %d", len(chats))
	}
	for i, c := range chats[:4] {
		if c.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("attempt %d status %v", i, c.Status)
		}
		// The first attempt of each node attempt is retried by the model's
		// policy.
		if hasEvent(c, "lgrun.retry") != (i%2 == 0) {
			t.Errorf("attempt %d: retry event %v", i, c.Events)
		}
		wantAttr(t, c, "gen_ai.request.max_tokens", 64)
	}
	if chats[4].Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR || chats[4].TraceID != resumed.TraceID {
		t.Errorf("last attempt: %v in %s", chats[4].Status, chats[4].TraceID)
	}
}

// TestBudgetStopEvent: a run stopped by its budget has an
// lgrun.budget_stop event and the error status.
func TestBudgetStopEvent(t *testing.T) {
	rcv := otlptest.New(t)
	tel := telemetry(t, rcv, nil)
	h := newHarness(t, tel, map[string]string{})
	g := h.load("../graphs/weather-agent.yaml")
	r, err := h.eng.Runner(g, h.saver, lgrun.RunnerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t-budget", Config: runtime.Config{LLMCalls: 1}})
	if res == nil || res.Status != runtime.StatusBudget {
		t.Fatalf("run: %v %v", res, err)
	}
	h.flush()
	spans := rcv.Spans()
	run := one(t, spans, "invoke_workflow weather-agent")
	wantAttr(t, run, "lgrun.status", "budget-exceeded")
	wantAttr(t, run, "error.type", "budget_exceeded")
	if !hasEvent(run, "lgrun.budget_stop") {
		t.Errorf("run events %v", run.Events)
	}
	// The spent budget stops the run before the next step starts.
	if n := len(otlptest.Named(spans, "superstep weather-agent")); n != 1 {
		t.Errorf("%d steps, want 1:\n%s", n, otlptest.Tree(spans))
	}
}

// TestStepSpansOffAndUnsampled: LGRUN_OTEL_STEP_SPANS=false leaves out the
// superstep spans (the node spans hang under the run span) and a run the
// sampler drops makes no step or node spans at all; the step and node
// metrics are recorded either way.
func TestStepSpansOffAndUnsampled(t *testing.T) {
	rcv := otlptest.New(t)
	tel := telemetry(t, rcv, map[string]string{"LGRUN_OTEL_STEP_SPANS": "false"})
	h := newHarness(t, tel, map[string]string{})
	g := h.load("../graphs/weather-agent.yaml")
	if res, err := h.eng.Run(context.Background(), g, h.saver, "t-nosteps", nil); err != nil || res.Status != runtime.StatusDone {
		t.Fatalf("run: %v %v", res, err)
	}
	h.flush()
	spans := rcv.Spans()
	root := one(t, spans, "invoke_workflow weather-agent")
	if n := len(otlptest.Named(spans, "superstep weather-agent")); n != 0 {
		t.Errorf("%d superstep spans with LGRUN_OTEL_STEP_SPANS=false", n)
	}
	var names []string
	for _, k := range otlptest.Children(spans, root) {
		names = append(names, k.Name)
	}
	if len(names) != 4 {
		t.Errorf("children of the run span: %s, want its 4 node spans\n%s", strings.Join(names, ","), otlptest.Tree(spans))
	}
	if rcv.Metrics()["lgrun.step.duration"] == nil || rcv.Metrics()["lgrun.node.duration"] == nil {
		t.Errorf("step and node metrics missing without step spans")
	}

	off := otlptest.New(t)
	tel = telemetry(t, off, map[string]string{"OTEL_TRACES_SAMPLER": "always_off", "LGRUN_OTEL_STEP_SPANS": "true"})
	h = newHarness(t, tel, map[string]string{})
	if res, err := h.eng.Run(context.Background(), h.load("../graphs/weather-agent.yaml"), h.saver, "t-off", nil); err != nil || res.Status != runtime.StatusDone {
		t.Fatalf("run: %v %v", res, err)
	}
	h.flush()
	if n := len(off.Spans()); n != 0 {
		t.Errorf("unsampled run: %d spans", n)
	}
	if off.Metrics()["lgrun.node.duration"] == nil {
		t.Errorf("unsampled run: no node metrics")
	}

	t.Setenv("LGRUN_OTEL_STEP_SPANS", "nope")
	if _, err := observe.Setup(context.Background(), observe.SetupOptions{Getenv: os.Getenv}); err == nil || !strings.Contains(err.Error(), "LGRUN_OTEL_STEP_SPANS") {
		t.Errorf("bad LGRUN_OTEL_STEP_SPANS: err %v", err)
	}
}
