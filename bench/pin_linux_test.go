package bench

import "golang.org/x/sys/unix"

// pinToCPU binds the process pid to one CPU with sched_setaffinity.
func pinToCPU(pid, cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	return unix.SchedSetaffinity(pid, &set)
}
