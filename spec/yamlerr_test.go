package spec_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lgrun/lgrun/spec"
)

// TestYAMLErrorPointsAtPlainScalarCulprit checks that a YAML syntax error
// caused by ": " or " ? " in an unquoted value points at that character
// and says how to quote the value; yaml.v3 itself gives only the line.
func TestYAMLErrorPointsAtPlainScalarCulprit(t *testing.T) {
	head := "version: 1\nname: g\nnodes:\n  a: {kind: noop}\nedges:\n"
	tests := []struct {
		name, lines string
		at          string // the text that starts at the culprit, on the last line with it
		msg         string
	}{
		{"colon in block value", `  - {from: START, to: a}
  - from: a
    when: state.x == "x": y
    to: END`, `: y`, `invalid YAML: ": " inside a plain value starts another key; quote the value: when: 'state.x == "x": y'`},
		{"question mark in flow mapping", `  - {from: START, to: a}
  - {from: a, to: END, when: state.n > 1 ? true : false}`, `? true`, `invalid YAML: "?" followed by a space starts a key inside {…} or […]; quote the value: when: 'state.n > 1 ? true : false'`},
		{"second colon in flow mapping", `  - {from: START, to: a}
  - {from: a, to: END, when: state.s == "a": b}`, `: b}`, `invalid YAML: ": " inside a plain value starts another key; quote the value: when: 'state.s == "a": b'`},
		{"quoted key part, then a colon", `  - {from: START, to: a}
  - from: a
    when: "a: b": c
    to: END`, `: c`, `invalid YAML: ": " inside a plain value starts another key; quote the value: when: '"a: b": c'`},
		{"comment not in the advice", `  - {from: START, to: a}
  - from: a
    when: state.s == "a": b  # the check
    to: END`, `: b  #`, `invalid YAML: ": " inside a plain value starts another key; quote the value: when: 'state.s == "a": b'`},
		{"single quotes in the value", `  - {from: START, to: a}
  - from: a
    when: state.s == 'a': b
    to: END`, `: b`, `invalid YAML: ": " inside a plain value starts another key; quote the value: when: "state.s == 'a': b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := head + tt.lines + "\n"
			line, col := 0, 0
			for i, l := range strings.Split(src, "\n") {
				if j := strings.Index(l, tt.at); j >= 0 {
					line, col = i+1, utf8.RuneCountInString(l[:j])+1
				}
			}
			_, errs := spec.Parse("g.yaml", []byte(src), nil)
			if len(errs) != 1 {
				t.Fatalf("want one error, got %v", errs)
			}
			e := errs[0]
			if e.Pos.Line != line || e.Pos.Col != col || e.Msg != tt.msg {
				t.Errorf("got %d:%d %s\nwant %d:%d %s", e.Pos.Line, e.Pos.Col, e.Msg, line, col, tt.msg)
			}
		})
	}
}
