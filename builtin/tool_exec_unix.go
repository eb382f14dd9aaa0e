//go:build unix

package builtin

import (
	"os/exec"
	"syscall"
)

// killGroup runs the program in its own process group and makes
// cancellation kill the whole group, so children it started die with it.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// ownGroup runs the program in its own process group, for endGroup.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// endGroup sends SIGTERM to what is left of the process group of a
// program started with ownGroup (the children of a launcher such as npx).
func endGroup(cmd *exec.Cmd) {
	if cmd != nil && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
}
