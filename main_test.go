package redisalive_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: every pool
// must have been closed and every goroutine of it ended.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
