package redisalive

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
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
		w := p.waiters.push()
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

// zombieServer is a fake server that names its connections 11, 12... and
// itself by run_id, and answers CLIENT KILL with kill, recording each id it
// kills.
func zombieServer(t *testing.T, runID string, kill func(n int) (string, bool)) (srv *fakeServer, killed *[]string) {
	nextID, kills := int64(10), 0
	killed = new([]string)
	srv = newFakeServer(t, func(cmd []string) (string, bool) {
		switch {
		case len(cmd) == 2 && cmd[0] == "CLIENT" && cmd[1] == "ID":
			nextID++
			return ":" + itoa(nextID) + "\r\n", true
		case len(cmd) == 2 && cmd[0] == "INFO":
			info := "# Server\r\nredis_version:7.0.15\r\nrun_id:" + runID + "\r\n"
			return "$" + itoa(int64(len(info))) + "\r\n" + info + "\r\n", true
		case len(cmd) == 4 && cmd[0] == "CLIENT" && cmd[1] == "KILL":
			kills++
			reply, ok := kill(kills)
			if ok && reply[0] == ':' {
				*killed = append(*killed, cmd[3])
			}
			return reply, ok
		}
		return "+OK\r\n", true
	})
	return srv, killed
}

// TestZombiesSurviveAConnectionThatBreaksWhileKillingThem: an abandoned
// connection leaves the list only once its kill was answered, and a
// connection that breaks mid-kill joins it; the checkout then fences on
// another connection.
func TestZombiesSurviveAConnectionThatBreaksWhileKillingThem(t *testing.T) {
	srv, killed := zombieServer(t, "abc", func(n int) (string, bool) {
		if n == 1 {
			return "", false // the link breaks mid-kill
		}
		return ":1\r\n", true
	})
	p := openPool(t, Options{Addr: srv.addr()})
	p.zombies.add(&conn{addr: srv.addr(), clientID: 7, runID: "abc"})

	c, err := p.get(context.Background(), time.Now(), time.Now().Add(time.Second))
	require.NoError(t, err)
	assert.Equal(t, int64(12), c.clientID, "the second connection serves: the first broke while killing")
	p.put(c, true)
	assert.Equal(t, []string{"7", "11"}, *killed, "the zombie, then the connection that broke killing it")
	assert.False(t, p.zombies.pending(), "zombies left")
	assert.Equal(t, int64(2), p.Stats().ZombiesKilled)
}

// TestZombiesOfAnotherServerAreForgottenNotKilled: ids restart when a
// server does, so an id recorded on one server is never killed on another.
func TestZombiesOfAnotherServerAreForgottenNotKilled(t *testing.T) {
	srv, killed := zombieServer(t, "new", func(int) (string, bool) { return ":1\r\n", true })
	p := openPool(t, Options{Addr: srv.addr()})
	p.zombies.add(&conn{addr: srv.addr(), clientID: 11, runID: "old"})
	_, err := p.Do(context.Background(), "SET", "k", "v")
	require.NoError(t, err)
	assert.Empty(t, *killed, "killed on a server that never had them")
	assert.False(t, p.zombies.pending(), "zombies left")
}

// TestAServerRefusingClientKillTurnsFencingOffWithoutFailingCallers: an
// ACL without CLIENT KILL costs the fence, never a caller's command.
func TestAServerRefusingClientKillTurnsFencingOffWithoutFailingCallers(t *testing.T) {
	srv, _ := zombieServer(t, "abc", func(int) (string, bool) {
		return "-NOPERM this user has no permissions to run the 'client|kill' command\r\n", true
	})
	var log testkit.LogBuffer
	p := openPool(t, Options{Addr: srv.addr(), Logger: slog.New(slog.NewTextHandler(&log, nil))})
	p.zombies.add(&conn{addr: srv.addr(), clientID: 7, runID: "abc"})
	_, err := p.Do(context.Background(), "SET", "k", "v")
	require.NoError(t, err)
	assert.False(t, p.zombies.pending(), "zombies left")
	p.zombies.add(&conn{addr: srv.addr(), clientID: 8, runID: "abc"})
	assert.False(t, p.zombies.pending(), "recorded although the server refuses to kill")
	assert.Contains(t, log.String(), "refuses CLIENT KILL")
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
	p := openPool(t, Options{Addr: srv.addr()})
	_, _, err := p.BRPop(context.Background(), "q")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "%!")
	assert.Contains(t, err.Error(), "3 elements")
}

