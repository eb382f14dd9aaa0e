package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// countServer is an OpenAI-compatible chat completions server that answers
// every request and counts the replies it bills (200 answers). answer,
// when set, picks the reply of the n-th request (1-based): its content, or
// a status to fail with.
type countServer struct {
	*httptest.Server
	mu     sync.Mutex
	n      int
	billed int
	answer func(n int) (content string, status int)
}

// hang, as the content of an answer, makes the server wait for the client
// to give up, billing nothing.
const hang = "\x00hang"

func newCountServer(t *testing.T, answer func(n int) (string, int)) *countServer {
	t.Helper()
	s := &countServer{answer: answer}
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	t.Cleanup(s.Close)
	return s
}

func (s *countServer) handle(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.n++
	content, status := "ok", 0
	if s.answer != nil {
		content, status = s.answer(s.n)
	}
	if status == 0 && content != hang {
		s.billed++
	}
	s.mu.Unlock()
	if content == hang {
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if status != 0 {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": "count server: failing on purpose", "type": "server_error"}})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"id": "chatcmpl-count", "object": "chat.completion", "model": body["model"],
		"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": content}, "finish_reason": "stop"}},
		"usage":   map[string]any{"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
	})
}

// billedCalls returns how many replies the server has billed.
func (s *countServer) billedCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.billed
}

func countModel(url string) string {
	return fmt.Sprintf("  m:\n    base_url: %s/v1\n    model: test-model\n    api_key_env: TEST_KEY\n    stream: false\n    retry: {max_attempts: 2, initial_backoff: 1ms, max_backoff: 5ms}\n", url)
}

