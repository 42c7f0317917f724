package redisaliveotel_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: every pool
// and proxy must have been closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
