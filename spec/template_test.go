package spec

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// templateFields is the state the template tests compile against.
var templateFields = []*Field{
	{Name: "ticket", Type: Type{Kind: KindString}},
	{Name: "n", Type: Type{Kind: KindInt}},
	{Name: "score", Type: Type{Kind: KindFloat}},
	{Name: "ok", Type: Type{Kind: KindBool}},
	{Name: "tags", Type: Type{Kind: KindList, Items: KindString}},
	{Name: "meta", Type: Type{Kind: KindObject}},
	{Name: "messages", Type: Type{Kind: KindMessages}},
	{Name: "anything", Type: Type{Kind: KindAny}},
}

// compileSetting compiles the value of the top-level key "prompt" of src
// as a template over templateFields.
func compileSetting(t *testing.T, src string) (*Template, ErrorList) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("bad test YAML: %v", err)
	}
	var errs ErrorList
	ec := &exprCompiler{file: "f.yaml", src: splitLines([]byte(src)), errs: &errs}
	tmpl := ec.compileTemplate(asMapping(doc.Content[0]).get("prompt"), "nodes.a.prompt", "prompt", stateEnv(templateFields))
	return tmpl, errs
}

func TestSplitTemplate(t *testing.T) {
	tests := []struct {
		src  string
		want []string // text parts as is, interpolations as <expr>
		err  string
	}{
		{src: "plain text", want: []string{"plain text"}},
		{src: "Hi {{ state.ticket }}!", want: []string{"Hi ", "< state.ticket >", "!"}},
		{src: "{{a}}{{b}}", want: []string{"<a>", "<b>"}},
		{src: `{{ "}}" + x }} end`, want: []string{`< "}}" + x >`, " end"}},
		{src: `{{ '}}' }}`, want: []string{`< '}}' >`}},
		{src: "{{ `}}` }}", want: []string{"< `}}` >"}},
		{src: `{{ "a\"}}" }}`, want: []string{`< "a\"}}" >`}},
		{src: `{{ {"a": {"b": 1}} }}`, want: []string{`< {"a": {"b": 1}} >`}},
		{src: `{{ {"a": 1}}}`, want: []string{`< {"a": 1}>`}},
		{src: `{{ "{{" }} is literal`, want: []string{`< "{{" >`, " is literal"}},
		{src: "one { brace } and }} closers", want: []string{"one { brace } and }} closers"}},
		{src: "multi\n{{\n  state.n\n}}\nline", want: []string{"multi\n", "<\n  state.n\n>", "\nline"}},
		{src: "Hi {{ state.ticket", err: "unclosed {{"},
		{src: `Hi {{ "}} `, err: "unclosed {{"},
		{src: "a {{  }} b", err: "empty {{ }}"},
	}
	for _, tt := range tests {
		parts, err := splitTemplate(tt.src)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.msg, tt.err) {
				t.Errorf("splitTemplate(%q) error = %v, want %q", tt.src, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("splitTemplate(%q): %s", tt.src, err.msg)
			continue
		}
		var got []string
		for _, p := range parts {
			if p.isExpr {
				got = append(got, "<"+p.expr+">")
				if string([]rune(tt.src)[p.off:p.off+len([]rune(p.expr))]) != p.expr {
					t.Errorf("splitTemplate(%q): offset %d does not hold %q", tt.src, p.off, p.expr)
				}
			} else {
				got = append(got, p.text)
			}
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("splitTemplate(%q) = %q, want %q", tt.src, got, tt.want)
		}
	}
}

