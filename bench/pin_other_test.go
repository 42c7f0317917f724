//go:build !linux

package bench

import "errors"

// pinToCPU fails: CPU affinity is set with Linux's sched_setaffinity, and
// run.sh pins the clients with taskset, also Linux-only.
func pinToCPU(pid, cpu int) error {
	return errors.New("pinning to a CPU needs Linux")
}
