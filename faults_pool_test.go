//go:build linux

package redisalive_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/faultnet"
	"github.com/redisalive/redisalive/internal/pooltest"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

// The fault cases of the pool's core: checkout, health checks, keepalive,
// TCP_USER_TIMEOUT, Close, restarts and slow servers, the connections
// abandoned on a dead link. Subtests of TestFaults, on its harness
// (faults_test.go).

// 2. Idle connections on a dead link are found by the health checker's
// PING, which gives up after ReadTimeout, within HealthCheckInterval +
// ReadTimeout of going idle; a Do meanwhile fails at its own deadline.
func faultTestHealthCheckUnderBlackhole(t *testing.T, startServer func(testing.TB, ...string) *redistest.Server) {
	srv := startServer(t)
	const interval, readTimeout = time.Second, 500 * time.Millisecond
	p := pooltest.OnServer(t, srv, redisalive.Options{HealthCheckInterval: interval, ReadTimeout: readTimeout})
	// The time of each close is taken on the goroutine that closes, not
	// by a poller that a loaded machine may wake late.
	var mu sync.Mutex
	var deadAt []time.Time
	p.AddHook(redisalive.Hook{Closed: func(reason redisalive.CloseReason) {
		if reason == redisalive.CloseDead {
			mu.Lock()
			deadAt = append(deadAt, time.Now())
			mu.Unlock()
		}
	}})
	fillIdle(t, p, 3)
	returned := time.Now()

	heal := faultnet.Blackhole(t, srv.Port(), faultnet.Both)
	blackholed := time.Now()

	// This Do takes one idle connection (the checkout does not PING one
	// that was active less than HealthCheckInterval ago) and its command
	// goes unanswered: it must fail at the context's deadline.
	const doDeadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), doDeadline)
	start := time.Now()
	_, err := p.Do(ctx, "PING")
	took := time.Since(start)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	faultAssertElapsed(t, "Do on an idle connection during the blackhole", took, doDeadline-10*time.Millisecond, doDeadline+faultSlack/2)

	testkit.WaitFor(t, 2*faultPlus20(interval+readTimeout), "DeadClosed == 2", func() bool { return p.Stats().DeadClosed == 2 })
	mu.Lock()
	closed := deadAt[len(deadAt)-1]
	mu.Unlock()
	faultAssertElapsed(t, "health checker closing the dead idle connections after the blackhole",
		closed.Sub(blackholed), 0, faultPlus20(interval+readTimeout))
	// The PING cannot fail before its ReadTimeout, which it is only sent a
	// HealthCheckInterval after the connection went idle.
	faultAssertElapsed(t, "health checker closing them after they went idle",
		closed.Sub(returned), interval+readTimeout-100*time.Millisecond, faultPlus20(interval+readTimeout))

	// No idle connection is left: this Do dials into the blackhole and
	// must also fail at its deadline.
	ctx, cancel = context.WithTimeout(context.Background(), doDeadline)
	start = time.Now()
	_, err = p.Do(ctx, "PING")
	took = time.Since(start)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	faultAssertElapsed(t, "Do dialling during the blackhole", took, doDeadline-10*time.Millisecond, doDeadline+faultSlack/2)

	s := p.Stats()
	assert.Equal(t, int64(2), s.DeadClosed, "DeadClosed")
	assert.Equal(t, int64(1), s.CanceledClosed, "CanceledClosed: the first Do's ctx cut its command")
	assert.Zero(t, s.ErrorClosed, "ErrorClosed")
	assert.GreaterOrEqual(t, s.HealthChecks, int64(2), "HealthChecks")
	assert.Equal(t, 0, s.Active, "Active")

	heal()
	_, err = p.Do(context.Background(), "PING")
	require.NoError(t, err, "Do after healing")
}

