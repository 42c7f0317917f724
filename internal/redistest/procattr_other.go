//go:build !linux

package redistest

import "syscall"

// dieWithParent has no Pdeathsig outside Linux: cleanup alone stops the
// server.
func dieWithParent() *syscall.SysProcAttr { return nil }
