package redisalive_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/pooltest"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

func TestDoRunsCommandsAndReusesOneConnection(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{})
	ctx := context.Background()
	for range 10 {
		_, err := p.Do(ctx, "SET", "k", "v")
		require.NoError(t, err)
	}
	v, err := redis.String(p.Do(ctx, "GET", "k"))
	require.NoError(t, err)
	assert.Equal(t, "v", v)
	_, err = redis.String(p.Do(ctx, "GET", "missing"))
	assert.ErrorIs(t, err, redis.ErrNil)
	s := p.Stats()
	assert.Equal(t, int64(1), s.Dials, "sequential Do calls should share one connection")
	assert.Equal(t, 1, s.Idle)
}

func TestDoPassesServerErrorsThroughUnwrapped(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{})
	ctx := context.Background()
	_, err := p.Do(ctx, "SET", "k", "v")
	require.NoError(t, err)
	_, err = p.Do(ctx, "LPUSH", "k", "x")
	var serverErr redis.Error
	require.ErrorAs(t, err, &serverErr)
	assert.Contains(t, err.Error(), "WRONGTYPE")
	assert.Equal(t, int64(0), p.Stats().ErrorClosed, "a server error reply must not close the connection")
}

func TestGetReturnsErrPoolTimeoutWhenNestedCheckoutExhaustsPool(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{MaxActive: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()

	outer1, err := p.Get(ctx)
	require.NoError(t, err)
	outer2, err := p.Get(ctx)
	require.NoError(t, err)

	start := time.Now()
	_, err = p.Get(ctx) // the nested checkout: both connections are held above
	waited := time.Since(start)

	require.ErrorIs(t, err, redisalive.ErrPoolTimeout)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var pte *redisalive.PoolTimeoutError
	require.ErrorAs(t, err, &pte)
	assert.Equal(t, 2, pte.InUse)
	assert.Equal(t, 2, pte.MaxActive)
	assert.Contains(t, err.Error(), "2/2 in use")
	assert.Less(t, waited, 2*time.Second, "got a wait of %v, want about the 300ms deadline", waited)
	assert.Equal(t, int64(1), p.Stats().PoolTimeouts)

	require.NoError(t, outer1.Close())
	require.NoError(t, outer2.Close())
	_, err = p.Do(context.Background(), "PING")
	assert.NoError(t, err, "the pool must be usable after the timeout")
}

// TestPoolTimeoutCountsWhatSubscriptionsAndBlockingReadsHold: a pool full
// of Subscriptions and blocking reads is no caller holding a connection
// while asking for another, and the error says which it is.
func TestPoolTimeoutCountsWhatSubscriptionsAndBlockingReadsHold(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{MaxActive: 2})
	sub, err := p.Subscribe(context.Background(), "news")
	require.NoError(t, err)
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	c, err := p.Get(ctx)
	require.NoError(t, err)
	_, err = p.Do(ctx, "PING")
	require.NoError(t, c.Close())
	var pte *redisalive.PoolTimeoutError
	require.ErrorAs(t, err, &pte)
	assert.Equal(t, 1, pte.Subscriptions, "Subscriptions")
	assert.Contains(t, err.Error(), "2/2 in use (1 by Subscriptions), 0 other callers waiting (pool exhausted: is a caller holding a connection while asking for another?)",
		"one connection held by a caller")

	readCtx, stopRead := context.WithCancel(context.Background())
	read := make(chan error, 1)
	go func() {
		_, _, err := p.BRPop(readCtx, "jobs")
		read <- err
	}()
	defer func() {
		stopRead()
		require.ErrorIs(t, <-read, context.Canceled)
	}()
	testkit.WaitFor(t, 2*time.Second, "the blocking read's connection", func() bool { return p.Stats().InUse == 2 })
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = p.Do(ctx, "PING")
	require.ErrorAs(t, err, &pte)
	assert.Equal(t, 1, pte.Subscriptions, "Subscriptions")
	assert.Equal(t, 1, pte.BlockingReads, "BlockingReads")
	assert.Contains(t, err.Error(), "2/2 in use (1 by Subscriptions, 1 by blocking reads), 0 other callers waiting "+
		"(pool exhausted: each Subscription and blocking read holds a connection for as long as it runs; raise MaxActive above how many run at once)")
	assert.NotContains(t, err.Error(), "is a caller holding")
}

func TestGetWithoutDeadlineWaitsPoolTimeoutAtMost(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{MaxActive: 1, PoolTimeout: 200 * time.Millisecond})
	held, err := p.Get(context.Background())
	require.NoError(t, err)
	defer held.Close()
	start := time.Now()
	_, err = p.Do(context.Background(), "PING")
	waited := time.Since(start)
	require.ErrorIs(t, err, redisalive.ErrPoolTimeout)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "the context had no deadline")
	assert.GreaterOrEqual(t, waited, 200*time.Millisecond, "got a wait of %v, want PoolTimeout", waited)
	assert.Less(t, waited, 2*time.Second, "got a wait of %v, want about the 200ms PoolTimeout", waited)
}

