package spec

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "abc", 3},
		{"abc", "", 3},
		{"edges", "edges", 0},
		{"edgs", "edges", 1},   // deletion
		{"edgees", "edges", 1}, // insertion
		{"edgas", "edges", 1},  // substitution
		{"egdes", "edges", 1},  // transposition
		{"kitten", "sitting", 3},
		{"ça", "ca", 1}, // runes, not bytes
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := editDistance(tt.b, tt.a); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d (symmetry)", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	top := []string{"description", "edges", "interrupts", "limits", "models", "name", "nodes", "state", "tools", "version"}
	tests := []struct {
		s          string
		candidates []string
		want       string
	}{
		{"edgs", top, "edges"},
		{"limts", top, "limits"},
		{"Nodes", top, "nodes"}, // case-insensitive
		{"verison", top, "version"},
		{"x", top, ""},         // one letter allows one edit, and nothing is that close
		{"nod", top, "nodes"},  // distance 2 for a 3-letter word: limit is 2
		{"no", top, ""},        // distance 3 is too far for a short word
		{"stat", top, "state"}, // the first best wins
		{"wibble", top, ""},    // nothing close
		{"anything", nil, ""},  // no candidates
		{"description", top, "description"},
	}
	for _, tt := range tests {
		if got := suggest(tt.s, tt.candidates); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.s, got, tt.want)
		}
	}
}

func TestCompatible(t *testing.T) {
	tests := []struct {
		k    Kind
		t    Type
		want bool
	}{
		{KindInt, Type{Kind: KindInt}, true},
		{KindInt, Type{Kind: KindFloat}, true},
		{KindFloat, Type{Kind: KindInt}, false},
		{KindString, Type{Kind: KindAny}, true},
		{KindList, Type{}, true},
		{KindList, Type{Kind: KindMessages}, true},
		{KindObject, Type{Kind: KindMessages}, false},
		{KindList, Type{Kind: KindList, Items: KindString}, true},
		{KindBool, Type{Kind: KindString}, false},
	}
	for _, tt := range tests {
		if got := compatible(tt.k, tt.t); got != tt.want {
			t.Errorf("compatible(%s, %s) = %v, want %v", tt.k, tt.t, got, tt.want)
		}
	}
}

func TestTypeList(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"integer"}, "integer"},
		{[]string{"string", "array"}, "string or list"},
		{[]string{"string", "number", "boolean"}, "string, number or bool"},
		{[]string{"object", "object"}, "mapping"},
		{nil, "nothing"},
	}
	for _, tt := range tests {
		if got := typeList(tt.in); got != tt.want {
			t.Errorf("typeList(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestExprPos checks that an error inside an expression lands on the right
// character of the file, whatever the scalar style. In each case the
// expression refers to state.bad, and the position must point at "bad",
// which the source marks with a following "bad" only once.
func TestExprPos(t *testing.T) {
	tests := []struct {
		name string
		src  string // a YAML mapping with key e
	}{
		{"plain", "e: state.x + state.bad\n"},
		{"plain in flow mapping", "{a: 1, e: state.x + state.bad}\n"},
		{"plain multi-line", "e: state.x +\n  state.x +\n    state.bad\n"},
		{"plain after blank line", "e: state.x\n\n  + state.bad\n"},
		{"double-quoted", "e: \"state.x + state.bad\"\n"},
		{"double-quoted with escapes", "e: \"\\\"a\\\" + \\\"\\u0062\\\" + state.bad\"\n"},
		{"double-quoted hex escape", "e: \"'\\x41' + state.bad\"\n"},
		{"double-quoted multi-line", "e: \"state.x +\n  state.bad\"\n"},
		{"double-quoted escaped line break", "e: \"state.x + sta\\\n  te.bad\"\n"},
		{"single-quoted", "e: 'state.x + state.bad'\n"},
		{"single-quoted with quotes", "e: '''a'' + state.bad'\n"},
		{"single-quoted multi-line", "e: 'state.x\n   + state.bad'\n"},
		{"literal", "e: |\n  state.x +\n    state.bad\n"},
		{"literal keep", "e: |+\n  state.x +\n  state.bad\n\n"},
		{"literal with indent indicator", "e: |2\n    state.x\n  + state.bad\n"},
		{"literal after blank line", "e: |\n\n  state.x\n\n  + state.bad\n"},
		{"folded", "e: >\n  state.x +\n  state.bad\n"},
		{"folded more indented", "e: >\n  state.x\n    + state.bad\n"},
		{"literal in sequence", "- e: |\n    state.x\n    + state.bad\n"},
		{"unicode before", "e: '\"é\" + state.bad'\n"},
		{"crlf", "e: state.x +\r\n  state.bad\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte(tt.src), &doc); err != nil {
				t.Fatal(err)
			}
			n := findKey(doc.Content[0], "e")
			if n == nil {
				t.Fatal("no key e")
			}
			var errs ErrorList
			ec := &exprCompiler{file: "f.yaml", src: strings.Split(tt.src, "\n"), errs: &errs}
			env := stateEnv([]*Field{{Name: "x", Type: Type{Kind: KindString}}})
			if ec.compile(n, "e", env, nil) != nil || len(errs) != 1 {
				t.Fatalf("compile %q: want one error, got %v", n.Value, errs)
			}
			e := errs[0]
			lines := strings.Split(tt.src, "\n")
			line := []rune(lines[e.Pos.Line-1])
			if e.Pos.Col < 1 || e.Pos.Col+2 > len(line) || string(line[e.Pos.Col-1:e.Pos.Col+2]) != "bad" {
				t.Fatalf("%v does not point at bad:\n%s", e, caret(tt.src, e.Pos))
			}
			if !strings.Contains(e.Msg, `undeclared state field "bad"`) {
				t.Fatalf("message %q", e.Msg)
			}
		})
	}
}

func findKey(n *yaml.Node, key string) *yaml.Node {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				return n.Content[i+1]
			}
			if v := findKey(n.Content[i+1], key); v != nil {
				return v
			}
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			if v := findKey(c, key); v != nil {
				return v
			}
		}
	}
	return nil
}