// 3. With the health checker and read deadlines out of the way, the kernel
// alone ends a silent connection within KeepAlive.Idle +
// KeepAlive.Interval*KeepAlive.Count of its last traffic.
//
// The pool leaves TCPUserTimeout at its derived default, Idle +
// Interval*Count. Linux then ends keepalive probing when the time since the
// last data received reaches the user timeout (with at least one probe
// out) instead of after Count probes; with the derived value both rules
// fire at the same moment, the check after the Count-th probe, so the bound
// is the same. Setting TCPUserTimeout large instead would make the kernel
// ignore Count and probe for that long.
func faultTestKeepAliveAlone(t *testing.T) {
	srv := redistest.Start(t)
	ka := redisalive.KeepAlive{Idle: time.Second, Interval: time.Second, Count: 3}
	bound := ka.Idle + ka.Interval*time.Duration(ka.Count)
	p := pooltest.OnServer(t, srv, redisalive.Options{
		KeepAlive:           ka,
		HealthCheckInterval: time.Hour,
		ReadTimeout:         30 * time.Second,
		WriteTimeout:        30 * time.Second,
	})
	c, err := p.Get(context.Background())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Do("PING")
	require.NoError(t, err)
	lastTraffic := time.Now()
	require.Equal(t, 1, clientStates(t, srv.Port())["ESTABLISHED"], "client sockets before the blackhole")

	heal := faultnet.Blackhole(t, srv.Port(), faultnet.Both)
	defer heal()
	faultAssertKeepAliveKill(t, srv, c, lastTraffic, bound)
	require.NoError(t, c.Close())
	assert.Equal(t, int64(1), p.Stats().ErrorClosed, "ErrorClosed")

	heal()
	_, err = p.Do(context.Background(), "PING")
	require.NoError(t, err, "Do after healing")
}

// 4. Keepalive cannot help while written data is unacknowledged: then
// TCP_USER_TIMEOUT ends the connection, long before ReadTimeout.
//
// Linux counts the user timeout from the first retransmission by the
// retransmission timer, not from the write: on loopback that comes after a
// tail loss probe (about 200 ms for a lone segment) and one RTO (at least
// 200 ms), so the write fails about 0.45 s after TCPUserTimeout. With 3 s
// that offset fits in the 20% margin; with 2 s it would leave only the
// fixed slack.
func faultTestUserTimeout(t *testing.T) {
	srv := redistest.Start(t)
	const userTimeout, readTimeout = 3 * time.Second, 30 * time.Second
	p := pooltest.OnServer(t, srv, redisalive.Options{
		TCPUserTimeout:      userTimeout,
		KeepAlive:           redisalive.KeepAlive{Idle: time.Hour, Interval: time.Hour},
		HealthCheckInterval: time.Hour,
		ReadTimeout:         readTimeout,
		WriteTimeout:        readTimeout,
	})
	fillIdle(t, p, 1)

	heal := faultnet.Blackhole(t, srv.Port(), faultnet.Both)
	start := time.Now()
	_, err := p.Do(context.Background(), "SET", "k", "v")
	took := time.Since(start)
	require.ErrorIs(t, err, syscall.ETIMEDOUT, "the kernel's verdict on the socket")
	faultAssertElapsed(t, "write into the blackhole failing", took, userTimeout, faultPlus20(userTimeout))
	assert.Equal(t, int64(1), p.Stats().ErrorClosed, "ErrorClosed")

	heal()
	_, err = p.Do(context.Background(), "PING")
	require.NoError(t, err, "Do after healing")
}

