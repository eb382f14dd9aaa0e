package lgrun_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"strings"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/builtin"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// agentGraph is a tool-calling agent: the model calls word_count (a Go
// tool), a tools node runs the call, the model answers.
const agentGraph = `version: 1
name: counter
state:
  messages:
    type: messages
    default: [{role: user, content: "How many words are in 'the quick brown fox'?"}]
models:
  local: {provider: scripted}
nodes:
  agent: {kind: llm, model: local, tools: [word_count]}
  tools: {kind: tools}
edges:
  - {from: START, to: agent}
  - {from: agent, when: has_tool_calls(state.messages), to: tools, else: END}
  - {from: tools, to: agent}
`

// scripted is a model written in Go: it calls word_count on the quoted
// text of the question, then reports the tool's answer.
type scripted struct{}

func (scripted) Chat(_ context.Context, req *builtin.ChatRequest) (*builtin.ChatReply, error) {
	last := req.Messages[len(req.Messages)-1]
	if last["role"] == "tool" {
		return &builtin.ChatReply{Content: fmt.Sprintf("It has %v words.", last["content"]), InputTokens: 20, OutputTokens: 5}, nil
	}
	q := fmt.Sprint(last["content"])
	text := q[strings.Index(q, "'")+1 : strings.LastIndex(q, "'")]
	return &builtin.ChatReply{
		ToolCalls:   []builtin.ToolCall{{ID: "call1", Name: "word_count", Arguments: fmt.Sprintf(`{"text": %q}`, text)}},
		InputTokens: 10, OutputTokens: 3,
	}, nil
}

