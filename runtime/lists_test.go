package runtime

import (
	"encoding/json"
	"testing"
)

func js(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func msgOp(ms ...map[string]any) Delta {
	items := make([]any, len(ms))
	for i, m := range ms {
		items[i] = m
	}
	return Delta{"m": {Kind: OpMessages, Value: items}}
}

func msg(id, content string) map[string]any {
	return map[string]any{"id": id, "role": "user", "content": content}
}

// An Applier's snapshots stay as they were, whichever snapshot the next
// delta applies to: the last one (in place) or an older one (a copy).
func TestApplierSnapshots(t *testing.T) {
	var a Applier
	apply := func(from map[string]any, d Delta) map[string]any {
		t.Helper()
		v := copyMap(from)
		if err := a.Apply(v, d); err != nil {
			t.Fatal(err)
		}
		return v
	}
	app := func(items ...any) Delta { return Delta{"log": {Kind: OpAppend, Value: items}} }
	base := apply(map[string]any{"log": []any{}, "m": []any{}}, app("a"))
	s1 := apply(base, app("b"))
	s2 := apply(base, app("c")) // a branch from base
	s3 := apply(s1, app("d"))
	s4 := apply(s1, app("e", "f")) // another branch from s1
	s5 := apply(s2, app("g"))
	for _, c := range []struct {
		got  map[string]any
		want string
	}{{base, `["a"]`}, {s1, `["a","b"]`}, {s2, `["a","c"]`}, {s3, `["a","b","d"]`}, {s4, `["a","b","e","f"]`}, {s5, `["a","c","g"]`}} {
		if g := js(t, c.got["log"]); g != c.want {
			t.Fatalf("log %s, want %s", g, c.want)
		}
	}
	if l := s3["log"].([]any); cap(l) != len(l) {
		t.Fatalf("a list in the values has spare capacity (%d of %d): appending to it would not copy", cap(l), len(l))
	}

	// Messages: appends share, a replacement or removal copies.
	m1 := apply(base, msgOp(msg("1", "one"), msg("2", "two")))
	m2 := apply(m1, msgOp(msg("3", "three")))
	m3 := apply(m1, msgOp(msg("1", "ONE"))) // replaces in a branch from m1
	m4 := apply(m2, msgOp(map[string]any{"id": "2", "remove": true}, msg("4", "four")))
	m5 := apply(m2, msgOp(msg("5", "five")))
	m6 := apply(m1, msgOp(msg("6", "six")))
	ids := func(v map[string]any) string {
		var s string
		for _, m := range v["m"].([]any) {
			mm := m.(map[string]any)
			s += mm["id"].(string) + "=" + mm["content"].(string) + " "
		}
		return s
	}
	for _, c := range []struct {
		got  map[string]any
		want string
	}{
		{m1, "1=one 2=two "}, {m2, "1=one 2=two 3=three "}, {m3, "1=ONE 2=two "},
		{m4, "1=one 3=three 4=four "}, {m5, "1=one 2=two 3=three 5=five "}, {m6, "1=one 2=two 6=six "},
	} {
		if g := ids(c.got); g != c.want {
			t.Fatalf("messages %s, want %s", g, c.want)
		}
	}
	// The same with ApplyDelta, which shares nothing.
	v := copyMap(m2)
	if err := ApplyDelta(v, msgOp(msg("7", "seven"))); err != nil {
		t.Fatal(err)
	}
	if g := ids(m2); g != "1=one 2=two 3=three " {
		t.Fatalf("ApplyDelta changed its input: %s", g)
	}
}
