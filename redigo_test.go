package redisalive_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/pooltest"
	"github.com/redisalive/redisalive/internal/redistest"
)

// newRedigoPool opens a Pool on srv, closed when the test ends, and
// returns it with a redigo pool over it.
func newRedigoPool(t *testing.T, srv *redistest.Server, opts redisalive.Options) (*redisalive.Pool, *redis.Pool) {
	t.Helper()
	p := pooltest.OnServer(t, srv, opts)
	return p, p.RedigoPool()
}

// holdOne checks out a connection of rp and proves it with a PING.
func holdOne(t *testing.T, rp *redis.Pool) redis.Conn {
	t.Helper()
	c := rp.Get()
	_, err := c.Do("PING")
	require.NoError(t, err)
	return c
}

func TestRedigoPoolGetWaitsForAConnectionReturnedWithinPoolTimeout(t *testing.T) {
	srv := redistest.Start(t)
	p, rp := newRedigoPool(t, srv, redisalive.Options{MaxActive: 1, PoolTimeout: 5 * time.Second})
	held := holdOne(t, rp)

	got := make(chan redis.Conn, 1)
	go func() { got <- rp.Get() }()
	waitForValue(t, 2*time.Second, "callers waiting", 1, func() int { return p.Stats().Waiting })
	require.NoError(t, held.Close())
	var c redis.Conn
	select {
	case c = <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("Get: still waiting 2s after a connection was returned")
	}
	defer c.Close()
	require.NoError(t, c.Err())
	_, err := c.Do("PING")
	require.NoError(t, err)
	s := p.Stats()
	assert.Equal(t, int64(1), s.Dials, "Dials: the returned connection is lent again")
	assert.Equal(t, int64(1), s.WaitCount, "WaitCount")
	assert.Zero(t, s.PoolTimeouts, "PoolTimeouts")
}

func TestRedigoPoolGetFailsWithErrPoolTimeoutAfterPoolTimeout(t *testing.T) {
	srv := redistest.Start(t)
	const poolTimeout = 300 * time.Millisecond
	p, rp := newRedigoPool(t, srv, redisalive.Options{MaxActive: 1, PoolTimeout: poolTimeout})
	held := holdOne(t, rp)
	defer held.Close()

	start := time.Now()
	c := rp.Get()
	took := time.Since(start)
	require.ErrorIs(t, c.Err(), redisalive.ErrPoolTimeout)
	var tErr *redisalive.PoolTimeoutError
	require.ErrorAs(t, c.Err(), &tErr)
	assert.Equal(t, 1, tErr.InUse, "PoolTimeoutError.InUse")
	_, err := c.Do("PING")
	assert.ErrorIs(t, err, redisalive.ErrPoolTimeout, "a command on the connection Get returned")
	assert.NoError(t, c.Close())
	assert.GreaterOrEqual(t, took, poolTimeout, "Get's wait")
	assert.Less(t, took, poolTimeout+time.Second, "Get's wait")

	start = time.Now()
	_, err = rp.GetContext(context.Background())
	assert.ErrorIs(t, err, redisalive.ErrPoolTimeout, "GetContext with no deadline")
	assert.GreaterOrEqual(t, time.Since(start), poolTimeout, "GetContext's wait")
	assert.Equal(t, int64(2), p.Stats().PoolTimeouts, "PoolTimeouts")
}

func TestRedigoPoolGetContextWaitsNoLongerThanItsContext(t *testing.T) {
	srv := redistest.Start(t)
	_, rp := newRedigoPool(t, srv, redisalive.Options{MaxActive: 1, PoolTimeout: time.Minute})
	held := holdOne(t, rp)
	defer held.Close()

	const wait = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	_, err := rp.GetContext(ctx)
	took := time.Since(start)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, redisalive.ErrPoolTimeout)
	assert.GreaterOrEqual(t, took, wait, "GetContext's wait")
	assert.Less(t, took, wait+time.Second, "GetContext's wait")

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(wait, cancel)
	_, err = rp.GetContext(ctx)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestRedigoPoolConnectionsAreCountedInThePoolsStats(t *testing.T) {
	srv := redistest.Start(t)
	p, rp := newRedigoPool(t, srv, redisalive.Options{})
	conns := []redis.Conn{holdOne(t, rp), holdOne(t, rp), holdOne(t, rp)}
	s := p.Stats()
	assert.Equal(t, 3, s.Active, "Stats.Active with three lent")
	assert.Equal(t, 3, s.InUse, "Stats.InUse with three lent")
	assert.Equal(t, int64(3), s.Dials, "Stats.Dials")
	assert.Equal(t, 3, rp.ActiveCount(), "ActiveCount with three lent")
	assert.Equal(t, 3, srv.ConnectedClients(t), "server-side clients")

	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	s = p.Stats()
	assert.Equal(t, 3, s.Idle, "Stats.Idle: the connections went back to the Pool")
	assert.Equal(t, 0, s.InUse, "Stats.InUse")
	assert.Equal(t, 0, rp.ActiveCount(), "ActiveCount after all came back")
	assert.Equal(t, 0, rp.IdleCount(), "IdleCount: nothing idles in the redigo pool")
	assert.Equal(t, redis.PoolStats{}, rp.Stats(), "the redigo pool's own Stats")

	c := holdOne(t, rp)
	defer c.Close()
	assert.Equal(t, int64(3), p.Stats().Dials, "Stats.Dials: an idle connection of the Pool was lent")
}

