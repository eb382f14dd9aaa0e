package spec

import (
	"fmt"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/types"
	"gopkg.in/yaml.v3"
)

// A mistake is an expression compile error reworded for the mistake that
// most likely caused it, with where it is (1-based line, 0-based rune
// column in the expression, as expr counts).
type mistake struct {
	msg       string
	line, col int
}

// foreignNames are names other languages use for expr's literals.
var foreignNames = map[string]string{
	"True":      "true",
	"False":     "false",
	"TRUE":      "true",
	"FALSE":     "false",
	"None":      "nil",
	"null":      "nil",
	"NULL":      "nil",
	"Null":      "nil",
	"undefined": "nil",
}

// foreignFuncs are functions of other languages and the expr builtins that
// do their work.
var foreignFuncs = map[string]string{
	"str":    "string",
	"length": "len",
	"size":   "len",
	"count":  "len",
	"Len":    "len",
	"lower":  "lower",
	"append": "concat",
}

var (
	unexpectedRE = lazyRE(`^unexpected token (\w+)\("(.*)"\)$`)
	listPlusRE   = lazyRE(`^invalid operation: \+ \(mismatched types (?:list|\[\][\w{} ]+) and (?:list|\[\][\w{} ]+)\)$`)
	noMethodRE   = lazyRE(`^type (\S+) has no method (\w+)$`)
	noFieldRE    = lazyRE(`^type (\S+) has no field (\w+)$`)
	lengthRE     = lazyRE(`^(.*\S)\.(length|size|count|len)\b`)
)