func TestDoWithoutDeadlineEndsAtReadTimeout(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{ReadTimeout: 200 * time.Millisecond})
	_, err := p.Do(context.Background(), "PING") // the connection is up: only the reply will be late
	require.NoError(t, err)
	stalled := stallServer(t, srv, time.Second)
	defer stalled()
	start := time.Now()
	_, err = p.Do(context.Background(), "GET", "k")
	took := time.Since(start)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.GreaterOrEqual(t, took, 200*time.Millisecond)
	assert.Less(t, took, 900*time.Millisecond, "got %v, want about the 200ms ReadTimeout", took)
	assert.Equal(t, int64(1), p.Stats().ErrorClosed, "a timed-out command's connection must be closed")
}

// TestDialToAServerThatNeverAnswersFailsWithinDialTimeout: a new
// connection is ready once the server has answered its handshake; one that
// never answers fails the dial, bounded by DialTimeout and ReadTimeout.
func TestDialToAServerThatNeverAnswersFailsWithinDialTimeout(t *testing.T) {
	ln := silentServer(t)
	p := pooltest.New(t, redisalive.Options{Addr: ln.Addr().String(), DialTimeout: 300 * time.Millisecond})
	start := time.Now()
	_, err := p.Do(context.Background(), "GET", "k")
	took := time.Since(start)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.Contains(t, err.Error(), "connect")
	assert.GreaterOrEqual(t, took, 300*time.Millisecond)
	assert.Less(t, took, 2*time.Second, "got %v, want about the 300ms DialTimeout", took)
	assert.Equal(t, int64(1), p.Stats().DialErrors, "DialErrors")
}

// TestCloseAbandonsADialInFlight: a dial to a server that never answers
// would hold its caller, and Close, for DialTimeout; Close ends it at once.
func TestCloseAbandonsADialInFlight(t *testing.T) {
	ln := silentServer(t)
	p := pooltest.New(t, redisalive.Options{Addr: ln.Addr().String(), DialTimeout: time.Minute})
	done := make(chan error, 1)
	go func() {
		_, err := p.Do(context.Background(), "GET", "k")
		done <- err
	}()
	waitForValue(t, 2*time.Second, "connections being dialled", 1, func() int { return p.Stats().Active })
	start := time.Now()
	require.NoError(t, p.Close())
	select {
	case err := <-done:
		assert.ErrorIs(t, err, redisalive.ErrPoolClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("a dial in flight still running 5s after Close")
	}
	assert.Less(t, time.Since(start), time.Second, "Close and the dial's end, with a DialTimeout of a minute")
	assert.Zero(t, p.Stats().Active)
}

func TestGetWaiterIsHandedAReturnedConnection(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{MaxActive: 1})
	held, err := p.Get(context.Background())
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := p.Do(context.Background(), "PING")
		done <- err
	}()
	require.Eventually(t, func() bool { return p.Stats().Waiting == 1 }, 2*time.Second, time.Millisecond)
	require.NoError(t, held.Close())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(2 * time.Second):
		t.Fatal("waiter was not handed the returned connection")
	}
	s := p.Stats()
	assert.Equal(t, int64(1), s.Dials)
	assert.Equal(t, int64(1), s.WaitCount)
}

func TestGetReturnsCanceledWhenContextIsCancelledWhileWaiting(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{MaxActive: 1})
	held, err := p.Get(context.Background())
	require.NoError(t, err)
	defer held.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err = p.Get(ctx)
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, redisalive.ErrPoolTimeout)
	assert.Equal(t, 0, p.Stats().Waiting)
}

func TestHandleAfterCloseIsInert(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{})
	c, err := p.Get(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "a second Close is a no-op")
	_, err = c.Do("PING")
	assert.Error(t, err)
	assert.Error(t, c.Err())
	assert.Equal(t, 1, p.Stats().Idle)
}

// TestHandleClosedDuringACallOnItLendsItToNobody: closing a handle while
// another goroutine's command on it waits for its reply (a misuse redigo
// forbids too) once put the connection back for the next caller, whose
// reply the stranded read then took.
func TestHandleClosedDuringACallOnItLendsItToNobody(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{MaxActive: 1})
	c, err := p.Get(context.Background())
	require.NoError(t, err)
	stranded := make(chan error, 1)
	go func() {
		_, err := c.Do("BLPOP", "empty", 1)
		stranded <- err
	}()
	time.Sleep(100 * time.Millisecond) // lets the BLPOP go out; not synchronisation
	require.NoError(t, c.Close())

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	v, err := redis.String(p.Do(ctx, "ECHO", "mine"))
	require.NoError(t, err)
	assert.Equal(t, "mine", v)
	assert.Less(t, time.Since(start), 2*time.Second, "the next caller waited on a connection another read held")
	select {
	case err := <-stranded:
		assert.Error(t, err, "the call whose handle was closed under it")
	case <-time.After(5 * time.Second):
		t.Fatal("the call whose handle was closed under it never returned")
	}
}

