package spec

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// maxAliasNodes bounds the values alias expansion may add, so a hostile
// file cannot make the decoder build a huge value, exponentially (aliases of
// aliases) or quadratically (one long list aliased many times).
const maxAliasNodes = 100_000

// parseYAML parses src into its document node, reporting YAML syntax errors
// with positions.
func parseYAML(file string, src []byte, errs *ErrorList) *yaml.Node {
	if len(bytes.TrimSpace(src)) == 0 {
		errs.Add(Pos{File: file, Line: 1, Col: 1}, "empty graph file")
		return nil
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF { // only comments or document markers
			errs.Add(Pos{File: file, Line: 1, Col: 1}, "empty graph file")
			return nil
		}
		pos, msg := yamlError(file, src, err)
		errs.Add(pos, "%s", msg)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		errs.Add(Pos{File: file, Line: extra.Line, Col: extra.Column}, "more than one YAML document in the file")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		errs.Add(Pos{File: file, Line: 1, Col: 1}, "empty graph file")
		return nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		errs.Add(nodePos(file, root), "graph file must be a mapping, got %s", kindName(root))
		return nil
	}
	return root
}

// ParseYAML parses src, a YAML file other than a graph (a mock model's
// fixtures, say), into its root node, with positioned syntax errors. An
// empty file (or only comments) gives a nil root and no error.
func ParseYAML(file string, src []byte) (*yaml.Node, ErrorList) {
	var errs ErrorList
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, nil
		}
		pos, msg := yamlError(file, src, err)
		errs.Add(pos, "%s", msg)
		return nil, errs
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		errs.Add(Pos{File: file, Line: extra.Line, Col: extra.Column}, "more than one YAML document in the file")
	}
	if len(doc.Content) == 0 {
		return nil, errs
	}
	return doc.Content[0], errs
}

var yamlLineRE = lazyRE(`^yaml: (?:line (\d+): )?`)

// yamlError positions and words a YAML syntax error. yaml.v3 reports a
// line only; when the problem is one an expression written as a plain
// scalar causes (": " or " ? " inside it), the column is the character
// that broke the line and the message says to quote the value.
func yamlError(file string, src []byte, err error) (Pos, string) {
	pos, msg := yamlErrorPos(file, src, err), yamlErrorMsg(err)
	switch yamlLineRE().ReplaceAllString(err.Error(), "") {
	case "did not find expected ',' or '}'", "did not find expected ',' or ']'", "mapping values are not allowed in this context":
	default:
		return pos, msg
	}
	lines := splitLines(src)
	if pos.Line < 1 || pos.Line > len(lines) {
		return pos, msg
	}
	if col, why, ok := plainScalarCulprit(lines[pos.Line-1]); ok {
		pos.Col = col + 1
		msg = "invalid YAML: " + why
	}
	return pos, msg
}

// plainScalarCulprit scans one line for a plain (unquoted) value that YAML
// cannot hold: one with ": " in it (read as another key), or, inside
// {…} or […], one with " ? " (read as a key indicator). It returns the
// 0-based rune column of that ":" or "?" and what to do.
func plainScalarCulprit(line string) (int, string, bool) {
	r := []rune(line)
	blank := func(i int) bool { return i < 0 || i >= len(r) || r[i] == ' ' || r[i] == '\t' }
	type level struct {
		entry   int // where the current entry starts
		key     string
		inValue bool
		valAt   int
	}
	stack := []level{{entry: 0}}
	for i := 0; i < len(r); i++ {
		top := &stack[len(stack)-1]
		switch c := r[i]; {
		case c == '#' && blank(i-1):
			return 0, "", false
		case (c == '\'' || c == '"') && scalarStart(r, i):
			j := closingQuote(r, i)
			if j < 0 {
				return 0, "", false
			}
			i = j
		case c == '{' || c == '[':
			stack = append(stack, level{entry: i + 1})
		case (c == '}' || c == ']') && len(stack) > 1:
			stack = stack[:len(stack)-1]
		case c == ',' && len(stack) > 1:
			*top = level{entry: i + 1}
		case c == ':' && blank(i+1):
			if top.inValue {
				return i, quoteAdvice(`": " inside a plain value starts another key`, top.key, valueText(r, top.valAt, len(stack) > 1)), true
			}
			key := strings.TrimSpace(string(r[top.entry:i]))
			key = strings.TrimSpace(strings.TrimPrefix(key, "- "))
			*top = level{entry: top.entry, key: key, inValue: true, valAt: i + 1}
		case c == '?' && blank(i-1) && blank(i+1) && len(stack) > 1 && top.inValue:
			return i, quoteAdvice(`"?" followed by a space starts a key inside {…} or […]`, top.key, valueText(r, top.valAt, true)), true
		}
	}
	return 0, "", false
}