func TestPoolCloseLeavesNoConnectionOfItsRedigoPoolOpen(t *testing.T) {
	srv := redistest.Start(t)
	p, rp := newRedigoPool(t, srv, redisalive.Options{})
	held := holdOne(t, rp)
	defer held.Close()
	returned := holdOne(t, rp)
	require.NoError(t, returned.Close())
	require.Equal(t, 2, srv.ConnectedClients(t), "server-side clients")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := p.Shutdown(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "Shutdown with a connection still lent")
	srv.WaitConnectedClients(t, 0, 2*time.Second)
	_, err = held.Do("PING")
	assert.Error(t, err, "a command on a connection Shutdown closed")
	err = held.Close() // reports the closed socket, as redigo's Close does
	assert.ErrorContains(t, err, "reading pending replies on "+srv.Addr(), "Close's error names what failed")
	assert.Equal(t, 0, p.Stats().Active, "Stats.Active after the last connection came back")

	c := rp.Get()
	assert.ErrorIs(t, c.Err(), redisalive.ErrPoolClosed, "Get after the Pool closed")
	c.Close()
}

func TestRedigoPoolCloseLeavesThePoolOpen(t *testing.T) {
	srv := redistest.Start(t)
	p, rp := newRedigoPool(t, srv, redisalive.Options{})
	lent := holdOne(t, rp)
	require.NoError(t, rp.Close())

	assert.Error(t, rp.Get().Err(), "Get on the closed redigo pool")
	_, err := lent.Do("PING")
	assert.NoError(t, err, "a command on a connection lent before Close")
	require.NoError(t, lent.Close())
	assert.Equal(t, 1, p.Stats().Idle, "Stats.Idle: the lent connection came back to the Pool")
	_, err = p.Do(context.Background(), "PING")
	assert.NoError(t, err, "Do on the Pool")
	c := p.RedigoPool().Get()
	defer c.Close()
	_, err = c.Do("PING")
	assert.NoError(t, err, "a command through a new redigo pool")
	assert.Equal(t, int64(1), p.Stats().Dials, "Stats.Dials")
}

func TestRedigoPoolLendsNoConnectionTheServerClosed(t *testing.T) {
	srv := redistest.Start(t)
	p, rp := newRedigoPool(t, srv, redisalive.Options{})
	conns := make([]redis.Conn, 4)
	for i := range conns {
		conns[i] = holdOne(t, rp)
	}
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	require.Equal(t, 4, p.Stats().Idle, "Stats.Idle")
	srv.Do(t, "CLIENT", "KILL", "TYPE", "normal")
	for i := range 4 {
		c := rp.Get()
		_, err := c.Do("PING")
		assert.NoError(t, err, "Get %d: the first try after the server closed the idle connections", i)
		require.NoError(t, c.Close())
	}
	assert.Equal(t, int64(4), p.Stats().DeadClosed, "Stats.DeadClosed")
}

// TestRedigoPoolCleansATransactionBeforeTheConnectionIsLentAgain: a
// connection returned inside WATCH or MULTI comes back to the Pool clean,
// and the next borrower's transaction on it runs: neither a WATCH left
// behind (its key was changed, which would abort the EXEC) nor a MULTI
// left open (which would make the next MULTI an error) reaches it.
func TestRedigoPoolCleansATransactionBeforeTheConnectionIsLentAgain(t *testing.T) {
	srv := redistest.Start(t)
	p, rp := newRedigoPool(t, srv, redisalive.Options{MaxActive: 1})
	for _, open := range []string{"WATCH", "MULTI"} {
		c := holdOne(t, rp)
		if open == "WATCH" {
			_, err := c.Do("WATCH", "k")
			require.NoError(t, err)
		} else {
			_, err := c.Do("MULTI")
			require.NoError(t, err)
		}
		require.NoError(t, c.Send("SET", "k", "after "+open))
		require.NoError(t, c.Close(), "closing inside %s", open)
		require.Equal(t, 1, p.Stats().Idle, "Stats.Idle: the connection came back to the Pool after %s", open)

		c = rp.Get()
		require.NoError(t, c.Send("MULTI"))
		require.NoError(t, c.Send("PING"))
		reply, err := redis.Values(c.Do("EXEC"))
		require.NoError(t, err, "the next borrower's transaction after %s", open)
		assert.Equal(t, []any{"PONG"}, reply, "the next borrower's EXEC after %s", open)
		require.NoError(t, c.Close())
	}
	s := p.Stats()
	assert.Equal(t, int64(1), s.Dials, "Stats.Dials: one connection served every borrower")
	assert.Zero(t, s.StateClosed, "Stats.StateClosed")
	got, err := redis.String(srv.Do(t, "GET", "k"), nil)
	require.NoError(t, err)
	assert.Equal(t, "after WATCH", got, "k: the SET after WATCH ran, the one queued after MULTI did not")
}