// TestEveryCallGivenANilContextReturnsAnError: a nil context is a bug in
// the caller, reported as an error instead of a panic deep inside.
func TestEveryCallGivenANilContextReturnsAnError(t *testing.T) {
	srv := newFakeServer(t, nil)
	p := openPool(t, Options{Addr: srv.addr()})
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
		assert.True(t, errors.Is(err, ErrNilContext), "%s: got %v, want the nil-context error", name, err)
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

// TestAReusedWaiterIsNotWokenByItsTimersLastTick: a waiter's timer is
// reset for each wait. Under GODEBUG=asynctimerchan=1, which a main
// module older than Go 1.23 gets, a tick from a timer that fired unread
// stays in its channel through Stop and Reset; the next wait must not take
// it for its own deadline. The test runs itself again under that setting,
// where it fails if wait believes the old tick.
func TestAReusedWaiterIsNotWokenByItsTimersLastTick(t *testing.T) {
	if os.Getenv("GODEBUG") != "asynctimerchan=1" {
		cmd := exec.Command(os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.count", "1", "-test.v")
		cmd.Env = append(os.Environ(), "GODEBUG=asynctimerchan=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
			t.Fatalf("under GODEBUG=asynctimerchan=1: %v\n%s", err, out)
		}
	}
	w := waiterPool.Get().(*waiter)
	w.timer = time.NewTimer(time.Millisecond)
	time.Sleep(20 * time.Millisecond) // it fires; nobody reads the tick
	handed := &conn{}
	time.AfterFunc(100*time.Millisecond, func() { w.ch <- handed })
	start := time.Now()
	c, end := w.wait(nil, start.Add(10*time.Second), true)
	if end != endHanded || c != handed {
		t.Fatalf("after %v: wait ended %d, want the connection handed at 100ms (%d)", time.Since(start), end, endHanded)
	}
}

// TestOnlyAConnectionStraightFromDoSkipsTheCheckoutPeek: each case checks
// out a connection the server has closed, which the peek finds. Only one Do
// returned within freshReply of reading its reply skips the peek, and so is
// handed out; every other is found dead and closed.
func TestOnlyAConnectionStraightFromDoSkipsTheCheckoutPeek(t *testing.T) {
	srv := redistest.Start(t)
	p := openPool(t, Options{Addr: srv.Addr()})
	ctx := context.Background()
	topReplied := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.idle[len(p.idle)-1].replied
	}
	_, err := p.Do(ctx, "PING")
	require.NoError(t, err)
	require.True(t, topReplied(), "Do returned its connection without the mark")
	h, err := p.Get(ctx)
	require.NoError(t, err)
	_, err = h.Do("PING")
	require.NoError(t, err)
	require.NoError(t, h.Close())
	require.False(t, topReplied(), "a Get handle returned its connection with the mark")

	for _, tc := range []struct {
		name           string
		replied        bool
		returnedBefore time.Duration
		wantPeek       bool
	}{
		{"straight from Do", true, 0, false},
		{"from Do, too long ago", true, 2 * freshReply, true},
		{"from a Get handle", false, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			c, err := p.get(ctx, start, start.Add(time.Second))
			require.NoError(t, err)
			srv.Do(t, "CLIENT", "KILL", "ID", c.clientID)
			testkit.WaitFor(t, 2*time.Second, "the server's close seen by a peek", func() bool { return c.check.check() != nil })
			now := time.Now()
			c.replied, c.returnedAt = tc.replied, now.Add(-tc.returnedBefore)
			err = p.checkout(ctx, c, now)
			if tc.wantPeek {
				require.Error(t, err, "the checkout handed out a connection the server closed")
				require.NotErrorIs(t, err, errExpired)
				return
			}
			require.NoError(t, err)
			require.False(t, c.replied, "the mark outlived the checkout")
			p.put(c, false)
		})
	}
}
