package builtin

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// classifyGraph has one llm node with structured output.
func classifyGraph(t testing.TB, model string, tries int) *spec.Graph {
	t.Helper()
	return mustGraph(t, `version: 1
name: classify
state:
  ticket: {type: string, default: I was charged twice}
  category: {type: string}
  urgent: {type: bool}
  messages: {type: messages}
models:
  m:
`+model+`
nodes:
  classify:
    kind: llm
    model: m
    prompt: 'Classify: {{ state.ticket }}'
    output:
      schema:
        type: object
        properties:
          category: {enum: [billing, technical]}
          urgent: {type: boolean}
        required: [category, urgent]
        additionalProperties: false
      strict: true
      max_attempts: `+string(rune('0'+tries))+`
      fields:
        category: reply.category
        urgent: reply.urgent
edges:
  - {from: START, to: classify}
  - {from: classify, to: END}
`, nil)
}

func TestStructuredOutputValidatedAndRetried(t *testing.T) {
	srv := newFakeServer(t,
		fakeReply{Content: `{"category": "refunds", "urgent": true}`, In: 10, Out: 5},
		fakeReply{Content: "```json\n{\"category\": \"billing\", \"urgent\": true}\n```", In: 30, Out: 6},
	)
	g := classifyGraph(t, modelAt(srv.URL()), 2)
	res, ev, err := callNode(t, g, Options{Getenv: keyEnv()}, "classify", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]any{}
	for _, w := range res.Writes {
		if w.Field != "messages" {
			got[w.Field] = w.Value
		}
	}
	if !reflect.DeepEqual(got, map[string]any{"category": "billing", "urgent": true}) {
		t.Fatalf("fields %v", got)
	}
	if len(res.Usage) != 2 || len(res.Records) != 2 {
		t.Fatalf("usage %v records %d: both calls count", res.Usage, len(res.Records))
	}
	reqs := srv.requests()
	rf := reqs[0].Body["response_format"].(map[string]any)
	js := rf["json_schema"].(map[string]any)
	if rf["type"] != "json_schema" || js["strict"] != true || jsonOf(t, js["schema"].(map[string]any)["required"]) != `["category","urgent"]` {
		t.Fatalf("response_format %v", rf)
	}
	// The second request shows the model its invalid reply and why.
	msgs := reqs[1].Body["messages"].([]any)
	last := msgs[len(msgs)-1].(map[string]any)["content"].(string)
	prev := msgs[len(msgs)-2].(map[string]any)
	if prev["role"] != "assistant" || !strings.Contains(prev["content"].(string), "refunds") ||
		!strings.Contains(last, "does not match the required JSON Schema") || !strings.Contains(last, "at /category") {
		t.Fatalf("retry request %v", msgs)
	}
	if !strings.Contains(ev.messages(), "asking again (2 of 2)") {
		t.Errorf("messages %q", ev.messages())
	}
	// Only the valid reply joins the conversation.
	ms := res.Writes[0].Value.([]any)
	if len(ms) != 2 || !strings.Contains(ms[1].(map[string]any)["content"].(string), "billing") {
		t.Fatalf("messages write %v", ms)
	}
}

func TestStructuredOutputFailsClearly(t *testing.T) {
	srv := newFakeServer(t, fakeReply{Content: "not json"}, fakeReply{Content: `{"category": "billing"}`})
	g := classifyGraph(t, modelAt(srv.URL()), 2)
	_, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "classify", nil)
	if err == nil || !strings.Contains(err.Error(), "structured output: reply 2 of 2 does not match output.schema") || !strings.Contains(err.Error(), "urgent") {
		t.Fatalf("error %v", err)
	}
}

