// Package compat_test runs libraries built on redigo against a *redis.Pool
// from redisalive.NewRedigoPool. It is a module of its own so that the
// library's module does not depend on them.
package compat_test

import (
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredigo "github.com/go-redsync/redsync/v4/redis/redigo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/redistest"
)

// TestRedsyncLocksThroughARedigoPoolFromNewRedigoPool: redsync's redigo
// adapter takes a lock, a second taker is refused while it is held, and the
// lock is released.
func TestRedsyncLocksThroughARedigoPoolFromNewRedigoPool(t *testing.T) {
	srv := redistest.Start(t)
	pool, err := redisalive.NewRedigoPool(redisalive.Options{Addr: srv.Addr()})
	require.NoError(t, err)
	defer pool.Close()
	rs := redsync.New(redsyncredigo.NewPool(pool))

	first := rs.NewMutex("job-42", redsync.WithExpiry(10*time.Second), redsync.WithTries(1))
	require.NoError(t, first.Lock(), "taking a free lock")
	second := rs.NewMutex("job-42", redsync.WithTries(1))
	assert.Error(t, second.Lock(), "taking a held lock")

	ok, err := first.Unlock()
	require.NoError(t, err)
	assert.True(t, ok, "the holder's release")
	require.NoError(t, second.Lock(), "taking the released lock")
	_, err = second.Unlock()
	require.NoError(t, err)
	assert.Equal(t, int64(0), redisInt(t, srv, "EXISTS", "job-42"), "the lock key is gone")
}

func redisInt(t *testing.T, srv *redistest.Server, cmd string, args ...any) int64 {
	t.Helper()
	n, ok := srv.Do(t, cmd, args...).(int64)
	require.True(t, ok)
	return n
}
