package checkpoint

import (
	"math"
	"slices"
	"strconv"

	"github.com/lgrun/lgrun/runtime"
)

// A fast path for encoding what a commit stores as JSON (a step's delta,
// its next nodes, which node wrote which fields): encoding/json reflects
// over every value, which costs more than the rest of encoding a small
// step. appendJSON writes exactly the bytes marshal writes, for the values
// it knows: nil, booleans, ints, finite floats, strings of printable
// ASCII without quotes or backslashes, lists and objects of those, and
// the savers' own types of them. For anything else (another type, a
// string that encoding/json would escape) it declines, and marshal
// encodes with encoding/json as before.

// maxFastEncDepth is the nesting depth beyond which appendJSON declines.
const maxFastEncDepth = 64

// appendJSON appends the JSON encoding of v to b, or reports false.
func appendJSON(b []byte, v any) ([]byte, bool) { return appendValue(b, v, 0) }

func appendValue(b []byte, v any, depth int) ([]byte, bool) {
	if depth > maxFastEncDepth {
		return b, false
	}
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), true
	case bool:
		return strconv.AppendBool(b, x), true
	case int:
		return strconv.AppendInt(b, int64(x), 10), true
	case int64:
		return strconv.AppendInt(b, x, 10), true
	case float64:
		return appendFloat(b, x)
	case string:
		return appendString(b, x)
	case []any:
		if x == nil {
			return append(b, "null"...), true
		}
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var ok bool
			if b, ok = appendValue(b, e, depth+1); !ok {
				return b, false
			}
		}
		return append(b, ']'), true
	case []string:
		if x == nil {
			return append(b, "null"...), true
		}
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var ok bool
			if b, ok = appendString(b, e); !ok {
				return b, false
			}
		}
		return append(b, ']'), true
	case map[string]any:
		return appendObject(b, x, depth, func(b []byte, v any) ([]byte, bool) { return appendValue(b, v, depth+1) })
	case map[string][]string:
		return appendObject(b, x, depth, func(b []byte, v []string) ([]byte, bool) { return appendValue(b, v, depth+1) })
	case runtime.Delta:
		return appendObject(b, x, depth, func(b []byte, op runtime.Op) ([]byte, bool) {
			b = append(b, `{"op":`...)
			b, ok := appendString(b, string(op.Kind))
			if !ok {
				return b, false
			}
			b = append(b, `,"v":`...)
			if b, ok = appendValue(b, op.Value, depth+2); !ok {
				return b, false
			}
			return append(b, '}'), true
		})
	}
	return b, false
}

// appendObject appends a map as encoding/json does: keys sorted.
func appendObject[V any](b []byte, m map[string]V, depth int, value func([]byte, V) ([]byte, bool)) ([]byte, bool) {
	if m == nil {
		return append(b, "null"...), true
	}
	var buf [16]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		var ok bool
		if b, ok = appendString(b, k); !ok {
			return b, false
		}
		b = append(b, ':')
		if b, ok = value(b, m[k]); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

// appendString appends a string that needs no escaping (printable ASCII
// without '"' or '\'), or reports false.
func appendString(b []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return b, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), true
}

// appendFloat appends a finite float as encoding/json formats it.
func appendFloat(b []byte, f float64) ([]byte, bool) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, false
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// Clean up e-09 to e-9, as encoding/json does.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}
