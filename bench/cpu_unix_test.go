//go:build unix

package bench

import (
	"time"

	"golang.org/x/sys/unix"
)

// processCPU is the user plus system CPU time the process has used so far,
// all its threads together, from getrusage(RUSAGE_SELF).
func processCPU() (time.Duration, bool) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