func TestHandleDrainsPipelinedRepliesAndDiscardsOpenTransaction(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{})
	ctx := context.Background()

	c, err := p.Get(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Send("SET", "a", "1"))
	require.NoError(t, c.Send("SET", "b", "2"))
	require.NoError(t, c.Close()) // unread replies: drained, then reused
	assert.Equal(t, 1, p.Stats().Idle)

	c, err = p.Get(ctx)
	require.NoError(t, err)
	_, err = c.Do("MULTI")
	require.NoError(t, err)
	_, err = c.Do("SET", "a", "changed")
	require.NoError(t, err)
	require.NoError(t, c.Close()) // open MULTI: discarded, never executed
	v, err := redis.String(p.Do(ctx, "GET", "a"))
	require.NoError(t, err)
	assert.Equal(t, "1", v, "the abandoned transaction must not run")
	assert.Equal(t, int64(1), p.Stats().Dials, "a cleaned-up connection is reused")
}

func TestDoDiscardsConnectionLeftInAState(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{DB: 0})
	ctx := context.Background()
	_, err := p.Do(ctx, "SELECT", 3)
	require.NoError(t, err)
	assert.Equal(t, int64(1), p.Stats().StateClosed)
	assert.Equal(t, 0, p.Stats().Idle)
}

// TestDoRefusesSubscribeAndMonitorUnsentAndPointsToWhatWorks: after these
// the server sends what nobody asked for, which Do would lose with its
// connection; they are refused before anything is sent.
func TestDoRefusesSubscribeAndMonitorUnsentAndPointsToWhatWorks(t *testing.T) {
	for _, opts := range []redisalive.Options{{}, {AutoPipeline: true}} {
		p, _ := pooltest.OnMiniredis(t, opts)
		for cmd, want := range map[string]string{
			"SUBSCRIBE":  "use Pool.Subscribe, PSubscribe or SSubscribe",
			"psubscribe": "use Pool.Subscribe, PSubscribe or SSubscribe",
			"SSUBSCRIBE": "use Pool.Subscribe, PSubscribe or SSubscribe",
			"MONITOR":    "run it on a connection from Pool.Get and read with Receive",
		} {
			_, err := p.Do(context.Background(), cmd, "news")
			require.Error(t, err, "%s with AutoPipeline=%t", cmd, opts.AutoPipeline)
			assert.Contains(t, err.Error(), "redisalive: "+cmd+" through Do, not sent: ")
			assert.Contains(t, err.Error(), want)
		}
		assert.Zero(t, p.Stats().Dials, "got %d dials, want none: nothing sent", p.Stats().Dials)
	}
}

func TestDoHonoursContextCancellationMidCommand(t *testing.T) {
	p, mr := pooltest.OnMiniredis(t, redisalive.Options{ReadTimeout: 10 * time.Second})
	mr.SetTime(time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	// BLPOP on an empty list blocks on the server: only the cancel ends it.
	_, err := p.Do(ctx, "BLPOP", "empty", 5)
	require.ErrorIs(t, err, context.Canceled)
	assert.Less(t, time.Since(start), time.Second)
	s := p.Stats()
	assert.Equal(t, int64(1), s.CanceledClosed, "a cancelled command's connection must be closed")
	assert.Zero(t, s.ErrorClosed, "a cancellation is not a network error")
	_, err = p.Do(context.Background(), "PING")
	assert.NoError(t, err)
}

func TestDoHonoursContextDeadlineMidCommand(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{ReadTimeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Do(ctx, "BLPOP", "empty", 5)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), time.Second)
}

func TestCallsAfterCloseReturnErrPoolClosed(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{})
	_, err := p.Do(context.Background(), "PING")
	require.NoError(t, err)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "Close is idempotent")
	_, err = p.Do(context.Background(), "PING")
	assert.ErrorIs(t, err, redisalive.ErrPoolClosed)
	_, err = p.Get(context.Background())
	assert.ErrorIs(t, err, redisalive.ErrPoolClosed)
	assert.Equal(t, redisalive.Stats{Dials: 1}, p.Stats())
}

