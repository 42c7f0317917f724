package redisalive_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
	p, mr := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: 50 * time.Millisecond})
	ctx := context.Background()

	ch := popAsync(ctx, p, "a", "b")
	testkit.WaitFor(t, 2*time.Second, "several empty rounds", func() bool { return p.Stats().BlockingRounds >= 3 })
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
	p, mr := pooltest.OnMiniredis(t, redisalive.Options{})
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

	// Keys and IDs that do not pair up once made the "$" pinning index
	// past its keys and panic.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, args := range [][]any{
		{"BLOCK", 0, "STREAMS", "a", "b", "$"},
		{"BLOCK", 0, "STREAMS", "$"},
	} {
		_, err = p.Do(ctx, "XREAD", args...)
		assert.ErrorAs(t, err, &serverErr, "XREAD %v: the server's error", args)
	}
}

func TestBRPopReturnsPromptlyWhenContextIsCancelled(t *testing.T) {
	srv := redistest.Start(t)
	p, err := redisalive.NewPool(redisalive.Options{Addr: srv.Addr(), BlockSlice: 5 * time.Second})
	require.NoError(t, err)
	defer p.Close()

	for _, cancelAfter := range []time.Duration{0, 150 * time.Millisecond} {
		ctx, cancel := context.WithCancel(context.Background())
		rounds := p.Stats().BlockingRounds
		ch := popAsync(ctx, p, "empty")
		testkit.WaitFor(t, 2*time.Second, "BRPop blocked on the server", func() bool { return p.Stats().BlockingRounds > rounds })
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
	testkit.WaitFor(t, 2*time.Second, "first round", func() bool { return p.Stats().BlockingRounds >= 1 })

	proxy.Blackhole() // the link goes silent: no FIN, no RST
	silent := time.Now()
	took := testkit.WaitFor(t, 5*time.Second, "round abandoned", func() bool { return p.Stats().BlockingRedials >= 1 })
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
	testkit.WaitFor(t, 2*time.Second, "first round", func() bool { return p.Stats().BlockingRounds >= 1 })
	srv.Restart(t)
	srv.Do(t, "LPUSH", "jobs", "after-restart")
	pushed := time.Now()
	r := waitPop(t, ch, 5*time.Second)
	require.NoError(t, r.err)
	assert.Equal(t, "after-restart", r.value)
	t.Logf("item delivered %v after the restarted server got it (redials: %d)", r.at.Sub(pushed), p.Stats().BlockingRedials)
}

func TestBRPopEndsWithErrPoolClosedAfterItsRound(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: 100 * time.Millisecond})
	ch := popAsync(context.Background(), p, "empty")
	testkit.WaitFor(t, 2*time.Second, "first round", func() bool { return p.Stats().BlockingRounds >= 1 })
	start := time.Now()
	require.NoError(t, p.Close())
	r := waitPop(t, ch, 2*time.Second)
	assert.True(t, errors.Is(r.err, redisalive.ErrPoolClosed), "got %v, want ErrPoolClosed", r.err)
	assert.Less(t, time.Since(start), 100*time.Millisecond+blockGrace+time.Second)
}

// blockingCase is one blocking command for the table-driven tests, with
// the reply its timing out gives.
type blockingCase struct {
	cmd      string
	args     []any
	timedOut any
}

// blockingCases is every command of the blocking table that Redis 7.0 has,
// each asked to block 2.5 s; WAITAOF (Redis 7.2) is covered by the table's
// unit tests only.
func blockingCases(consumer string) []blockingCase {
	return []blockingCase{
		{"BLPOP", []any{"l", 2.5}, nil},
		{"BRPOP", []any{"l", "2.5"}, nil},
		{"BRPOPLPUSH", []any{"l", "dst", 2.5}, nil},
		{"BLMOVE", []any{"l", "dst", "LEFT", "RIGHT", 2.5}, nil},
		{"BZPOPMIN", []any{"z", 2.5}, nil},
		{"BZPOPMAX", []any{"z", 2.5}, nil},
		{"BLMPOP", []any{2.5, 2, "l1", "l2", "LEFT"}, nil},
		{"BZMPOP", []any{2.5, 1, "z", "MIN"}, nil},
		{"XREAD", []any{"BLOCK", 2500, "STREAMS", "s", "$"}, nil},
		{"XREADGROUP", []any{"GROUP", "g", consumer, "BLOCK", 2500, "STREAMS", "s", ">"}, nil},
		{"WAIT", []any{1, 2500}, int64(0)}, // no replica will ever acknowledge
	}
}

