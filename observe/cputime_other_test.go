//go:build !unix

package observe_test

import "time"

// cpuTime is not measured here: the benchmarks report 0 CPU µs.
func cpuTime() time.Duration { return 0 }