// 5. Connections the server closes for idleness (its timeout, or a proxy's
// or load balancer's) sit in CLOSE_WAIT until the pool looks at them. With
// default options (HealthCheckInterval 15 s), the checker's peek, once a
// second, closes them within about a second of the server's close, without
// a PING; a checkout that meets one first skips it, so every Do succeeds on
// its first try. Over TLS the peek sees records rather than replies, which
// the checker lets crypto/tls read.
func faultTestServerIdleTimeout(t *testing.T, startServer func(testing.TB, ...string) *redistest.Server) {
	srv := startServer(t)
	srv.Do(t, "CONFIG", "SET", "timeout", "1") // closes clients idle > 1 s
	p := pooltest.OnServer(t, srv, redisalive.Options{})
	serverClosed := func() {
		testkit.WaitFor(t, 5*time.Second, "the server to close the idle connections", func() bool {
			return srv.ConnectedClients(t) == 0
		})
	}

	t.Log("checker path")
	fillIdle(t, p, 4)
	serverClosed()
	closed := time.Now()
	testkit.WaitFor(t, 2*time.Second+faultSlack, "every connection closed, no socket in CLOSE_WAIT", func() bool {
		return p.Stats().Active == 0 && clientStates(t, srv.Port())["CLOSE_WAIT"] == 0
	})
	faultAssertElapsed(t, "CLOSE_WAIT sockets gone after the server closed them", time.Since(closed), 0, 2*time.Second)
	s := p.Stats()
	assert.Equal(t, int64(4), s.DeadClosed, "DeadClosed")
	assert.Zero(t, s.HealthChecks, "HealthChecks: a peek needs no PING")

	t.Log("checkout path")
	fillIdle(t, p, 4)
	serverClosed()
	for i := range 4 {
		_, err := p.Do(context.Background(), "PING")
		require.NoError(t, err, "Do %d after the server closed the idle connections", i)
	}
	s = p.Stats()
	assert.Equal(t, int64(8), s.DeadClosed, "DeadClosed: found by the checker or the checkout")
	assert.Zero(t, s.ErrorClosed, "ErrorClosed: no caller met a closed connection")
}

// 6. A reset connection fails its command as soon as the RST arrives, and
// the pool dials afresh once the server is reachable again. The RST is the
// answer to the client's next packet (faultnet.Reset rejects
// client-to-server packets), so the command that sends it is the one that
// must fail.
func faultTestResetInUse(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{})
	c, err := p.Get(context.Background())
	require.NoError(t, err)
	_, err = c.Do("PING")
	require.NoError(t, err)

	heal := faultnet.Reset(t, srv.Port())
	const bound = 100 * time.Millisecond
	start := time.Now()
	_, err = c.Do("PING")
	took := time.Since(start)
	require.ErrorIs(t, err, syscall.ECONNRESET)
	faultAssertElapsed(t, "command on the reset connection failing", took, 0, faultPlus20(bound))
	require.NoError(t, c.Close())
	assert.Equal(t, int64(1), p.Stats().ErrorClosed, "ErrorClosed")

	// While the server resets everything, dialling is refused at once.
	start = time.Now()
	_, err = p.Do(context.Background(), "PING")
	took = time.Since(start)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	faultAssertElapsed(t, "Do while resets continue", took, 0, faultPlus20(bound))

	heal()
	_, err = p.Do(context.Background(), "PING")
	require.NoError(t, err, "the first Do after healing")
}

// 7. A caller holding every connection while asking for another gets
// ErrPoolTimeout at its deadline, not a hang; the pool is whole afterwards.
func faultTestNestedCheckout(t *testing.T) {
	srv := redistest.Start(t)
	const poolTimeout = 200 * time.Millisecond
	p := pooltest.OnServer(t, srv, redisalive.Options{MaxActive: 2, PoolTimeout: poolTimeout})
	outer1, err := p.Get(context.Background())
	require.NoError(t, err)
	outer2, err := p.Get(context.Background())
	require.NoError(t, err)

	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	start := time.Now()
	_, err = p.Get(ctx)
	took := time.Since(start)
	cancel()
	require.ErrorIs(t, err, redisalive.ErrPoolTimeout)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	faultAssertElapsed(t, "nested Get with a deadline", took, deadline-10*time.Millisecond, faultPlus20(deadline))

	// Without a context deadline, PoolTimeout bounds the wait.
	start = time.Now()
	_, err = p.Do(context.Background(), "PING")
	took = time.Since(start)
	require.ErrorIs(t, err, redisalive.ErrPoolTimeout)
	faultAssertElapsed(t, "nested Do without a deadline", took, poolTimeout-10*time.Millisecond, faultPlus20(poolTimeout))

	require.NoError(t, outer1.Close())
	require.NoError(t, outer2.Close())
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			_, err := p.Do(context.Background(), "SET", fmt.Sprint("k", i), i)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err, "Do after the timeout")
	}
	s := p.Stats()
	assert.Equal(t, int64(2), s.Dials, "Dials: the two connections must have been reused")
	assert.Equal(t, 2, s.Idle, "Idle")
	assert.Equal(t, int64(2), s.PoolTimeouts, "PoolTimeouts")
}

