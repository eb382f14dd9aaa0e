package checkpoint

import (
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/lgrun/lgrun/runtime"
)

// A fast path for decoding the JSON the savers store (snapshots and
// deltas) into map[string]any values, already normalized: loading a long
// thread's state is mostly decoding its JSON, which encoding/json does at
// a fraction of the speed this specialised scanner reaches on the same
// bytes (no reflection, no json.Number round trip, one allocation per
// plain string).
//
// It returns exactly what decodeJSON followed by normalize returns, for
// the inputs it accepts: objects, arrays, strings without escapes or
// invalid UTF-8, numbers, true, false and null. For anything else
// (escapes, malformed input, trailing data, deep nesting) it declines,
// and the caller decodes with encoding/json as before, which then gives
// the same values, or the same error.

// maxFastDepth is the nesting depth beyond which the fast path declines.
const maxFastDepth = 512

type fastDec struct {
	b     []byte
	i     int
	depth int
	// names interns object keys and short strings, which repeat across
	// the items of a list (a message's "role", "content", "assistant"),
	// boxed as the values they decode to.
	names jsonNames
}

// jsonNames interns the short strings of decodings (see fastDec.names);
// one table may serve several decodings (the rows of a chain), since
// strings are immutable. It is not safe for concurrent use.
type jsonNames map[string]any

// maxIntern bounds the interned strings of one decoding, and
// maxInternLen their length.
const maxIntern, maxInternLen = 256, 16

// fastMap decodes a JSON object, or reports false; names (nil for a
// fresh table) interns its short strings.
func fastMap(b []byte, names jsonNames) (map[string]any, bool) {
	d := fastDec{b: b, names: names}
	d.space()
	if d.i >= len(b) || b[d.i] != '{' {
		return nil, false
	}
	v, ok := d.object()
	if !ok {
		return nil, false
	}
	d.space()
	if d.i != len(b) {
		return nil, false
	}
	return v, true
}

// fastDelta decodes a stored delta, normalized as normalizeDelta does, or
// reports false.
func fastDelta(b []byte, names jsonNames) (runtime.Delta, bool) {
	// Decoded straight into ops, {"op": kind, "v": value} by field,
	// without a map per op; anything else (other keys, a key twice, which
	// encoding/json resolves its own way) declines.
	d := fastDec{b: b, names: names}
	d.space()
	if d.i >= len(b) || b[d.i] != '{' {
		return nil, false
	}
	d.i++
	delta := runtime.Delta{}
	d.space()
	if d.i < len(b) && b[d.i] == '}' {
		d.i++
		d.space()
		return delta, d.i == len(b)
	}
	for {
		f, ok := d.key()
		if !ok {
			return nil, false
		}
		if _, dup := delta[f]; dup {
			return nil, false
		}
		d.space()
		if d.i >= len(b) || b[d.i] != '{' {
			return nil, false
		}
		d.i++
		var op runtime.Op
		var hasKind, hasValue bool
		for {
			k, ok := d.key()
			if !ok {
				return nil, false
			}
			switch {
			case k == "op" && !hasKind:
				d.space()
				if d.i >= len(b) || b[d.i] != '"' {
					return nil, false
				}
				v, ok := d.str()
				if !ok {
					return nil, false
				}
				op.Kind, hasKind = runtime.OpKind(v.(string)), true
			case k == "v" && !hasValue:
				d.depth = 2 // within the delta and the op, as fastMap counts
				if op.Value, ok = d.value(); !ok {
					return nil, false
				}
				hasValue = true
			default:
				return nil, false
			}
			d.space()
			if d.i >= len(b) {
				return nil, false
			}
			if b[d.i] == ',' {
				d.i++
				continue
			}
			if b[d.i] != '}' {
				return nil, false
			}
			d.i++
			break
		}
		if !hasKind || !hasValue {
			return nil, false
		}
		if op.Value == nil && (op.Kind == runtime.OpAppend || op.Kind == runtime.OpMessages) {
			op.Value = []any{}
		}
		delta[f] = op
		d.space()
		if d.i >= len(b) {
			return nil, false
		}
		if b[d.i] == ',' {
			d.i++
			continue
		}
		if b[d.i] != '}' {
			return nil, false
		}
		d.i++
		d.space()
		return delta, d.i == len(b)
	}
}

