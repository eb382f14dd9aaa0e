package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker/nature"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/types"
	"gopkg.in/yaml.v3"
)

// Template is a compiled text setting (prompt, system, an http tool's url):
// literal text with {{ expression }} interpolations, each expression
// compiled and type-checked like every other expression of the graph. The
// expression form ({expr: "..."}) compiles to a template of one
// interpolation. Render turns it into text (see [RenderText] for how values
// become text).
type Template struct {
	// Src is the setting as written: the text, or the expression of the
	// expression form.
	Src string
	Pos Pos
	// Parts are the literal texts and interpolations, in order.
	Parts []TemplatePart
}

// TemplatePart is one piece of a template: literal Text, or an Expr whose
// value is rendered.
type TemplatePart struct {
	Text string
	Expr *Expr
	// messages is set when the expression's static type is messages (or
	// one message), so that even an empty list renders as a transcript.
	messages bool
}

// Render evaluates the template's interpolations against env and returns
// the text.
func (t *Template) Render(env map[string]any) (string, error) {
	if t == nil {
		return "", nil
	}
	var b strings.Builder
	for _, p := range t.Parts {
		if p.Expr == nil {
			b.WriteString(p.Text)
			continue
		}
		v, err := p.Expr.Eval(env)
		if err != nil {
			return "", err
		}
		if p.messages {
			if l, ok := toList(v); ok && len(l) == 0 {
				continue
			}
		}
		b.WriteString(RenderText(v))
	}
	return b.String(), nil
}