// TestEveryBlockingCommandWaitsItsBlockTimeAndReturnsTheServersReply runs
// each command of the table, through Pool.Do and through DoContext on a
// connection from Get, with a block time of 2.5 s under a ReadTimeout of
// 1 s: each must return the server's own timed-out reply after 2.5 s, with
// no error and no connection lost.
func TestEveryBlockingCommandWaitsItsBlockTimeAndReturnsTheServersReply(t *testing.T) {
	srv := redistest.Start(t)
	srv.Do(t, "XGROUP", "CREATE", "s", "g", "$", "MKSTREAM")
	p := pooltest.OnServer(t, srv, redisalive.Options{ReadTimeout: time.Second, MaxActive: 64})
	const block = 2500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	type result struct {
		what  string
		reply any
		err   error
		took  time.Duration
		want  any
	}
	results := make(chan result, 64)
	var wg sync.WaitGroup
	for _, path := range []string{"Do", "Get+DoContext"} {
		for _, tc := range blockingCases("c-" + path) {
			wg.Go(func() {
				start := time.Now()
				var reply any
				var err error
				if path == "Do" {
					reply, err = p.Do(ctx, tc.cmd, tc.args...)
				} else {
					var c redis.Conn
					if c, err = p.Get(ctx); err == nil {
						reply, err = redis.DoContext(c, ctx, tc.cmd, tc.args...)
						c.Close()
					}
				}
				results <- result{path + " " + tc.cmd, reply, err, time.Since(start), tc.timedOut}
			})
		}
	}
	wg.Wait()
	close(results)
	for r := range results {
		t.Logf("%s: %v after %v", r.what, r.reply, r.took.Round(time.Millisecond))
		assert.NoError(t, r.err, r.what)
		assert.Equal(t, r.want, r.reply, r.what)
		assert.GreaterOrEqual(t, r.took, block-50*time.Millisecond, "%s: returned before its block time", r.what)
		assert.Less(t, r.took, block+1500*time.Millisecond, "%s: got %v, want about %v", r.what, r.took, block)
	}
	s := p.Stats()
	assert.Zero(t, s.ErrorClosed+s.CanceledClosed+s.DeadClosed, "connections lost: %+v", s)
	assert.Zero(t, s.BlockingRedials, "BlockingRedials")
}

// TestBlockForeverFormsReturnTheEntryAddedRoundsLater starts the
// block-forever form of each command family, adds what each waits for
// after several rounds have passed, and expects it back.
func TestBlockForeverFormsReturnTheEntryAddedRoundsLater(t *testing.T) {
	srv := redistest.Start(t)
	srv.Do(t, "XGROUP", "CREATE", "gs", "g", "$", "MKSTREAM")
	const slice = 300 * time.Millisecond
	p := pooltest.OnServer(t, srv, redisalive.Options{BlockSlice: slice, ReadTimeout: 500 * time.Millisecond, MaxActive: 16})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cases := []struct {
		cmd  string
		args []any
		add  []any // the command that gives the waiter its reply
	}{
		{"XREAD", []any{"BLOCK", 0, "STREAMS", "xs", "$"}, []any{"XADD", "xs", "*", "f", "xread"}},
		{"XREADGROUP", []any{"GROUP", "g", "c", "BLOCK", 0, "STREAMS", "gs", ">"}, []any{"XADD", "gs", "*", "f", "xreadgroup"}},
		{"BZPOPMIN", []any{"z", 0}, []any{"ZADD", "z", 1, "bzpopmin"}},
		{"BLMPOP", []any{0, 1, "ml", "LEFT"}, []any{"LPUSH", "ml", "blmpop"}},
		{"BRPOP", []any{"bl", 0}, []any{"LPUSH", "bl", "brpop"}},
	}
	type result struct {
		reply any
		err   error
	}
	done := make([]chan result, len(cases))
	for i, tc := range cases {
		done[i] = make(chan result, 1)
		go func() {
			reply, err := p.Do(ctx, tc.cmd, tc.args...)
			done[i] <- result{reply, err}
		}()
	}
	testkit.WaitFor(t, 5*time.Second, "several rounds of every command", func() bool {
		return p.Stats().BlockingRounds >= int64(4*len(cases))
	})
	for i, tc := range cases {
		srv.Do(t, tc.add[0].(string), tc.add[1:]...)
		select {
		case r := <-done[i]:
			require.NoError(t, r.err, tc.cmd)
			assert.Contains(t, strings.ToLower(fmt.Sprintf("%s", r.reply)), strings.ToLower(tc.cmd), "%s: got %s", tc.cmd, r.reply)
		case <-time.After(slice + blockGrace + time.Second):
			t.Fatalf("%s: no reply within a round of the %s", tc.cmd, tc.add[0])
		}
	}
	s := p.Stats()
	assert.Zero(t, s.ErrorClosed+s.CanceledClosed+s.BlockingRedials, "stats: %+v", s)
}

