package spec_test

import (
	"testing"

	"github.com/lgrun/lgrun/spec"
)

// TestTemplatesLoadAndRender loads every form of text setting through the
// whole pipeline (YAML, JSON Schema, decoder) and renders it.
func TestTemplatesLoadAndRender(t *testing.T) {
	g, errs := spec.LoadFile("testdata/valid/templates.yaml", repoOptions())
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	st := g.Defaults()
	st["ticket"], st["n"], st["tags"] = "T-7", 4, []any{"a", "b"}
	st["messages"] = []any{
		map[string]any{"role": "user", "content": "hi"},
		map[string]any{"role": "assistant", "name": "plain", "content": "hello"},
	}
	env := map[string]any{"state": st}
	llm := func(g *spec.Graph, name string) *spec.LLMConfig { return g.Nodes[name].Config.(*spec.LLMConfig) }
	tests := []struct {
		tmpl *spec.Template
		want string
	}{
		{llm(g, "plain").System, "You answer tickets. Write {{ to show braces."},
		{llm(g, "plain").Prompt, "Ticket T-7 has 2 tags"},
		{llm(g, "quoted").System, "Tags: a, b"},
		{llm(g, "quoted").Prompt, "Count: 5\tJSON: {\"n\":4}"},
		{llm(g, "blocks").System, "You are on the escalation team.\n"},
		{llm(g, "blocks").Prompt, "History:\nuser: hi\nassistant (plain): hello\nLast: assistant (plain): hello\n"},
		{llm(g, "computed").System, "Be brief."},
		{llm(g, "computed").Prompt, "T-7"},
	}
	for i, tt := range tests {
		got, err := tt.tmpl.Render(env)
		if err != nil || got != tt.want {
			t.Errorf("%d (%s): got %q, %v; want %q", i, tt.tmpl.Pos, got, err, tt.want)
		}
	}
	url, err := g.Tools["lookup"].URL.Render(map[string]any{"args": map[string]any{"id": "42"}})
	if want := "https://api.example.com/tickets/42?full=true"; err != nil || url != want {
		t.Errorf("url %q, %v; want %q", url, err, want)
	}
}