// RenderText renders a value as template text: a string as it is, null as
// the empty string, a number or bool as JSON, a list of messages (or one
// message) as a transcript, any other list or object as compact JSON.
//
// A transcript has one line per message, "role: content", where role is
// followed by the message's name in parentheses when it has one (the node
// of an assistant message, the tool of a tool result); each tool call of an
// assistant message adds a line "role (name): calls tool(arguments)". Lines
// are separated by "\n"; multi-line content is kept as it is.
func RenderText(v any) string {
	v = Normalize(v)
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []any:
		if len(x) > 0 && allMessages(x) {
			return transcript(x)
		}
	case map[string]any:
		if isMessage(x) {
			return transcript([]any{x})
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

var messageRoles = map[string]bool{"system": true, "user": true, "assistant": true, "tool": true}

// isMessage reports whether v is a chat message: an object with a known
// role and only the keys of a message.
func isMessage(v any) bool {
	m, ok := toMap(v)
	if !ok {
		return false
	}
	role, _ := m["role"].(string)
	if !messageRoles[role] {
		return false
	}
	for k := range m {
		switch k {
		case "id", "role", "content", "name", "tool_call_id", "tool_calls":
		default:
			return false
		}
	}
	_, err := Message(m)
	return err == nil
}

func allMessages(l []any) bool {
	for _, m := range l {
		if !isMessage(m) {
			return false
		}
	}
	return true
}

func transcript(msgs []any) string {
	var lines []string
	for _, v := range msgs {
		m, _ := Message(v)
		label := str(m["role"])
		if name := str(m["name"]); name != "" {
			label += " (" + name + ")"
		}
		calls, _ := toList(m["tool_calls"])
		if content := str(m["content"]); content != "" || len(calls) == 0 {
			lines = append(lines, label+": "+content)
		}
		for _, c := range calls {
			cm, _ := toMap(c)
			lines = append(lines, fmt.Sprintf("%s: calls %s(%s)", label, str(cm["name"]), str(cm["arguments"])))
		}
	}
	return strings.Join(lines, "\n")
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// isMessagesNature reports whether an expression's static type is a
// messages list or one message.
func isMessagesNature(n *nature.Nature) bool {
	isMsg := func(n *nature.Nature) bool {
		if n == nil || n.Kind != reflect.Map || n.TypeData == nil {
			return false
		}
		_, role := n.Fields["role"]
		_, calls := n.Fields["tool_calls"]
		return role && calls
	}
	if n != nil && n.Kind == reflect.Slice {
		return isMsg(n.Ref)
	}
	return isMsg(n)
}

// tmplPart is one piece of a template's source: literal text, or the
// source of an interpolation starting at rune offset off of the value.
type tmplPart struct {
	text   string
	expr   string
	off    int
	isExpr bool
}

// tmplSyntaxError is a problem of a template's {{ }} structure, at a rune
// offset of the value.
type tmplSyntaxError struct {
	off int
	msg string
}

// splitTemplate splits a template's source into literal text and
// interpolations. An interpolation runs from "{{" to the first "}}" that is
// outside the expression's string literals and braces.
func splitTemplate(src string) ([]tmplPart, *tmplSyntaxError) {
	r := []rune(src)
	var parts []tmplPart
	var text []rune
	for i := 0; i < len(r); {
		if r[i] != '{' || i+1 >= len(r) || r[i+1] != '{' {
			text = append(text, r[i])
			i++
			continue
		}
		start := i
		end := scanInterpolation(r, i+2)
		if end < 0 {
			return nil, &tmplSyntaxError{off: start, msg: `unclosed {{ (no matching }}); write {{ "{{" }} for a literal {{`}
		}
		if len(text) > 0 {
			parts = append(parts, tmplPart{text: string(text)})
			text = nil
		}
		e := string(r[start+2 : end])
		if strings.TrimSpace(e) == "" {
			return nil, &tmplSyntaxError{off: start, msg: "empty {{ }}: write an expression inside, such as {{ state.name }}"}
		}
		parts = append(parts, tmplPart{expr: e, off: start + 2, isExpr: true})
		i = end + 2
	}
	if len(text) > 0 {
		parts = append(parts, tmplPart{text: string(text)})
	}
	return parts, nil
}

// scanInterpolation returns the offset of the "}}" that closes the
// interpolation whose expression starts at i, or -1.
func scanInterpolation(r []rune, i int) int {
	depth := 0
	for ; i < len(r); i++ {
		switch c := r[i]; c {
		case '"', '\'', '`':
			j := i + 1
			for ; j < len(r) && r[j] != c; j++ {
				if r[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(r) {
				return -1
			}
			i = j
		case '{':
			depth++
		case '}':
			if depth == 0 {
				if i+1 < len(r) && r[i+1] == '}' {
					return i
				}
				continue
			}
			depth--
		}
	}
	return -1
}

// compileTemplate compiles the text setting n against env. A mapping
// {expr: "..."} is the expression form. key is the setting's name, for
// messages.
func (c *exprCompiler) compileTemplate(n *yaml.Node, path, key string, env types.Map) *Template {
	if n == nil {
		return nil
	}
	pos := nodePos(c.file, n)
	if n.Kind == yaml.MappingNode {
		en := asMapping(n).get("expr")
		if en == nil {
			c.errs.Add(pos, "%s: want text, or {expr: \"...\"} for a computed value", path)
			return nil
		}
		e := c.compile(en, path+".expr", env, nil)
		if e == nil {
			return nil
		}
		return &Template{Src: en.Value, Pos: pos, Parts: []TemplatePart{{Expr: e, messages: isMessagesNature(e.Program.Node().Nature())}}}
	}
	if n.Kind != yaml.ScalarNode {
		c.errs.Add(pos, "%s: want text, got %s", path, kindName(n))
		return nil
	}
	if strings.TrimSpace(n.Value) == "" {
		c.errs.Add(pos, "%s: empty %s (leave the key out for none)", path, key)
		return nil
	}
	raw, serr := splitTemplate(n.Value)
	if serr != nil || (len(raw) == 1 && !raw[0].isExpr) {
		if fix, ok := c.oldStyle(n.Value, env); ok {
			c.errs.Add(pos, "%s: %s is text with {{ }} interpolations now, not an expression; write %s: %s", path, key, key, yamlQuote(fix))
			return nil
		}
	}
	if serr != nil {
		c.errs.Add(c.offsetPos(n, serr.off), "%s: %s", path, serr.msg)
		return nil
	}
	t := &Template{Src: n.Value, Pos: pos}
	ok := true
	for _, p := range raw {
		if !p.isExpr {
			c.fstrings(n, p, path, env)
			t.Parts = append(t.Parts, TemplatePart{Text: p.text})
			continue
		}
		e := c.compileAt(n, p.expr, p.off, path, env, nil)
		if e == nil {
			ok = false
			continue
		}
		t.Parts = append(t.Parts, TemplatePart{Expr: e, messages: isMessagesNature(e.Program.Node().Nature())})
	}
	if !ok {
		return nil
	}
	return t
}

// fstringRE matches {name} or {var.name} written with single braces.
var fstringRE = lazyRE(`\{\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\s*\}`)

// fstrings warns about single-brace placeholders in literal text that name
// a state field (or a variable's field), which look like f-strings.
func (c *exprCompiler) fstrings(n *yaml.Node, p tmplPart, path string, env types.Map) {
	st, _ := env["state"].(types.Map)
	for _, m := range fstringRE().FindAllStringSubmatchIndex(p.text, -1) {
		first := p.text[m[2]:m[3]]
		var ref string
		switch {
		case m[4] < 0 && st != nil && st[first] != nil:
			ref = "state." + first
		case m[4] >= 0 && env[first] != nil:
			ref = first + "." + p.text[m[4]:m[5]]
		default:
			continue
		}
		off := p.off + len([]rune(p.text[:m[0]]))
		c.errs.Warn(c.offsetPos(n, off), "%s: %s is sent as is; did you mean {{ %s }}?", path, p.text[m[0]:m[1]], ref)
	}
}

// oldStyle reports whether src, a template without interpolations, is
// really an expression written the way text settings were written before
// they became templates, and returns the template that means what it
// meant. Such an expression reads a variable (state.ticket, even with a
// typo), or holds a string literal and compiles ('"Hi"'); text that merely
// parses, such as `"Title" and more`, is text.
func (c *exprCompiler) oldStyle(src string, env types.Map) (string, bool) {
	tree, err := parser.Parse(src)
	if err != nil {
		return "", false
	}
	v := &oldStyleFinder{env: env}
	ast.Walk(&tree.Node, v)
	if !v.reads {
		if !v.literal {
			return "", false
		}
		if _, err := c.compileSrc(src, env); err != nil {
			return "", false
		}
	}
	var b strings.Builder
	for _, op := range concatOperands(tree.Node) {
		if s, ok := op.(*ast.StringNode); ok {
			b.WriteString(strings.ReplaceAll(s.Value, "{{", `{{ "{{" }}`))
			continue
		}
		fmt.Fprintf(&b, "{{ %s }}", c.unstring(op, env).String())
	}
	return b.String(), true
}

// unstring drops string() around a number, bool or string, which an
// interpolation renders the same way.
func (c *exprCompiler) unstring(n ast.Node, env types.Map) ast.Node {
	var args []ast.Node
	switch x := n.(type) {
	case *ast.BuiltinNode:
		if x.Name == "string" {
			args = x.Arguments
		}
	case *ast.CallNode:
		if id, ok := x.Callee.(*ast.IdentifierNode); ok && id.Value == "string" {
			args = x.Arguments
		}
	}
	if len(args) != 1 {
		return n
	}
	arg := args[0]
	prog, err := c.compileSrc(arg.String(), env)
	if err != nil {
		return n
	}
	switch kindOfType(prog.Node().Type()) {
	case KindInt, KindFloat, KindBool, KindString:
		return arg
	}
	return n
}

type oldStyleFinder struct {
	env     types.Map
	reads   bool // reads a variable of env
	literal bool // holds a string literal
}

func (v *oldStyleFinder) Visit(n *ast.Node) {
	switch x := (*n).(type) {
	case *ast.StringNode:
		v.literal = true
	case *ast.IdentifierNode:
		if _, ok := v.env[x.Value]; ok {
			v.reads = true
		}
	}
}

// concatOperands flattens a chain of + that involves a string literal into
// its operands; any other expression is one operand.
func concatOperands(n ast.Node) []ast.Node {
	b, ok := n.(*ast.BinaryNode)
	if !ok || b.Operator != "+" || !stringy(b) {
		return []ast.Node{n}
	}
	return append(concatOperands(b.Left), concatOperands(b.Right)...)
}

func stringy(n ast.Node) bool {
	switch x := n.(type) {
	case *ast.StringNode:
		return true
	case *ast.BinaryNode:
		return x.Operator == "+" && (stringy(x.Left) || stringy(x.Right))
	}
	return false
}

// yamlQuote writes s as a YAML scalar that reads back as s: single-quoted
// when it fits on one line, else double-quoted with escapes.
func yamlQuote(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return !strconv.IsPrint(r) }) {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	return strconv.Quote(s)
}