func TestCloseWakesWaitersWithErrPoolClosed(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{MaxActive: 1, PoolTimeout: time.Minute})
	held, err := p.Get(context.Background())
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		_, err := p.Get(context.Background())
		errc <- err
	}()
	require.Eventually(t, func() bool { return p.Stats().Waiting == 1 }, 2*time.Second, time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, redisalive.ErrPoolClosed)
	case <-time.After(2 * time.Second):
		t.Fatal("waiter not woken by Close")
	}
	require.NoError(t, held.Close())
	select {
	case err := <-closed:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the last connection came back")
	}
	assert.Equal(t, 0, p.Stats().Active)
}

func TestShutdownWaitsForInFlightThenForceClosesAtDeadline(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{})
	held, err := p.Get(context.Background())
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Shutdown(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, redisalive.ErrInUseAtClose)
	assert.EqualError(t, err, "redisalive: Shutdown: 1 connection was still checked out when its context ended (context deadline exceeded); "+
		"closed under their holders, whose next use fails with ErrPoolClosed")
	assert.Less(t, time.Since(start), 2*time.Second)
	_, err = held.Do("PING")
	assert.ErrorIs(t, err, redisalive.ErrPoolClosed, "the straggler's socket was closed under it")
	require.NoError(t, held.Close())
	assert.Equal(t, 0, p.Stats().Active)
}

// TestCloseWithAForgottenConnectionSaysSoInItsOwnTerms: Close takes no
// context, so its error speaks of its own wait, not of a deadline; the
// forgotten connection's next use, on every path, fails with
// ErrPoolClosed, not a socket error.
func TestCloseWithAForgottenConnectionSaysSoInItsOwnTerms(t *testing.T) {
	// Close waits the longest of DialTimeout, ReadTimeout+WriteTimeout
	// and BlockSlice+500ms: 510ms here.
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{DialTimeout: 100 * time.Millisecond, ReadTimeout: 50 * time.Millisecond,
		WriteTimeout: 50 * time.Millisecond, BlockSlice: 10 * time.Millisecond})
	forgotten, err := p.Get(context.Background())
	require.NoError(t, err)
	_, err = forgotten.Do("SET", "k", "v")
	require.NoError(t, err)

	err = p.Close()
	require.ErrorIs(t, err, redisalive.ErrInUseAtClose)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Close has no context")
	assert.EqualError(t, err, "redisalive: Close: 1 connection was still checked out after waiting 510ms, the longest a command in flight takes (Bounds.Close); "+
		"closed under their holders, whose next use fails with ErrPoolClosed (a connection from Get never closed?)")

	assert.ErrorIs(t, forgotten.Err(), redisalive.ErrPoolClosed, "Err")
	_, err = forgotten.Do("GET", "k")
	assert.ErrorIs(t, err, redisalive.ErrPoolClosed, "Do")
	assert.Contains(t, err.Error(), "redisalive: GET on ")
	assert.ErrorIs(t, forgotten.Send("GET", "k"), redisalive.ErrPoolClosed, "Send")
	_, err = forgotten.Receive()
	assert.ErrorIs(t, err, redisalive.ErrPoolClosed, "Receive")
	require.NoError(t, forgotten.Close())
	assert.Equal(t, 0, p.Stats().Active)
	assert.NoError(t, p.Close(), "a second Close")
}

func TestShutdownReturnsOnceInFlightCallsFinish(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{})
	held, err := p.Get(context.Background())
	require.NoError(t, err)
	time.AfterFunc(50*time.Millisecond, func() { held.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, p.Shutdown(ctx))
	assert.Equal(t, 0, p.Stats().Active)
}

func TestConcurrentDoStaysWithinMaxActive(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{MaxActive: 4})
	var wg sync.WaitGroup
	errs := make(chan error, 64*20)
	for range 64 {
		wg.Go(func() {
			for range 20 {
				if _, err := p.Do(context.Background(), "INCR", "n"); err != nil {
					errs <- err
				}
				if a := p.Stats().Active; a > 4 {
					errs <- errors.New("more than MaxActive connections open")
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n, err := redis.Int(p.Do(context.Background(), "GET", "n"))
	require.NoError(t, err)
	assert.Equal(t, 64*20, n)
	assert.LessOrEqual(t, p.Stats().Dials, int64(4))
}

func TestReturnBeyondMaxIdleClosesAndCountsTheConnection(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{MaxIdle: 1})
	a, err := p.Get(context.Background())
	require.NoError(t, err)
	b, err := p.Get(context.Background())
	require.NoError(t, err)
	require.NoError(t, a.Close())
	require.NoError(t, b.Close())

	s := p.Stats()
	assert.Equal(t, int64(1), s.MaxIdleClosed, "the second return found MaxIdle full")
	assert.Equal(t, 1, s.Idle)
	assert.Equal(t, 1, s.Active)
}