func TestBudgetRefusesCallsBeyondLLMCalls(t *testing.T) {
	srv := newFakeServer(t, fakeReply{Content: `{"category": "nope", "urgent": true}`}, fakeReply{Content: `{"category": "billing", "urgent": true}`})
	g := classifyGraph(t, modelAt(srv.URL()), 3)
	kinds, err := Kinds(g, Options{Getenv: keyEnv()})
	if err != nil {
		t.Fatal(err)
	}
	// One call left on the thread: the structured-output retry would be a
	// second one, so it is refused before it is made.
	call := &runtime.NodeCall{
		Graph: g, Node: g.Nodes["classify"], State: g.Defaults(), Step: 4,
		Ledger: runtime.NewLedger(nil, "", runtime.Limits{LLMCalls: 5, Tokens: -1, CostUSD: -1}, runtime.Totals{LLMCalls: 4}),
	}
	_, err = kinds["llm"](context.Background(), call)
	var be *runtime.BudgetError
	if !errors.As(err, &be) || be.What != "llm_calls" || be.Limit != "5" || be.Used != "5" {
		t.Fatalf("error %v, want llm_calls budget (limit 5, used 5)", err)
	}
	if n := len(srv.requests()); n != 1 {
		t.Fatalf("%d requests; the refused call must not be made", n)
	}
	// Nothing left: no call at all.
	call.Ledger = runtime.NewLedger(nil, "", runtime.Limits{LLMCalls: 4, Tokens: -1, CostUSD: -1}, runtime.Totals{LLMCalls: 4})
	if _, err = kinds["llm"](context.Background(), call); !errors.As(err, &be) {
		t.Fatalf("error %v", err)
	}
	if n := len(srv.requests()); n != 1 {
		t.Fatalf("%d requests after an empty budget", n)
	}
	// Spent tokens stop the next call too.
	call.Ledger = runtime.NewLedger(nil, "", runtime.Limits{LLMCalls: -1, Tokens: 10, CostUSD: -1}, runtime.Totals{})
	srv2 := newFakeServer(t, fakeReply{Content: `{"category": "nope", "urgent": true}`, In: 8, Out: 4}, fakeReply{Content: "{}"})
	g2 := classifyGraph(t, modelAt(srv2.URL()), 3)
	kinds2, _ := Kinds(g2, Options{Getenv: keyEnv()})
	call.Graph, call.Node = g2, g2.Nodes["classify"]
	if _, err = kinds2["llm"](context.Background(), call); !errors.As(err, &be) || be.What != "tokens" {
		t.Fatalf("error %v, want tokens budget", err)
	}
	if n := len(srv2.requests()); n != 1 {
		t.Fatalf("%d requests", n)
	}
}