// key decodes an object's key and its colon.
func (d *fastDec) key() (string, bool) {
	d.space()
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return "", false
	}
	k, ok := d.str()
	if !ok {
		return "", false
	}
	d.space()
	if d.i >= len(d.b) || d.b[d.i] != ':' {
		return "", false
	}
	d.i++
	return k.(string), true
}

func (d *fastDec) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *fastDec) value() (any, bool) {
	d.space()
	if d.i >= len(d.b) {
		return nil, false
	}
	switch c := d.b[d.i]; {
	case c == '{':
		return d.object()
	case c == '[':
		return d.array()
	case c == '"':
		return d.str()
	case c == '-' || c >= '0' && c <= '9':
		return d.number()
	case c == 't':
		return true, d.lit("true")
	case c == 'f':
		return false, d.lit("false")
	case c == 'n':
		return nil, d.lit("null")
	}
	return nil, false
}

func (d *fastDec) lit(s string) bool {
	if len(d.b)-d.i < len(s) || string(d.b[d.i:d.i+len(s)]) != s {
		return false
	}
	d.i += len(s)
	return true
}

func (d *fastDec) object() (map[string]any, bool) {
	if d.depth++; d.depth > maxFastDepth {
		return nil, false
	}
	d.i++ // {
	m := map[string]any{}
	d.space()
	if d.i < len(d.b) && d.b[d.i] == '}' {
		d.i++
		d.depth--
		return m, true
	}
	for {
		d.space()
		if d.i >= len(d.b) || d.b[d.i] != '"' {
			return nil, false
		}
		k, ok := d.str()
		if !ok {
			return nil, false
		}
		d.space()
		if d.i >= len(d.b) || d.b[d.i] != ':' {
			return nil, false
		}
		d.i++
		v, ok := d.value()
		if !ok {
			return nil, false
		}
		m[k.(string)] = v
		d.space()
		if d.i >= len(d.b) {
			return nil, false
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			d.depth--
			return m, true
		default:
			return nil, false
		}
	}
}

func (d *fastDec) array() ([]any, bool) {
	if d.depth++; d.depth > maxFastDepth {
		return nil, false
	}
	d.i++ // [
	a := []any{}
	d.space()
	if d.i < len(d.b) && d.b[d.i] == ']' {
		d.i++
		d.depth--
		return a, true
	}
	for {
		v, ok := d.value()
		if !ok {
			return nil, false
		}
		a = append(a, v)
		d.space()
		if d.i >= len(d.b) {
			return nil, false
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			d.depth--
			return a, true
		default:
			return nil, false
		}
	}
}

// str decodes a string without escapes, control characters or invalid
// UTF-8 (the ones encoding/json would have to rewrite).
func (d *fastDec) str() (any, bool) {
	start := d.i + 1
	ascii := true
	for j := start; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			s := d.b[start:j]
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			d.i = j + 1
			if len(s) > maxInternLen {
				return string(s), true
			}
			if v, ok := d.names[string(s)]; ok {
				return v, true
			}
			var v any = string(s)
			if d.names == nil {
				d.names = jsonNames{}
			}
			if len(d.names) < maxIntern {
				d.names[v.(string)] = v
			}
			return v, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, false
}

// number decodes a number as normalize does a json.Number: an int when
// it parses as a 64-bit integer, else a float64.
func (d *fastDec) number() (any, bool) {
	start := d.i
	j := d.i
	if d.b[j] == '-' {
		j++
	}
	// The JSON number grammar, strictly: encoding/json rejects what it
	// does not match.
	digits := func() int {
		k := j
		for j < len(d.b) && d.b[j] >= '0' && d.b[j] <= '9' {
			j++
		}
		return j - k
	}
	switch {
	case j < len(d.b) && d.b[j] == '0':
		j++
	case digits() == 0:
		return nil, false
	}
	isInt := true
	if j < len(d.b) && d.b[j] == '.' {
		j++
		isInt = false
		if digits() == 0 {
			return nil, false
		}
	}
	if j < len(d.b) && (d.b[j] == 'e' || d.b[j] == 'E') {
		j++
		isInt = false
		if j < len(d.b) && (d.b[j] == '+' || d.b[j] == '-') {
			j++
		}
		if digits() == 0 {
			return nil, false
		}
	}
	d.i = j
	// strconv keeps no reference to t.
	t := unsafe.String(&d.b[start], j-start)
	if isInt {
		if n, err := strconv.ParseInt(t, 10, 64); err == nil {
			return int(n), true
		}
	}
	f, _ := strconv.ParseFloat(t, 64)
	return f, true
}