func TestRedigoPoolClosesASubscribedConnectionInsteadOfLendingIt(t *testing.T) {
	srv := redistest.Start(t)
	p, rp := newRedigoPool(t, srv, redisalive.Options{MaxActive: 1, ReadTimeout: 500 * time.Millisecond})
	psc := redis.PubSubConn{Conn: rp.Get()}
	require.NoError(t, psc.Subscribe("ch"))
	require.NoError(t, psc.PSubscribe("p*"))
	for range 2 {
		require.IsType(t, redis.Subscription{}, psc.Receive())
	}
	require.NoError(t, psc.Close())
	s := p.Stats()
	assert.Equal(t, int64(1), s.StateClosed, "Stats.StateClosed")
	assert.Equal(t, 0, s.Active, "Stats.Active")

	c := holdOne(t, rp)
	defer c.Close()
	reply, err := redis.String(c.Do("SET", "k", "v"))
	require.NoError(t, err)
	assert.Equal(t, "OK", reply, "a command's reply on the next connection")
	assert.Equal(t, int64(2), p.Stats().Dials, "Stats.Dials: the next borrower got a new connection")
	srv.WaitConnectedClients(t, 1, 2*time.Second)
}

func TestRedigoPoolGivesBlockingCommandsAndSubscriptionsTheirTime(t *testing.T) {
	srv := redistest.Start(t)
	_, rp := newRedigoPool(t, srv, redisalive.Options{ReadTimeout: 500 * time.Millisecond, PubSubPingInterval: 100 * time.Millisecond})
	c := rp.Get()
	start := time.Now()
	reply, err := c.Do("BLPOP", "empty", 1.5)
	took := time.Since(start)
	c.Close()
	require.NoError(t, err, "a block longer than ReadTimeout")
	assert.Nil(t, reply)
	assert.GreaterOrEqual(t, took, 1500*time.Millisecond)

	psc := redis.PubSubConn{Conn: rp.Get()}
	defer psc.Close()
	require.NoError(t, psc.Subscribe("ch"))
	require.IsType(t, redis.Subscription{}, psc.Receive())
	publish := time.AfterFunc(time.Second, func() { srv.Do(t, "PUBLISH", "ch", "late") })
	defer publish.Stop()
	msg, ok := psc.Receive().(redis.Message)
	require.True(t, ok, "a message published twice ReadTimeout later")
	assert.Equal(t, "late", string(msg.Data))
}

// TestRedigoPoolServesManyGoroutinesFromFewConnections: 16 goroutines
// share a Pool of 2 connections through the redigo pool, each waiting its
// turn rather than failing, and each gets its own values back.
func TestRedigoPoolServesManyGoroutinesFromFewConnections(t *testing.T) {
	srv := redistest.Start(t)
	p, rp := newRedigoPool(t, srv, redisalive.Options{MaxActive: 2, PoolTimeout: 10 * time.Second})
	errs := make(chan error, 16)
	for g := range 16 {
		go func() {
			errs <- func() error {
				for i := range 20 {
					c := rp.Get()
					key, v := fmt.Sprint("g", g), fmt.Sprintf("g%d-i%d", g, i)
					_, err := c.Do("SET", key, v)
					got, err2 := redis.String(c.Do("GET", key))
					if err := errors.Join(err, err2, c.Close()); err != nil {
						return err
					}
					if got != v {
						return fmt.Errorf("caller %d round %d: got %q, want %q", g, i, got, v)
					}
				}
				return nil
			}()
		}()
	}
	for range 16 {
		assert.NoError(t, <-errs)
	}
	s := p.Stats()
	assert.LessOrEqual(t, s.Dials, int64(2), "Stats.Dials")
	assert.Positive(t, s.WaitCount, "Stats.WaitCount: callers waited for a connection")
	assert.Zero(t, s.PoolTimeouts, "Stats.PoolTimeouts")
}
