//go:build !unix

package builtin

import "os/exec"

// killGroup is a no-op where process groups are not available: the
// timeout kills the program itself.
func killGroup(*exec.Cmd) {}

// ownGroup and endGroup are no-ops where process groups are not available.
func ownGroup(*exec.Cmd) {}
func endGroup(*exec.Cmd) {}
