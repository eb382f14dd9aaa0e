package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The budget property: for generated graphs (parallel llm nodes,
// subgraphs nested up to two deep, tool-calling agents whose tool fails,
// maps over graphs and over nodes, failures: server 500s, streams cut
// after some tokens, error events in the stream, JSON bodies cut in half,
// merge conflicts, failing nodes) run and resumed
// through the CLI against a local OpenAI-compatible server (the real
// go-openai client through the real llm node), the calls the server bills
// (every 2xx answer, also one that failed after it) never pass the
// thread's llm_calls limit, also when a resume raises it, and `lgrun
// usage` counts exactly the billed calls and their tokens (estimated and
// marked for the answers that failed before their usage).
//
// CI runs a small fixed set of seeds. Run more by hand with
// LGRUN_BUDGET_CASES=N (and LGRUN_BUDGET_SEED=S for another first seed):
//
//	LGRUN_BUDGET_CASES=500 go test ./cmd/lgrun -run TestBudgetProperty
func TestBudgetProperty(t *testing.T) {
	cases, seed := 20, uint64(1)
	if v := os.Getenv("LGRUN_BUDGET_CASES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("LGRUN_BUDGET_CASES=%q: want a positive number", v)
		}
		cases = n
	}
	if v := os.Getenv("LGRUN_BUDGET_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("LGRUN_BUDGET_SEED=%q: want a number", v)
		}
		seed = n
	}
	for i := 0; i < cases; i++ {
		s := seed + uint64(i)
		t.Run(fmt.Sprintf("seed%d", s), func(t *testing.T) { budgetCase(t, s) })
	}
}

// billServer answers chat completions, as JSON or as a stream, failing a
// share of them: with 500 (not billed), or with a 200 answer that then
// fails (billed, like a real provider does): a stream cut after some
// tokens (no finish_reason, no [DONE]) or a JSON body cut in half, or an
// error event in the stream (an error body in a JSON answer). It counts
// every 2xx answer it bills, and those that sent no usage.
type billServer struct {
	*httptest.Server
	mu     sync.Mutex
	rng    *rand.Rand
	fail   float64
	billed int
	cut    int // billed answers that failed before their usage
}

// How a request is answered.
const (
	answerWhole = iota
	answer500
	answerCut
	answerErrEvent
)

func (s *billServer) handle(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	how := answerWhole
	if s.rng.Float64() < s.fail {
		how = answer500 + s.rng.IntN(3)
	}
	if how != answer500 {
		s.billed++
	}
	if how == answerCut || how == answerErrEvent {
		s.cut++
	}
	s.mu.Unlock()
	if how == answer500 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": "bill server: failing on purpose", "type": "server_error"}})
		return
	}
	errEvent := map[string]any{"error": map[string]any{"message": "bill server: failing after the answer", "type": "server_error"}}
	msg := map[string]any{"role": "assistant", "content": "ok then"}
	if msgs, _ := body["messages"].([]any); body["tools"] != nil && len(msgs) > 0 {
		// An agent calls its tool first, then answers the tool's result.
		if last, _ := msgs[len(msgs)-1].(map[string]any); last["role"] != "tool" {
			msg = map[string]any{"role": "assistant", "content": "", "tool_calls": []any{map[string]any{
				"id": "call_1", "type": "function", "function": map[string]any{"name": "broken", "arguments": "{}"}}}}
		}
	}
	usage := map[string]any{"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
	if stream, _ := body["stream"].(bool); stream {
		w.Header().Set("Content-Type", "text/event-stream")
		send := func(v any) {
			b, _ := json.Marshal(v)
			fmt.Fprintf(w, "data: %s\n\n", b)
			w.(http.Flusher).Flush()
		}
		chunk := func(delta map[string]any, finish any) map[string]any {
			return map[string]any{"id": "chatcmpl-bill", "object": "chat.completion.chunk", "model": body["model"],
				"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}}
		}
		if calls, ok := msg["tool_calls"].([]any); ok {
			c := calls[0].(map[string]any)
			send(chunk(map[string]any{"role": "assistant", "tool_calls": []any{map[string]any{"index": 0, "id": c["id"], "type": "function", "function": c["function"]}}}, nil))
		} else {
			send(chunk(map[string]any{"role": "assistant", "content": "ok "}, nil))
			if how == answerWhole {
				send(chunk(map[string]any{"content": "then"}, nil))
			}
		}
		switch how {
		case answerCut:
			return
		case answerErrEvent:
			send(errEvent)
			return
		}
		send(chunk(map[string]any{}, "stop"))
		send(map[string]any{"id": "chatcmpl-bill", "object": "chat.completion.chunk", "model": body["model"], "choices": []any{}, "usage": usage})
		fmt.Fprint(w, "data: [DONE]\n\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	reply, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-bill", "object": "chat.completion", "model": body["model"],
		"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": "stop"}},
		"usage":   usage,
	})
	switch how {
	case answerCut:
		_, _ = w.Write(reply[:len(reply)/2])
	case answerErrEvent:
		_ = json.NewEncoder(w).Encode(errEvent)
	default:
		_, _ = w.Write(reply)
	}
}

