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
)

func TestDoRunsCommandsAndReusesOneConnection(t *testing.T) {
	p, _ := newMiniPool(t, redisalive.Options{})
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
	p, _ := newMiniPool(t, redisalive.Options{})
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
	p, _ := newMiniPool(t, redisalive.Options{MaxActive: 2})
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

func TestGetWithoutDeadlineWaitsPoolTimeoutAtMost(t *testing.T) {
	p, _ := newMiniPool(t, redisalive.Options{MaxActive: 1, PoolTimeout: 200 * time.Millisecond})
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
	ln := silentServer(t)
	p, err := redisalive.NewPool(redisalive.Options{Addr: ln.Addr().String(), ReadTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	defer p.Close()
	start := time.Now()
	_, err = p.Do(context.Background(), "GET", "k")
	took := time.Since(start)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.GreaterOrEqual(t, took, 200*time.Millisecond)
	assert.Less(t, took, 2*time.Second, "got %v, want about the 200ms ReadTimeout", took)
	assert.Equal(t, int64(1), p.Stats().ErrorClosed, "a timed-out command's connection must be closed")
}

func TestGetWaiterIsHandedAReturnedConnection(t *testing.T) {
	p, _ := newMiniPool(t, redisalive.Options{MaxActive: 1})
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
	p, _ := newMiniPool(t, redisalive.Options{MaxActive: 1})
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
	p, _ := newMiniPool(t, redisalive.Options{})
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
	p, _ := newMiniPool(t, redisalive.Options{MaxActive: 1})
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
	p, _ := newMiniPool(t, redisalive.Options{})
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
	p, _ := newMiniPool(t, redisalive.Options{DB: 0})
	ctx := context.Background()
	_, err := p.Do(ctx, "SELECT", 3)
	require.NoError(t, err)
	assert.Equal(t, int64(1), p.Stats().StateClosed)
	assert.Equal(t, 0, p.Stats().Idle)
}

func TestDoHonoursContextCancellationMidCommand(t *testing.T) {
	p, mr := newMiniPool(t, redisalive.Options{ReadTimeout: 10 * time.Second})
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
	p, _ := newMiniPool(t, redisalive.Options{ReadTimeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Do(ctx, "BLPOP", "empty", 5)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), time.Second)
}

func TestCallsAfterCloseReturnErrPoolClosed(t *testing.T) {
	p, _ := newMiniPool(t, redisalive.Options{})
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
	p, _ := newMiniPool(t, redisalive.Options{MaxActive: 1, PoolTimeout: time.Minute})
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
	p, _ := newMiniPool(t, redisalive.Options{})
	held, err := p.Get(context.Background())
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Shutdown(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "closed 1 connection still in use")
	assert.Less(t, time.Since(start), 2*time.Second)
	_, err = held.Do("PING")
	assert.Error(t, err, "the straggler's socket was closed under it")
	require.NoError(t, held.Close())
	assert.Equal(t, 0, p.Stats().Active)
}

func TestShutdownReturnsOnceInFlightCallsFinish(t *testing.T) {
	p, _ := newMiniPool(t, redisalive.Options{})
	held, err := p.Get(context.Background())
	require.NoError(t, err)
	time.AfterFunc(50*time.Millisecond, func() { held.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, p.Shutdown(ctx))
	assert.Equal(t, 0, p.Stats().Active)
}

func TestConcurrentDoStaysWithinMaxActive(t *testing.T) {
	p, _ := newMiniPool(t, redisalive.Options{MaxActive: 4})
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
	p, _ := newMiniPool(t, redisalive.Options{MaxIdle: 1})
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
