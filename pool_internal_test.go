package redisalive

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckoutWakingAsShutdownClosesItReturnsErrPoolClosed: when a
// waiter's timer fires as Shutdown wakes the waiters, the wait ended
// because the pool closed. Here Shutdown has woken the waiter and its
// deadline has passed before it looks: both are ready, its select picks
// either at random, and a hundred tries meet both.
func TestCheckoutWakingAsShutdownClosesItReturnsErrPoolClosed(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for range 100 {
		p, err := NewPool(Options{Addr: "127.0.0.1:1", MaxActive: 1})
		require.NoError(t, err)
		p.mu.Lock()
		p.numOpen = 1 // the one slot is taken
		w := p.enqueueLocked()
		p.mu.Unlock()
		p.Shutdown(ended)
		start := time.Now()
		_, err = p.await(context.Background(), w, start, start.Add(-time.Millisecond))
		require.ErrorIs(t, err, ErrPoolClosed)
		require.Zero(t, p.counters.poolTimeouts.Load(), "PoolTimeouts")
	}
}

// TestShutdownWithAnEndedContextOfAnIdlePoolSucceeds: with nothing in
// use, Shutdown has nothing to report, however its ctx ended.
func TestShutdownWithAnEndedContextOfAnIdlePoolSucceeds(t *testing.T) {
	for range 100 {
		p, err := NewPool(Options{Addr: "127.0.0.1:1"})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.NoError(t, p.Shutdown(ctx))
	}
}

// TestDiscardDuringShutdownCountsNothing: once the pool is closed every
// connection goes for that reason, so the health checker, like put, does
// not count the closes it makes during shutdown.
func TestDiscardDuringShutdownCountsNothing(t *testing.T) {
	ctx := context.Background()
	srv := newFakeServer(t, nil)
	p, err := NewPool(Options{Addr: srv.addr()})
	require.NoError(t, err)
	c, err := p.get(ctx, time.Now(), time.Now().Add(time.Second))
	require.NoError(t, err)
	ended, cancel := context.WithCancel(ctx)
	cancel()
	p.Shutdown(ended) // c is still out, as if the checker held it
	p.discard(c, CloseDead)
	assert.Zero(t, p.Stats().DeadClosed, "DeadClosed")
}

// TestZombiesSurviveAConnectionThatBreaksWhileKillingThem: the ids of
// abandoned connections leave the list only once their kill was answered,
// and a connection that breaks mid-kill joins them.
func TestZombiesSurviveAConnectionThatBreaksWhileKillingThem(t *testing.T) {
	nextID, kills := int64(10), 0
	var killed []string
	srv := newFakeServer(t, func(cmd []string) (string, bool) {
		switch {
		case len(cmd) == 2 && cmd[0] == "CLIENT" && cmd[1] == "ID":
			nextID++
			return ":" + itoa(nextID) + "\r\n", true
		case len(cmd) == 4 && cmd[0] == "CLIENT" && cmd[1] == "KILL":
			if kills++; kills == 1 {
				return "", false // the link breaks mid-kill
			}
			killed = append(killed, cmd[3])
			return "+OK\r\n", true
		}
		return "+OK\r\n", true
	})
	p, err := NewPool(Options{Addr: srv.addr()})
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	zombies := []int64{7}
	_, err = p.blockingConn(ctx, &zombies)
	require.Error(t, err, "the connection broke while killing")
	assert.Equal(t, []int64{7, 11}, zombies, "the unkilled zombie and the broken connection's own id")

	c, err := p.blockingConn(ctx, &zombies)
	require.NoError(t, err)
	p.put(c, true)
	assert.Empty(t, zombies)
	assert.Equal(t, []string{"7", "11"}, killed)
}

// TestBlockingPopWithAMalformedReplySaysWhat: a reply of the wrong shape
// gets an error that says so, not a formatting artefact.
func TestBlockingPopWithAMalformedReplySaysWhat(t *testing.T) {
	srv := newFakeServer(t, func(cmd []string) (string, bool) {
		if cmd[0] == "BRPOP" {
			return "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n", true
		}
		return "-ERR unknown\r\n", true
	})
	p, err := NewPool(Options{Addr: srv.addr()})
	require.NoError(t, err)
	defer p.Close()
	_, _, err = p.BRPop(context.Background(), "q")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "%!")
	assert.Contains(t, err.Error(), "3 elements")
}

// TestEveryCallGivenANilContextReturnsAnError: a nil context is a bug in
// the caller, reported as an error instead of a panic deep inside.
func TestEveryCallGivenANilContextReturnsAnError(t *testing.T) {
	srv := newFakeServer(t, nil)
	p, err := NewPool(Options{Addr: srv.addr()})
	require.NoError(t, err)
	defer p.Close()
	var nilCtx context.Context
	calls := map[string]func() error{
		"Do":        func() error { _, err := p.Do(nilCtx, "PING"); return err },
		"Get":       func() error { _, err := p.Get(nilCtx); return err },
		"BRPop":     func() error { _, _, err := p.BRPop(nilCtx, "q"); return err },
		"BLMove":    func() error { _, err := p.BLMove(nilCtx, "a", "b", "LEFT", "RIGHT"); return err },
		"Subscribe": func() error { _, err := p.Subscribe(nilCtx, "ch"); return err },
		"Shutdown":  func() error { return p.Shutdown(nilCtx) },
		"DoContext": func() error {
			c, err := p.Get(context.Background())
			require.NoError(t, err)
			defer c.Close()
			_, err = c.(*handle).DoContext(nilCtx, "PING")
			return err
		},
	}
	for name, call := range calls {
		err := call()
		assert.True(t, errors.Is(err, errNilContext), "%s: got %v, want the nil-context error", name, err)
	}
}

func TestSubscriptionCountKeepsShardChannelsApart(t *testing.T) {
	confirm := func(kind string, n int64) any { return []any{[]byte(kind), []byte("ch"), n} }
	for _, tc := range []struct {
		reply     any
		n         int64
		shard, ok bool
	}{
		{confirm("subscribe", 2), 2, false, true},
		{confirm("punsubscribe", 0), 0, false, true},
		{confirm("ssubscribe", 1), 1, true, true},
		{confirm("sunsubscribe", 0), 0, true, true},
		{confirm("message", 0), 0, false, false},
		{[]any{[]byte("unsubscribe"), nil, []byte("0")}, 0, false, false},
		{[]byte("OK"), 0, false, false},
	} {
		n, shard, ok := subscriptionCount(tc.reply)
		assert.Equal(t, []any{tc.n, tc.shard, tc.ok}, []any{n, shard, ok}, "%v", tc.reply)
	}
}
