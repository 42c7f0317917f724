//go:build linux

package redisalive_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/faultnet"
	"github.com/redisalive/redisalive/internal/redistest"
)

// The fault cases of the drop-in redigo pool (Pool.RedigoPool): subtests
// of TestFaults, on its harness (faults_test.go).

// 18. A Pool's RedigoPool keeps the pool's timeouts: a command on a
// blackholed link fails at ReadTimeout.
func faultTestRedigoPoolBlackhole(t *testing.T) {
	srv := redistest.Start(t)
	const readTimeout = 500 * time.Millisecond
	_, rp := newRedigoPool(t, srv, redisalive.Options{ReadTimeout: readTimeout})
	c := rp.Get()
	defer c.Close()
	_, err := c.Do("PING")
	require.NoError(t, err)
	faultnet.Blackhole(t, srv.Port(), faultnet.Both)
	start := time.Now()
	_, err = c.Do("PING")
	require.Error(t, err)
	assert.True(t, faultIsTimeout(err), "got %v, want a timeout", err)
	faultAssertElapsed(t, "a command on the blackholed link failing", time.Since(start), readTimeout-10*time.Millisecond, faultPlus20(readTimeout))
}

// 19. Every socket of a Pool's RedigoPool gets the pool's
// keepalive: a connection held idle on a blackholed link is dead within
// Idle + Interval*Count, and the next command fails at once.
func faultTestRedigoPoolKeepAlive(t *testing.T) {
	srv := redistest.Start(t)
	ka := redisalive.KeepAlive{Idle: time.Second, Interval: time.Second, Count: 2}
	bound := ka.Idle + ka.Interval*time.Duration(ka.Count)
	_, rp := newRedigoPool(t, srv, redisalive.Options{KeepAlive: ka, ReadTimeout: 30 * time.Second})
	c := rp.Get()
	defer c.Close()
	_, err := c.Do("PING")
	require.NoError(t, err)
	lastTraffic := time.Now()
	faultnet.Blackhole(t, srv.Port(), faultnet.Both)
	faultAssertKeepAliveKill(t, srv, c, lastTraffic, bound)
}
