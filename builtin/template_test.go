package builtin

import (
	"strings"
	"testing"
)

// TestLLMRendersTemplates checks what a model receives for templated system
// and prompt settings: numbers as JSON, null as nothing, lists as JSON and a
// messages field as a transcript.
func TestLLMRendersTemplates(t *testing.T) {
	srv := newFakeServer(t, fakeReply{Content: "ok"})
	g := mustGraph(t, `version: 1
name: templates
state:
  ticket: {type: string}
  priority: {type: int}
  tags: {type: list, items: string}
  note: {type: any}
  history: {type: messages}
  reply: {type: string}
models:
  m:
`+modelAt(srv.URL(), "stream: false")+`
nodes:
  draft:
    kind: llm
    model: m
    system: 'You answer {{ len(state.tags) }} tagged tickets{{ state.note }}.'
    prompt: |-
      Priority {{ state.priority }}, tags {{ state.tags }}.
      Earlier:
      {{ state.history }}
      Ticket: {{ state.ticket }} {{ "{{" }}sic}}
    store: reply
edges:
  - {from: START, to: draft}
  - {from: draft, to: END}
`, nil)
	history := []any{
		map[string]any{"role": "user", "content": "Where is my refund?"},
		map[string]any{"role": "assistant", "name": "draft", "content": "", "tool_calls": []any{
			map[string]any{"id": "c1", "name": "lookup", "arguments": `{"id":7}`},
		}},
		map[string]any{"role": "tool", "name": "lookup", "tool_call_id": "c1", "content": "refunded"},
	}
	_, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "draft", map[string]any{
		"ticket": "Charged twice", "priority": 2, "tags": []any{"billing", "vip"}, "history": history,
	})
	if err != nil {
		t.Fatal(err)
	}
	msgs := srv.requests()[0].Body["messages"].([]any)
	if len(msgs) != 2 {
		t.Fatalf("messages %v", msgs)
	}
	system := msgs[0].(map[string]any)["content"]
	if system != "You answer 2 tagged tickets." {
		t.Errorf("system %q", system)
	}
	want := strings.Join([]string{
		`Priority 2, tags ["billing","vip"].`,
		"Earlier:",
		"user: Where is my refund?",
		`assistant (draft): calls lookup({"id":7})`,
		"tool (lookup): refunded",
		"Ticket: Charged twice {{sic}}",
	}, "\n")
	if got := msgs[1].(map[string]any)["content"]; got != want {
		t.Errorf("prompt\n got %q\nwant %q", got, want)
	}
}