// pendingCalls counts the model calls a stopped step kept pending.
func pendingCalls(t *testing.T, s runtime.Saver, thread string) int {
	t.Helper()
	cp, err := s.Get(context.Background(), thread, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range cp.Pending {
		if p.Kind == runtime.PendingUsage && p.Result != nil {
			n += len(p.Result.Usage)
		}
	}
	return n
}

// An llm node beside a subgraph of three llm nodes, under llm_calls: 1:
// the subgraph's calls are reserved on the parent's ledger, so the run
// makes one call in all and always stops budget-exceeded (a child given
// "0 left" must not run unlimited).
func TestChildRunsSpendTheParentsBudget(t *testing.T) {
	for i := 0; i < 30; i++ {
		srv := newCountServer(t, nil)
		sub := "version: 1\nname: trio\nstate:\n  out: {type: string}\nmodels:\n" + countModel(srv.URL) + `
nodes:
  a: {kind: llm, model: m, prompt: a, store: out}
  b: {kind: llm, model: m, prompt: b, store: out}
  c: {kind: llm, model: m, prompt: c, store: out}
edges:
  - {from: START, to: a}
  - {from: a, to: b}
  - {from: b, to: c}
  - {from: c, to: END}
`
		src := "version: 1\nname: pair\nstate:\n  x: {type: string}\n  out: {type: string}\nmodels:\n" + countModel(srv.URL) + `
nodes:
  solo: {kind: llm, model: m, prompt: solo, store: x}
  team: {kind: subgraph, graph: sub.yaml}
limits: {llm_calls: 1}
edges:
  - {from: START, to: [solo, team]}
  - {from: solo, to: END}
  - {from: team, to: END}
`
		g := mustGraph(t, src, map[string]string{"sub.yaml": sub})
		r, _ := newRunner(t, g, Options{Getenv: keyEnv()})
		res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t"})
		var be *runtime.BudgetError
		if !errors.As(err, &be) || be.What != "llm_calls" || res == nil || res.Status != runtime.StatusBudget {
			t.Fatalf("run %d: want budget-exceeded on llm_calls, got %v (%+v)", i, err, res)
		}
		if n := srv.billedCalls(); n != 1 {
			t.Fatalf("run %d: the server billed %d calls under llm_calls: 1", i, n)
		}
		if n := pendingCalls(t, r.Saver, "t"); n != 1 {
			t.Fatalf("run %d: %d calls kept with the stopped step, want 1", i, n)
		}
	}
}

// A last step whose call passes the tokens budget ends budget-exceeded,
// not done: the budget is checked before the end.
func TestLastStepOverspendIsBudgetExceeded(t *testing.T) {
	srv := newCountServer(t, nil)
	src := "version: 1\nname: one\nstate:\n  x: {type: string}\nmodels:\n" + countModel(srv.URL) + `
nodes:
  ask: {kind: llm, model: m, prompt: q, store: x}
limits: {tokens: 4}
edges:
  - {from: START, to: ask}
  - {from: ask, to: END}
`
	g := mustGraph(t, src, nil)
	r, _ := newRunner(t, g, Options{Getenv: keyEnv()})
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t"})
	var be *runtime.BudgetError
	if !errors.As(err, &be) || be.What != "tokens" || res.Status != runtime.StatusBudget {
		t.Fatalf("want budget-exceeded on tokens (5 used of 4), got %v (%+v)", err, res)
	}
	// The step committed; resuming with the same limit does not finish it.
	res, err = r.Resume(context.Background(), runtime.ResumeOptions{Thread: "t"})
	if !errors.As(err, &be) || res.Status != runtime.StatusBudget {
		t.Fatalf("resume: want budget-exceeded again, got %v", err)
	}
	res, err = r.Resume(context.Background(), runtime.ResumeOptions{Thread: "t", Config: runtime.Config{Tokens: 100}})
	if err != nil || res.Status != runtime.StatusDone {
		t.Fatalf("resume with a raised limit: %v (%+v)", err, res)
	}
	if n := srv.billedCalls(); n != 1 {
		t.Fatalf("%d calls billed, want 1", n)
	}
}

// Two parallel llm nodes writing one replace field fail in the merge.
// Their calls are kept with the failure, so the resumes count them and
// stop at the budget instead of paying for the same step again.
func TestMergeFailureKeepsItsCalls(t *testing.T) {
	srv := newCountServer(t, nil)
	src := "version: 1\nname: clash\nstate:\n  x: {type: string}\nmodels:\n" + countModel(srv.URL) + `
nodes:
  left: {kind: llm, model: m, prompt: l, store: x}
  right: {kind: llm, model: m, prompt: r, store: x}
limits: {llm_calls: 2}
edges:
  - {from: START, to: [left, right]}
  - {from: left, to: END}
  - {from: right, to: END}
`
	g := mustGraph(t, src, nil)
	r, _ := newRunner(t, g, Options{Getenv: keyEnv()})
	ctx := context.Background()
	res, err := r.Run(ctx, runtime.RunOptions{Thread: "t"})
	if err == nil || res.Status != runtime.StatusFailed {
		t.Fatalf("want the merge to fail, got %v (%+v)", err, res)
	}
	if n := pendingCalls(t, r.Saver, "t"); n != 2 {
		t.Fatalf("%d calls kept with the failed step, want 2", n)
	}
	for i := 0; i < 3; i++ {
		res, err = r.Resume(ctx, runtime.ResumeOptions{Thread: "t"})
		var be *runtime.BudgetError
		if !errors.As(err, &be) || res.Status != runtime.StatusBudget {
			t.Fatalf("resume %d: want budget-exceeded, got %v", i, err)
		}
	}
	if n := srv.billedCalls(); n != 2 {
		t.Fatalf("the server billed %d calls under llm_calls: 2", n)
	}
	if n := pendingCalls(t, r.Saver, "t"); n != 2 {
		t.Fatalf("%d calls kept after the resumes, want 2", n)
	}
}

// Map items in node form whose llm node fails an attempt after its call
// (a reply that is not the structured output) and succeeds on the retry:
// every billed call is in the committed totals. When an item fails for
// good, the calls of all attempts are kept with the failed step.
func TestMapItemAttemptsKeepTheirCalls(t *testing.T) {
	graph := func(url string) string {
		return "version: 1\nname: fan\nstate:\n  items: {type: list, items: int, default: [1, 2, 3]}\n  item: {type: int}\n  n: {type: int, reducer: add}\nmodels:\n" + countModel(url) + `
nodes:
  fan: {kind: map, over: state.items, node: count, item_as: item, concurrency: 1}
  count:
    kind: llm
    model: m
    prompt: count
    retry: {max_attempts: 2, initial_backoff: 1ms}
    output:
      max_attempts: 1
      schema: {type: object, properties: {n: {type: integer}}, required: [n]}
      fields: {n: reply.n}
edges:
  - {from: START, to: fan}
  - {from: fan, to: END}
`
	}
	// Odd requests are not JSON, even ones are: each item fails once.
	srv := newCountServer(t, func(n int) (string, int) {
		if n%2 == 1 {
			return "not json", 0
		}
		return `{"n": 1}`, 0
	})
	r, _ := newRunner(t, mustGraph(t, graph(srv.URL), nil), Options{Getenv: keyEnv()})
	res := runGraph(t, r, "t", nil)
	if res.Status != runtime.StatusDone || res.Checkpoint.Values["n"] != 3 {
		t.Fatalf("status %s, values %v", res.Status, res.Checkpoint.Values)
	}
	if got, want := res.Checkpoint.Metadata.Totals.LLMCalls, srv.billedCalls(); got != want || want != 6 {
		t.Fatalf("totals count %d calls, the server billed %d (want 6)", got, want)
	}

	// Item 2 (requests 3 and 4) never answers JSON: the map fails.
	srv2 := newCountServer(t, func(n int) (string, int) {
		if n == 3 || n == 4 {
			return "not json", 0
		}
		return `{"n": 1}`, 0
	})
	r2, _ := newRunner(t, mustGraph(t, graph(srv2.URL), nil), Options{Getenv: keyEnv()})
	res, err := r2.Run(context.Background(), runtime.RunOptions{Thread: "t"})
	if err == nil || res.Status != runtime.StatusFailed {
		t.Fatalf("want the map to fail, got %v (%v, %d billed)", err, res.Checkpoint.Values, srv2.billedCalls())
	}
	if got, want := pendingCalls(t, r2.Saver, "t"), srv2.billedCalls(); got != want || want != 4 {
		t.Fatalf("%d calls kept with the failed step, the server billed %d (want 4)", got, want)
	}
}

// A run that times out while a subgraph waits for its second call keeps
// the subgraph's first call with the stop, so the resume counts it.
func TestTimeoutKeepsChildCalls(t *testing.T) {
	srv := newCountServer(t, func(n int) (string, int) {
		if n == 2 {
			return hang, 0
		}
		return "ok", 0
	})
	sub := "version: 1\nname: duo\nstate:\n  out: {type: string}\nmodels:\n" + countModel(srv.URL) + `
nodes:
  a: {kind: llm, model: m, prompt: a, store: out}
  b: {kind: llm, model: m, prompt: b, store: out}
edges:
  - {from: START, to: a}
  - {from: a, to: b}
  - {from: b, to: END}
`
	src := "version: 1\nname: wait\nstate:\n  out: {type: string}\nmodels:\n" + countModel(srv.URL) + `
nodes:
  team: {kind: subgraph, graph: sub.yaml}
limits: {timeout: 300ms, llm_calls: 2}
edges:
  - {from: START, to: team}
  - {from: team, to: END}
`
	g := mustGraph(t, src, map[string]string{"sub.yaml": sub})
	r, _ := newRunner(t, g, Options{Getenv: keyEnv()})
	ctx := context.Background()
	res, err := r.Run(ctx, runtime.RunOptions{Thread: "t"})
	var be *runtime.BudgetError
	if !errors.As(err, &be) || be.What != "timeout" || res.Status != runtime.StatusBudget {
		t.Fatalf("want a timeout, got %v", err)
	}
	if n := pendingCalls(t, r.Saver, "t"); n != 1 {
		t.Fatalf("%d calls kept with the timed-out step, want 1", n)
	}
	// The resume finishes the child with its one call left; the thread's
	// totals count both calls once.
	res, err = r.Resume(ctx, runtime.ResumeOptions{Thread: "t"})
	if err != nil || res.Status != runtime.StatusDone {
		t.Fatalf("resume: %v", err)
	}
	if got, billed := res.Checkpoint.Metadata.Totals.LLMCalls, srv.billedCalls(); got != 2 || billed != 2 {
		t.Fatalf("totals %d calls, billed %d; want 2 and 2", got, billed)
	}
}

// A server that sends no usage gets its tokens estimated, and the usage
// says so; one that sends usage does not.
func TestEstimatedUsageIsMarked(t *testing.T) {
	for _, stream := range []string{"stream: false", "stream: true"} {
		srv := newFakeServer(t, fakeReply{Content: "Hello there."}, fakeReply{Content: "Hi.", In: 4, Out: 2})
		g := chatGraph(t, modelAt(srv.URL(), stream))
		for i, want := range []bool{true, false} {
			res, _, err := callNode(t, g, Options{Getenv: keyEnv()}, "chat", map[string]any{"messages": []any{userMsg("hi")}})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Usage) != 1 || res.Usage[0].Estimated != want || res.Usage[0].InputTokens == 0 {
				t.Fatalf("%s, call %d: usage %+v, want estimated=%v", stream, i+1, res.Usage, want)
			}
		}
	}
}
