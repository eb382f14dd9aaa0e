package checkpoint

import (
	"encoding/binary"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/lgrun/lgrun/runtime"
)

// A fast path for decoding the JSON the savers store (snapshots and
// deltas) into map[string]any values, already normalized: loading a long
// thread's state is mostly decoding its JSON, which encoding/json does at
// a fraction of the speed this specialised scanner reaches on the same
// bytes (no reflection, no json.Number round trip, strings copied and
// boxed in shared blocks rather than allocated one by one).
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
	// boxed as the values they decode to, and holds the slab the other
	// strings are copied into.
	names *jsonNames
	// lastObj is the number of keys of the object decoded last (at most
	// maxObjHint), the size of the next one's map.
	lastObj int
}

const maxObjHint = 8

// jsonNames holds what the decodings of a chain share (see fastDec.names):
// the interned short strings, and the slab that the other strings' bytes
// are copied into. One table may serve several decodings (the rows of a
// chain), since strings are immutable; nil stands for a fresh one. It is
// not safe for concurrent use.
type jsonNames struct {
	m map[string]any
	// slab is the free end of the block the decoded strings are copied
	// into, one allocation per [slabSize] bytes of strings instead of
	// one a string. A string keeps its whole block alive; a block is
	// never written where a string was handed out.
	slab, short []byte
	// block is the size of the blocks: [slabSize] for a table shared by
	// a chain, at most the input's length for one decoding's own (see
	// namesFor), so that decoding one small value (a row of List) does
	// not allocate a whole block.
	block int
	// recent caches strings found in m, by a hash of their length and
	// end bytes: most lookups (a message's keys, its role) are answered
	// without hashing the string. Made at the first string found twice,
	// in shared tables only.
	recent *[64]recentName
	// boxes is the free end of the block of string headers that decoded
	// strings are boxed from (see box).
	boxes []string
	// elems holds the elements of the arrays being decoded (nested ones
	// after those of the arrays around them), each copied into a list of
	// its own length when its array ends.
	elems []any
}

type recentName struct {
	s string
	v any
}

// namesFor returns names, or a fresh table for one decoding of b.
func namesFor(names *jsonNames, b []byte) *jsonNames {
	if names != nil {
		return names
	}
	return &jsonNames{block: min(slabSize, len(b))}
}

// intern returns the interned string s, boxed, or false.
func (n *jsonNames) intern(s []byte) (any, bool) {
	h := (uint(len(s))*31 + uint(s[0])*7 + uint(s[len(s)-1])) % 64
	if n.recent != nil {
		if e := &n.recent[h]; e.s == string(s) && e.v != nil {
			return e.v, true
		}
	}
	v, ok := n.m[string(s)]
	if ok && n.block == 0 { // a shared table: the cache pays for itself
		if n.recent == nil {
			n.recent = new([64]recentName)
		}
		n.recent[h] = recentName{v.(string), v}
	}
	return v, ok
}

// maxIntern bounds the interned strings of one table, and maxInternLen
// their length.
const maxIntern, maxInternLen = 256, 16

// slabSize is the size of a string block, maxSlabString the longest
// string copied into one (longer ones get their own allocation).
const slabSize, maxSlabString = 32 << 10, 4 << 10

// newString returns a string holding s. Short strings (ids, names) go in
// a block of their own, apart from long ones (a message's text): a list's
// ids then lie close together for whoever hashes them all (the messages
// reducer indexes a list by id).
func (n *jsonNames) newString(s []byte) string {
	if len(s) > maxSlabString || len(s) == 0 {
		return string(s)
	}
	slab := &n.slab
	if len(s) <= maxInternLen {
		slab = &n.short
	}
	if cap(*slab)-len(*slab) < len(s) {
		block := n.block
		switch {
		case block == 0:
			block = slabSize
		case slab == &n.short:
			block = min(block, 64)
		}
		*slab = make([]byte, 0, max(block, len(s)))
	}
	k := len(*slab)
	*slab = append(*slab, s...)
	// The block's bytes from k on are never written again.
	return unsafe.String(&(*slab)[k], len(s))
}

// boxBlock is how many strings a block of string headers boxes.
const boxBlock = 256

// eface is the layout of an empty interface: its type and a pointer to
// its value.
type eface struct {
	typ  unsafe.Pointer
	data unsafe.Pointer
}

