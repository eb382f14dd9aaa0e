//go:build race

package spec

// maxEvalAllocs is TestEvalStateAllocs's bound: under -race, sync.Pool
// drops a quarter of what is put back, and a new VM allocates itself and
// its stack.
func maxEvalAllocs() float64 { return 1 }