func TestPromptSystemStoreAndTrim(t *testing.T) {
	srv := newFakeServer(t, fakeReply{Content: "fine, thanks"})
	g := mustGraph(t, `version: 1
name: chat
state:
  question: {type: string, default: "how are you?"}
  answer: {type: string}
  messages: {type: messages}
models:
  m:
`+modelAt(srv.URL())+`
nodes:
  chat:
    kind: llm
    model: m
    system: Be brief. Today is Monday.
    prompt: '{{ state.question }}'
    store: answer
    trim: {keep_last: 3, keep_system: true}
edges:
  - {from: START, to: chat}
  - {from: chat, to: END}
`, nil)
	old := []any{
		map[string]any{"id": "s", "role": "system", "content": "You are a cat."},
		map[string]any{"id": "u1", "role": "user", "content": "one"},
		map[string]any{"id": "a1", "role": "assistant", "content": "meow 1"},
		map[string]any{"id": "u2", "role": "user", "content": "two"},
		map[string]any{"id": "a2", "role": "assistant", "content": "meow 2"},
	}
	res, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", map[string]any{"messages": old})
	if err != nil {
		t.Fatal(err)
	}
	msgs := srv.requests()[0].Body["messages"].([]any)
	var got []string
	for _, m := range msgs {
		mm := m.(map[string]any)
		got = append(got, mm["role"].(string)+":"+mm["content"].(string))
	}
	want := []string{"system:Be brief. Today is Monday.", "system:You are a cat.", "user:two", "assistant:meow 2", "user:how are you?"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("request\n got %q\nwant %q", got, want)
	}
	// The state is trimmed the same way, so it stays bounded.
	base := g.Defaults()
	base["messages"] = spec.Normalize(old)
	values, _, _, err := runtime.Merge(g, 1, base, []runtime.NodeWrites{{Node: "chat", Writes: res.Writes}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range values["messages"].([]any) {
		mm := m.(map[string]any)
		ids = append(ids, mm["role"].(string)+":"+mm["content"].(string))
	}
	want = []string{"system:You are a cat.", "user:two", "assistant:meow 2", "user:how are you?", "assistant:fine, thanks"}
	if !reflect.DeepEqual(ids, want) {
		t.Fatalf("state\n got %q\nwant %q", ids, want)
	}
	if values["answer"] != "fine, thanks" {
		t.Fatalf("answer %v", values["answer"])
	}
}

func TestTrimNeverStartsWithOrphanToolResults(t *testing.T) {
	msgs := []map[string]any{
		{"id": "u", "role": "user"},
		{"id": "a", "role": "assistant", "tool_calls": []any{map[string]any{"id": "c1", "name": "x"}}},
		{"id": "t1", "role": "tool", "tool_call_id": "c1"},
		{"id": "a2", "role": "assistant", "content": "done"},
	}
	got := trimMessages(msgs, 2, true)
	if len(got) != 1 || got[0]["id"] != "a2" {
		t.Fatalf("kept %v", got)
	}
}

func TestMissingToolResultsAreFilled(t *testing.T) {
	srv := newFakeServer(t, fakeReply{Content: "sorry, the tool failed"})
	g := chatGraph(t, modelAt(srv.URL()))
	// A run stopped after the first of two tool results; then the user
	// asked something else.
	history := []any{
		map[string]any{"id": "u1", "role": "user", "content": "weather in Paris and Rome?"},
		map[string]any{"id": "a1", "role": "assistant", "content": "", "tool_calls": []any{
			map[string]any{"id": "c1", "name": "w", "arguments": `{"city":"Paris"}`},
			map[string]any{"id": "c2", "name": "w", "arguments": `{"city":"Rome"}`},
		}},
		map[string]any{"id": "t1", "role": "tool", "tool_call_id": "c1", "name": "w", "content": "sunny"},
		map[string]any{"id": "u2", "role": "user", "content": "hello?"},
	}
	res, ev, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", map[string]any{"messages": history})
	if err != nil {
		t.Fatal(err)
	}
	var sent []string
	for _, m := range srv.requests()[0].Body["messages"].([]any) {
		mm := m.(map[string]any)
		s := mm["role"].(string)
		if id, ok := mm["tool_call_id"].(string); ok {
			s += "[" + id + "]"
		}
		sent = append(sent, s)
	}
	if want := []string{"user", "assistant", "tool[c1]", "tool[c2]", "user"}; !reflect.DeepEqual(sent, want) {
		t.Fatalf("sent %v, want %v", sent, want)
	}
	// The state gets the filled result in the same place.
	g2 := g
	values, _, _, err := runtime.Merge(g2, 1, map[string]any{"messages": spec.Normalize(history), "answer": ""}, []runtime.NodeWrites{{Node: "chat", Writes: res.Writes}})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, m := range values["messages"].([]any) {
		mm := m.(map[string]any)
		order = append(order, mm["id"].(string))
		if mm["tool_call_id"] == "c2" && !strings.Contains(mm["content"].(string), `"error"`) {
			t.Fatalf("filled result %v", mm)
		}
	}
	if want := []string{"u1", "a1", "t1", "1.chat.0", "u2", "1.chat.1"}; !reflect.DeepEqual(order, want) {
		t.Fatalf("state order %v, want %v", order, want)
	}
	if !strings.Contains(ev.messages(), "filled 1 missing tool result") {
		t.Errorf("messages %q", ev.messages())
	}
}

func TestMessageWritesMinimal(t *testing.T) {
	a := map[string]any{"id": "a", "role": "user"}
	b := map[string]any{"id": "b", "role": "assistant"}
	n := map[string]any{"id": "n", "role": "assistant"}
	got := messageWrites([]map[string]any{a, b}, []map[string]any{a, b, n})
	if jsonOf(t, got) != `[[{"id":"n","role":"assistant"}]]` {
		t.Fatalf("append only: %s", jsonOf(t, got))
	}
	got = messageWrites([]map[string]any{a, b}, []map[string]any{b, n})
	if jsonOf(t, got) != `[[{"id":"a","remove":true},{"id":"n","role":"assistant"}]]` {
		t.Fatalf("trim: %s", jsonOf(t, got))
	}
	// A message inserted before b: b is removed, then appended again.
	got = messageWrites([]map[string]any{a, b}, []map[string]any{a, n, b})
	if jsonOf(t, got) != `[[{"id":"b","remove":true}],[{"id":"n","role":"assistant"},{"id":"b","role":"assistant"}]]` {
		t.Fatalf("move: %s", jsonOf(t, got))
	}
	if got := messageWrites([]map[string]any{a, b}, []map[string]any{a, b}); got != nil {
		t.Fatalf("no change: %s", jsonOf(t, got))
	}
}

func TestReplayReusesRecordedRepliesAndToolResults(t *testing.T) {
	srv := newFakeServer(t,
		fakeReply{ToolCalls: []fakeCall{{ID: "call_1", Name: "lookup", Args: `{"q": "x"}`}}, In: 10, Out: 5},
		fakeReply{Content: "the answer is 42", In: 20, Out: 5},
	)
	var toolHits int
	toolSrv := newCountingServer(t, &toolHits, "42")
	g := mustGraph(t, `version: 1
name: agent
state:
  messages: {type: messages, default: [{role: user, content: "what is x?"}]}
models:
  m:
`+modelAt(srv.URL())+`
tools:
  lookup:
    kind: http
    parameters: {type: object, properties: {q: {type: string}}}
    url: '`+toolSrv.URL+`/?q={{ args.q }}'
    allow_hosts: [127.0.0.1]
nodes:
  agent: {kind: llm, model: m, tools: [lookup]}
  tools: {kind: tools}
edges:
  - {from: START, to: agent}
  - {from: agent, when: has_tool_calls(state.messages), to: tools, else: END}
  - {from: tools, to: agent}
`, nil)
	r, _ := newRunner(t, g, Options{Getenv: keyEnv()})
	res := runGraph(t, r, "t", nil)
	if res.Status != runtime.StatusDone || lastMessage(t, res.Checkpoint.Values)["content"] != "the answer is 42" {
		t.Fatalf("run: %s %v", res.Status, res.Checkpoint.Values)
	}
	if len(srv.requests()) != 2 || toolHits != 1 {
		t.Fatalf("%d model requests, %d tool calls", len(srv.requests()), toolHits)
	}
	hist, err := r.Saver.List(context.Background(), "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	first := hist[len(hist)-1] // the input checkpoint
	r.ReuseRecords = true
	rep, err := r.Replay(context.Background(), "t", first.ID, runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rep.Checkpoint.Values, res.Checkpoint.Values) {
		t.Fatalf("replay state differs:\n%v\n%v", rep.Checkpoint.Values, res.Checkpoint.Values)
	}
	if len(srv.requests()) != 2 || toolHits != 1 {
		t.Fatalf("replay called again: %d model requests, %d tool calls", len(srv.requests()), toolHits)
	}
	if rep.Checkpoint.Metadata.Totals.LLMCalls != 0 {
		t.Fatalf("replayed replies are free, totals %+v", rep.Checkpoint.Metadata.Totals)
	}
	if len(rep.Checkpoint.Metadata.Records["agent"]) != 1 {
		t.Fatalf("replay keeps the records for the next replay: %v", rep.Checkpoint.Metadata.Records)
	}
}

func TestReplayRefusesUnrecordedCalls(t *testing.T) {
	g := chatGraph(t, modelAt("http://127.0.0.1:1/v1"))
	kinds, _ := Kinds(g, Options{Getenv: keyEnv()})
	call := &runtime.NodeCall{Graph: g, Node: g.Nodes["chat"], State: g.Defaults(), Step: 1,
		Replay: []any{record{Kind: recordTool, CallID: "x"}}}
	_, err := kinds["llm"](context.Background(), call)
	if !errors.Is(err, runtime.ErrNotRecorded) || !strings.Contains(err.Error(), `node "chat" made more model calls than the original run recorded`) {
		t.Fatalf("error %v", err)
	}
}

func TestAPIKeyNeverLeaks(t *testing.T) {
	// The server echoes the Authorization header into its reply, and into
	// its error on the second run.
	srv := newFakeServer(t,
		fakeReply{Content: "your key:", EchoAuth: true},
		fakeReply{Status: 401, ErrMsg: "invalid key", EchoAuth: true},
	)
	g := chatGraph(t, modelAt(srv.URL()))
	r, ev := newRunner(t, g, Options{Getenv: keyEnv()})
	ctx := context.Background()
	res := runGraph(t, r, "ok", map[string]any{"messages": []any{userMsg("hi")}})
	if !strings.Contains(res.Checkpoint.Values["answer"].(string), "[REDACTED]") {
		t.Fatalf("answer %v", res.Checkpoint.Values["answer"])
	}
	_, err := r.Run(ctx, runtime.RunOptions{Thread: "fail", Input: map[string]any{"messages": []any{userMsg("hi")}}})
	if err == nil || !strings.Contains(err.Error(), "invalid key") {
		t.Fatalf("error %v", err)
	}
	var dump strings.Builder
	dump.WriteString(err.Error())
	for _, th := range []string{"ok", "fail"} {
		row, _ := r.Saver.Thread(ctx, th)
		dump.WriteString(jsonOf(t, row))
		cps, _ := r.Saver.List(ctx, th, 0)
		for _, c := range cps {
			full, _ := r.Saver.Get(ctx, th, c.ID)
			dump.WriteString(jsonOf(t, full))
		}
	}
	dump.WriteString(jsonOf(t, ev.list()))
	if strings.Contains(dump.String(), testKey) || strings.Contains(dump.String(), "SECRET") {
		t.Fatal("the API key reached the state, a checkpoint, an event or an error")
	}
	if !strings.Contains(dump.String(), "invalid key") {
		t.Fatal("the dump is missing what it should contain")
	}
}

func TestMalformedToolCallJSONBecomesAToolError(t *testing.T) {
	srv := newFakeServer(t,
		fakeReply{ToolCalls: []fakeCall{{ID: "c1", Name: "echo", Args: `{"text": "hi"`}}},
		fakeReply{Content: "I sent broken arguments, sorry."},
	)
	g := mustGraph(t, `version: 1
name: agent
state:
  messages: {type: messages, default: [{role: user, content: echo hi}]}
models:
  m:
`+modelAt(srv.URL())+`
tools:
  echo:
    kind: expr
    parameters: {type: object, properties: {text: {type: string}}, required: [text]}
    expr: args.text
nodes:
  agent: {kind: llm, model: m, tools: [echo]}
  tools: {kind: tools}
edges:
  - {from: START, to: agent}
  - {from: agent, when: has_tool_calls(state.messages), to: tools, else: END}
  - {from: tools, to: agent}
`, nil)
	r, _ := newRunner(t, g, Options{Getenv: keyEnv()})
	res := runGraph(t, r, "t", nil)
	if res.Status != runtime.StatusDone {
		t.Fatalf("status %s", res.Status)
	}
	msgs := res.Checkpoint.Values["messages"].([]any)
	tool := msgs[2].(map[string]any)
	if tool["role"] != "tool" || !strings.Contains(tool["content"].(string), `"error":"arguments of \"echo\" are not valid JSON`) {
		t.Fatalf("tool message %v", tool)
	}
	// The model saw the error and its own malformed call.
	sent := srv.requests()[1].Body["messages"].([]any)
	if !strings.Contains(jsonOf(t, sent), `not valid JSON`) || !strings.Contains(jsonOf(t, sent), `{\"text\": \"hi\"`) {
		t.Fatalf("second request %v", sent)
	}
}
