package postgres

import (
	"bytes"
	"strings"
	"testing"
)

// A step's delta of chatGraph, as JSON.
var chatDelta = []byte(`{"messages":{"op":"messages","v":[{"content":"reply 19: ` + strings.Repeat("lorem ipsum ", 16) + `","id":"20.talk.0","role":"assistant"}]},"n":{"op":"set","v":20}}`)

// Deltas round-trip; small ones and ones DEFLATE would not shrink are
// stored as they are.
func TestDeltaCodec(t *testing.T) {
	small := []byte(`{"n":{"op":"set","v":1}}`)
	if got := encodeDelta(small); !bytes.Equal(got, small) {
		t.Errorf("small delta stored as %q", got)
	}
	z := encodeDelta(chatDelta)
	if z[0] != deltaZ || len(z) >= len(chatDelta)/2 {
		t.Errorf("chat delta of %d bytes stored in %d (first byte %#x)", len(chatDelta), len(z), z[0])
	}
	for _, in := range [][]byte{small, z} {
		js, err := decodeDelta(in)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool][]byte{true: small, false: chatDelta}[len(in) == len(small)]; !bytes.Equal(js, want) {
			t.Errorf("decoded %q, want %q", js, want)
		}
	}
	if _, err := decodeDelta([]byte{deltaZ, 0xff, 0xff, 0xff}); err == nil {
		t.Error("a damaged DEFLATE stream decoded")
	}
	var got []byte
	if err := (deltaColumn{&got}).Scan([]byte{deltaZ, 0xff}); err != nil || !bytes.Equal(got, []byte{deltaZ, 0xff}) {
		t.Errorf("a damaged delta scans as %q, %v; want it kept as stored", got, err)
	}
}

func BenchmarkEncodeDelta(b *testing.B) {
	b.ReportAllocs()
	for range b.N {
		encodeDelta(chatDelta)
	}
}

func BenchmarkDecodeDelta(b *testing.B) {
	z := encodeDelta(chatDelta)
	b.ReportAllocs()
	for range b.N {
		if _, err := decodeDelta(z); err != nil {
			b.Fatal(err)
		}
	}
}
