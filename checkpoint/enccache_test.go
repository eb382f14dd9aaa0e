package checkpoint

import (
	"database/sql/driver"
	"testing"
)

// TestEncCache holds the kept JSON of the next nodes and the writes
// metadata to what encoding them afresh gives, commit after commit:
// repeated values, changed ones, nil against empty, and values the
// caller changes after a commit.
func TestEncCache(t *testing.T) {
	var c encCache
	check := func(next []string, writes map[string][]string) {
		t.Helper()
		gotNext, gotWrites, err := c.encode(next, writes)
		if err != nil {
			t.Fatal(err)
		}
		wantNext, err := marshal(next)
		if err != nil {
			t.Fatal(err)
		}
		var wantWrites any
		if len(writes) > 0 {
			if wantWrites, err = nullJSON(writes, false); err != nil {
				t.Fatal(err)
			}
		}
		if gotNext != string(wantNext) || gotWrites != wantWrites {
			t.Fatalf("encode(%#v, %#v) = %q, %#v; want %q, %#v", next, writes, gotNext, gotWrites, wantNext, wantWrites)
		}
	}
	next := []string{"inc"}
	writes := map[string][]string{"inc": {"count", "log"}}
	check(next, writes)
	check(next, writes)
	check([]string{"inc"}, map[string][]string{"inc": {"count", "log"}})
	// The caller's slices and maps change after the commit.
	next[0] = "dec"
	writes["inc"][1] = "other"
	check(next, writes)
	writes["more"] = nil
	check(next, writes)
	writes["more"] = []string{}
	check(next, writes)
	delete(writes, "inc")
	check(next, writes)
	check(nil, nil)
	check([]string{}, map[string][]string{})
	check(nil, writes)
	check([]string{"a", "b"}, nil)
	check([]string{"a"}, nil)
	check([]string{"a", "b"}, map[string][]string{"a": nil})
}

// TestArgListReuse checks that the strings an argList keeps from its last
// use are bound only where they are the very values bound now.
func TestArgListReuse(t *testing.T) {
	var a argList
	bind := func(vals ...string) []driver.Value {
		a.reset(len(vals))
		for i, v := range vals {
			if i == 1 {
				a.strAs(v, 0)
			} else {
				a.str(v)
			}
		}
		out := make([]driver.Value, len(a.vals))
		for i, nv := range a.vals {
			if nv.Ordinal != i+1 {
				t.Fatalf("ordinal %d at %d", nv.Ordinal, i)
			}
			out[i] = nv.Value
		}
		a.done()
		return out
	}
	for _, vals := range [][]string{{"h1", "", "x"}, {"h2", "h1", "x"}, {"h3", "h2", "y"}, {"", "h3", ""}, {"h3", "h3", "y"}} {
		got := bind(vals...)
		for i, v := range vals {
			if got[i] != v {
				t.Fatalf("bound %v, want %v", got, vals)
			}
		}
	}
	for _, nv := range a.vals[:cap(a.vals)] {
		if nv.Value != nil {
			t.Fatalf("a value is kept after done: %v", nv.Value)
		}
	}
}
