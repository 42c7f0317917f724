package redisalive_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"

	"github.com/redisalive/redisalive"
)

// TestRandomGetDoCancelCloseKeepsPoolConsistent hammers a small pool with a
// random mix of Do, Get/Close, cancelled and timed-out calls from many
// goroutines for a bounded time, then closes the pool mid-traffic. Every
// call must end with a result or one of the documented errors, and
// afterwards no connection may be open.
func TestRandomGetDoCancelCloseKeepsPoolConsistent(t *testing.T) {
	p, mr := newMiniPool(t, redisalive.Options{MaxActive: 4, PoolTimeout: 50 * time.Millisecond, BlockSlice: 20 * time.Millisecond})
	stop := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	var succeeded, interrupted atomic.Int64
	unexpected := make(chan error, 100)
	for g := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; i < 100_000 && time.Now().Before(stop); i++ {
				switch err := randomCall(p, rng); {
				case err == nil:
					succeeded.Add(1)
				case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
					interrupted.Add(1)
				case !expectedStressError(err):
					select {
					case unexpected <- err:
					default:
					}
				}
			}
		})
	}
	time.Sleep(time.Second) // let traffic run, then close under it
	closeErr := p.Close()
	wg.Wait()
	close(unexpected)
	for err := range unexpected {
		t.Errorf("unexpected error: %v", err)
	}
	if closeErr != nil {
		assert.ErrorIs(t, closeErr, context.DeadlineExceeded)
	}
	s := p.Stats()
	t.Logf("%d calls succeeded, %d interrupted; stats after the run: %+v", succeeded.Load(), interrupted.Load(), s)
	assert.Positive(t, succeeded.Load(), "no call succeeded: the test proves nothing")
	assert.Positive(t, interrupted.Load(), "no call was interrupted by its context")
	assert.Positive(t, s.WaitCount, "the pool was never contended: the test proves nothing")
	assert.Equal(t, 0, s.Active, "stats after Close: %+v", s)
	assert.Equal(t, 0, s.Waiting)
	waitForValue(t, 2*time.Second, "server connections", 0, mr.CurrentConnectionCount)
}

func randomCall(p *redisalive.Pool, rng *rand.Rand) error {
	ctx := context.Background()
	var cancel context.CancelFunc = func() {}
	switch rng.IntN(4) {
	case 0:
		ctx, cancel = context.WithCancel(ctx)
		time.AfterFunc(time.Duration(rng.IntN(200))*time.Microsecond, cancel)
	case 1:
		ctx, cancel = context.WithTimeout(ctx, time.Duration(rng.IntN(2000))*time.Microsecond)
	}
	defer cancel()
	switch rng.IntN(4) {
	case 0:
		c, err := p.Get(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		if rng.IntN(2) == 0 {
			c.Send("INCR", "n")
		}
		_, err = c.Do("INCR", "n")
		return err
	case 1:
		_, _, err := p.BRPop(ctx, "stress-list")
		return err
	case 2:
		_, err := p.Do(ctx, "LPUSH", "stress-list", "x")
		return err
	default:
		_, err := p.Do(ctx, "INCR", "n")
		return err
	}
}

func expectedStressError(err error) bool {
	return errors.Is(err, redisalive.ErrPoolClosed) || errors.Is(err, redisalive.ErrPoolTimeout) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// TestRandomDoCancelCloseOnSharedConnectionsMatchesEveryReply hammers an
// auto-pipelining pool with commands from many goroutines, some cancelled
// at random points, then closes it mid-traffic. Each caller sends a value
// of its own and must get exactly it back: a reply handed to the wrong
// caller, or a cancelled caller's reply read by a later one, fails it.
func TestRandomDoCancelCloseOnSharedConnectionsMatchesEveryReply(t *testing.T) {
	p, mr := newMiniPool(t, redisalive.Options{AutoPipeline: true, PipelineDepth: 16, PoolTimeout: 50 * time.Millisecond})
	stop := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	var succeeded, interrupted atomic.Int64
	problems := make(chan string, 100)
	report := func(format string, args ...any) {
		select {
		case problems <- fmt.Sprintf(format, args...):
		default:
		}
	}
	for g := range 32 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			for i := 0; i < 100_000 && time.Now().Before(stop); i++ {
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				switch rng.IntN(3) {
				case 0:
					ctx, cancel = context.WithCancel(ctx)
					time.AfterFunc(time.Duration(rng.IntN(300))*time.Microsecond, cancel)
				case 1:
					ctx, cancel = context.WithTimeout(ctx, time.Duration(rng.IntN(2000))*time.Microsecond)
				}
				want := fmt.Sprint(g, "/", i)
				got, err := redis.String(p.Do(ctx, "ECHO", want))
				cancel()
				switch {
				case err == nil && got != want:
					report("caller %d got %q, want %q", g, got, want)
				case err == nil:
					succeeded.Add(1)
				case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
					interrupted.Add(1)
				case !expectedStressError(err):
					report("unexpected error: %v", err)
				}
			}
		})
	}
	time.Sleep(time.Second) // let traffic run, then close under it
	closeErr := p.Close()
	wg.Wait()
	close(problems)
	for msg := range problems {
		t.Error(msg)
	}
	if closeErr != nil {
		assert.ErrorIs(t, closeErr, context.DeadlineExceeded)
	}
	s := p.Stats()
	t.Logf("%d calls succeeded, %d interrupted; %d commands pipelined in %d writes", succeeded.Load(), interrupted.Load(), s.Pipelined, s.PipelineBatches)
	assert.Positive(t, succeeded.Load(), "no call succeeded: the test proves nothing")
	assert.Positive(t, interrupted.Load(), "no call was interrupted by its context")
	assert.Equal(t, 0, s.Active, "stats after Close: %+v", s)
	waitForValue(t, 2*time.Second, "server connections", 0, mr.CurrentConnectionCount)
}
