package checkpoint

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// slowMap is what decodeMap returned before the fast path: encoding/json
// with UseNumber, then normalize.
func slowMap(b []byte) (map[string]any, error) {
	var m map[string]any
	if err := decodeJSON(b, &m); err != nil {
		return nil, err
	}
	normalize(m)
	return m, nil
}

// checkSame fails unless the fast path declines b or returns exactly
// what encoding/json does, and unless decodeMap and decodeDelta return
// what they did before.
func checkSame(t *testing.T, b []byte) {
	t.Helper()
	want, werr := slowMap(b)
	if got, ok := fastMap(b, nil); ok {
		if werr != nil {
			t.Fatalf("fast path accepted %q, encoding/json: %v", b, werr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("fast path decoded %q as\n%#v\nencoding/json as\n%#v", b, got, want)
		}
	}
	got, gerr := decodeMap(b)
	if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeMap(%q) = %#v, %v; want %#v, %v", b, got, gerr, want, werr)
	}
	d, derr := decodeDelta(b)
	var old runtime.Delta
	oerr := decodeJSON(b, &old)
	if oerr == nil {
		normalizeDelta(old)
	} else {
		old = nil
	}
	if (derr == nil) != (oerr == nil) || !reflect.DeepEqual(d, old) {
		t.Fatalf("decodeDelta(%q) = %#v, %v; want %#v, %v", b, d, derr, old, oerr)
	}
}

func TestFastJSONCases(t *testing.T) {
	cases := []string{
		`{}`, ` { } `, `{"a":1}`, `{"a":-0}`, `{"a":1.0}`, `{"a":1e3}`, `{"a":1E+3}`, `{"a":-1.5e-3}`,
		`{"a":9223372036854775807}`, `{"a":9223372036854775808}`, `{"a":-9223372036854775808}`, `{"a":1e400}`,
		`{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":-}`, `{"a":+1}`, `{"a":1e}`, `{"a":0x10}`,
		`{"a":"x\"y"}`, `{"a":"\u00e9"}`, `{"a":"é"}`, "{\"a\":\"\xff\"}", "{\"a\":\"\x01\"}", `{"a":"\ud800"}`,
		`{"a":[1,2,[3,{"b":null}]],"c":true,"d":false}`, `{"a":[]}`, `{"a":[,]}`, `{"a":[1,]}`, `{"a":1,}`,
		`{"a":1}{"b":2}`, `{"a":1} x`, `{"a":1}` + "\n", `{"a" 1}`, `{"a":tru}`, `{"a":nul}`, `{a:1}`,
		`{"a":1,"a":2}`, `null`, `[]`, `"x"`, `1`, ``, `{`, `{"a":`, `{"a":"`,
		`{"n":{"op":"set","v":5}}`, `{"m":{"op":"messages","v":null}}`, `{"m":{"op":"append","v":[1,2]}}`,
		`{"m":{"op":"append"}}`, `{"m":{"OP":"set","v":1}}`, `{"m":{"op":"set","v":1,"x":2}}`, `{"m":{"op":5,"v":1}}`,
		`{"m":1}`, `{"m":{"v":1}}`, `{"m":{"op":"set","V":1}}`,
		`{"a":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`,
	}
	for _, c := range cases {
		checkSame(t, []byte(c))
	}
}

// TestFastJSONRandom compares the fast path with encoding/json on random
// values as the savers write them (marshal), and on damaged copies.
func TestFastJSONRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 3))
	var gen func(depth int) any
	gen = func(depth int) any {
		switch k := rng.IntN(9); {
		case k == 0 || depth > 4 && k < 5:
			return rng.IntN(3) == 0
		case k == 1:
			return nil
		case k == 2:
			return rng.Int64() - rng.Int64()
		case k == 3:
			return rng.NormFloat64() * 1e6
		case k == 4:
			runes := []rune{'a', 'é', '"', '\\', '\n', 0x01, '<', '&', 0x2028, '日', 0x1F600}
			var sb strings.Builder
			for i := rng.IntN(12); i > 0; i-- {
				sb.WriteRune(runes[rng.IntN(len(runes))])
			}
			return sb.String()
		case k < 7:
			a := []any{}
			for i := rng.IntN(5); i > 0; i-- {
				a = append(a, gen(depth+1))
			}
			return a
		default:
			m := map[string]any{}
			for i := rng.IntN(5); i > 0; i-- {
				m[string(rune('a'+rng.IntN(6)))] = gen(depth + 1)
			}
			return m
		}
	}
	for i := 0; i < 3000; i++ {
		m := map[string]any{"x": gen(0), "y": gen(0)}
		if i%2 == 0 {
			m = map[string]any{"f": map[string]any{"op": "append", "v": gen(0)}, "g": map[string]any{"op": "set", "v": gen(1)}}
		}
		b, err := marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		checkSame(t, b)
		d := []byte(string(b))
		junk := "{}[]\":,0-e.\\ x"
		d[rng.IntN(len(d))] = junk[rng.IntN(len(junk))]
		checkSame(t, d)
	}
}

