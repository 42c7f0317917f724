package redisalive_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/faultproxy"
	"github.com/redisalive/redisalive/internal/pooltest"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
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
	testkit.WaitFor(t, 5*time.Second, "server closed the idle connections", func() bool { return clientStates(t, srv.Port())["ESTABLISHED"] == 0 })
	took := testkit.WaitFor(t, interval+2*time.Second, "no CLOSE_WAIT", func() bool { return clientStates(t, srv.Port())["CLOSE_WAIT"] == 0 })
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
	testkit.WaitFor(t, 5*time.Second, "the server's close reaching the pool's socket", func() bool { return clientStates(t, srv.Port())["ESTABLISHED"] == 0 })

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
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{HealthCheckInterval: 200 * time.Millisecond})
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
	testkit.WaitFor(t, 2*time.Second, "two health PINGs, connection back in the idle list", func() bool {
		s := p.Stats()
		return s.HealthChecks >= 2 && s.Idle == 1
	})
	s := p.Stats()
	assert.Equal(t, int64(0), s.DeadClosed, "a healthy connection must survive its PINGs")
	assert.Equal(t, int64(1), s.Dials)
}

func TestHealthCheckerClosesConnectionsPastIdleTimeout(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{IdleTimeout: 100 * time.Millisecond, HealthCheckInterval: 50 * time.Millisecond})
	fillIdle(t, p, 3)
	testkit.WaitFor(t, 2*time.Second, "idle connections closed", func() bool { return p.Stats().IdleClosed == 3 })
	assert.Equal(t, 0, p.Stats().Active)
}

func TestLeakDetectionLogsHolderStackOnce(t *testing.T) {
	var buf testkit.LogBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{LeakDetectionThreshold: 50 * time.Millisecond, Logger: logger})
	c, err := p.Get(context.Background())
	require.NoError(t, err)
	testkit.WaitFor(t, 2*time.Second, "leak reported", func() bool { return p.Stats().Leaks == 1 })
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
	p := pooltest.OnServer(t, srv, redisalive.Options{MaxActive: 2, PoolTimeout: 10 * time.Second})
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
		testkit.WaitFor(t, 2*time.Second, "waiters queued", func() bool { return p.Stats().Waiting == n })
	}
	srv.Do(t, "CLIENT", "KILL", "ID", id)
	testkit.WaitFor(t, 2*time.Second, "the killed connection in CLOSE_WAIT", func() bool {
		return clientStates(t, srv.Port())["CLOSE_WAIT"] == 1
	})
	time.Sleep(200 * time.Millisecond) // lengthens the first wait; not synchronisation
	require.NoError(t, doomed.Close()) // to the first waiter, who finds it dead
	w2 := <-waited                     // the second waiter dials into the freed slot
	testkit.WaitFor(t, 2*time.Second, "the first waiter waiting again", func() bool { return p.Stats().Waiting == 1 })
	time.Sleep(200 * time.Millisecond) // lengthens the second wait; not synchronisation
	require.NoError(t, other.Close())
	w1 := <-waited

	s := p.Stats()
	assert.Equal(t, int64(2), s.WaitCount, "WaitCount: two checkouts waited")
	assert.Equal(t, int64(1), s.DeadClosed, "DeadClosed")
	assert.LessOrEqual(t, s.WaitDuration, w1+w2, "WaitDuration: got %v, but the checkouts took %v and %v in all", s.WaitDuration, w1, w2)
	assert.GreaterOrEqual(t, s.WaitDuration, w1+w2-100*time.Millisecond, "WaitDuration: got %v for checkouts of %v and %v", s.WaitDuration, w1, w2)
}

// getPaths read a key the three ways a caller can: Do, Do on shared
// connections, and Do on a connection from Get.
var getPaths = []struct {
	name string
	opts redisalive.Options
	get  func(ctx context.Context, p *redisalive.Pool, key string) (string, error)
}{
	{"Do", redisalive.Options{}, getWithDo},
	{"AutoPipeline", redisalive.Options{AutoPipeline: true}, getWithDo},
	{"Get", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool, key string) (string, error) {
		c, err := p.Get(ctx)
		if err != nil {
			return "", err
		}
		defer c.Close()
		return redis.String(c.Do("GET", key))
	}},
}