// 8. Close during traffic returns within the bound it documents, ends the
// blocking reads with ErrPoolClosed and leaves no connection on the server.
func faultTestCloseDuringTraffic(t *testing.T) {
	srv := redistest.Start(t)
	opts := redisalive.Options{
		DialTimeout:  time.Second,
		ReadTimeout:  500 * time.Millisecond,
		WriteTimeout: 500 * time.Millisecond,
		BlockSlice:   time.Second,
		MaxActive:    8,
	}
	bound := max(opts.DialTimeout, opts.ReadTimeout+opts.WriteTimeout, opts.BlockSlice+blockGrace)
	baseline := srv.ConnectedClients(t)
	opts.Addr = srv.Addr()
	p, err := redisalive.NewPool(opts)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })

	consumers := []*faultConsumer{faultStartConsumer(t, p, "q"), faultStartConsumer(t, p, "q")}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var workerErrs []error
	var ok int
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				var err error
				if w == 0 && i%10 == 0 {
					_, err = p.Do(context.Background(), "LPUSH", "q", i)
				} else {
					_, err = p.Do(context.Background(), "INCR", fmt.Sprint("n", w))
				}
				mu.Lock()
				if err != nil {
					workerErrs = append(workerErrs, err)
				} else {
					ok++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	faultWaitBlocked(t, srv, 2)
	testkit.WaitFor(t, 5*time.Second, "traffic to flow", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ok >= 200
	})

	start := time.Now()
	err = p.Close()
	took := time.Since(start)
	assert.NoError(t, err, "Close of a pool whose users are all well-behaved")
	faultAssertElapsed(t, "Close during traffic", took, 0, faultPlus20(bound))

	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatal("Do workers still running 2s after Close returned")
	}
	for _, err := range workerErrs {
		assert.ErrorIs(t, err, redisalive.ErrPoolClosed, "Do worker error")
	}
	for _, c := range consumers {
		select {
		case <-c.done:
		case <-time.After(2 * time.Second):
			t.Fatal("BRPop consumer still running 2s after Close returned")
		}
		errs := c.errors()
		if assert.Len(t, errs, 1, "BRPop errors") {
			assert.ErrorIs(t, errs[0], redisalive.ErrPoolClosed, "BRPop error after Close")
		}
	}
	assert.Equal(t, 0, p.Stats().Active, "Active after Close")
	srv.WaitConnectedClients(t, baseline, 2*time.Second)

	start = time.Now()
	assert.NoError(t, p.Close(), "second Close")
	assert.Less(t, time.Since(start), 50*time.Millisecond, "second Close must return at once")
}

