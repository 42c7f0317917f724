package redisalive

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultUserTimeoutIsCappedAtWhatTheKernelTakes(t *testing.T) {
	ka := KeepAlive{Idle: maxKeepAliveTime, Interval: maxKeepAliveTime, Count: maxKeepAliveCount}
	c, err := newConfig(Options{Addr: "h:1", KeepAlive: ka})
	require.NoError(t, err)
	assert.Equal(t, maxUserTimeout, c.userTimeout, "got %v, want the 32-bit millisecond limit %v", c.userTimeout, maxUserTimeout)

	c, err = newConfig(Options{Addr: "h:1"})
	require.NoError(t, err)
	assert.Equal(t, 20*time.Second, c.userTimeout, "got %v, want Idle + Interval × Count with the defaults", c.userTimeout)
}
