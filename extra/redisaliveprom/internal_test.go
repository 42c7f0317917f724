package redisaliveprom

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/redisalive/redisalive"
)

// TestCloseReasonsCoverEveryCloseReason: a reason added to the library
// must be added to the table too, or its counter would go unreported.
func TestCloseReasonsCoverEveryCloseReason(t *testing.T) {
	var want []redisalive.CloseReason
	for r := redisalive.CloseReason(0); r.String() != "unknown"; r++ {
		want = append(want, r)
	}
	var got []redisalive.CloseReason
	for _, r := range closeReasons {
		got = append(got, r.reason)
	}
	assert.Equal(t, want, got)
}
