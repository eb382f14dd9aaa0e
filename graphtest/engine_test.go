package graphtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/builtin"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Test files run with the engine's custom kinds: a Go tool and a tool of a
// Go tool kind (run for real unless scripted), a node kind and a provider
// (answered by the script).
func TestCustomKindsThroughEngine(t *testing.T) {
	dir := t.TempDir()
	graph := `version: 1
name: custom
state:
  messages: {type: messages, default: [{role: user, content: count 'a b c'}]}
  greeting: {type: string}
models:
  m: {provider: local}
tools:
  cap:
    kind: lookup
    parameters: {type: object, properties: {key: {type: string}}}
    table: {a: A}
nodes:
  hi: {kind: greet, whom: Gopher}
  agent: {kind: llm, model: m, tools: [word_count, cap]}
  tools: {kind: tools}
edges:
  - {from: START, to: hi}
  - {from: hi, to: agent}
  - {from: agent, when: has_tool_calls(state.messages), to: tools, else: END}
  - {from: tools, to: agent}
`
	tests := `cases:
  - name: counts with the Go tool
    models:
      agent:
        - tool_calls: [{name: word_count, arguments: {text: a b c}}, {name: cap, arguments: {key: a}}]
        - text: three
    expect:
      state: {greeting: "Hello, Gopher"}
      assert:
        - 'state.messages[2].content == "3"'
        - 'state.messages[3].content == "A"'
`
	for name, src := range map[string]string{"custom.yaml": graph, "custom.test.yaml": tests} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	eng, err := lgrun.New(
		lgrun.WithTool("word_count", "counts words", map[string]any{"type": "object", "properties": map[string]any{"text": map[string]any{"type": "string"}}},
			func(_ context.Context, args map[string]any) (any, error) {
				return len(strings.Fields(args["text"].(string))), nil
			}),
		lgrun.WithNodeKind(spec.NodeKindDecl{Name: "greet", Writes: []string{"greeting"}, Settings: []spec.Setting{{Name: "whom", Required: true}}},
			func(_ context.Context, call *runtime.NodeCall) (*runtime.NodeResult, error) {
				return &runtime.NodeResult{Writes: []runtime.Write{{Field: "greeting", Value: "Hello, " + call.Node.Settings()["whom"].(string)}}}, nil
			}),
		lgrun.WithToolKind(spec.ToolKindDecl{Name: "lookup", Settings: []spec.Setting{{Name: "table", Required: true}}},
			func(_ context.Context, tool *spec.Tool, args map[string]any) (any, error) {
				return tool.Settings["table"].(map[string]any)[args["key"].(string)], nil
			}),
		lgrun.WithProvider("local", "", func(*spec.Model) (builtin.ChatModel, error) { return nil, nil }),
	)
	if err != nil {
		t.Fatal(err)
	}
	res := RunFile(context.Background(), filepath.Join(dir, "custom.test.yaml"), Options{Engine: eng})
	if res.Failed() {
		for _, c := range res.Cases {
			t.Errorf("case %s: %v (err %v)", c.Name, c.Failures, c.Err)
		}
		t.Fatalf("diagnostics %v", res.Diags)
	}
	// The default engine does not know the kinds.
	res = RunFile(context.Background(), filepath.Join(dir, "custom.test.yaml"), Options{})
	if !res.Diags.HasErrors() || !strings.Contains(res.Diags.Error(), `unknown tool "word_count"`) {
		t.Fatalf("default engine: diagnostics %v", res.Diags)
	}
}