// count returns the answers billed, and those of them without usage.
func (s *billServer) count() (billed, cut int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.billed, s.cut
}

// graphGen writes the YAML of a generated graph and its subgraphs.
type graphGen struct {
	rng   *rand.Rand
	model string
	files map[string]string
	subs  int
}

func (g *graphGen) header(name string) string {
	return "version: 1\nname: " + name + "\nmodels:\n  m:\n" + g.model
}

// sub writes a subgraph of one to three llm nodes (in a line, or a pair in
// parallel), possibly running a subgraph of its own, and returns its file.
func (g *graphGen) sub(depth int) string {
	g.subs++
	name := fmt.Sprintf("sub%d.yaml", g.subs)
	if g.rng.IntN(4) == 0 {
		// A tool-calling agent whose tool always fails: the model sees the
		// error and answers.
		g.files[name] = g.header(strings.TrimSuffix(name, ".yaml")) + `tools:
  broken: {kind: expr, description: Always fails., parameters: {type: object}, expr: 'args.x[9]'}
state:
  messages: {type: messages, default: [{role: user, content: go}]}
  item: {type: int}
nodes:
  agent: {kind: llm, model: m, tools: [broken]}
  tools: {kind: tools, tools: [broken]}
edges:
  - {from: START, to: agent}
  - {from: agent, when: has_tool_calls(state.messages), to: tools, else: END}
  - {from: tools, to: agent}
`
		return name
	}
	var nodes, edges []string
	n := 1 + g.rng.IntN(3)
	for i := 0; i < n; i++ {
		nodes = append(nodes, fmt.Sprintf("  c%d: {kind: llm, model: m, prompt: c%d, store: r}", i, i))
	}
	if depth < 2 && g.rng.IntN(3) == 0 {
		nodes = append(nodes, fmt.Sprintf("  c%d: {kind: subgraph, graph: %s}", n, g.sub(depth+1)))
		n++
	}
	if n >= 2 && g.rng.IntN(2) == 0 {
		// c0 and c1 in parallel (both write r: a conflict the sub reports
		// unless they are an llm and a subgraph), the rest after c1.
		edges = append(edges, "  - {from: START, to: [c0, c1]}", "  - {from: c0, to: END}")
		nodes[0] = strings.Replace(nodes[0], "store: r", "store: r0", 1)
		for i := 1; i < n-1; i++ {
			edges = append(edges, fmt.Sprintf("  - {from: c%d, to: c%d}", i, i+1))
		}
		edges = append(edges, fmt.Sprintf("  - {from: c%d, to: END}", n-1))
	} else {
		edges = append(edges, "  - {from: START, to: c0}")
		for i := 0; i < n-1; i++ {
			edges = append(edges, fmt.Sprintf("  - {from: c%d, to: c%d}", i, i+1))
		}
		edges = append(edges, fmt.Sprintf("  - {from: c%d, to: END}", n-1))
	}
	g.files[name] = g.header(strings.TrimSuffix(name, ".yaml")) +
		"state:\n  r: {type: string}\n  r0: {type: string}\n  item: {type: int}\nnodes:\n" +
		strings.Join(nodes, "\n") + "\nedges:\n" + strings.Join(edges, "\n") + "\n"
	return name
}