func getWithDo(ctx context.Context, p *redisalive.Pool, key string) (string, error) {
	return redis.String(p.Do(ctx, "GET", key))
}

// slowLinkPool sets key to a value of size bytes on srv, and returns a pool
// that reaches srv through a fault proxy, and the proxy.
func slowLinkPool(t *testing.T, srv *redistest.Server, opts redisalive.Options, key string, size int) (*redisalive.Pool, *faultproxy.Proxy, string) {
	t.Helper()
	value := strings.Repeat("v", size)
	srv.Do(t, "SET", key, value)
	px, err := faultproxy.New(srv.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { px.Close() })
	opts.Addr = px.Addr()
	p := pooltest.New(t, opts)
	_, err = p.Do(context.Background(), "PING") // connected before the link slows
	require.NoError(t, err)
	return p, px, value
}

// TestASlowButLiveLinkDeliversALargeValuePastReadTimeout: ReadTimeout
// bounds silence, not a reply: 128 KiB at 64 KiB/s takes 2 s, four times
// ReadTimeout, and arrives whole on every path.
func TestASlowButLiveLinkDeliversALargeValuePastReadTimeout(t *testing.T) {
	srv := redistest.Start(t)
	const readTimeout = 500 * time.Millisecond
	for _, path := range getPaths {
		t.Run(path.name, func(t *testing.T) {
			opts := path.opts
			opts.ReadTimeout = readTimeout
			p, px, value := slowLinkPool(t, srv, opts, "big", 128<<10)
			px.SetSlice(faultproxy.ToClient, 4<<10, 62500*time.Microsecond) // 64 KiB/s
			start := time.Now()
			got, err := path.get(context.Background(), p, "big")
			took := time.Since(start)
			require.NoError(t, err, "after %v", took)
			assert.Equal(t, len(value), len(got), "bytes of the value")
			assert.Greater(t, took, 3*readTimeout, "the link was not slow: the test proves nothing")
		})
	}
}

// TestALinkThatFallsSilentMidReplyFailsAtReadTimeout: a peer that sends a
// byte, then nothing for longer than ReadTimeout, fails the call about
// ReadTimeout after its last byte, however long the reply has to go.
func TestALinkThatFallsSilentMidReplyFailsAtReadTimeout(t *testing.T) {
	srv := redistest.Start(t)
	const readTimeout = 300 * time.Millisecond
	for _, path := range getPaths {
		t.Run(path.name, func(t *testing.T) {
			opts := path.opts
			opts.ReadTimeout = readTimeout
			p, px, _ := slowLinkPool(t, srv, opts, "trickled", 100)
			px.SetSlice(faultproxy.ToClient, 1, 4*readTimeout) // a byte, then silence
			start := time.Now()
			_, err := path.get(context.Background(), p, "trickled")
			took := time.Since(start)
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			assert.GreaterOrEqual(t, took, readTimeout-readTimeout/100, "failed after %v", took)
			assert.Less(t, took, readTimeout+700*time.Millisecond, "failed after %v, want about ReadTimeout", took)
		})
	}
}

// TestAPeerThatTricklesForeverIsCutOffAtTheReplyCap: a byte every half
// ReadTimeout is never silent for long enough to fail, so without a ctx
// deadline a reply is capped at 10 ReadTimeouts (Bounds.Command).
func TestAPeerThatTricklesForeverIsCutOffAtTheReplyCap(t *testing.T) {
	srv := redistest.Start(t)
	const readTimeout = 100 * time.Millisecond
	for _, path := range getPaths {
		t.Run(path.name, func(t *testing.T) {
			opts := path.opts
			opts.ReadTimeout = readTimeout
			p, px, _ := slowLinkPool(t, srv, opts, "endless", 10<<10) // 50 s at this pace
			px.SetSlice(faultproxy.ToClient, 1, readTimeout/2)
			start := time.Now()
			_, err := path.get(context.Background(), p, "endless")
			took := time.Since(start)
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			assert.GreaterOrEqual(t, took, 10*readTimeout-readTimeout/10, "cut off after %v", took)
			// The shared connections are watched by the checker, once a
			// second: up to a second more.
			assert.Less(t, took, p.Bounds().Command+time.Second+500*time.Millisecond, "cut off after %v, want within Bounds().Command", took)
		})
	}
}