func FuzzFastJSON(f *testing.F) {
	f.Add([]byte(`{"a":[1,2.5,"x",{"b":null}],"c":true}`))
	f.Add([]byte(`{"n":{"op":"set","v":5}}`))
	f.Fuzz(func(t *testing.T, b []byte) { checkSame(t, b) })
}

func BenchmarkDecodeSnapshot(b *testing.B) {
	js, err := marshal(map[string]any{"messages": func() []any {
		var a []any
		for i := 0; i < 5000; i++ {
			a = append(a, map[string]any{"role": "assistant", "id": "x.talk.0", "content": strings.Repeat("lorem ipsum ", 16)})
		}
		return a
	}(), "n": 5000})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(js)))
		for i := 0; i < b.N; i++ {
			if _, err := slowMap(js); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(len(js)))
		for i := 0; i < b.N; i++ {
			if _, ok := fastMap(js, nil); !ok {
				b.Fatal("declined")
			}
		}
	})
}

// TestFastDeltaCases holds the delta fast path to encoding/json on deltas
// as stored (which it must accept) and on odd ones (which it may decline).
func TestFastDeltaCases(t *testing.T) {
	stored := []runtime.Delta{
		{},
		{"n": {Kind: runtime.OpSet, Value: 10}},
		{"messages": {Kind: runtime.OpMessages, Value: []any{map[string]any{"id": "1.talk.0", "role": "assistant", "content": "hi"}}}, "n": {Kind: runtime.OpSet, Value: 1.5}},
		{"log": {Kind: runtime.OpAppend, Value: []any{1, "x", nil, true}}, "m": {Kind: runtime.OpMerge, Value: map[string]any{"a": map[string]any{}}}},
		{"x": {Kind: runtime.OpSet, Value: nil}},
	}
	names := &jsonNames{}
	for _, d := range stored {
		b, err := marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		checkSame(t, b)
		var want runtime.Delta
		if err := decodeJSON(b, &want); err != nil {
			t.Fatal(err)
		}
		normalizeDelta(want)
		// Twice, on one names table, as a chain's rows are decoded.
		for i := 0; i < 2; i++ {
			got, ok := fastDelta(b, names)
			if !ok {
				t.Fatalf("fast path declined the stored delta %s", b)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("fast path decoded %s as %#v, want %#v", b, got, want)
			}
		}
	}
	for _, s := range []string{
		`{"a":{"op":"set","op":"append","v":[1]}}`, `{"a":{"op":"set","v":1,"v":2}}`, `{"a":{"op":"set"}}`, `{"a":{"v":1}}`,
		`{"a":{"op":"set","v":1,"w":2}}`, `{"a":{"op":1,"v":1}}`, `{"a":{"op":"set","v":1},"a":{"op":"set","v":2}}`,
		`{"a":{"op":"append","v":null}}`, `{"a":{"op":"messages"  ,  "v" : [ ] } } `, `{"a":{"op":"set","v":1}} x`,
		`{"a":{"op":"set","v":1},}`, `{"a":{}}`, `{"a":[]}`, `{"a":1}`, `[]`, `{"a":{"op":"set","v":1}`,
	} {
		checkSame(t, []byte(s))
	}
}

// TestFastJSONStringBytes puts each byte the string scanner stops at (a
// quote, an escape, a control character, non-ASCII, invalid UTF-8) at
// every position of strings around the scanner's eight-byte words, and
// holds the fast path to encoding/json on each.
func TestFastJSONStringBytes(t *testing.T) {
	specials := []string{`\"`, `\\`, `\n`, `\u00e9`, "\x01", "\x1f", "\x7f", " ", "é", "日", "\xff", "\xc3", "\xe6\x97"}
	for n := 0; n <= 40; n++ {
		for at := 0; at <= n; at++ {
			for _, sp := range specials {
				s := strings.Repeat("a", at) + sp + strings.Repeat("b", n-at)
				checkSame(t, []byte(`{"k":"`+s+`","x":1}`))
				checkSame(t, []byte(`{"`+s+`":"`+s+`"}`))
			}
		}
		// Unterminated strings of every length.
		checkSame(t, []byte(`{"k":"`+strings.Repeat("a", n)))
	}
}