// 9. A server restart fails the calls in flight fast, hangs none, and the
// pool, including a blocked faultConsumer, recovers by itself.
func faultTestServerRestart(t *testing.T) {
	srv := redistest.Start(t)
	opts := redisalive.Options{
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  500 * time.Millisecond,
		WriteTimeout: 500 * time.Millisecond,
	}
	p := pooltest.OnServer(t, srv, opts)
	cons := faultStartConsumer(t, p, "q")

	const callDeadline = time.Second
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var slowest time.Duration
	var ok, failed int
	for w := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
				start := time.Now()
				_, err := p.Do(ctx, "INCR", fmt.Sprint("n", w))
				took := time.Since(start)
				cancel()
				mu.Lock()
				slowest = max(slowest, took)
				if err != nil {
					failed++
				} else {
					ok++
				}
				mu.Unlock()
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait() // every call is bounded by callDeadline
	}()
	faultWaitBlocked(t, srv, 1)
	testkit.WaitFor(t, 5*time.Second, "traffic to flow", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ok >= 100
	})

	srv.Restart(t)
	up := time.Now()
	var attempts int
	for {
		attempts++
		_, err := p.Do(context.Background(), "PING")
		if err == nil {
			break
		}
		if time.Since(up) > 5*time.Second {
			t.Fatalf("Do still failing 5s after the restart: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	faultAssertElapsed(t, "first successful Do after the restart", time.Since(up), 0, faultPlus20(opts.DialTimeout))
	assert.Equal(t, 1, attempts, "Do attempts after the restart: dead idle connections must be skipped at checkout")

	pushed := faultPush(t, srv, "q", "after")
	v, at := cons.receive(t, 10*time.Second)
	took := at.Sub(pushed)
	assert.Equal(t, "after", v)
	// The blocking reconnect backs off at most one second between tries.
	faultAssertElapsed(t, "BRPop delivery after the restart", took, 0, faultPlus20(time.Second))

	okBefore := func() int { mu.Lock(); defer mu.Unlock(); return ok }()
	testkit.WaitFor(t, 2*time.Second, "workers to succeed again", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ok > okBefore+20
	})
	mu.Lock()
	t.Logf("Do calls during the test: %d succeeded, %d failed", ok, failed)
	faultAssertElapsed(t, "slowest Do across the restart", slowest, 0, callDeadline+faultSlack)
	mu.Unlock()
}

// 10. A command stuck behind a slow server returns at its context deadline;
// its connection, whose reply is still to come, is closed, so no later
// command reads that reply as its own.
func faultTestSlowServer(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{})
	_, err := p.Do(context.Background(), "SET", "k", "v")
	require.NoError(t, err)

	admin, err := redis.Dial("tcp", srv.Addr(), redis.DialReadTimeout(10*time.Second), redis.DialWriteTimeout(time.Second))
	require.NoError(t, err)
	defer admin.Close()
	const sleep = 2 * time.Second
	require.NoError(t, admin.Send("DEBUG", "SLEEP", sleep.Seconds()))
	require.NoError(t, admin.Flush())
	faultWaitServerStalled(t, srv)

	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	start := time.Now()
	_, err = p.Do(ctx, "ECHO", "stale")
	took := time.Since(start)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	faultAssertElapsed(t, "Do against the sleeping server", took, deadline-10*time.Millisecond, deadline+faultSlack/2)
	s := p.Stats()
	assert.Equal(t, int64(1), s.CanceledClosed, "CanceledClosed: the interrupted connection must be discarded")
	assert.Equal(t, 0, s.Active, "Active")

	reply, err := redis.String(admin.Receive())
	require.NoError(t, err, "DEBUG SLEEP")
	require.Equal(t, "OK", reply)
	v, err := redis.String(p.Do(context.Background(), "GET", "k"))
	require.NoError(t, err)
	assert.Equal(t, "v", v, "GET after the slow command: got another command's reply")
	assert.Equal(t, int64(2), p.Stats().Dials, "Dials")
}

// faultWaitServerStalled returns once the server has stopped answering (it is
// inside the DEBUG SLEEP just sent): a probe PING that gets no reply within
// 50 ms. A prompt reply means the sleep has not begun; the probe connection
// is then clean and tried again.
func faultWaitServerStalled(t *testing.T, srv *redistest.Server) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		probe, err := redis.Dial("tcp", srv.Addr(), redis.DialReadTimeout(50*time.Millisecond), redis.DialWriteTimeout(time.Second))
		require.NoError(t, err)
		_, err = probe.Do("PING")
		probe.Close()
		if faultIsTimeout(err) {
			return
		}
		require.NoError(t, err, "probe PING")
		if time.Now().After(deadline) {
			t.Fatal("the server is still answering 1s after DEBUG SLEEP was sent")
		}
		time.Sleep(faultPoll)
	}
}

