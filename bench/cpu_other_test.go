//go:build !unix

package bench

import "time"

// processCPU reports nothing: getrusage is a Unix call, so the cells have
// no cpu-ns/op here rather than a made-up one.
func processCPU() (time.Duration, bool) { return 0, false }