// stringType is the type word of a string in an interface.
var stringType = func() unsafe.Pointer {
	var v any = ""
	return (*eface)(unsafe.Pointer(&v)).typ
}()

// box returns s in an interface, as any(s) does, but with its header in a
// block shared by [boxBlock] strings: one allocation per block instead of
// one a string, and fewer objects for the collector. A header is never
// written once boxed (strings in interfaces are immutable), and the
// interface's pointer keeps its block alive.
func (n *jsonNames) box(s string) any {
	if len(n.boxes) == cap(n.boxes) {
		k := boxBlock
		if n.block != 0 {
			k = min(k, max(n.block/64, 4)) // a table for one small decoding
		}
		n.boxes = make([]string, 0, k)
	}
	n.boxes = append(n.boxes, s)
	var v any
	e := (*eface)(unsafe.Pointer(&v))
	e.typ, e.data = stringType, unsafe.Pointer(&n.boxes[len(n.boxes)-1])
	return v
}

// fastMap decodes a JSON object, or reports false; names (nil for a
// fresh table) interns its short strings.
func fastMap(b []byte, names *jsonNames) (map[string]any, bool) {
	names = namesFor(names, b)
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
func fastDelta(b []byte, names *jsonNames) (runtime.Delta, bool) {
	// Decoded straight into ops, {"op": kind, "v": value} by field,
	// without a map per op; anything else (other keys, a key twice, which
	// encoding/json resolves its own way) declines.
	names = namesFor(names, b)
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
	// Sized as the object before it was (the items of a list tend to
	// have the same keys), which spares growing it.
	m := make(map[string]any, d.lastObj)
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
			d.lastObj = min(len(m), maxObjHint)
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
	d.space()
	if d.i < len(d.b) && d.b[d.i] == ']' {
		d.i++
		d.depth--
		return []any{}, true
	}
	// The elements go on the table's stack, and into a list of their
	// number at the end: no list grown by doubling, no spare capacity.
	base := len(d.names.elems)
	fail := func() ([]any, bool) {
		clear(d.names.elems[base:])
		d.names.elems = d.names.elems[:base]
		return nil, false
	}
	for {
		v, ok := d.value()
		if !ok {
			return fail()
		}
		d.names.elems = append(d.names.elems, v)
		d.space()
		if d.i >= len(d.b) {
			return fail()
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			d.depth--
			a := make([]any, len(d.names.elems)-base)
			copy(a, d.names.elems[base:])
			// Dropped from the stack, which outlives the values.
			clear(d.names.elems[base:])
			d.names.elems = d.names.elems[:base]
			return a, true
		default:
			return fail()
		}
	}
}

// str decodes a string without escapes, control characters or invalid
// UTF-8 (the ones encoding/json would have to rewrite).
func (d *fastDec) str() (any, bool) {
	start := d.i + 1
	j := start
	ascii := true
	// Eight bytes at a time while none is a quote, a backslash or a
	// control character (the bytes the loop below looks at one by one).
	for ; j+8 <= len(d.b); j += 8 {
		w := binary.LittleEndian.Uint64(d.b[j:])
		if hasZero(w^(lsb*'"'))|hasZero(w^(lsb*'\\'))|hasLess(w, 0x20) != 0 {
			break
		}
		if w&(lsb*0x80) != 0 {
			ascii = false
		}
	}
	for ; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			s := d.b[start:j]
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			d.i = j + 1
			if len(s) > maxInternLen {
				return d.names.box(d.names.newString(s)), true
			}
			if len(s) == 0 {
				return "", true
			}
			if v, ok := d.names.intern(s); ok {
				return v, true
			}
			v := d.names.box(d.names.newString(s))
			if d.names.m == nil {
				d.names.m = map[string]any{}
			}
			if len(d.names.m) < maxIntern {
				d.names.m[v.(string)] = v
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

// lsb has the low bit of each byte set: lsb*c repeats byte c eight times.
const lsb = 0x0101010101010101

// hasZero is non-zero if a byte of w is zero, hasLess if a byte of w is
// less than n (at most 0x80): the bit tricks of "Bit Twiddling Hacks"
// (exact as yes/no answers, which is all str asks of them).
func hasZero(w uint64) uint64           { return (w - lsb) &^ w & (lsb * 0x80) }
func hasLess(w uint64, n uint64) uint64 { return (w - lsb*n) &^ w & (lsb * 0x80) }

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
