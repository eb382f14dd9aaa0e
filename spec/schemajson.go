package spec

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// decodeSchemaDoc parses a JSON Schema document into the value
// jsonschema.UnmarshalJSON makes of it (objects as map[string]any, arrays
// as []any, numbers as json.Number). Every `lgrun run` parses the 25 KB
// graph schema for quickValid, and encoding/json took half a millisecond
// of a process's seven for it; fastSchemaJSON does it in a fifth of that.
// Anything it does not handle itself (a \u escape, invalid UTF-8, a
// syntax error) goes to jsonschema.UnmarshalJSON, so values and errors
// are the library's.
func decodeSchemaDoc(src []byte) (any, error) {
	if v, ok := fastSchemaJSON(src); ok {
		return v, nil
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(src))
}

// fastSchemaJSON parses src, or reports false for anything it leaves to
// encoding/json.
func fastSchemaJSON(src []byte) (any, bool) {
	p := &schemaJSON{src: src}
	v, ok := p.value(0)
	if !ok {
		return nil, false
	}
	p.space()
	return v, p.i == len(p.src)
}

// schemaJSON is one fastSchemaJSON call: src and the offset it reached.
// Short strings are interned: a schema repeats its keywords and type
// names hundreds of times.
type schemaJSON struct {
	src    []byte
	i      int
	intern map[string]string
}

// str returns the string of b, interned when short.
func (p *schemaJSON) str(b []byte) string {
	if len(b) > 24 {
		return string(b)
	}
	if s, ok := p.intern[string(b)]; ok {
		return s
	}
	if p.intern == nil {
		p.intern = make(map[string]string, 128)
	}
	s := string(b)
	p.intern[s] = s
	return s
}

// schemaJSONMaxDepth bounds nesting; deeper documents go to encoding/json
// (whose own limit is 10,000).
const schemaJSONMaxDepth = 1000

func (p *schemaJSON) space() {
	for p.i < len(p.src) {
		switch p.src[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *schemaJSON) value(depth int) (any, bool) {
	if depth > schemaJSONMaxDepth {
		return nil, false
	}
	p.space()
	if p.i >= len(p.src) {
		return nil, false
	}
	switch c := p.src[p.i]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		return p.string()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return nil, false
}

func (p *schemaJSON) literal(word string) bool {
	if !bytes.HasPrefix(p.src[p.i:], []byte(word)) {
		return false
	}
	p.i += len(word)
	return true
}

func (p *schemaJSON) object(depth int) (any, bool) {
	p.i++ // {
	m := map[string]any{}
	p.space()
	if p.i < len(p.src) && p.src[p.i] == '}' {
		p.i++
		return m, true
	}
	for {
		p.space()
		if p.i >= len(p.src) || p.src[p.i] != '"' {
			return nil, false
		}
		k, ok := p.string()
		if !ok {
			return nil, false
		}
		p.space()
		if p.i >= len(p.src) || p.src[p.i] != ':' {
			return nil, false
		}
		p.i++
		v, ok := p.value(depth + 1)
		if !ok {
			return nil, false
		}
		m[k.(string)] = v // a repeated key: the last wins, as in encoding/json
		p.space()
		if p.i >= len(p.src) {
			return nil, false
		}
		switch p.src[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return m, true
		default:
			return nil, false
		}
	}
}

func (p *schemaJSON) array(depth int) (any, bool) {
	p.i++ // [
	a := []any{}
	p.space()
	if p.i < len(p.src) && p.src[p.i] == ']' {
		p.i++
		return a, true
	}
	for {
		v, ok := p.value(depth + 1)
		if !ok {
			return nil, false
		}
		a = append(a, v)
		p.space()
		if p.i >= len(p.src) {
			return nil, false
		}
		switch p.src[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return a, true
		default:
			return nil, false
		}
	}
}

// string parses a string with no escapes other than \" \\ \/ \b \f \n \r
// \t, in valid UTF-8.
func (p *schemaJSON) string() (any, bool) {
	p.i++ // "
	start := p.i
	var buf []byte // set once an escape is seen
	ascii := true
	for p.i < len(p.src) {
		c := p.src[p.i]
		switch {
		case c == '"':
			seg := p.src[start:p.i]
			p.i++
			if !ascii && !utf8.Valid(seg) {
				return nil, false
			}
			if buf != nil {
				return string(append(buf, seg...)), true
			}
			return p.str(seg), true
		case c == '\\':
			if p.i+1 >= len(p.src) {
				return nil, false
			}
			var r byte
			switch p.src[p.i+1] {
			case '"', '\\', '/':
				r = p.src[p.i+1]
			case 'b':
				r = '\b'
			case 'f':
				r = '\f'
			case 'n':
				r = '\n'
			case 'r':
				r = '\r'
			case 't':
				r = '\t'
			default: // \u and anything invalid
				return nil, false
			}
			seg := p.src[start:p.i]
			if !ascii && !utf8.Valid(seg) {
				return nil, false
			}
			buf = append(append(buf, seg...), r)
			p.i += 2
			start = p.i
		case c < 0x20:
			return nil, false
		default:
			if c >= utf8.RuneSelf {
				ascii = false
			}
			p.i++
		}
	}
	return nil, false
}

// number parses a JSON number into a json.Number of its text.
func (p *schemaJSON) number() (any, bool) {
	start := p.i
	if p.src[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.src) && p.src[p.i] == '0':
		p.i++
	case p.digits() == 0:
		return nil, false
	}
	if p.i < len(p.src) && p.src[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return nil, false
		}
	}
	if p.i < len(p.src) && (p.src[p.i] == 'e' || p.src[p.i] == 'E') {
		p.i++
		if p.i < len(p.src) && (p.src[p.i] == '+' || p.src[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return nil, false
		}
	}
	return json.Number(p.src[start:p.i]), true
}

func (p *schemaJSON) digits() int {
	n := 0
	for p.i < len(p.src) && p.src[p.i] >= '0' && p.src[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}