// 12b. Connections the pool abandons on a dead link are closed with a
// reset, which the dead link drops; a server with tcp-keepalive 0 keeps
// them for ever unless it has a reply to resend (the client's kernel then
// answers the resend with a reset). Idle ones (found dead by the health
// check), a busy one (a blocking round) and a shared one (AutoPipeline)
// are all killed on the server by the first checkout after healing, and a
// pool that sends nothing more kills its own at Close.
func faultTestNoZombieOutlivesABlackhole(t *testing.T) {
	srv, admin := faultStartWithSocket(t, "--tcp-keepalive", "0")
	clients := func() int { return faultClients(t, admin) }
	// The health checks' PINGs go out only once the link is dead (setup
	// takes well under the interval), so the server never sees them and has
	// no PONG to resend: those zombies go only if the pool kills them.
	const interval = 2 * time.Second
	opts := redisalive.Options{ReadTimeout: 300 * time.Millisecond, HealthCheckInterval: interval,
		BlockSlice: 300 * time.Millisecond, DialTimeout: 500 * time.Millisecond}
	plain := pooltest.OnServer(t, srv, opts)
	fillIdle(t, plain, 3)
	quiet := pooltest.OnServer(t, srv, opts) // sends nothing after the blackhole
	fillIdle(t, quiet, 2)
	opts.AutoPipeline = true
	piped := pooltest.OnServer(t, srv, opts)
	ctx := context.Background()
	_, err := piped.Do(ctx, "PING")
	require.NoError(t, err)
	cons := faultStartConsumer(t, plain, "zq") // takes one of plain's: 2 left idle
	faultWaitBlocked(t, srv, 1)
	held := plain.Stats().Active + quiet.Stats().Active + piped.Stats().Active
	waitForValue(t, 2*time.Second, "connections on the server", held, clients)
	require.Zero(t, plain.Stats().HealthChecks+quiet.Stats().HealthChecks,
		"health checks before the blackhole: the setup took longer than the interval")

	heal := faultnet.Blackhole(t, srv.Port(), faultnet.Both)
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = piped.Do(short, "ECHO", "into the void")
	cancel()
	require.Error(t, err, "a shared connection's command on a dead link")
	// plain's idle connections go to the health check, or to the consumer's
	// redials, whose kill of the connection it abandoned finds them dead.
	testkit.WaitFor(t, interval+3*time.Second, "the pools to give up every connection they held", func() bool {
		ps, qs := plain.Stats(), quiet.Stats()
		return ps.DeadClosed+ps.ErrorClosed >= 3 && ps.BlockingRedials >= 1 && qs.DeadClosed >= 2
	})
	// Counted as they close: healed before its reset is sent, a connection
	// would reach the server after all.
	testkit.WaitFor(t, 2*time.Second, "the client sockets to be gone", func() bool {
		return clientStates(t, srv.Port())["ESTABLISHED"] == 0
	})
	require.Equal(t, held, clients(), "connections on the server with the link dead: the abandoned ones stay")
	heal()

	_, err = plain.Do(ctx, "PING")
	require.NoError(t, err)
	_, err = piped.Do(ctx, "PING")
	require.NoError(t, err)
	commanded := time.Now()
	testkit.WaitFor(t, 2*time.Second, "the server to hold only what the pools hold", func() bool {
		return clients() == plain.Stats().Active+piped.Stats().Active+2 // quiet's zombies
	})
	faultAssertElapsed(t, "zombies killed after the next command", time.Since(commanded), 0, 2*time.Second)
	assert.GreaterOrEqual(t, plain.Stats().ZombiesKilled, int64(2), "plain: ZombiesKilled, the idle ones at least")
	assert.Equal(t, int64(1), piped.Stats().ZombiesKilled, "piped: ZombiesKilled")

	cons.stop(t)
	for _, p := range []*redisalive.Pool{plain, piped, quiet} {
		require.NoError(t, p.Close())
	}
	waitForValue(t, 2*time.Second, "connections on the server after Close", 0, clients)
	assert.Equal(t, int64(2), quiet.Stats().ZombiesKilled, "quiet: its zombies, killed at Close")
}

// faultClients is the server's count of client connections over TCP, asked
// on admin, its unix socket, which a blackhole of the TCP port leaves alone.
func faultClients(t *testing.T, admin redis.Conn) int {
	t.Helper()
	info, err := redis.String(admin.Do("INFO", "clients"))
	require.NoError(t, err)
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, "connected_clients:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			require.NoError(t, err)
			return n - 1 // admin
		}
	}
	t.Fatal("INFO clients: no connected_clients")
	return 0
}
