package redisalive_test

import (
	"context"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/redistest"
)

// newRedigoPool returns a redigo pool from NewRedigoPool on srv, closed
// when the test ends.
func newRedigoPool(t *testing.T, srv *redistest.Server, opts redisalive.Options) *redis.Pool {
	t.Helper()
	opts.Addr, opts.TLSConfig = srv.Addr(), srv.TLSConfig()
	p, err := redisalive.NewRedigoPool(opts)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func TestRedigoPoolLendsNoConnectionTheServerClosed(t *testing.T) {
	srv := redistest.Start(t)
	p := newRedigoPool(t, srv, redisalive.Options{})
	conns := make([]redis.Conn, 4)
	for i := range conns {
		conns[i] = p.Get()
		_, err := conns[i].Do("PING")
		require.NoError(t, err)
	}
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	require.Equal(t, 4, p.IdleCount())
	srv.Do(t, "CONFIG", "SET", "timeout", "1")
	waitFor(t, 5*time.Second, "the server to close the idle connections", func() bool { return srv.ConnectedClients(t) == 0 })
	for i := range 4 {
		c := p.Get()
		_, err := c.Do("PING")
		assert.NoError(t, err, "Get %d: the first try after the server closed the idle connections", i)
		c.Close()
	}
}

func TestRedigoPoolAtItsLimitFailsAtOnceInsteadOfWaitingForever(t *testing.T) {
	srv := redistest.Start(t)
	p := newRedigoPool(t, srv, redisalive.Options{MaxActive: 1})
	held := p.Get()
	defer held.Close()
	_, err := held.Do("PING")
	require.NoError(t, err)

	start := time.Now()
	c := p.Get()
	assert.ErrorIs(t, c.Err(), redis.ErrPoolExhausted)
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = p.GetContext(ctx)
	assert.ErrorIs(t, err, redis.ErrPoolExhausted)
	assert.Less(t, time.Since(start), 100*time.Millisecond, "both calls must return at once")
}

func TestRedigoPoolGivesBlockingCommandsAndSubscriptionsTheirTime(t *testing.T) {
	srv := redistest.Start(t)
	p := newRedigoPool(t, srv, redisalive.Options{ReadTimeout: 500 * time.Millisecond, PubSubPingInterval: 100 * time.Millisecond})
	c := p.Get()
	start := time.Now()
	reply, err := c.Do("BLPOP", "empty", 1.5)
	took := time.Since(start)
	c.Close()
	require.NoError(t, err, "a block longer than ReadTimeout")
	assert.Nil(t, reply)
	assert.GreaterOrEqual(t, took, 1500*time.Millisecond)

	psc := redis.PubSubConn{Conn: p.Get()}
	defer psc.Close()
	require.NoError(t, psc.Subscribe("ch"))
	require.IsType(t, redis.Subscription{}, psc.Receive())
	publish := time.AfterFunc(time.Second, func() { srv.Do(t, "PUBLISH", "ch", "late") })
	defer publish.Stop()
	msg, ok := psc.Receive().(redis.Message)
	require.True(t, ok, "a message published twice ReadTimeout later")
	assert.Equal(t, "late", string(msg.Data))
}

// TestRedigoPoolReusesAnUnsubscribedConnectionForCommandsAgain: redigo
// unsubscribes a Pub/Sub connection from everything when it is closed and
// keeps it idle. Its replies answer commands again, so a blocking read's
// reply gets its block time, not the quiet wait for messages, whose
// keepalive PING cannot be answered while the server blocks.
func TestRedigoPoolReusesAnUnsubscribedConnectionForCommandsAgain(t *testing.T) {
	srv := redistest.Start(t)
	p := newRedigoPool(t, srv, redisalive.Options{ReadTimeout: 500 * time.Millisecond, PubSubPingInterval: 100 * time.Millisecond})
	psc := redis.PubSubConn{Conn: p.Get()}
	require.NoError(t, psc.Subscribe("ch"))
	require.NoError(t, psc.PSubscribe("p*"))
	for range 2 {
		require.IsType(t, redis.Subscription{}, psc.Receive())
	}
	require.NoError(t, psc.Close())
	require.Equal(t, 1, p.IdleCount(), "redigo keeps the unsubscribed connection")

	c := p.Get()
	defer c.Close()
	require.NoError(t, c.Send("BLPOP", "empty", 1))
	require.NoError(t, c.Flush())
	reply, err := c.Receive()
	require.NoError(t, err, "a block of twice ReadTimeout on the reused connection")
	assert.Nil(t, reply)
	assert.Equal(t, 0, p.IdleCount(), "the same connection")
}

func TestNewRedigoPoolValidatesOptionsAsNewPoolDoes(t *testing.T) {
	_, err := redisalive.NewRedigoPool(redisalive.Options{Addr: "h:1", MaxIdle: -1})
	assert.ErrorIs(t, err, redisalive.ErrInvalidOptions)
	_, err = redisalive.NewRedigoPool(redisalive.Options{})
	assert.ErrorIs(t, err, redisalive.ErrInvalidOptions)
}