// A graph uses a tool and a model provider written in Go, offline.
func Example() {
	eng, err := lgrun.New(
		lgrun.WithTool("word_count", "Counts the words of a text.",
			map[string]any{
				"type":       "object",
				"properties": map[string]any{"text": map[string]any{"type": "string"}},
				"required":   []any{"text"},
			},
			func(_ context.Context, args map[string]any) (any, error) {
				return len(strings.Fields(args["text"].(string))), nil
			}),
		lgrun.WithProvider("scripted", "a model written in Go", func(*spec.Model) (builtin.ChatModel, error) {
			return scripted{}, nil
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	g, diags := eng.Parse("counter.yaml", []byte(agentGraph))
	if diags.HasErrors() {
		log.Fatal(diags)
	}
	saver := lgrun.NewMemorySaver()
	res, err := eng.Run(context.Background(), g, saver, "t1", nil)
	if err != nil {
		log.Fatal(err)
	}
	msgs := res.Checkpoint.Values["messages"].([]any)
	fmt.Println(res.Status)
	fmt.Println(msgs[len(msgs)-1].(map[string]any)["content"])
	fmt.Println("tokens:", res.Checkpoint.Metadata.Totals.InputTokens+res.Checkpoint.Metadata.Totals.OutputTokens)
	// Output:
	// done
	// It has 4 words.
	// tokens: 38
}

// A node kind written in Go, with a setting checked when the graph loads.
func ExampleWithNodeKind() {
	greet := spec.NodeKindDecl{
		Name: "greet",
		Doc:  "Writes a greeting to state.greeting.",
		Settings: []spec.Setting{
			{Name: "whom", Doc: "who to greet", Schema: map[string]any{"type": "string"}, Required: true},
		},
		Writes: []string{"greeting"},
	}
	eng, err := lgrun.New(lgrun.WithNodeKind(greet, func(_ context.Context, call *runtime.NodeCall) (*runtime.NodeResult, error) {
		return &runtime.NodeResult{Writes: []runtime.Write{{Field: "greeting", Value: "Hello, " + call.Node.Settings()["whom"].(string) + "!"}}}, nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	src := `version: 1
name: hello
state:
  greeting: {type: string}
nodes:
  hi: {kind: greet, whom: Gopher}
edges:
  - {from: START, to: hi}
  - {from: hi, to: END}
`
	g, diags := eng.Parse("hello.yaml", []byte(src))
	if diags.HasErrors() {
		log.Fatal(diags)
	}
	res, err := eng.Run(context.Background(), g, lgrun.NewMemorySaver(), "t1", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Checkpoint.Values["greeting"])

	// A key the kind does not declare is an error at its line.
	_, diags = eng.Parse("hello.yaml", []byte(strings.Replace(src, "whom: Gopher", "who: Gopher", 1)))
	for _, d := range diags.Errors() {
		fmt.Println(d)
	}
	// Output:
	// Hello, Gopher!
	// hello.yaml:6:3: error: nodes.hi: kind greet needs whom
	// hello.yaml:6:21: error: unknown key "who" in nodes.hi; did you mean "whom"?
}

// Run pauses at an interrupt node; Resume answers it; State and History
// read the thread back.
func ExampleEngine_Resume() {
	src := `version: 1
name: approve
state:
  approved: {type: bool}
nodes:
  ask: {kind: interrupt, payload: '"approve?"', resume: approved}
edges:
  - {from: START, to: ask}
  - {from: ask, to: END}
`
	eng, err := lgrun.New()
	if err != nil {
		log.Fatal(err)
	}
	g, diags := eng.Parse("approve.yaml", []byte(src))
	if diags.HasErrors() {
		log.Fatal(diags)
	}
	ctx := context.Background()
	saver := lgrun.NewMemorySaver()
	res, err := eng.Run(ctx, g, saver, "t1", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Status, res.Interrupts[0].Payload)
	if _, err := eng.Resume(ctx, g, saver, "t1", true); err != nil {
		log.Fatal(err)
	}
	cp, err := lgrun.State(ctx, saver, "t1")
	if err != nil {
		log.Fatal(err)
	}
	hist, err := lgrun.History(ctx, saver, "t1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("approved:", cp.Values["approved"], "checkpoints:", len(hist))

	// Thread ids are checked by the library.
	_, err = eng.Run(ctx, g, saver, "team/1", nil)
	fmt.Println(err)
	// Output:
	// interrupted approve?
	// approved: true checkpoints: 2
	// thread id "team/1": thread ids must be non-empty, without spaces at the ends and without "/" (reserved for subgraph runs)
}

// lookupGraph declares a tool of a custom kind (lookup) with the kind's
// table setting; the model asks it for a capital.
const lookupGraph = `version: 1
name: capitals
state:
  messages:
    type: messages
    default: [{role: user, content: "Japan"}]
models:
  local: {provider: asker}
tools:
  capital:
    kind: lookup
    description: The capital of a country.
    parameters: {type: object, properties: {key: {type: string}}, required: [key]}
    table: {France: Paris, Japan: Tokyo}
nodes:
  agent: {kind: llm, model: local, tools: [capital]}
  tools: {kind: tools}
edges:
  - {from: START, to: agent}
  - {from: agent, when: has_tool_calls(state.messages), to: tools, else: END}
  - {from: tools, to: agent}
`

// asker calls the capital tool with the question, then reports its answer.
type asker struct{}

func (asker) Chat(_ context.Context, req *builtin.ChatRequest) (*builtin.ChatReply, error) {
	last := req.Messages[len(req.Messages)-1]
	if last["role"] == "tool" {
		return &builtin.ChatReply{Content: fmt.Sprint(last["content"])}, nil
	}
	return &builtin.ChatReply{ToolCalls: []builtin.ToolCall{{ID: "c1", Name: "capital", Arguments: fmt.Sprintf(`{"key": %q}`, last["content"])}}}, nil
}

// A tool kind written in Go: graphs declare tools of it with its settings,
// checked when the graph loads, and the engine's schema lists it.
func ExampleWithToolKind() {
	lookup := spec.ToolKindDecl{
		Name: "lookup",
		Doc:  "Looks the argument key up in a table.",
		Settings: []spec.Setting{
			{Name: "table", Doc: "key to value", Schema: map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "string"}}, Required: true},
			{Name: "missing", Doc: "the answer for a key not in the table", Schema: map[string]any{"type": "string"}, Default: "unknown"},
		},
		Check: func(settings map[string]any) error {
			if len(settings["table"].(map[string]any)) == 0 {
				return &spec.SettingError{Setting: "table", Err: errors.New("the table is empty")}
			}
			return nil
		},
	}
	eng, err := lgrun.New(
		lgrun.WithToolKind(lookup, func(_ context.Context, t *spec.Tool, args map[string]any) (any, error) {
			if v, ok := t.Settings["table"].(map[string]any)[args["key"].(string)]; ok {
				return v, nil
			}
			return t.Settings["missing"], nil
		}),
		lgrun.WithProvider("asker", "a model written in Go", func(*spec.Model) (builtin.ChatModel, error) { return asker{}, nil }),
	)
	if err != nil {
		log.Fatal(err)
	}
	g, diags := eng.Parse("capitals.yaml", []byte(lookupGraph))
	if diags.HasErrors() {
		log.Fatal(diags)
	}
	res, err := eng.Run(context.Background(), g, lgrun.NewMemorySaver(), "t1", nil)
	if err != nil {
		log.Fatal(err)
	}
	msgs := res.Checkpoint.Values["messages"].([]any)
	fmt.Println(msgs[len(msgs)-1].(map[string]any)["content"])

	// A key the kind does not declare, and a setting its check refuses.
	bad := strings.Replace(lookupGraph, "table: {France: Paris, Japan: Tokyo}", "tabel: {}\n    table: {}", 1)
	_, diags = eng.Parse("capitals.yaml", []byte(bad))
	for _, d := range diags.Errors() {
		fmt.Println(d)
	}

	// The engine's JSON Schema (what `lgrun schema` prints) knows the kind.
	src, err := eng.Schema()
	if err != nil {
		log.Fatal(err)
	}
	var sc struct {
		Defs map[string]struct {
			Properties map[string]struct {
				Enum        []string `json:"enum"`
				Description string   `json:"description"`
			} `json:"properties"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(src, &sc); err != nil {
		log.Fatal(err)
	}
	fmt.Println("tool kinds:", sc.Defs["tool"].Properties["kind"].Enum)
	fmt.Println("table:", sc.Defs["tool"].Properties["table"].Description)
	// Output:
	// Tokyo
	// capitals.yaml:14:5: error: unknown key "tabel" in tools.capital; did you mean "table"?
	// capitals.yaml:15:12: error: tools.capital.table: the table is empty
	// tool kinds: [expr http exec mcp lookup]
	// table: kind lookup: key to value
}
