//go:build !unix

package builtin

import "os/exec"

// killGroup is a no-op where process groups are not available: the
// timeout kills the program itself.
func killGroup(*exec.Cmd) {}