// TestXReadDollarMissesNoEntryAddedBetweenRounds: "$" means "entries added
// after this call began", so re-issuing XREAD with "$" for each round would
// skip an entry added while one round's empty reply and the next round
// were on the wire. A proxy adds 150 ms each way so that this gap is
// 300 ms of every ~400 ms; every call must still return exactly the entry
// added after it began.
func TestXReadDollarMissesNoEntryAddedBetweenRounds(t *testing.T) {
	srv := redistest.Start(t)
	proxy, err := faultproxy.New(srv.Addr())
	require.NoError(t, err)
	defer proxy.Close()
	const slice = 100 * time.Millisecond
	p, err := redisalive.NewPool(redisalive.Options{Addr: proxy.Addr(), BlockSlice: slice, ReadTimeout: time.Second})
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Do(context.Background(), "PING") // dial before the latency
	require.NoError(t, err)
	proxy.SetLatency(150 * time.Millisecond)

	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got := make(chan any, 1)
		go func() {
			reply, err := p.Do(ctx, "XREAD", "BLOCK", 0, "STREAMS", "s", "$")
			assert.NoError(t, err)
			got <- reply
		}()
		// Past the first round, at a random point of the round cycle.
		time.Sleep(time.Duration(600+rng.IntN(400)) * time.Millisecond) // places the XADD; not synchronisation
		id := srv.Do(t, "XADD", "s", "*", "n", i)
		select {
		case reply := <-got:
			streams, err := redis.Values(reply, nil)
			require.NoError(t, err)
			require.Len(t, streams, 1)
			stream, _ := redis.Values(streams[0], nil)
			entries, _ := redis.Values(stream[1], nil)
			first, _ := redis.Values(entries[0], nil)
			assert.Equal(t, id, first[0], "call %d: got another entry than the one added after it began", i)
		case <-time.After(3 * time.Second):
			t.Fatalf("call %d: the entry added after it began was missed", i)
		}
		cancel()
	}
	t.Logf("rounds: %d", p.Stats().BlockingRounds)
}

// TestBRPopEndedByItsDeadlineAtARoundBoundaryIsNoFailure: deadlines that
// land just after a round boundary once made the next round fail and
// count a redial, a dial error and a warning on a healthy server.
func TestBRPopEndedByItsDeadlineAtARoundBoundaryIsNoFailure(t *testing.T) {
	srv := redistest.Start(t)
	var logs testkit.LogBuffer
	p := pooltest.OnServer(t, srv, redisalive.Options{
		MaxActive: 40,
		Logger:    slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	slice := redisalive.DefaultBlockSlice
	var wg sync.WaitGroup
	for i := range 30 {
		deadline := time.Duration(1+i%3)*slice + time.Duration(i%6)*time.Millisecond
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			_, _, err := p.BRPop(ctx, "empty")
			took := time.Since(start)
			assert.ErrorIs(t, err, context.DeadlineExceeded, "deadline %v", deadline)
			assert.Less(t, took, deadline+500*time.Millisecond, "deadline %v: returned after %v", deadline, took)
		})
	}
	wg.Wait()
	s := p.Stats()
	t.Logf("stats: %+v", s)
	assert.Zero(t, s.BlockingRedials, "BlockingRedials")
	assert.Zero(t, s.DialErrors, "DialErrors")
	assert.Zero(t, s.ErrorClosed, "ErrorClosed")
	assert.Empty(t, logs.String(), "warnings")
}

// TestBRPopDeadlineKeepsTheConnection: the last round is cut to end before
// the caller's deadline, so the deadline costs no connection.
func TestBRPopDeadlineKeepsTheConnection(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{})
	for _, d := range []time.Duration{700 * time.Millisecond, 1500 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		_, _, err := p.BRPop(ctx, "empty")
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	s := p.Stats()
	assert.Equal(t, int64(1), s.Dials, "Dials: one connection served both calls")
	assert.Zero(t, s.CanceledClosed+s.ErrorClosed, "connections closed: %+v", s)
	assert.Equal(t, 1, s.Idle, "Idle")
}

// TestConsumeEndedByItsContextCountsNoFailure: stopping a consumer is not
// a network failure, whichever way its context ends.
func TestConsumeEndedByItsContextCountsNoFailure(t *testing.T) {
	srv := redistest.Start(t)
	for _, end := range []string{"cancel", "deadline"} {
		p := pooltest.OnServer(t, srv, redisalive.Options{})
		q, err := redisalive.NewQueue(p, "stop-"+end, redisalive.QueueOptions{Concurrency: 4})
		require.NoError(t, err)
		// Long enough for two heartbeats and several rounds per worker.
		ctx, cancel := context.WithTimeout(context.Background(), 2100*time.Millisecond)
		if end == "cancel" {
			cancel()
			ctx, cancel = context.WithCancel(context.Background())
			time.AfterFunc(2100*time.Millisecond, cancel)
		}
		err = q.Consume(ctx, func(context.Context, []byte) error { return nil })
		cancel()
		require.Error(t, err)
		s := p.Stats()
		t.Logf("%s: %+v", end, s)
		assert.Zero(t, s.DialErrors, "%s: DialErrors", end)
		assert.Zero(t, s.BlockingRedials, "%s: BlockingRedials", end)
		assert.Zero(t, s.ErrorClosed, "%s: ErrorClosed", end)
	}
}
