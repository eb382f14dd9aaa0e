//go:build !race

package spec

// maxEvalAllocs is TestEvalStateAllocs's bound.
func maxEvalAllocs() float64 { return 0 }