func caret(src string, p Pos) string {
	lines := strings.Split(src, "\n")
	if p.Line < 1 || p.Line > len(lines) {
		return "(line out of range)"
	}
	return lines[p.Line-1] + "\n" + strings.Repeat(" ", max(p.Col-1, 0)) + "^"
}

func TestYAMLErrorPos(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		line, col int
	}{
		// Parser errors: yaml.v3 reports a 0-based line.
		{"unclosed flow mapping", "a: 1\nb: {c: 1\nd: 2\n", 2, 1},
		{"unclosed flow sequence", "a: 1\nb:\n  - [1, 2\n", 3, 3},
		{"bad indentation", "a:\n  b: 1\n c: 2\n", 3, 2},
		// Scanner errors: already 1-based.
		{"tab", "a:\n\tb: 1\n", 2, 1},
		{"missing colon", "a: 1\nb: 2\nc 2\nd: 3\n", 3, 1},
		{"unterminated quote", "a: 1\nb: \"x\n", 2, 1},
		// At the end of the stream: clamped into the file.
		{"eof inside flow", "a: [1,", 1, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errs ErrorList
			if parseYAML("f.yaml", []byte(tt.src), &errs) != nil || len(errs) != 1 {
				t.Fatalf("want one error, got %v", errs)
			}
			p := errs[0].Pos
			if p.Line != tt.line || p.Col != tt.col {
				t.Fatalf("got %v (%s), want line %d col %d\n%s", p, errs[0].Msg, tt.line, tt.col, caret(tt.src, p))
			}
		})
	}
}

func TestSplitLines(t *testing.T) {
	tests := []struct {
		src  string
		want []string
	}{
		{"", []string{""}},
		{"a", []string{"a"}},
		{"a\n", []string{"a", ""}},
		{"a\nb", []string{"a", "b"}},
		{"a\r\nb\r\n", []string{"a", "b", ""}},
		{"a\rb", []string{"a", "b"}},
		{"\r\r00", []string{"", "", "00"}},
		{"a\u0085b\u2028c\u2029d", []string{"a", "b", "c", "d"}},
		{"\xc2", []string{"\xc2"}},
		{"é\n", []string{"é", ""}},
	}
	for _, tt := range tests {
		got := splitLines([]byte(tt.src))
		if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
			t.Errorf("splitLines(%q) = %q, want %q", tt.src, got, tt.want)
		}
	}
}

// TestLineNumbersMatchYAML checks that splitLines numbers lines as yaml.v3
// does, whatever the line breaks.
func TestLineNumbersMatchYAML(t *testing.T) {
	for _, br := range []string{"\n", "\r\n", "\r", "\u0085", "\u2028", "\u2029"} {
		src := "a: 1" + br + "b: 2" + br + "c: [x, y]" + br
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatalf("%q: %v", br, err)
		}
		lines := splitLines([]byte(src))
		m := doc.Content[0]
		for i := 0; i < len(m.Content); i += 2 {
			k := m.Content[i]
			if k.Line > len(lines) || !strings.HasPrefix(lines[k.Line-1], k.Value+":") {
				t.Errorf("break %q: key %s at line %d, lines %q", br, k.Value, k.Line, lines)
			}
		}
	}
}

func TestErrorList(t *testing.T) {
	var l ErrorList
	if l.Err() != nil {
		t.Fatal("empty list has an error")
	}
	l.Warn(Pos{File: "b.yaml", Line: 1, Col: 1}, "w")
	if l.Err() != nil || l.HasErrors() {
		t.Fatal("warnings alone are not errors")
	}
	l.Add(Pos{File: "a.yaml", Line: 2, Col: 5}, "second %d", 2)
	l.Add(Pos{File: "a.yaml", Line: 2, Col: 1}, "first")
	l.Add(Pos{File: "a.yaml", Line: 2, Col: 1}, "first")
	l.Sort()
	want := "a.yaml:2:1: error: first\na.yaml:2:5: error: second 2\nb.yaml:1:1: warning: w"
	if got := l.Err().Error(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if len(l.Errors()) != 2 || len(l.Warnings()) != 1 {
		t.Fatalf("Errors/Warnings split wrong: %d %d", len(l.Errors()), len(l.Warnings()))
	}
	var target ErrorList
	if !errors.As(l.Err(), &target) || len(AsList(l.Err())) != 3 {
		t.Fatal("AsList does not recover the list")
	}
	if got := AsList(errors.New("plain")); len(got) != 1 || got[0].Msg != "plain" {
		t.Fatalf("AsList(plain) = %v", got)
	}
	if (Pos{File: "f"}).String() != "f" || (Pos{File: "f", Line: 1, Col: 2}).String() != "f:1:2" {
		t.Fatal("Pos.String")
	}
}