// TestTemplateErrorPositions checks that an error inside an interpolation
// points at the offending character, whatever the YAML scalar style.
func TestTemplateErrorPositions(t *testing.T) {
	tests := []struct {
		name, src string
		line, col int
		msg       string
	}{
		{"plain", "prompt: Reply to {{ state.tickt }} now\n", 1, 27, `undeclared state field "tickt"; did you mean "ticket"?`},
		{"single", "prompt: 'It''s {{ state.tickt }}'\n", 1, 25, `undeclared state field "tickt"`},
		{"double", "prompt: \"Say \\\"hi\\\" {{ state.tickt }}\"\n", 1, 30, `undeclared state field "tickt"`},
		{"literal", "prompt: |\n  Line one.\n  Line two.\n  Ticket: {{ state.n + \"x\" }}\n", 4, 22, `invalid operation: + (mismatched types int and string)`},
		{"folded", "prompt: >\n  Line one\n  line two\n  and {{ state.tickt }}\n", 4, 16, `undeclared state field "tickt"`},
		{"plain multi-line", "prompt: Reply to\n  {{ state.tickt }}\n", 2, 12, `undeclared state field "tickt"`},
		{"second interpolation", "prompt: \"{{ state.ticket }} and {{ statex }}\"\n", 1, 36, `unknown name "statex"`},
		{"multi-line interpolation", "prompt: |\n  Head\n  {{\n    state.n >\n    state.nope\n  }}\n", 5, 11, `undeclared state field "nope"`},
		{"unclosed plain", "prompt: Hello {{ state.ticket\n", 1, 15, "unclosed {{"},
		{"unclosed block line 3", "prompt: |\n  one\n  two\n  three {{ state.ticket\n", 4, 9, "unclosed {{"},
		{"empty double", "prompt: \"a\\tb {{ }}\"\n", 1, 15, "empty {{ }}"},
		{"syntax", "prompt: 'x {{ state.ticket + }}'\n", 1, 29, "unexpected token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, errs := compileSetting(t, tt.src)
			if tmpl != nil {
				t.Errorf("compiled despite the error")
			}
			if len(errs) != 1 {
				t.Fatalf("want one error, got %v", errs)
			}
			e := errs[0]
			if e.Pos.Line != tt.line || e.Pos.Col != tt.col || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("got %d:%d %q, want %d:%d containing %q", e.Pos.Line, e.Pos.Col, e.Msg, tt.line, tt.col, tt.msg)
			}
			if !strings.HasPrefix(e.Msg, "nodes.a.prompt: ") {
				t.Errorf("message does not start with the path: %q", e.Msg)
			}
		})
	}
}

func TestTemplateRender(t *testing.T) {
	state := map[string]any{
		"ticket": "My invoice is wrong", "n": 3, "score": 2.5, "ok": true,
		"tags": []any{"billing", "urgent"}, "meta": map[string]any{"b": 1, "a": "<x>"},
		"anything": nil,
		"messages": []any{
			map[string]any{"role": "system", "content": "Be brief."},
			map[string]any{"role": "user", "content": "Weather in Paris?"},
			map[string]any{"role": "assistant", "name": "agent", "content": "", "tool_calls": []any{
				map[string]any{"id": "c1", "name": "get_weather", "arguments": `{"city":"Paris"}`},
			}},
			map[string]any{"role": "tool", "name": "get_weather", "tool_call_id": "c1", "content": `{"temp_c":21}`},
			map[string]any{"role": "assistant", "name": "agent", "content": "Let me add:\nit is sunny.", "tool_calls": []any{
				map[string]any{"id": "c2", "name": "note", "arguments": `{}`},
			}},
		},
	}
	transcript := "system: Be brief.\n" +
		"user: Weather in Paris?\n" +
		"assistant (agent): calls get_weather({\"city\":\"Paris\"})\n" +
		"tool (get_weather): {\"temp_c\":21}\n" +
		"assistant (agent): Let me add:\nit is sunny.\n" +
		"assistant (agent): calls note({})"
	tests := []struct{ src, want string }{
		{"prompt: plain text, no interpolation", "plain text, no interpolation"},
		{"prompt: 'Ticket: {{ state.ticket }}'", "Ticket: My invoice is wrong"},
		{"prompt: 'n={{ state.n }} score={{ state.score }} ok={{ state.ok }} half={{ state.n / 2 }}'", "n=3 score=2.5 ok=true half=1.5"},
		{"prompt: 'null is [{{ state.anything }}]'", "null is []"},
		{"prompt: 'tags: {{ state.tags }}'", `tags: ["billing","urgent"]`},
		{"prompt: 'meta: {{ state.meta }}'", `meta: {"a":"<x>","b":1}`},
		{"prompt: '{{ join(state.tags, \", \") }}'", "billing, urgent"},
		{"prompt: |\n  History:\n  {{ state.messages }}\n  End.\n", "History:\n" + transcript + "\nEnd.\n"},
		{"prompt: 'Last: {{ state.messages[1] }}'", "Last: user: Weather in Paris?"},
		{"prompt: 'Last: {{ last_message(state.messages) }}'", "Last: assistant (agent): Let me add:\nit is sunny.\nassistant (agent): calls note({})"},
		{"prompt: '[{{ state.messages[5:] }}]'", "[]"},
		{"prompt: 'literal {{ \"{{\" }} x }}'", "literal {{ x }}"},
		{"prompt: {expr: 'state.n > 2 ? \"big\" : \"small\"'}", "big"},
		{"prompt: {expr: 'state.tags'}", `["billing","urgent"]`},
		{"prompt: {expr: 'state.messages[0:1]'}", "system: Be brief."},
	}
	for _, tt := range tests {
		tmpl, errs := compileSetting(t, tt.src)
		if len(errs) > 0 || tmpl == nil {
			t.Errorf("%s: %v", tt.src, errs)
			continue
		}
		got, err := tmpl.Render(map[string]any{"state": state})
		if err != nil {
			t.Errorf("%s: render: %v", tt.src, err)
			continue
		}
		if got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.src, got, tt.want)
		}
	}
}

