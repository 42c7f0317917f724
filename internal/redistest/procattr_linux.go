package redistest

import "syscall"

// dieWithParent makes the kernel kill the server if the test binary dies
// before its cleanup runs.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