// main writes the graph: one to three stages of one to three parallel
// branches each.
func (g *graphGen) main() {
	var nodes, edges []string
	var prev []string
	stages := 1 + g.rng.IntN(3)
	b := 0
	for s := 0; s < stages; s++ {
		var cur []string
		width := 1 + g.rng.IntN(3)
		for w := 0; w < width; w++ {
			name := fmt.Sprintf("b%d", b)
			b++
			switch k := g.rng.IntN(10); {
			case k < 3:
				field := "s_" + name
				if g.rng.IntN(4) == 0 {
					field = "clash" // a merge conflict when two share a stage
				}
				nodes = append(nodes, fmt.Sprintf("  %s: {kind: llm, model: m, prompt: %s, store: %s}", name, name, field))
			case k < 5:
				nodes = append(nodes, fmt.Sprintf("  %s: {kind: subgraph, graph: %s}", name, g.sub(1)))
			case k < 7:
				nodes = append(nodes, fmt.Sprintf("  %s: {kind: map, over: state.items, graph: %s, item_as: item, concurrency: %d}", name, g.sub(1), 1+g.rng.IntN(3)))
			case k < 9:
				nodes = append(nodes,
					fmt.Sprintf("  %s: {kind: map, over: state.items, node: t_%s, item_as: item, concurrency: %d}", name, name, 1+g.rng.IntN(3)),
					fmt.Sprintf("  t_%s: {kind: llm, model: m, prompt: t, messages: acc, retry: {max_attempts: 2, initial_backoff: 1ms}}", name))
			default:
				// A node that always fails beside the others.
				nodes = append(nodes, fmt.Sprintf("  %s: {kind: set, set: {n: 'state.items[9]'}}", name))
			}
			cur = append(cur, name)
		}
		if s == 0 {
			edges = append(edges, "  - {from: START, to: ["+strings.Join(cur, ", ")+"]}")
		} else {
			for _, p := range prev {
				edges = append(edges, "  - {from: "+p+", to: ["+strings.Join(cur, ", ")+"]}")
			}
		}
		prev = cur
	}
	for _, p := range prev {
		edges = append(edges, "  - {from: "+p+", to: END}")
	}
	items := make([]string, 1+g.rng.IntN(3))
	for i := range items {
		items[i] = strconv.Itoa(i + 1)
	}
	var fields []string
	for i := 0; i < b; i++ {
		fields = append(fields, fmt.Sprintf("  s_b%d: {type: string}", i))
	}
	g.files["graph.yaml"] = g.header("gen") + "state:\n" + strings.Join(fields, "\n") +
		"\n  clash: {type: string}\n  n: {type: int}\n  item: {type: int}\n" +
		"  acc: {type: messages}\n" +
		"  items: {type: list, items: int, default: [" + strings.Join(items, ", ") + "]}\n" +
		"nodes:\n" + strings.Join(nodes, "\n") + "\nedges:\n" + strings.Join(edges, "\n") + "\n"
}

func budgetCase(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x1bad5eed))
	srv := &billServer{rng: rand.New(rand.NewPCG(seed, 7)), fail: []float64{0, 0.15, 0.4}[rng.IntN(3)]}
	stream := rng.IntN(2) == 0
	srv.Server = httptest.NewServer(http.HandlerFunc(srv.handle))
	defer srv.Close()
	g := &graphGen{
		rng:   rng,
		model: fmt.Sprintf("    base_url: %s/v1\n    model: test-model\n    api_key_env: TEST_KEY\n    stream: %v\n    retry: {max_attempts: 2, initial_backoff: 1ms, max_backoff: 2ms}\n", srv.URL, stream),
		files: map[string]string{},
	}
	g.main()
	dir := t.TempDir()
	for name, src := range g.files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"LGRUN_DB": filepath.Join(dir, "db"), "TEST_KEY": "sk-test"}
	limit := 1 + rng.IntN(6)
	args := []string{"run", filepath.Join(dir, "graph.yaml"), "-t", "p", "-q", "--max-llm-calls", strconv.Itoa(limit)}
	for round := 0; ; round++ {
		_, stderr, code := runCLI(t, false, env, args...)
		if code != exitOK && code != 1 && code != 5 {
			t.Fatalf("round %d: exit %d: %s\ngraph:\n%s", round, code, stderr, g.files["graph.yaml"])
		}
		billed, cut := srv.count()
		if billed > limit {
			t.Fatalf("round %d: the server billed %d calls under llm_calls: %d (%s)\ngraph:\n%s", round, billed, limit, stderr, dump(g.files))
		}
		out, uerr, ucode := runCLI(t, false, env, "usage", "-t", "p", "--json")
		if ucode != exitOK {
			t.Fatalf("usage: exit %d: %s", ucode, uerr)
		}
		var rep usageReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("usage --json: %v\n%s", err, out)
		}
		// Every billed answer is one call; a whole one has the server's 3+2
		// tokens, one that failed before its usage has estimated tokens
		// (at least one: the prompt), marked.
		tokens := rep.Total.InputTokens + rep.Total.OutputTokens
		if rep.Total.Calls != billed || rep.Total.Estimated != cut || tokens < 5*(billed-cut)+cut || (cut == 0 && tokens != 5*billed) {
			t.Fatalf("round %d: lgrun usage counts %d calls (%d estimated, %d tokens), the server billed %d (%d without usage) (exit %d: %s)\n%s\ngraph:\n%s",
				round, rep.Total.Calls, rep.Total.Estimated, tokens, billed, cut, code, stderr, out, dump(g.files))
		}
		t.Logf("round %d: exit %d, billed %d (%d cut) of %d", round, code, billed, cut, limit)
		if code == exitOK || round == 4 {
			return
		}
		args = []string{"resume", "-t", "p", "-q"}
		if rng.IntN(5) < 2 {
			limit += 1 + rng.IntN(3)
			args = append(args, "--max-llm-calls", strconv.Itoa(limit))
		}
	}
}

func dump(files map[string]string) string {
	var b strings.Builder
	for name, src := range files {
		fmt.Fprintf(&b, "-- %s --\n%s", name, src)
	}
	return b.String()
}