// findMistake recognises the mistakes people make writing expressions:
// Python's True/None, a single "=", f-strings, template or object braces
// where an expression goes, + on lists, methods, YAML quotes taken for
// the expression's. style is the YAML scalar's; env the expression's
// variables. It returns false when the error is none of them.
func findMistake(fe *file.Error, src string, style yaml.Style, env types.Map) (mistake, bool) {
	at := func(msg string) (mistake, bool) { return mistake{msg, fe.Line, fe.Column}, true }
	// Template braces: {{ x }} is a template, and expressions are not.
	if off := templateBraces(src); off >= 0 {
		line, col := lineCol(src, off)
		msg := "this is an expression setting: write the expression itself"
		if inner, ok := templateInner(src[off:]); ok {
			msg = fmt.Sprintf("this is an expression setting: write %s", inner)
		}
		return mistake{msg + "; templates with {{ }} are for text settings such as prompt:", line, col}, true
	}
	if m := unknownNameRE().FindStringSubmatch(fe.Message); m != nil {
		name := m[1]
		if lit, ok := foreignNames[name]; ok {
			if lit == "nil" {
				return at(fmt.Sprintf("unknown name %q: expressions write the missing value as nil", name))
			}
			return at(fmt.Sprintf("unknown name %q: expressions write booleans in lower case: %s", name, lit))
		}
		if fn, ok := foreignFuncs[name]; ok && fn != name {
			return at(fmt.Sprintf("unknown name %q: the function is %s(…)", name, fn))
		}
		if (style == yaml.DoubleQuotedStyle || style == yaml.SingleQuotedStyle) && strings.TrimSpace(src) == name {
			return at(fmt.Sprintf(`unknown name %q: the YAML quotes are not part of the expression; for the text %s write '"%s"' (a string literal inside YAML quotes)`, name, name, name))
		}
		return mistake{}, false
	}
	if isProse(src) && (strings.HasPrefix(fe.Message, "unexpected token Identifier") || fe.Message == "unexpected end of expression" || fe.Message == "literal not terminated") {
		t := strings.TrimSpace(src)
		lit := fmt.Sprintf("%q", t)
		return mistake{fmt.Sprintf("this setting is an expression, and %s reads as text; for the text write the string literal %s (in YAML: '%s')", t, lit, strings.ReplaceAll(lit, "'", "''")), 1, 0}, true
	}
	if m := unexpectedRE().FindStringSubmatch(fe.Message); m != nil {
		r := []rune(lineOf(src, fe.Line))
		c := fe.Column
		switch {
		case m[1] == "Operator" && m[2] == "=" && c > 0 && c <= len(r) && r[c-1] == '=':
			return mistake{`"===" is not an operator: compare with "=="`, fe.Line, c - 2}, true
		case m[1] == "Operator" && m[2] == "=":
			return at(`a single "=" is not an operator in expressions; did you mean "=="?`)
		case m[1] == "String" && c > 0 && c <= len(r) && r[c-1] == 'f' && (c == 1 || !isIdentRune(r[c-2])):
			msg := "expressions have no f-strings; join the parts with +"
			if s := fStringJoin(m[2]); s != "" {
				msg += ": " + s
			}
			return mistake{msg, fe.Line, c - 1}, true
		case m[1] == "Operator" && m[2] == "if":
			msg := "expressions write a conditional as condition ? a : b"
			if a, rest, ok := strings.Cut(src, " if "); ok {
				if cond, b, ok := strings.Cut(rest, " else "); ok && !strings.Contains(b, " if ") {
					msg += "; write " + strings.TrimSpace(cond) + " ? " + strings.TrimSpace(a) + " : " + strings.TrimSpace(b)
				}
			}
			return at(msg)
		case m[1] == "Identifier" && m[2] == "is":
			return at(`"is" is not an operator: compare with == (x == nil), and "is not" with !=`)
		case m[1] == "Operator" && m[2] == ":":
			if fn, open, ok := closureArg(src, fe.Line, c); ok {
				msg := fmt.Sprintf("in %s(…) the braces hold the expression for each item (#), not an object; wrap the object in parentheses", fn)
				if fixed, ok := parenthesize(src, open); ok {
					msg += ": " + fixed
				}
				return at(msg)
			}
		}
		// Single braces round an expression: {x} is an object literal.
		if t := strings.TrimSpace(src); strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") && !strings.HasPrefix(t, "{{") {
			inner := strings.TrimSpace(t[1 : len(t)-1])
			if _, err := parser.Parse(inner); err == nil && inner != "" {
				off := strings.Index(src, "{")
				line, col := lineCol(src, off)
				return mistake{fmt.Sprintf(`braces make an object literal ({"key": value}); write the expression without them: %s`, inner), line, col}, true
			}
		}
		return mistake{}, false
	}
	msg := exprMessage(fe.Message)
	if listPlusRE().MatchString(msg) {
		if l, r, ok := plusOperands(src); ok {
			return at(fmt.Sprintf("+ does not join lists; use concat(%s, %s)", l, r))
		}
		return at("+ does not join lists; use concat(a, b)")
	}
	if m := noMethodRE().FindStringSubmatch(msg); m != nil {
		fix := ""
		if recv, args, ok := methodCall(src, m[2]); ok {
			fix = methodFix(m[2], recv, args)
		}
		if fix == "" {
			fix = m[2] + "(x)"
		}
		return at(fmt.Sprintf("type %s has no method %s (expressions call functions and operators on values); write %s", m[1], m[2], fix))
	}
	if strings.HasPrefix(msg, "array elements can only be selected using an integer") {
		if recv, args, ok := methodCall(src, "append"); ok && len(args) == 1 {
			return at(fmt.Sprintf("a list has no method append: use concat(%s, [%s])", recv, args[0]))
		}
	}
	if noFieldRE().MatchString(msg) || strings.HasPrefix(msg, "array elements can only be selected using an integer") {
		if m := lengthRE().FindStringSubmatch(strings.TrimSpace(lineOf(src, fe.Line))); m != nil && fe.Column > 0 {
			return at(fmt.Sprintf("%s has no field %q; its length is len(%s)", m[1], m[2], lastOperand(m[1])))
		}
	}
	if env["update"] != nil && strings.Contains(msg, "unknown") {
		return at(msg + " (update, the value a node writes, has no static type: convert it first, e.g. int(update), string(update))")
	}
	return mistake{}, false
}

// proseRE matches text that is words and punctuation, not an expression.
var proseRE = lazyRE(`^[\p{L}][\p{L}\d]*(?:[\s,'’-]+[\p{L}\d]+)*[.!?]*$`)

// isProse reports whether src looks like a sentence: words without
// operators, more than one or ending in punctuation, not naming state.
func isProse(src string) bool {
	t := strings.TrimSpace(src)
	return !strings.Contains(t, "\n") && proseRE().MatchString(t) && (strings.ContainsAny(t, " .!?'’"))
}

// templateBraces returns the byte offset of the first "{{" of src outside
// string literals that is not a closure's braces (after "(" or ","), or -1.
func templateBraces(src string) int {
	var quote rune
	escaped := false
	prev := rune(0) // the last non-blank rune outside literals
	for i, r := range src {
		switch {
		case quote != 0:
			switch {
			case escaped:
				escaped = false
			case r == '\\' && quote != '`':
				escaped = true
			case r == quote:
				quote = 0
			}
			continue
		case r == '"' || r == '\'' || r == '`':
			quote = r
		case r == '{' && strings.HasPrefix(src[i:], "{{") && prev != '(' && prev != ',':
			return i
		}
		if r != ' ' && r != '\t' && r != '\n' {
			prev = r
		}
	}
	return -1
}

// templateInner returns the trimmed text between a leading "{{" and its
// "}}".
func templateInner(s string) (string, bool) {
	end := strings.Index(s, "}}")
	if end < 0 {
		return "", false
	}
	inner := strings.TrimSpace(s[2:end])
	return inner, inner != ""
}

// fStringJoin turns an f-string's text into the expression that builds it:
// "n is {x}" becomes `"n is " + string(x)`.
func fStringJoin(s string) string {
	var parts []string
	for s != "" {
		open := strings.IndexByte(s, '{')
		if open < 0 {
			parts = append(parts, fmt.Sprintf("%q", s))
			break
		}
		end := strings.IndexByte(s[open:], '}')
		if end < 0 {
			return ""
		}
		if open > 0 {
			parts = append(parts, fmt.Sprintf("%q", s[:open]))
		}
		inner := strings.TrimSpace(s[open+1 : open+end])
		if inner == "" {
			return ""
		}
		parts = append(parts, "string("+inner+")")
		s = s[open+end+1:]
	}
	return strings.Join(parts, " + ")
}

// parenthesize returns src with the braces opening at rune offset open
// wrapped in parentheses.
func parenthesize(src string, open int) (string, bool) {
	r := []rune(src)
	depth := 0
	for j := open; j < len(r); j++ {
		switch r[j] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return string(r[:open]) + "(" + string(r[open:j+1]) + ")" + string(r[j+1:]), true
			}
		}
	}
	return "", false
}

