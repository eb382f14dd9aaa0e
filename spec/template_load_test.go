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
	tests := []struct {
		tmpl *spec.Template
		want string
	}{
		{g.Nodes["plain"].System, "You answer tickets. Write {{ to show braces."},
		{g.Nodes["plain"].Prompt, "Ticket T-7 has 2 tags"},
		{g.Nodes["quoted"].System, "Tags: a, b"},
		{g.Nodes["quoted"].Prompt, "Count: 5\tJSON: {\"n\":4}"},
		{g.Nodes["blocks"].System, "You are on the escalation team.\n"},
		{g.Nodes["blocks"].Prompt, "History:\nuser: hi\nassistant (plain): hello\nLast: assistant (plain): hello\n"},
		{g.Nodes["computed"].System, "Be brief."},
		{g.Nodes["computed"].Prompt, "T-7"},
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
