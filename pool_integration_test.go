package redisalive_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/redistest"
)

func TestServerIdleTimeoutLeavesNoCloseWaitAfterHealthCheckInterval(t *testing.T) {
	srv := redistest.Start(t)
	// Longer than the server's timeout takes to act: redis counts idle time
	// in whole seconds and closes a client idle more than `timeout` of
	// them, so `timeout 1` closes after 1 to 2 s (later on a busy machine).
	// A 2 s interval had the health checker's PING race the server's close,
	// keep the connections alive and fail the test.
	interval := 5 * time.Second
	p, err := redisalive.NewPool(redisalive.Options{Addr: srv.Addr(), HealthCheckInterval: interval})
	require.NoError(t, err)
	defer p.Close()

	srv.Do(t, "CONFIG", "SET", "timeout", "1")
	fillIdle(t, p, 5)

	// The server drops the five idle connections within two seconds;
	// until the pool notices, each sits in CLOSE_WAIT on this side. They
	// may be dropped on different ticks of the server's cron, and the
	// pool's sweep may close some before the last is dropped, so wait for
	// none to be left open rather than for five in CLOSE_WAIT.
	waitFor(t, 5*time.Second, "server closed the idle connections", func() bool { return clientStates(t, srv.Port())["ESTABLISHED"] == 0 })
	took := waitFor(t, interval+2*time.Second, "no CLOSE_WAIT", func() bool { return clientStates(t, srv.Port())["CLOSE_WAIT"] == 0 })
	t.Logf("CLOSE_WAIT sockets gone %v after the server closed them (HealthCheckInterval %v)", took, interval)

	s := p.Stats()
	assert.Equal(t, int64(5), s.DeadClosed)
	assert.Equal(t, 0, s.Active)
	dials := s.Dials
	_, err = p.Do(context.Background(), "PING")
	require.NoError(t, err, "the next Do must succeed first try")
	assert.Equal(t, dials+1, p.Stats().Dials)
}

func TestCheckoutReplacesServerClosedConnectionInvisibly(t *testing.T) {
	srv := redistest.Start(t)
	p, err := redisalive.NewPool(redisalive.Options{Addr: srv.Addr(), HealthCheckInterval: time.Hour})
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Do(context.Background(), "SET", "k", "v")
	require.NoError(t, err)

	srv.Do(t, "CLIENT", "KILL", "TYPE", "normal") // spares the admin connection itself
	// In CLOSE_WAIT, or already closed by the pool's once-a-second sweep.
	waitFor(t, 5*time.Second, "the server's close reaching the pool's socket", func() bool { return clientStates(t, srv.Port())["ESTABLISHED"] == 0 })

	v, err := redis.String(p.Do(context.Background(), "GET", "k"))
	require.NoError(t, err, "a server-closed idle connection must never reach the caller")
	assert.Equal(t, "v", v)
	s := p.Stats()
	assert.Equal(t, int64(1), s.DeadClosed, "the checkout peek (or the sweep) found the closed socket")
	assert.Equal(t, int64(2), s.Dials)
	assert.Equal(t, int64(0), s.HealthChecks, "the peek needs no PING")
}