// closureArg reports whether the position (1-based line, 0-based column)
// is inside braces that are an argument of a call, such as map(xs, {…}),
// and names the function and the rune offset of the braces.
func closureArg(src string, line, col int) (string, int, bool) {
	r := []rune(src)
	off := 0
	for l := 1; l < line && off < len(r); off++ {
		if r[off] == '\n' {
			l++
		}
	}
	off = min(off+col, len(r))
	depth := 0
	for i := off - 1; i >= 0; i-- {
		switch r[i] {
		case '}', ')', ']':
			depth++
		case '(', '[':
			depth--
		case '{':
			if depth > 0 {
				depth--
				continue
			}
			j := i - 1
			for j >= 0 && (r[j] == ' ' || r[j] == '\n') {
				j--
			}
			if j < 0 || r[j] != ',' {
				return "", 0, false
			}
			// The call's name: before its "(" at depth 0.
			d := 0
			for k := j - 1; k >= 0; k-- {
				switch r[k] {
				case ')', ']', '}':
					d++
				case '[', '{':
					d--
				case '(':
					if d > 0 {
						d--
						continue
					}
					e := k
					for k > 0 && isIdentRune(r[k-1]) {
						k--
					}
					if k == e {
						return "", 0, false
					}
					return string(r[k:e]), i, true
				}
			}
			return "", 0, false
		}
	}
	return "", 0, false
}

// plusOperands returns the source of both sides of the first + in src.
func plusOperands(src string) (string, string, bool) {
	tree, err := parser.Parse(src)
	if err != nil {
		return "", "", false
	}
	v := &plusFinder{}
	ast.Walk(&tree.Node, v)
	if v.found == nil {
		return "", "", false
	}
	return v.found.Left.String(), v.found.Right.String(), true
}

type plusFinder struct{ found *ast.BinaryNode }

func (v *plusFinder) Visit(n *ast.Node) {
	if b, ok := (*n).(*ast.BinaryNode); ok && b.Operator == "+" && v.found == nil {
		v.found = b
	}
}