// scalarStart reports whether r[i] begins a scalar: it is the first
// non-blank rune of the line or follows an indicator (":", "-", "," or an
// opening bracket). A quote anywhere else is part of a plain scalar.
func scalarStart(r []rune, i int) bool {
	j := i - 1
	for j >= 0 && (r[j] == ' ' || r[j] == '\t') {
		j--
	}
	return j < 0 || (j < i-1 || r[j] == '{' || r[j] == '[' || r[j] == ',') && strings.ContainsRune(":-,{[?", r[j])
}

// closingQuote returns the index of the quote closing the scalar opened at
// r[i], or -1 when it does not close on this line.
func closingQuote(r []rune, i int) int {
	q := r[i]
	for j := i + 1; j < len(r); j++ {
		switch {
		case q == '"' && r[j] == '\\':
			j++
		case r[j] == q && q == '\'' && j+1 < len(r) && r[j+1] == '\'':
			j++
		case r[j] == q:
			return j
		}
	}
	return -1
}

// valueText is the value starting at r[at]: to the end of the line (less a
// comment) in block context, or to the "," or closing bracket that ends
// the entry in flow context.
func valueText(r []rune, at int, flow bool) string {
	end, depth := len(r), 0
	for j := at; j < len(r); j++ {
		c := r[j]
		if c == '#' && (j == 0 || r[j-1] == ' ') {
			end = j
			break
		}
		if !flow {
			continue
		}
		switch c {
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			if depth == 0 {
				end = j
				j = len(r)
				continue
			}
			depth--
		case ',':
			if depth == 0 {
				end = j
				j = len(r)
			}
		}
	}
	return strings.TrimSpace(string(r[at:end]))
}

// quoteAdvice says why a plain value broke and how to quote it.
func quoteAdvice(why, key, val string) string {
	msg := why + "; quote the value"
	switch {
	case key == "" || val == "":
	case !strings.Contains(val, "'"):
		msg += fmt.Sprintf(": %s: '%s'", key, val)
	case !strings.ContainsAny(val, "\"\\"):
		msg += fmt.Sprintf(": %s: \"%s\"", key, val)
	}
	return msg
}

func yamlErrorPos(file string, src []byte, err error) Pos {
	m := yamlLineRE().FindStringSubmatch(err.Error())
	line := 1
	if m != nil && m[1] != "" {
		line, _ = strconv.Atoi(m[1])
		if isParserProblem(yamlLineRE().ReplaceAllString(err.Error(), "")) {
			// yaml.v3 v3.0.1 adds 1 to the 0-based mark of scanner
			// errors only; a parser error's line is 0-based.
			line++
		}
	}
	// yaml.v3 does not report columns; point at the first non-blank character,
	// or at a tab if the line has one (the most common cause).
	col := 1
	lines := splitLines(src)
	if line > len(lines) {
		// A problem found at the end of the stream.
		line = len(lines)
		return Pos{File: file, Line: line, Col: utf8.RuneCountInString(lines[line-1]) + 1}
	}
	if line-1 < len(lines) {
		l := lines[line-1]
		if i := strings.IndexByte(l, '\t'); i >= 0 {
			col = utf8.RuneCountInString(l[:i]) + 1
		} else {
			col = len(l) - len(strings.TrimLeft(l, " ")) + 1
		}
	}
	return Pos{File: file, Line: line, Col: col}
}

// splitLines splits src into lines as YAML counts them, so that a yaml.Node's
// Line indexes the result: a line ends at \r\n, \r, \n, NEL (U+0085), LS
// (U+2028) or PS (U+2029). A final line break starts an empty last line.
func splitLines(src []byte) []string {
	var lines []string
	start := 0
	for i := 0; i < len(src); {
		n := 0 // length of the line break at i
		switch {
		case src[i] == '\r' && i+1 < len(src) && src[i+1] == '\n':
			n = 2
		case src[i] == '\r' || src[i] == '\n':
			n = 1
		case src[i] == 0xC2 && i+1 < len(src) && src[i+1] == 0x85:
			n = 2
		case src[i] == 0xE2 && i+2 < len(src) && src[i+1] == 0x80 && (src[i+2] == 0xA8 || src[i+2] == 0xA9):
			n = 3
		}
		if n == 0 {
			i++
			continue
		}
		lines = append(lines, string(src[start:i]))
		i += n
		start = i
	}
	return append(lines, string(src[start:]))
}

// isParserProblem reports whether msg is one of the problems reported by
// yaml.v3's parser (parserc.go), as opposed to its scanner.
func isParserProblem(msg string) bool {
	for _, p := range []string{
		"did not find expected ',' or ']'",
		"did not find expected ',' or '}'",
		"did not find expected '-' indicator",
		"did not find expected <document start>",
		"did not find expected <stream-start>",
		"did not find expected key",
		"did not find expected node content",
		"found duplicate %TAG directive",
		"found duplicate %YAML directive",
		"found incompatible YAML document",
		"found undefined tag handle",
	} {
		if msg == p {
			return true
		}
	}
	return false
}