func TestRenderTextValues(t *testing.T) {
	tests := []struct {
		v    any
		want string
	}{
		{nil, ""},
		{"a\nb", "a\nb"},
		{42, "42"},
		{2.0, "2"},
		{-0.25, "-0.25"},
		{false, "false"},
		{[]any{}, "[]"},
		{map[string]any{}, "{}"},
		{[]any{1, "a", nil}, `[1,"a",null]`},
		{map[string]any{"role": "admin", "name": "x"}, `{"name":"x","role":"admin"}`},                             // not a chat role
		{map[string]any{"role": "user", "content": "hi", "extra": 1}, `{"content":"hi","extra":1,"role":"user"}`}, // not only message keys
		{[]any{map[string]any{"role": "user", "content": "hi"}, "x"}, `[{"content":"hi","role":"user"},"x"]`},
		{map[string]any{"role": "user", "content": "hi"}, "user: hi"},
	}
	for _, tt := range tests {
		if got := RenderText(tt.v); got != tt.want {
			t.Errorf("RenderText(%#v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

// TestTemplateEmptyMessages: an empty messages list renders as an empty
// transcript, not as [].
func TestTemplateEmptyMessages(t *testing.T) {
	tmpl, errs := compileSetting(t, "prompt: 'History: [{{ state.messages }}]'")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	got, err := tmpl.Render(map[string]any{"state": map[string]any{"messages": []any{}}})
	if err != nil || got != "History: []" {
		t.Fatalf("got %q, %v; want %q", got, err, "History: []")
	}
	tmpl, _ = compileSetting(t, "prompt: 'History: <{{ state.messages }}>'")
	if got, _ := tmpl.Render(map[string]any{"state": map[string]any{"messages": []any{}}}); got != "History: <>" {
		t.Fatalf("got %q, want %q", got, "History: <>")
	}
}

// TestOldStylePrompt checks the fix-it for a text setting written the old
// way, as an expression.
func TestOldStylePrompt(t *testing.T) {
	tests := []struct{ src, want string }{
		{`prompt: '"Draft a reply to " + state.ticket'`, `write prompt: 'Draft a reply to {{ state.ticket }}'`},
		{`prompt: "'Hi ' + state.ticket + '!'"`, `write prompt: 'Hi {{ state.ticket }}!'`},
		{`prompt: state.ticket`, `write prompt: '{{ state.ticket }}'`},
		{`prompt: '"You are a helpful assistant."'`, `write prompt: 'You are a helpful assistant.'`},
		{`prompt: '"It''s " + state.ticket'`, `write prompt: 'It''s {{ state.ticket }}'`},
		{`prompt: '"Classify.\n\nTicket: " + state.ticket'`, `write prompt: "Classify.\n\nTicket: {{ state.ticket }}"`},
		{`prompt: '"Summaries:\n- " + join(state.tags, "\n- ")'`, `write prompt: "Summaries:\n- {{ join(state.tags, \"\\n- \") }}"`},
		{`prompt: '"n: " + string(state.n + 1)'`, `write prompt: 'n: {{ state.n + 1 }}'`},
		{`prompt: '"s: " + string(state.score) + string(state.tags)'`, `write prompt: 's: {{ state.score }}{{ string(state.tags) }}'`},
		{`prompt: '"a: " + string(state.anything)'`, `write prompt: 'a: {{ string(state.anything) }}'`},
		{`prompt: 'state.n > 3 ? "big" : "small"'`, `write prompt: '{{ state.n > 3 ? "big" : "small" }}'`},
		{`prompt: '"a {{ b" + state.ticket'`, `write prompt: 'a {{ "{{" }} b{{ state.ticket }}'`},
		{"prompt: >-\n  \"Task: \" + state.ticket +\n  \"\\nGo.\"\n", `write prompt: "Task: {{ state.ticket }}\nGo."`},
		{`prompt: '"Hi " + state.tickt'`, `write prompt: 'Hi {{ state.tickt }}'`}, // a typo: still old style
	}
	for _, tt := range tests {
		tmpl, errs := compileSetting(t, tt.src)
		if tmpl != nil || len(errs) != 1 {
			t.Errorf("%s: want one error, got %v", tt.src, errs)
			continue
		}
		e := errs[0]
		want := "nodes.a.prompt: prompt is text with {{ }} interpolations now, not an expression; " + tt.want
		if e.Msg != want || e.Pos.Line != 1 || e.Pos.Col != 9 {
			t.Errorf("%s:\n got %s: %s\nwant 1:9: %s", tt.src, e.Pos, e.Msg, want)
		}
		// The suggestion is itself a valid setting that means what the old
		// expression meant.
		fixed := "prompt: " + strings.TrimPrefix(tt.want, "write prompt: ")
		ft, ferrs := compileSetting(t, fixed)
		if strings.Contains(tt.src, "tickt") {
			continue
		}
		if ft == nil || len(ferrs) > 0 {
			t.Errorf("suggestion %s does not compile: %v", fixed, ferrs)
		}
	}
	// Plain text that is no expression is a template like any other.
	for _, src := range []string{
		"prompt: Summarise the document in one sentence.",
		"prompt: hello",
		"prompt: 'Answer: yes or no'",
		"prompt: now()",
		`prompt: '"Quoted title" and more'`,
		`prompt: '"Yes" or "no"?'`,
		`prompt: '"A" in B'`,
	} {
		if _, errs := compileSetting(t, src); len(errs) > 0 {
			t.Errorf("%s: %v", src, errs)
		}
	}
}

// TestOldStyleSuggestionMeansTheSame renders an old expression's
// suggestion and compares it with the old expression's value.
func TestOldStyleSuggestionMeansTheSame(t *testing.T) {
	state := map[string]any{"ticket": "T-1", "n": 3, "score": 2.0, "ok": true, "tags": []any{"a", "b"}}
	for _, old := range []string{
		`"Draft a reply to " + state.ticket + "\n\nThanks {{x}}"`,
		`"Summaries:\n- " + join(state.tags, "\n- ")`,
		`state.n > 3 ? "big" : "small"`,
		`"n=" + string(state.n) + ", tags=" + join(state.tags, ",")`,
		`"score " + string(state.score) + " ok " + string(state.ok) + " " + string(state.n / 2)`,
	} {
		var errs ErrorList
		ec := &exprCompiler{file: "f.yaml", src: []string{old}, errs: &errs}
		n := &yaml.Node{Kind: yaml.ScalarNode, Value: old, Line: 1, Column: 1}
		e := ec.compile(n, "x", stateEnv(templateFields), nil)
		if e == nil {
			t.Fatalf("%s: %v", old, errs)
		}
		want, err := e.Eval(map[string]any{"state": state})
		if err != nil {
			t.Fatal(err)
		}
		fix, ok := ec.oldStyle(old, stateEnv(templateFields))
		if !ok {
			t.Fatalf("%s: not recognised as old style", old)
		}
		tmpl := ec.compileTemplate(&yaml.Node{Kind: yaml.ScalarNode, Value: fix, Line: 1, Column: 1}, "x", "prompt", stateEnv(templateFields))
		if tmpl == nil {
			t.Fatalf("%s → %s: %v", old, fix, errs)
		}
		got, err := tmpl.Render(map[string]any{"state": state})
		if err != nil || got != want {
			t.Errorf("%s → %s renders %q, %v; want %q", old, fix, got, err, want)
		}
	}
}

func TestTemplateFStringWarning(t *testing.T) {
	tmpl, errs := compileSetting(t, "prompt: |\n  Reply to {ticket}, priority { n }.\n  Keep {braces} and {\"json\": 1}; also {state.ok}.\n")
	if tmpl == nil {
		t.Fatalf("a warning must not fail the template: %v", errs)
	}
	want := []string{
		"2:12: warning: nodes.a.prompt: {ticket} is sent as is; did you mean {{ state.ticket }}?",
		"2:31: warning: nodes.a.prompt: { n } is sent as is; did you mean {{ state.n }}?",
		"3:39: warning: nodes.a.prompt: {state.ok} is sent as is; did you mean {{ state.ok }}?",
	}
	var got []string
	for _, e := range errs {
		got = append(got, strings.TrimPrefix(e.Error(), "f.yaml:"))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestTemplateExprForm(t *testing.T) {
	for _, tt := range []struct{ src, msg string }{
		{"prompt: {exp: state.ticket}", `nodes.a.prompt: want text, or {expr: "..."} for a computed value`},
		{"prompt: {expr: state.tickt}", `nodes.a.prompt.expr: undeclared state field "tickt"`},
		{"prompt: [a, b]", "nodes.a.prompt: want text, got a list"},
		{"prompt: ' '", "nodes.a.prompt: empty prompt (leave the key out for none)"},
	} {
		tmpl, errs := compileSetting(t, tt.src)
		if tmpl != nil || len(errs) != 1 || !strings.Contains(errs[0].Msg, tt.msg) {
			t.Errorf("%s: got %v, want %q", tt.src, errs, tt.msg)
		}
	}
}

// FuzzTemplate: compiling any text as a template, in any scalar style,
// never panics and reports positions inside the file.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"Hi {{ state.ticket }}", `{{ "}}" }}{{`, "{{ {\"a\": {}} }}}", `"a" + state.n`, "x\n{{\n state.nope }}", "{n} {state.ok}"} {
		f.Add(s, uint8(0))
	}
	styles := []yaml.Style{0, yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle, yaml.LiteralStyle, yaml.FoldedStyle}
	f.Fuzz(func(t *testing.T, text string, style uint8) {
		doc := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "prompt"},
			{Kind: yaml.ScalarNode, Value: text, Style: styles[int(style)%len(styles)]},
		}}
		out, err := yaml.Marshal(doc)
		var probe yaml.Node
		if err != nil || yaml.Unmarshal(out, &probe) != nil {
			return // yaml.v3 cannot always read back what it writes
		}
		tmpl, errs := compileSetting(t, string(out))
		lines := splitLines(out)
		for _, e := range errs {
			if e.Pos.Line < 1 || e.Pos.Line > len(lines) || e.Pos.Col < 1 || e.Pos.Col > len([]rune(lines[e.Pos.Line-1]))+1 {
				t.Errorf("position %s outside the file:\n%s", e.Pos, out)
			}
		}
		if tmpl != nil {
			_, _ = tmpl.Render(map[string]any{"state": map[string]any{}})
		}
	})
}
