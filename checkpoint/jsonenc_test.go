package checkpoint

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// TestFastJSONEncode holds appendJSON to encoding/json (as marshal
// configures it): the same bytes for every value it accepts, and a
// decline for those it does not know.
func TestFastJSONEncode(t *testing.T) {
	var nilList []any
	var nilMap map[string]any
	var nilDelta runtime.Delta
	cases := []any{
		nil, true, false, 0, -1, 1 << 62, int64(-7), 0.0, math.Copysign(0, -1), 1.5, -2.25e-7, 1e21, 1e20, 123456789.125, 5e-324, math.MaxFloat64,
		"", "plain text", "<a & b>", `quote"`, `back\slash`, "tab\t", "é", "\u2028", "\x7f",
		[]any{}, nilList, []any{1, "a", nil, []any{2.5}}, map[string]any{}, nilMap, map[string]any{"b": 1, "a": []any{}, "c": map[string]any{"z": nil}},
		[]string{}, []string(nil), []string{"a", "b"}, map[string][]string{"n": {"x", "y"}, "a": nil},
		runtime.Delta{}, nilDelta, runtime.Delta{"n": {Kind: runtime.OpSet, Value: 3}, "log": {Kind: runtime.OpAppend, Value: []any{1, 2}}},
		runtime.Delta{"m": {Kind: runtime.OpMessages, Value: []any{map[string]any{"id": "1", "role": "user", "content": "hi"}}}},
		map[string]any{"bad key\n": 1}, map[string]any{"k": int32(1)}, []any{struct{}{}}, math.Inf(1), math.NaN(), uint(3),
		runtime.Delta{"x": {Kind: "odd\"kind", Value: 1}},
	}
	rng := rand.New(rand.NewPCG(16, 16))
	for i := 0; i < 2000; i++ {
		cases = append(cases, randomJSONValue(rng, 4))
	}
	accepted := 0
	for _, v := range cases {
		got, ok := appendJSON(nil, v)
		want, err := slowMarshal(v)
		if !ok {
			continue
		}
		accepted++
		if err != nil {
			t.Fatalf("%#v: appendJSON accepts what encoding/json refuses (%v)", v, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%#v:\n got  %s\n want %s", v, got, want)
		}
	}
	if accepted < len(cases)/2 {
		t.Errorf("appendJSON accepted %d of %d values", accepted, len(cases))
	}
	// Values it declines still marshal.
	for _, v := range []any{"é", map[string]any{"k": int32(1)}} {
		if b, err := marshal(v); err != nil || !json.Valid(b) {
			t.Errorf("marshal(%#v) = %s, %v", v, b, err)
		}
	}
}

func randomJSONValue(rng *rand.Rand, depth int) any {
	switch k := rng.IntN(10); {
	case k == 0:
		return nil
	case k == 1:
		return rng.IntN(2) == 0
	case k == 2:
		return rng.Int64N(1<<40) - 1<<39
	case k == 3:
		return int(rng.Int32())
	case k == 4:
		return math.Float64frombits(rng.Uint64())
	case k == 5:
		return rng.NormFloat64() * math.Pow(10, float64(rng.IntN(50)-25))
	case k == 6:
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = byte(0x1e + rng.IntN(0x64))
		}
		return string(b)
	case k == 7 && depth > 0:
		l := make([]any, rng.IntN(4))
		for i := range l {
			l[i] = randomJSONValue(rng, depth-1)
		}
		return l
	case k == 8 && depth > 0:
		m := map[string]any{}
		for i := rng.IntN(4); i > 0; i-- {
			m[string(rune('a'+rng.IntN(26)))+string(rune('a'+rng.IntN(26)))] = randomJSONValue(rng, depth-1)
		}
		return m
	case depth > 0:
		d := runtime.Delta{}
		kinds := []runtime.OpKind{runtime.OpSet, runtime.OpAppend, runtime.OpMerge, runtime.OpMessages}
		for i := rng.IntN(3); i > 0; i-- {
			d[string(rune('a'+rng.IntN(26)))] = runtime.Op{Kind: kinds[rng.IntN(len(kinds))], Value: randomJSONValue(rng, depth-1)}
		}
		return d
	}
	return "x"
}
