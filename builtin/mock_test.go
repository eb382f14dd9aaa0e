package builtin

import (
	"context"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

const mockAgent = `version: 1
name: agent
state:
  question: {type: string}
  messages: {type: messages}
models:
  m:
    provider: mock
    fixtures: replies.yaml
    model: test-model
tools:
  w:
    kind: expr
    parameters: {type: object, properties: {city: {type: string}}}
    expr: '"sunny in " + args.city'
nodes:
  agent: {kind: llm, model: m, prompt: '{{ state.question }}', tools: [w]}
  tools: {kind: tools}
edges:
  - {from: START, to: agent}
  - {from: agent, when: has_tool_calls(state.messages), to: tools, else: END}
  - {from: tools, to: agent}
`

const mockReplies = `replies:
  agent:
    - tool_calls: [{name: w, arguments: {city: Oslo}}]
      usage: {in: 10, out: 2}
    - text: Oslo is sunny.
    - text: third turn
match:
  - node: agent
    contains: [rome]
    turn: 0
    reply: {tool_calls: [{name: w, arguments: '{"city": "Rome"}'}]}
  - node: agent
    contains: rome
    reply: {text: Rome is sunny.}
  - node: agent
    contains: again
    history_contains: oslo
    reply: {text: You asked about Oslo before.}
`

func TestMockScriptsByTurnAndMatch(t *testing.T) {
	g := mustGraph(t, mockAgent, map[string]string{"replies.yaml": mockReplies})
	r, ev := newRunner(t, g, Options{})
	res := runGraph(t, r, "t", map[string]any{"question": "weather in Oslo?"})
	msgs := res.Checkpoint.Values["messages"].([]any)
	if len(msgs) != 4 || lastMessage(t, res.Checkpoint.Values)["content"] != "Oslo is sunny." {
		t.Fatalf("messages %v", jsonOf(t, msgs))
	}
	call := msgs[1].(map[string]any)["tool_calls"].([]any)[0].(map[string]any)
	if call["id"] != "call_1_agent_0_0" || call["arguments"] != `{"city":"Oslo"}` {
		t.Fatalf("tool call %v: ids are deterministic", call)
	}
	if msgs[2].(map[string]any)["content"] != "sunny in Oslo" {
		t.Fatalf("tool result %v", msgs[2])
	}
	if u := res.Checkpoint.Metadata.Totals; u.LLMCalls != 2 || u.InputTokens < 10 {
		t.Fatalf("totals %+v", u)
	}
	if ev.tokens() != "Oslo is sunny." {
		t.Fatalf("streamed %q", ev.tokens())
	}
	// A second turn on the thread: a match rule that needs the history.
	res = runGraph(t, r, "t", map[string]any{"question": "and again?"})
	if got := lastMessage(t, res.Checkpoint.Values)["content"]; got != "You asked about Oslo before." {
		t.Fatalf("second turn %v", got)
	}
	// Match rules per turn.
	res = runGraph(t, r, "rome", map[string]any{"question": "Rome?"})
	if got := lastMessage(t, res.Checkpoint.Values)["content"]; got != "Rome is sunny." {
		t.Fatalf("rome %v", got)
	}
}

func TestMockScriptExhausted(t *testing.T) {
	g := mustGraph(t, mockAgent, map[string]string{"replies.yaml": "replies:\n  agent:\n    - tool_calls: [{name: w}]\n"})
	r, _ := newRunner(t, g, Options{})
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t", Input: map[string]any{"question": "hi"}})
	if err == nil || res.Status != runtime.StatusFailed {
		t.Fatalf("%v %v", res, err)
	}
	for _, want := range []string{`node "agent"`, `replies.yaml has 1 under replies.agent`, "asked for reply 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\nwant %q", err, want)
		}
	}
}

func TestFixturesAreChecked(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"replies:\n  agent:\n    - text: hi\n      colour: red\n", `replies.yaml:4:7: error: replies.agent[0]: unknown key "colour" (want text, json, tool_calls, usage, error)`},
		{"replies:\n  agent:\n    - usage: {in: 1}\n", "replies.yaml:3:7: error: replies.agent[0]: a reply needs text, json, tool_calls or error"},
		{"replies:\n  agent:\n    - text: a\n      json: {}\n", "replies.yaml:4:7: error: replies.agent[0]: a reply has text or json, not both"},
		{"match:\n  - contains: x\n", "replies.yaml:2:5: error: match[0]: a rule needs a reply"},
		{"replies: [1, 2]\n", "replies.yaml:1:10: error: replies: want replies (node: [reply, ...]) as a mapping, got a list"},
		// These used to fail only at run time, with Go type names.
		{"replies:\n  agent:\n    - text: [a, b]\n", "replies.yaml:3:13: error: replies.agent[0].text: want a string, got a list"},
		{"replies:\n  agent:\n    - tool_calls: {name: f}\n", "replies.yaml:3:19: error: replies.agent[0].tool_calls: want a list, got a mapping"},
		{"replies:\n  agent:\n    - tool_calls: [{name: f, arguments: [1]}]\n", "replies.yaml:3:41: error: replies.agent[0].tool_calls[0].arguments: want an object (or a string sent as it is), got a list"},
		{"replies:\n  agent:\n    - text: hi\n      usage: {in: many}\n", "replies.yaml:4:19: error: replies.agent[0].usage.in: want a whole number of at least 0, got a string many"},
		{"match:\n  - turn: first\n    reply: {text: x}\n", "replies.yaml:2:11: error: match[0].turn: want a whole number of at least 0, got a string first"},
	} {
		g := mustGraph(t, mockAgent, map[string]string{"replies.yaml": tc.body})
		_, err := Kinds(g, Options{Getenv: envOf()})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "models.m") {
			t.Errorf("%q: error %v\nwant %q", tc.body, err, tc.want)
		}
	}
}

