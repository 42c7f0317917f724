package redisalive_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/faultproxy"
	"github.com/redisalive/redisalive/internal/redistest"
)

type popResult struct {
	key, value string
	err        error
	at         time.Time
}

// popAsync runs BRPop in a goroutine and delivers its result.
func popAsync(ctx context.Context, p *redisalive.Pool, keys ...string) <-chan popResult {
	ch := make(chan popResult, 1)
	go func() {
		k, v, err := p.BRPop(ctx, keys...)
		ch <- popResult{k, v, err, time.Now()}
	}()
	return ch
}

func waitPop(t *testing.T, ch <-chan popResult, within time.Duration) popResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("BRPop did not return within %v", within)
		return popResult{}
	}
}

func TestBlockingReadsDeliverItemsPushedWhileWaiting(t *testing.T) {
	p, mr := newMiniPool(t, redisalive.Options{BlockSlice: 50 * time.Millisecond})
	ctx := context.Background()

	ch := popAsync(ctx, p, "a", "b")
	waitFor(t, 2*time.Second, "several empty rounds", func() bool { return p.Stats().BlockingRounds >= 3 })
	_, err := mr.Lpush("b", "x")
	require.NoError(t, err)
	r := waitPop(t, ch, 2*time.Second)
	require.NoError(t, r.err)
	assert.Equal(t, popResult{key: "b", value: "x", at: r.at}, r)

	mr.Lpush("q", "1")
	mr.Lpush("q", "2")
	k, v, err := p.BLPop(ctx, "q")
	require.NoError(t, err)
	assert.Equal(t, []string{"q", "2"}, []string{k, v})

	v, err = p.BLMove(ctx, "q", "done", "RIGHT", "LEFT")
	require.NoError(t, err)
	assert.Equal(t, "1", v)
	done, err := mr.List("done")
	require.NoError(t, err)
	assert.Equal(t, []string{"1"}, done)
	assert.Equal(t, int64(0), p.Stats().BlockingRedials)
}

func TestBlockingReadsRejectBadArgumentsAndServerErrors(t *testing.T) {
	p, mr := newMiniPool(t, redisalive.Options{})
	ctx := context.Background()
	_, _, err := p.BRPop(ctx)
	assert.ErrorContains(t, err, "at least one key")
	_, err = p.BLMove(ctx, "a", "b", "UP", "LEFT")
	assert.ErrorContains(t, err, `side "UP"`)

	require.NoError(t, mr.Set("str", "x"))
	start := time.Now()
	_, _, err = p.BRPop(ctx, "str")
	var serverErr redis.Error
	require.ErrorAs(t, err, &serverErr, "WRONGTYPE is returned, not retried")
	assert.Less(t, time.Since(start), time.Second)
}

func TestBRPopReturnsPromptlyWhenContextIsCancelled(t *testing.T) {
	srv := redistest.Start(t)
	p, err := redisalive.NewPool(redisalive.Options{Addr: srv.Addr(), BlockSlice: 5 * time.Second})
	require.NoError(t, err)
	defer p.Close()

	for _, cancelAfter := range []time.Duration{0, 150 * time.Millisecond} {
		ctx, cancel := context.WithCancel(context.Background())
		ch := popAsync(ctx, p, "empty")
		waitFor(t, 2*time.Second, "BRPop blocked on the server", func() bool { return p.Stats().BlockingRounds >= 1 })
		time.Sleep(cancelAfter) // cancel at the start of a round and in its middle
		cancelled := time.Now()
		cancel()
		r := waitPop(t, ch, 2*time.Second)
		require.ErrorIs(t, r.err, context.Canceled)
		latency := r.at.Sub(cancelled)
		t.Logf("BRPop returned %v after cancel", latency)
		assert.Less(t, latency, 100*time.Millisecond, "got %v after cancel, want < 100ms", latency)
	}
	srv.WaitConnectedClients(t, 0, 2*time.Second) // the interrupted connections were closed
}

func TestBRPopOnSilentLinkRetriesWithinOneSliceAndDeliversAfterHeal(t *testing.T) {
	srv := redistest.Start(t)
	proxy, err := faultproxy.New(srv.Addr())
	require.NoError(t, err)
	defer proxy.Close()
	slice := 300 * time.Millisecond
	p, err := redisalive.NewPool(redisalive.Options{Addr: proxy.Addr(), BlockSlice: slice, ReadTimeout: 500 * time.Millisecond, DialTimeout: 500 * time.Millisecond})
	require.NoError(t, err)
	defer p.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch := popAsync(ctx, p, "jobs")
	waitFor(t, 2*time.Second, "first round", func() bool { return p.Stats().BlockingRounds >= 1 })

	proxy.Blackhole() // the link goes silent: no FIN, no RST
	silent := time.Now()
	took := waitFor(t, 5*time.Second, "round abandoned", func() bool { return p.Stats().BlockingRedials >= 1 })
	t.Logf("in-flight round abandoned %v after the link went silent (bound %v)", took, slice+blockGrace)
	assert.LessOrEqual(t, took, slice+blockGrace+500*time.Millisecond, "got %v, want <= BlockSlice + grace (+500ms margin)", took)
	time.Sleep(time.Until(silent.Add(2 * time.Second))) // stay down a while: redials fail too

	proxy.Heal()
	srv.Do(t, "LPUSH", "jobs", "after-heal")
	pushed := time.Now()
	r := waitPop(t, ch, 5*time.Second)
	require.NoError(t, r.err)
	assert.Equal(t, "after-heal", r.value)
	t.Logf("item pushed after heal delivered in %v", r.at.Sub(pushed))
	assert.Less(t, r.at.Sub(pushed), 2*time.Second)
}

func TestBRPopSurvivesServerRestart(t *testing.T) {
	srv := redistest.Start(t)
	p, err := redisalive.NewPool(redisalive.Options{Addr: srv.Addr(), BlockSlice: 500 * time.Millisecond, DialTimeout: 500 * time.Millisecond})
	require.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ch := popAsync(ctx, p, "jobs")
	waitFor(t, 2*time.Second, "first round", func() bool { return p.Stats().BlockingRounds >= 1 })
	srv.Restart(t)
	srv.Do(t, "LPUSH", "jobs", "after-restart")
	pushed := time.Now()
	r := waitPop(t, ch, 5*time.Second)
	require.NoError(t, r.err)
	assert.Equal(t, "after-restart", r.value)
	t.Logf("item delivered %v after the restarted server got it (redials: %d)", r.at.Sub(pushed), p.Stats().BlockingRedials)
}

func TestBRPopEndsWithErrPoolClosedAfterItsRound(t *testing.T) {
	p, _ := newMiniPool(t, redisalive.Options{BlockSlice: 100 * time.Millisecond})
	ch := popAsync(context.Background(), p, "empty")
	waitFor(t, 2*time.Second, "first round", func() bool { return p.Stats().BlockingRounds >= 1 })
	start := time.Now()
	require.NoError(t, p.Close())
	r := waitPop(t, ch, 2*time.Second)
	assert.True(t, errors.Is(r.err, redisalive.ErrPoolClosed), "got %v, want ErrPoolClosed", r.err)
	assert.Less(t, time.Since(start), 100*time.Millisecond+blockGrace+time.Second)
}
