package checkpoint

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// TestSummerFrames holds the summer's byte-by-byte frames to hash/crc32 of
// the same bytes: checksums are those of layout version 2 on.
func TestSummerFrames(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		var s summer
		var want uint32
		for k := 0; k < 5; k++ {
			var buf [9]byte
			switch rng.IntN(3) {
			case 0:
				b := make([]byte, rng.IntN(40))
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
				s.bytes(b)
				buf[0] = 1
				binary.BigEndian.PutUint64(buf[1:], uint64(len(b)))
				want = crc32.Update(want, castagnoli(), buf[:])
				want = crc32.Update(want, castagnoli(), b)
			case 1:
				s.null()
				want = crc32.Update(want, castagnoli(), []byte{0})
			case 2:
				v := int64(rng.Uint64())
				s.int(v)
				buf[0] = 2
				binary.BigEndian.PutUint64(buf[1:], uint64(v))
				want = crc32.Update(want, castagnoli(), buf[:])
			}
		}
		if s.crc != want {
			t.Fatalf("trial %d: %x want %x", i, s.crc, want)
		}
	}
}
