// Package compat_test runs libraries built on redigo against the
// *redis.Pool of a redisalive.Pool (Pool.RedigoPool). It is a module of its
// own so that the library's module does not depend on them.
package compat_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredigo "github.com/go-redsync/redsync/v4/redis/redigo"
	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/pooltest"
	"github.com/redisalive/redisalive/internal/redistest"
)

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRedsyncLocksThroughAPoolsRedigoPool: redsync's redigo adapter takes
// a lock, a second taker is refused while it is held, and the lock is
// released.
func TestRedsyncLocksThroughAPoolsRedigoPool(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{})
	rs := redsync.New(redsyncredigo.NewPool(p.RedigoPool()))

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
	assert.Equal(t, 0, p.Stats().InUse, "connections still lent after the last Unlock")
}

// TestRedsyncLocksFromManyGoroutinesOverOneConnection: 8 goroutines take
// turns holding one lock through a Pool of one connection. Each of
// redsync's calls waits for the connection rather than failing, and the
// lock keeps them apart: a read-increment-write under it loses no update.
func TestRedsyncLocksFromManyGoroutinesOverOneConnection(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{MaxActive: 1, PoolTimeout: 10 * time.Second})
	rp := p.RedigoPool()
	rs := redsync.New(redsyncredigo.NewPool(rp))
	const goroutines, rounds = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			m := rs.NewMutex("counter-lock", redsync.WithExpiry(10*time.Second),
				redsync.WithTries(1000), redsync.WithRetryDelay(time.Millisecond))
			for i := range rounds {
				if err := incrementUnder(m, rp); err != nil {
					errs <- fmt.Errorf("goroutine %d round %d: %w", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assert.Equal(t, int64(goroutines*rounds), redisInt(t, srv, "GET", "counter"), "counter")
	s := p.Stats()
	assert.Equal(t, int64(1), s.Dials, "Stats.Dials")
	assert.Positive(t, s.WaitCount, "Stats.WaitCount: calls waited for the connection")
	assert.Zero(t, s.PoolTimeouts, "Stats.PoolTimeouts")
}

// incrementUnder reads, increments and writes "counter" while holding m.
func incrementUnder(m *redsync.Mutex, rp *redis.Pool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.LockContext(ctx); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	c, err := rp.GetContext(ctx)
	if err != nil {
		return err
	}
	n, err := redis.Int64(c.Do("GET", "counter"))
	if errors.Is(err, redis.ErrNil) {
		err = nil
	}
	if err == nil {
		_, err = c.Do("SET", "counter", n+1)
	}
	err = errors.Join(err, c.Close())
	if ok, uErr := m.UnlockContext(ctx); err == nil && (uErr != nil || !ok) {
		err = fmt.Errorf("unlock: got %v, %v, want true, nil", ok, uErr)
	}
	return err
}

func redisInt(t *testing.T, srv *redistest.Server, cmd string, args ...any) int64 {
	t.Helper()
	n, err := redis.Int64(srv.Do(t, cmd, args...), nil)
	require.NoError(t, err)
	return n
}