// lastOperand returns the trailing operand of s ("a + state.xs" gives
// "state.xs").
func lastOperand(s string) string {
	r := []rune(s)
	i := len(r)
	for i > 0 && (isIdentRune(r[i-1]) || r[i-1] == '.') {
		i--
	}
	return string(r[i:])
}

func isIdentRune(r rune) bool {
	return r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// lineOf returns the 1-based line of src.
func lineOf(src string, line int) string {
	lines := strings.Split(src, "\n")
	if line < 1 || line > len(lines) {
		return ""
	}
	return lines[line-1]
}

// lineCol converts a byte offset in src to expr's 1-based line and 0-based
// rune column.
func lineCol(src string, off int) (int, int) {
	before := src[:off]
	line := strings.Count(before, "\n") + 1
	if i := strings.LastIndexByte(before, '\n'); i >= 0 {
		before = before[i+1:]
	}
	return line, len([]rune(before))
}

// placeholderRE matches a {…} in a string literal that names a state
// field: what a template or an f-string would fill in.
var placeholderRE = lazyRE(`\{\s*(state\.\w+(?:\.\w+)*)\s*\}`)

// literalPlaceholder finds a string literal of src with a {state.x} in it,
// which expressions keep as text, and returns where it starts (1-based
// line, 0-based rune column) and the warning.
func literalPlaceholder(src string) (mistake, bool) {
	if !placeholderRE().MatchString(src) {
		return mistake{}, false // the common case, without a second parse
	}
	tree, err := parser.Parse(src)
	if err != nil {
		return mistake{}, false
	}
	v := &placeholderFinder{}
	ast.Walk(&tree.Node, v)
	if v.found == nil {
		return mistake{}, false
	}
	r := []rune(src)
	from := min(max(v.found.Location().From, 0), len(r))
	line, col := lineCol(src, len(string(r[:from])))
	msg := fmt.Sprintf("the string %q keeps {%s} as text: expressions do not fill in placeholders", v.found.Value, placeholderRE().FindStringSubmatch(v.found.Value)[1])
	if s := fStringJoin(v.found.Value); s != "" {
		msg += "; join the parts: " + s
	}
	return mistake{msg, line, col}, true
}

type placeholderFinder struct{ found *ast.StringNode }

func (v *placeholderFinder) Visit(n *ast.Node) {
	if s, ok := (*n).(*ast.StringNode); ok && v.found == nil && placeholderRE().MatchString(s.Value) {
		v.found = s
	}
}

// methodCall finds the first call of method name in src and returns its
// receiver and arguments as source text.
func methodCall(src, name string) (string, []string, bool) {
	tree, err := parser.Parse(src)
	if err != nil {
		return "", nil, false
	}
	v := &methodFinder{name: name}
	ast.Walk(&tree.Node, v)
	if v.found == nil {
		return "", nil, false
	}
	mn := v.found.Callee.(*ast.MemberNode)
	args := make([]string, len(v.found.Arguments))
	for i, a := range v.found.Arguments {
		args[i] = a.String()
	}
	return mn.Node.String(), args, true
}

type methodFinder struct {
	name  string
	found *ast.CallNode
}

func (v *methodFinder) Visit(n *ast.Node) {
	c, ok := (*n).(*ast.CallNode)
	if !ok || v.found != nil {
		return
	}
	if mn, ok := c.Callee.(*ast.MemberNode); ok {
		if p, ok := mn.Property.(*ast.StringNode); ok && p.Value == v.name {
			v.found = c
		}
	}
}

// methodFix writes a method call of another language in expr.
func methodFix(name, recv string, args []string) string {
	one := func(f string) string {
		if len(args) != 1 {
			return ""
		}
		return fmt.Sprintf(f, recv, args[0])
	}
	switch strings.ToLower(name) {
	case "startswith":
		return one("%s startsWith %s")
	case "endswith":
		return one("%s endsWith %s")
	case "contains", "includes":
		return one("%s contains %s")
	case "strip", "trim":
		return fmt.Sprintf("trim(%s)", recv)
	case "join":
		if len(args) == 1 {
			return fmt.Sprintf("join(%s, %s)", args[0], recv)
		}
	case "length", "len", "size", "count":
		return fmt.Sprintf("len(%s)", recv)
	}
	return fmt.Sprintf("%s(%s)", name, strings.Join(append([]string{recv}, args...), ", "))
}