func TestCloseLeavesServerConnectedClientsAtBaseline(t *testing.T) {
	srv := redistest.Start(t)
	baseline := srv.ConnectedClients(t)
	p, err := redisalive.NewPool(redisalive.Options{Addr: srv.Addr()})
	require.NoError(t, err)

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, err := p.Do(context.Background(), "INCR", "n"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.Greater(t, srv.ConnectedClients(t), baseline)
	require.NoError(t, p.Close())
	srv.WaitConnectedClients(t, baseline, 2*time.Second)
}

func TestHealthCheckerPingsOnlyConnectionsIdleForAnInterval(t *testing.T) {
	p, _ := newMiniPool(t, redisalive.Options{HealthCheckInterval: 200 * time.Millisecond})
	ctx := context.Background()
	// Busy: used every 20ms for several intervals.
	deadline := time.Now().Add(700 * time.Millisecond)
	for time.Now().Before(deadline) {
		_, err := p.Do(ctx, "PING")
		require.NoError(t, err)
		time.Sleep(20 * time.Millisecond)
	}
	assert.Equal(t, int64(0), p.Stats().HealthChecks, "a busy connection needs no health PING")

	// Idle: each interval brings one PING.
	// A pass takes the connection out of the idle list while it PINGs it,
	// so wait for it to be back rather than sampling mid-pass.
	waitFor(t, 2*time.Second, "two health PINGs, connection back in the idle list", func() bool {
		s := p.Stats()
		return s.HealthChecks >= 2 && s.Idle == 1
	})
	s := p.Stats()
	assert.Equal(t, int64(0), s.DeadClosed, "a healthy connection must survive its PINGs")
	assert.Equal(t, int64(1), s.Dials)
}

func TestHealthCheckerClosesConnectionsPastIdleTimeout(t *testing.T) {
	p, _ := newMiniPool(t, redisalive.Options{IdleTimeout: 100 * time.Millisecond, HealthCheckInterval: 50 * time.Millisecond})
	fillIdle(t, p, 3)
	waitFor(t, 2*time.Second, "idle connections closed", func() bool { return p.Stats().IdleClosed == 3 })
	assert.Equal(t, 0, p.Stats().Active)
}

func TestLeakDetectionLogsHolderStackOnce(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	p, _ := newMiniPool(t, redisalive.Options{LeakDetectionThreshold: 50 * time.Millisecond, Logger: logger})
	c, err := p.Get(context.Background())
	require.NoError(t, err)
	waitFor(t, 2*time.Second, "leak reported", func() bool { return p.Stats().Leaks == 1 })
	// The checker wakes at least every threshold; several more passes must
	// not report the same connection again.
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, c.Close())
	assert.Contains(t, buf.String(), "TestLeakDetectionLogsHolderStackOnce", "the log names the code that checked the connection out")
	assert.Equal(t, int64(1), p.Stats().Leaks)
}

// TestCheckoutHandedADeadConnectionCountsOneWaitAndOnlyItsWaitingTime: a
// waiter handed a connection the server has closed waits again; that is
// still one wait, and only the time actually spent waiting counts.
func TestCheckoutHandedADeadConnectionCountsOneWaitAndOnlyItsWaitingTime(t *testing.T) {
	srv := redistest.Start(t)
	p := newServerPool(t, srv, redisalive.Options{MaxActive: 2, PoolTimeout: 10 * time.Second})
	ctx := context.Background()
	doomed, err := p.Get(ctx)
	require.NoError(t, err)
	id, err := redis.Int64(doomed.Do("CLIENT", "ID"))
	require.NoError(t, err)
	other, err := p.Get(ctx)
	require.NoError(t, err)

	waited := make(chan time.Duration, 2)
	release := make(chan struct{}) // waiters hold what they got until the end
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	for n := 1; n <= 2; n++ {
		wg.Go(func() {
			start := time.Now()
			c, err := p.Get(ctx)
			waited <- time.Since(start)
			if assert.NoError(t, err) {
				<-release
				c.Close()
			}
		})
		waitFor(t, 2*time.Second, "waiters queued", func() bool { return p.Stats().Waiting == n })
	}
	srv.Do(t, "CLIENT", "KILL", "ID", id)
	waitFor(t, 2*time.Second, "the killed connection in CLOSE_WAIT", func() bool {
		return clientStates(t, srv.Port())["CLOSE_WAIT"] == 1
	})
	time.Sleep(200 * time.Millisecond) // lengthens the first wait; not synchronisation
	require.NoError(t, doomed.Close()) // to the first waiter, who finds it dead
	w2 := <-waited                     // the second waiter dials into the freed slot
	waitFor(t, 2*time.Second, "the first waiter waiting again", func() bool { return p.Stats().Waiting == 1 })
	time.Sleep(200 * time.Millisecond) // lengthens the second wait; not synchronisation
	require.NoError(t, other.Close())
	w1 := <-waited

	s := p.Stats()
	assert.Equal(t, int64(2), s.WaitCount, "WaitCount: two checkouts waited")
	assert.Equal(t, int64(1), s.DeadClosed, "DeadClosed")
	assert.LessOrEqual(t, s.WaitDuration, w1+w2, "WaitDuration: got %v, but the checkouts took %v and %v in all", s.WaitDuration, w1, w2)
	assert.GreaterOrEqual(t, s.WaitDuration, w1+w2-100*time.Millisecond, "WaitDuration: got %v for checkouts of %v and %v", s.WaitDuration, w1, w2)
}