func TestMockErrorReply(t *testing.T) {
	g := mustGraph(t, mockAgent, map[string]string{"replies.yaml": "replies:\n  agent:\n    - error: the model is down\n"})
	r, _ := newRunner(t, g, Options{})
	_, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t"})
	if err == nil || !strings.Contains(err.Error(), "the model is down") {
		t.Fatalf("error %v", err)
	}
}

func TestProviderSwitchToOpenAI(t *testing.T) {
	srv := newFakeServer(t, fakeReply{Content: "from a real server"})
	g := mustGraph(t, mockAgent, map[string]string{"replies.yaml": mockReplies})
	r, _ := newRunner(t, g, Options{Getenv: envOf(EnvProvider, "openai", EnvBaseURL, srv.URL(), EnvAPIKey, testKey)})
	res := runGraph(t, r, "t", map[string]any{"question": "hi"})
	if got := lastMessage(t, res.Checkpoint.Values)["content"]; got != "from a real server" {
		t.Fatalf("reply %v", got)
	}
	if b := srv.requests()[0].Body; b["model"] != "test-model" {
		t.Fatalf("request %v", b)
	}
	if _, err := Kinds(g, Options{Getenv: envOf(EnvProvider, "anthropic")}); err == nil || !strings.Contains(err.Error(), "LGRUN_PROVIDER") {
		t.Fatalf("bad provider: %v", err)
	}
}

func TestScriptAnswersModelsAndTools(t *testing.T) {
	g := mustGraph(t, `version: 1
name: agent
state:
  messages: {type: messages}
models:
  m: {model: gpt-4o-mini, price: {input_per_million: 1, output_per_million: 1}}
tools:
  add:
    kind: expr
    expr: args.a + args.b
  search:
    kind: http
    url: https://search.example.com/?q={{ args.q }}
    allow_hosts: [search.example.com]
nodes:
  agent: {kind: llm, model: m, tools: [add, search]}
  tools: {kind: tools}
edges:
  - {from: START, to: agent}
  - {from: agent, when: has_tool_calls(state.messages), to: tools, else: END}
  - {from: tools, to: agent}
`, nil)
	script := &Script{
		Models: map[string][]any{"agent": {
			map[string]any{"tool_calls": []any{
				map[string]any{"name": "add", "arguments": map[string]any{"a": 2, "b": 3}},
				map[string]any{"name": "search", "arguments": map[string]any{"q": "go"}},
			}, "usage": map[string]any{"in": 7, "out": 3}},
			map[string]any{"text": "2+3=5 and go is a language"},
		}},
		Tools: map[string][]any{"search": {map[string]any{"hits": 1}}},
	}
	r, _ := newRunner(t, g, Options{Script: script})
	res := runGraph(t, r, "t", map[string]any{"messages": []any{userMsg("hi")}})
	msgs := res.Checkpoint.Values["messages"].([]any)
	if len(msgs) != 5 || msgs[2].(map[string]any)["content"] != "5" || msgs[3].(map[string]any)["content"] != `{"hits":1}` ||
		lastMessage(t, res.Checkpoint.Values)["content"] != "2+3=5 and go is a language" {
		t.Fatalf("messages %s", jsonOf(t, msgs))
	}
	if tot := res.Checkpoint.Metadata.Totals; tot.LLMCalls != 2 || tot.InputTokens < 7 {
		t.Fatalf("totals %+v", tot)
	}

	// An http tool without a script fails the node; so does an exhausted script.
	r, _ = newRunner(t, g, Options{Script: &Script{Models: script.Models}})
	if _, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t"}); err == nil || !strings.Contains(err.Error(), `tool "search" (kind http) has no scripted results`) {
		t.Fatalf("error %v", err)
	}
	r, _ = newRunner(t, g, Options{Script: &Script{Models: map[string][]any{"agent": {map[string]any{"tool_calls": []any{map[string]any{"name": "add", "arguments": `{"a":1,"b":1}`}}}}}}})
	if _, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t"}); err == nil || !strings.Contains(err.Error(), `node "agent" called its model 2 times but models.agent has 1 replies`) {
		t.Fatalf("error %v", err)
	}
	if _, err := Kinds(g, Options{Getenv: envOf(), Script: &Script{Models: map[string][]any{"agent": {map[string]any{"txt": "typo"}}}}}); err == nil || !strings.Contains(err.Error(), "models.agent[0]") {
		t.Fatalf("bad script: %v", err)
	}
}
