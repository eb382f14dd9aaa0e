package builtin

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// The example graphs run offline with their mock fixtures, through the
// real runner on an in-memory saver.

func exampleGraph(t testing.TB, name string) *spec.Graph {
	t.Helper()
	g, diags := spec.LoadFile(filepath.Join("..", "graphs", name+".yaml"), nil)
	if len(diags) > 0 {
		t.Fatalf("graphs/%s.yaml:\n%v", name, diags)
	}
	return g
}

var examples = []string{"support-ticket", "weather-agent", "weather-agent-approval", "research", "memory-chat"}

func TestExamplesCheckCleanly(t *testing.T) {
	for _, name := range examples {
		g := exampleGraph(t, name) // no errors, no warnings
		if _, err := Kinds(g, Options{Getenv: envOf()}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSupportTicketExample(t *testing.T) {
	g := exampleGraph(t, "support-ticket")
	r, _ := newRunner(t, g, Options{})
	res := runGraph(t, r, "billing", nil)
	v := res.Checkpoint.Values
	if res.Status != runtime.StatusDone || v["category"] != "billing" || v["priority"] != "high" || !strings.Contains(v["reply"].(string), "refunded") {
		t.Fatalf("billing: %s %v", res.Status, v)
	}
	if got := writers(t, r, "billing"); !reflect.DeepEqual(got, []string{"classify", "billing"}) {
		t.Fatalf("path %v", got)
	}
	// The technical ticket's first classification breaks the schema and is retried.
	res = runGraph(t, r, "tech", map[string]any{"ticket": "The app crashes when I log in"})
	v = res.Checkpoint.Values
	if v["category"] != "technical" || v["priority"] != "urgent" || !strings.Contains(v["reply"].(string), "reproduce") {
		t.Fatalf("technical: %v", v)
	}
	if tot := res.Checkpoint.Metadata.Totals; tot.LLMCalls != 3 || tot.CostUSD <= 0 {
		t.Fatalf("totals %+v: two classification attempts and one reply", tot)
	}
	res = runGraph(t, r, "other", map[string]any{"ticket": "Do you have a student discount?"})
	if v = res.Checkpoint.Values; v["category"] != "general" || !strings.Contains(v["reply"].(string), "Thanks for reaching out") {
		t.Fatalf("general: %v", v)
	}
}

// writers lists the nodes that ran on a thread, oldest first (updates by
// a human, even as a node, are not runs).
func writers(t testing.TB, r *runtime.Runner, thread string) []string {
	t.Helper()
	cps, err := r.Saver.List(context.Background(), thread, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(cps) - 1; i >= 0; i-- {
		if cps[i].Metadata.Source != runtime.SourceLoop {
			continue
		}
		for _, n := range spec.SortedKeys(cps[i].Metadata.Writes) {
			if !strings.HasPrefix(n, "__") {
				out = append(out, n)
			}
		}
	}
	return out
}

func TestWeatherAgentExample(t *testing.T) {
	g := exampleGraph(t, "weather-agent")
	r, ev := newRunner(t, g, Options{})
	res := runGraph(t, r, "t", nil)
	v := res.Checkpoint.Values
	msgs := v["messages"].([]any)
	if res.Status != runtime.StatusDone || len(msgs) != 4 || v["iterations"] != 1 {
		t.Fatalf("%s %v", res.Status, jsonOf(t, v))
	}
	if tool := msgs[2].(map[string]any); tool["role"] != "tool" || tool["content"] != "foggy, 57F" {
		t.Fatalf("tool result %v", tool)
	}
	if got := lastMessage(t, v)["content"]; got != "San Francisco: foggy, 57F." {
		t.Fatalf("answer %v", got)
	}
	if got := writers(t, r, "t"); !reflect.DeepEqual(got, []string{"agent", "tools", "count", "agent"}) {
		t.Fatalf("path %v", got)
	}
	if !strings.Contains(ev.messages(), `tool get_weather({"city":"San Francisco"}) → foggy, 57F`) {
		t.Errorf("messages %q", ev.messages())
	}
	// Usage lands in the checkpoint metadata, per call.
	var calls int
	cps, _ := r.Saver.List(context.Background(), "t", 0)
	for _, c := range cps {
		for _, u := range c.Metadata.Usage {
			if u.Node != "agent" || u.Model != "gpt" || u.CostUSD <= 0 {
				t.Errorf("usage %+v", u)
			}
			calls++
		}
	}
	if calls != 2 {
		t.Fatalf("%d usage entries", calls)
	}

	// Another city through the match rules.
	res = runGraph(t, r, "nyc", map[string]any{"messages": []any{userMsg("Weather in New York?")}})
	if got := lastMessage(t, res.Checkpoint.Values)["content"]; got != "New York: clear, 72F." {
		t.Fatalf("nyc answer %v", got)
	}

	// The loop guard: no tool rounds allowed, the run ends at the call.
	res = runGraph(t, r, "guard", map[string]any{"max_iterations": 0})
	last := lastMessage(t, res.Checkpoint.Values)
	if res.Status != runtime.StatusDone || last["role"] != "assistant" || last["tool_calls"] == nil {
		t.Fatalf("guard: %s %v", res.Status, last)
	}
	// The next turn on that thread answers the dangling call with an error
	// result first, so the conversation stays valid.
	res = runGraph(t, r, "guard", map[string]any{"messages": []any{userMsg("never mind")}})
	msgs = res.Checkpoint.Values["messages"].([]any)
	if filled := msgs[2].(map[string]any); filled["role"] != "tool" || !strings.Contains(filled["content"].(string), "the run stopped before this tool call finished") {
		t.Fatalf("not filled: %s", jsonOf(t, msgs))
	}
}

func TestWeatherAgentApprovalExample(t *testing.T) {
	g := exampleGraph(t, "weather-agent-approval")
	r, _ := newRunner(t, g, Options{})
	ctx := context.Background()
	res := runGraph(t, r, "ok", nil)
	if res.Status != runtime.StatusInterrupted || len(res.Interrupts) != 1 || res.Interrupts[0].Node != "tools" || res.Interrupts[0].When != runtime.InterruptBefore {
		t.Fatalf("%s %+v", res.Status, res.Interrupts)
	}
	if !spec.HasToolCalls(res.Checkpoint.Values["messages"]) {
		t.Fatal("paused without a pending tool call")
	}
	res, err := r.Resume(ctx, runtime.ResumeOptions{Thread: "ok"})
	if err != nil || res.Status != runtime.StatusDone || lastMessage(t, res.Checkpoint.Values)["content"] != "San Francisco: foggy, 57F." {
		t.Fatalf("approve: %v %v", res, err)
	}

	// Rejected: the human answers for the tools node.
	res = runGraph(t, r, "no", nil)
	msgs := res.Checkpoint.Values["messages"].([]any)
	id := msgs[1].(map[string]any)["tool_calls"].([]any)[0].(map[string]any)["id"].(string)
	res, err = r.Resume(ctx, runtime.ResumeOptions{Thread: "no", AsNode: "tools", Set: []runtime.Write{{Field: "messages", Value: []any{
		map[string]any{"role": "tool", "tool_call_id": id, "name": "get_weather", "content": "denied by the operator"},
	}}}})
	if err != nil || res.Status != runtime.StatusDone {
		t.Fatalf("reject: %v %v", res, err)
	}
	msgs = res.Checkpoint.Values["messages"].([]any)
	if msgs[2].(map[string]any)["content"] != "denied by the operator" {
		t.Fatalf("messages %s", jsonOf(t, msgs))
	}
	for _, n := range writers(t, r, "no") {
		if n == "tools" {
			t.Fatal("the rejected tool ran")
		}
	}
}

func TestResearchExample(t *testing.T) {
	g := exampleGraph(t, "research")
	r, _ := newRunner(t, g, Options{})
	res := runGraph(t, r, "sleep", nil)
	v := res.Checkpoint.Values
	if res.Status != runtime.StatusDone || v["rounds"] != 2 || v["conflict"] != false || !strings.Contains(v["analysis"].(string), "exercise") {
		t.Fatalf("%s %v", res.Status, v)
	}
	if got := writers(t, r, "sleep"); !reflect.DeepEqual(got, []string{"research", "research", "check", "analyze"}) {
		t.Fatalf("path %v", got)
	}

	// Conflicting findings: three rounds (the cap), then a human review.
	res = runGraph(t, r, "coffee", map[string]any{"topic": "Is coffee good for your health?"})
	if res.Status != runtime.StatusInterrupted || res.Interrupts[0].Node != "review" {
		t.Fatalf("%s %+v", res.Status, res.Interrupts)
	}
	v = res.Checkpoint.Values
	if v["rounds"] != 3 || v["need_more"] != true || v["conflict"] != true || len(v["findings"].([]any)) != 3 {
		t.Fatalf("the loop must stop at 3 rounds: %v", v)
	}
	payload := res.Interrupts[0].Payload.(map[string]any)
	if len(payload["findings"].([]any)) != 3 {
		t.Fatalf("payload %v", payload)
	}
	res, err := r.Resume(context.Background(), runtime.ResumeOptions{Thread: "coffee", Value: "Weigh the meta-analyses higher.", HasValue: true})
	if err != nil || res.Status != runtime.StatusDone {
		t.Fatalf("resume: %v %v", res, err)
	}
	if v = res.Checkpoint.Values; v["review"] != "Weigh the meta-analyses higher." || !strings.Contains(v["analysis"].(string), "coffee") {
		t.Fatalf("%v", v)
	}
}

func TestMemoryChatExample(t *testing.T) {
	g := exampleGraph(t, "memory-chat")
	r, _ := newRunner(t, g, Options{})
	runGraph(t, r, "t", map[string]any{"question": "Remember that my favorite editor is vim."})
	res := runGraph(t, r, "t", map[string]any{"question": "What editor do I like?"})
	if got := res.Checkpoint.Values["answer"]; got != "You told me your favorite editor is vim." {
		t.Fatalf("second turn: %v", got)
	}
	if n := len(res.Checkpoint.Values["messages"].([]any)); n != 4 {
		t.Fatalf("%d messages, want both turns", n)
	}
	// A new thread remembers nothing.
	res = runGraph(t, r, "other", map[string]any{"question": "What editor do I like?"})
	if got := res.Checkpoint.Values["answer"]; got != "I don't know yet: you haven't told me." {
		t.Fatalf("new thread: %v", got)
	}
}
