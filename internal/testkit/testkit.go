// Package testkit holds the small helpers that the tests of every package
// here share and that know nothing of redisalive, so that the root
// package's internal tests can use them as well as its external ones: a
// log destination safe for concurrent writes and a poll with a deadline.
package testkit

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// LogBuffer is a log destination, such as a slog handler's writer, safe
// for a pool's goroutines to write while the test reads. The zero value
// is ready.
type LogBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// PollEvery is how often WaitFor checks its condition.
const PollEvery = 2 * time.Millisecond

// WaitFor checks cond every PollEvery until it holds and returns how long
// that took; it fails tb if cond does not hold within the given time.
func WaitFor(tb testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(PollEvery)
	}
	return time.Since(start)
}