// TestFastJSONSharedSlab decodes many values on one table, as the rows of
// a chain are, with strings of every size around the slab's: each value
// must stay as decoded while later ones fill the slab after it.
func TestFastJSONSharedSlab(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 5))
	names := &jsonNames{}
	var got, want []map[string]any
	for i := 0; i < 300; i++ {
		n := []int{0, 1, 15, 16, 17, 200, maxSlabString - 1, maxSlabString, maxSlabString + 1, slabSize / 3}[rng.IntN(10)]
		v := map[string]any{"s": strings.Repeat(string(rune('a'+i%26)), n), "id": fmt.Sprint(i), "role": "user"}
		b, err := marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		m, ok := fastMap(b, names)
		if !ok {
			t.Fatalf("fast path declined %.40s", b)
		}
		got, want = append(got, m), append(want, v)
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("value %d changed after later decodings: %.60v", i, got[i])
		}
	}
}

// TestFastJSONBoxedStrings holds the strings the decoder boxes from its
// blocks of headers (jsonNames.box) to strings boxed by the language: the
// same type, equal to them as interfaces and as map keys, printed and
// encoded alike, and still intact once the table that boxed them is gone
// and the collector has run.
func TestFastJSONBoxedStrings(t *testing.T) {
	names := &jsonNames{}
	var got []any
	var want []string
	for i := 0; i < 3*boxBlock; i++ {
		s := fmt.Sprintf("string %d %s", i, strings.Repeat("x", i%40))
		v, ok := fastMap([]byte(`{"s":"`+s+`"}`), names)
		if !ok {
			t.Fatalf("fast path declined %q", s)
		}
		got, want = append(got, v["s"]), append(want, s)
	}
	names = nil
	goruntime.GC()
	seen := map[any]int{}
	for i, v := range got {
		s, ok := v.(string)
		if !ok || s != want[i] || v != any(want[i]) || !reflect.DeepEqual(v, any(want[i])) {
			t.Fatalf("boxed string %d is %#v, want %q", i, v, want[i])
		}
		if fmt.Sprint(v) != want[i] || fmt.Sprintf("%T", v) != "string" {
			t.Fatalf("boxed string %d prints as %v (%T)", i, v, v)
		}
		b, err := json.Marshal(v)
		if w, _ := json.Marshal(want[i]); err != nil || string(b) != string(w) {
			t.Fatalf("boxed string %d encodes as %s (%v)", i, b, err)
		}
		seen[v] = i
	}
	for i, s := range want {
		if seen[s] != i {
			t.Fatalf("map key %q: found %d, want %d", s, seen[s], i)
		}
	}
}

// TestFastJSONListsCapped decodes nested lists of every small length on
// one table (their elements share its stack): each is as encoding/json
// decodes it, and capped, as lists in a state are (see runtime's
// lists.go), so that appending to one copies it.
func TestFastJSONListsCapped(t *testing.T) {
	names := &jsonNames{}
	var check func(v any)
	check = func(v any) {
		switch x := v.(type) {
		case []any:
			if cap(x) != len(x) {
				t.Fatalf("list of %d has capacity %d", len(x), cap(x))
			}
			for _, e := range x {
				check(e)
			}
		case map[string]any:
			for _, e := range x {
				check(e)
			}
		}
	}
	for n := 0; n < 40; n++ {
		var b strings.Builder
		b.WriteString(`{"l":[`)
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `[%d,"s%d",[%s],{"k":[%d]}]`, i, i, strings.Repeat("1,", i%5)+"0", i)
		}
		b.WriteString(`],"after":[1,2]}`)
		got, ok := fastMap([]byte(b.String()), names)
		if !ok {
			t.Fatalf("fast path declined %s", b.String())
		}
		want, err := slowMap([]byte(b.String()))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("n=%d: got %v, want %v (%v)", n, got, want, err)
		}
		check(got)
		if len(names.elems) != 0 {
			t.Fatalf("n=%d: %d elements left on the stack", n, len(names.elems))
		}
	}
	// A list that does not end leaves the stack as it was.
	if _, ok := fastMap([]byte(`{"l":[1,[2,3`), names); ok || len(names.elems) != 0 {
		t.Fatalf("unterminated list: ok %v, %d elements left", ok, len(names.elems))
	}
}
