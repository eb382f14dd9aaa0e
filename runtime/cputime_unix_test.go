//go:build unix

package runtime_test

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user and system) the process has used,
// all threads and the garbage collector included: on a machine shared
// with other work it varies much less than elapsed time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