func yamlErrorMsg(err error) string {
	msg := yamlLineRE().ReplaceAllString(err.Error(), "")
	if strings.Contains(msg, "found character that cannot start any token") || strings.Contains(msg, "found a tab") {
		msg += " (tabs are not allowed for indentation in YAML; use spaces)"
	}
	return "invalid YAML: " + msg
}

func nodePos(file string, n *yaml.Node) Pos {
	if n == nil {
		return Pos{File: file}
	}
	return Pos{File: file, Line: n.Line, Col: n.Column}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return "a scalar"
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

// toValue converts a YAML node to a JSON-like value (nil, bool, int, float64,
// string, []any, map[string]any), reporting duplicate keys, non-string keys
// and unsupported YAML features.
type valueConv struct {
	file string
	errs *ErrorList
	// expanded counts the nodes visited inside alias expansions; alias is
	// the outermost alias being expanded.
	expanded int
	alias    *yaml.Node
}

func (c *valueConv) value(n *yaml.Node) any {
	if c.alias != nil {
		c.expanded++
		if c.expanded > maxAliasNodes {
			if c.expanded == maxAliasNodes+1 {
				c.errs.Add(nodePos(c.file, c.alias), "aliases expand to more than %d values; write the values out", maxAliasNodes)
			}
			return nil
		}
	}
	switch n.Kind {
	case yaml.AliasNode:
		if c.alias != nil {
			return c.value(n.Alias)
		}
		c.alias = n
		v := c.value(n.Alias)
		c.alias = nil
		return v
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, e := range n.Content {
			out = append(out, c.value(e))
		}
		return out
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		first := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
				if k.Tag == "!!merge" {
					c.errs.Add(nodePos(c.file, k), "YAML merge keys (<<) are not supported; write the keys out")
				} else {
					c.errs.Add(nodePos(c.file, k), "mapping keys must be strings")
				}
				continue
			}
			if prev, ok := first[k.Value]; ok {
				c.errs.Add(nodePos(c.file, k), "duplicate key %q (first defined at line %d)", k.Value, prev.Line)
				continue
			}
			first[k.Value] = k
			out[k.Value] = c.value(v)
		}
		return out
	case yaml.ScalarNode:
		return c.scalar(n)
	}
	return nil
}

func (c *valueConv) scalar(n *yaml.Node) any {
	switch n.ShortTag() {
	case "!!null":
		return nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			c.errs.Add(nodePos(c.file, n), "invalid bool %q", n.Value)
		}
		return b
	case "!!int":
		var i int64
		if err := n.Decode(&i); err != nil {
			var f float64
			if err := n.Decode(&f); err == nil {
				return f
			}
			c.errs.Add(nodePos(c.file, n), "invalid integer %q", n.Value)
			return 0
		}
		return int(i)
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			c.errs.Add(nodePos(c.file, n), "invalid number %q", n.Value)
			return 0.0
		}
		return f
	case "!!str", "!!timestamp", "!!binary":
		return n.Value
	}
	c.errs.Add(nodePos(c.file, n), "unsupported YAML tag %s", n.Tag)
	return n.Value
}

// mapping gives keyed access to a YAML mapping node.
type mapping struct {
	node *yaml.Node
	keys []*yaml.Node
	vals map[string]*yaml.Node
	kpos map[string]*yaml.Node
}

func asMapping(n *yaml.Node) *mapping {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	m := &mapping{node: n, vals: map[string]*yaml.Node{}, kpos: map[string]*yaml.Node{}}
	if n == nil || n.Kind != yaml.MappingNode {
		return m
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if _, dup := m.vals[k.Value]; dup {
			continue
		}
		for v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		m.keys = append(m.keys, k)
		m.vals[k.Value] = v
		m.kpos[k.Value] = k
	}
	return m
}

func (m *mapping) get(key string) *yaml.Node { return m.vals[key] }

// lookupPath finds the YAML node at a JSON-Schema instance location.
// When key is true and the last element is a mapping key, the key node is returned.
func lookupPath(root *yaml.Node, path []string, key bool) *yaml.Node {
	n := root
	for i, p := range path {
		for n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		switch n.Kind {
		case yaml.MappingNode:
			m := asMapping(n)
			v := m.get(p)
			if v == nil {
				return n
			}
			if key && i == len(path)-1 {
				return m.kpos[p]
			}
			n = v
		case yaml.SequenceNode:
			idx, err := strconv.Atoi(p)
			if err != nil || idx < 0 || idx >= len(n.Content) {
				return n
			}
			n = n.Content[idx]
		default:
			return n
		}
	}
	return n
}

func describeValue(v any) string {
	s := fmt.Sprint(v)
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

// lazyRE returns a regexp compiled on first use rather than when the
// package is initialised: most of the package's regexps only explain a
// mistake, and a process that loads one good graph needs none of them.
func lazyRE(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
