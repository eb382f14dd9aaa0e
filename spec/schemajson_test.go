package spec

import (
	"bytes"
	"math/rand"
	"reflect"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/lgrun/lgrun/schema"
)

// libraryDoc is what jsonschema.UnmarshalJSON makes of src.
func libraryDoc(src []byte) (any, error) { return jsonschema.UnmarshalJSON(bytes.NewReader(src)) }

// TestFastSchemaJSONEmbedded: the schemas every process parses take the
// fast path and come out as the library's parse.
func TestFastSchemaJSONEmbedded(t *testing.T) {
	custom, err := customRegistry(t).Schema()
	if err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string][]byte{"graph": schema.Graph, "test": schema.Test, "custom registry": custom} {
		got, ok := fastSchemaJSON(src)
		if !ok {
			t.Errorf("%s schema: fastSchemaJSON gave up; every lgrun run would parse it with encoding/json", name)
			continue
		}
		want, err := libraryDoc(src)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s schema: fastSchemaJSON differs from jsonschema.UnmarshalJSON", name)
		}
	}
}

// TestFastSchemaJSONCases: each input is either parsed as the library
// parses it, or left to the library (decodeSchemaDoc then returns the
// library's value or error).
func TestFastSchemaJSONCases(t *testing.T) {
	for _, tc := range []struct {
		src  string
		fast bool // fastSchemaJSON handles it itself
	}{
		{`{}`, true},
		{` { "a" : [ 1, -2.5e+3, 0, 0.0, 1E9, true, false, null, "x" ], "b": {} } `, true},
		{`{"a": 1, "a": 2}`, true},
		{`{"s": "tab\there \"q\" \\ \/ \b\f\n\r"}`, true},
		{`{"s": "héllo → ok"}`, true},
		{`[]`, true},
		{`"top"`, true},
		{`{"long key that is not interned at all, no": "v", "k": "a string value longer than the interning bound"}`, true},
		{`{"u": "\u00e9"}`, false},
		{`{"u": "\ud83d\ude00"}`, false},
		{"{\"bad\": \"\xff\"}", false},
		{"{\"ctl\": \"a\x01b\"}", false},
		{`{"a": 01}`, false},
		{`{"a": 1.}`, false},
		{`{"a": -}`, false},
		{`{"a": 1e}`, false},
		{`{"a": tru}`, false},
		{`{"a": 1,}`, false},
		{`[1,]`, false},
		{`{"a" 1}`, false},
		{`{a: 1}`, false},
		{`{"a": 1} x`, false},
		{`{"a": 1}{}`, false},
		{`{"a": "unterminated}`, false},
		{`{"a": "bad \x escape"}`, false},
		{``, false},
		{`   `, false},
		{"\ufeff{}", false},
	} {
		got, ok := fastSchemaJSON([]byte(tc.src))
		if ok != tc.fast {
			t.Errorf("fastSchemaJSON(%q) ok = %v, want %v", tc.src, ok, tc.fast)
		}
		want, werr := libraryDoc([]byte(tc.src))
		if ok {
			if werr != nil {
				t.Errorf("fastSchemaJSON(%q) accepted what the library rejects: %v", tc.src, werr)
			} else if !reflect.DeepEqual(got, want) {
				t.Errorf("fastSchemaJSON(%q) = %#v, library %#v", tc.src, got, want)
			}
		}
		doc, err := decodeSchemaDoc([]byte(tc.src))
		if (err == nil) != (werr == nil) || (werr != nil && err.Error() != werr.Error()) {
			t.Errorf("decodeSchemaDoc(%q) error %v, library %v", tc.src, err, werr)
		} else if err == nil && !reflect.DeepEqual(doc, want) {
			t.Errorf("decodeSchemaDoc(%q) = %#v, library %#v", tc.src, doc, want)
		}
	}
}

// TestFastSchemaJSONMutations damages the graph schema at random (bytes
// replaced, inserted, deleted, cut): whenever fastSchemaJSON accepts the
// result, the library accepts it too and parses it to the same value.
func TestFastSchemaJSONMutations(t *testing.T) {
	rng := rand.New(rand.NewSource(16))
	alphabet := []byte("{}[]\":,\\ \n-+.eE0123456789tfnulrsaxé\x00\xff")
	n := 3000
	if testing.Short() {
		n = 300
	}
	fast := 0
	for i := 0; i < n; i++ {
		src := bytes.Clone(schema.Graph)
		for k := 1 + rng.Intn(3); k > 0; k-- {
			at := rng.Intn(len(src))
			c := alphabet[rng.Intn(len(alphabet))]
			switch rng.Intn(4) {
			case 0:
				src[at] = c
			case 1:
				src = append(src[:at], append([]byte{c}, src[at:]...)...)
			case 2:
				src = append(src[:at], src[at+1:]...)
			case 3:
				src = src[:at]
			}
		}
		got, ok := fastSchemaJSON(src)
		if !ok {
			continue
		}
		fast++
		want, err := libraryDoc(src)
		if err != nil {
			t.Fatalf("fastSchemaJSON accepted a document the library rejects (%v):\n%s", err, src)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("fastSchemaJSON and the library differ on:\n%s", src)
		}
	}
	if fast == 0 {
		t.Fatal("no mutation was parsed by fastSchemaJSON; the test checks nothing")
	}
}

// BenchmarkSchemaDoc parses the graph schema as every `lgrun run` does
// (decodeSchemaDoc) and as jsonschema.UnmarshalJSON does.
func BenchmarkSchemaDoc(b *testing.B) {
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := decodeSchemaDoc(schema.Graph); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("library", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := libraryDoc(schema.Graph); err != nil {
				b.Fatal(err)
			}
		}
	})
}
