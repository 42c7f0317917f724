package redisalive_test

import (
	"context"
	"fmt"
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

func TestAutoPipelineGivesEachCallerItsOwnReply(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{AutoPipeline: true})
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 200 {
				v := fmt.Sprint(g, "-", i)
				key := fmt.Sprint("k", g)
				_, err := p.Do(ctx, "SET", key, v)
				if !assert.NoError(t, err) {
					return
				}
				got, err := redis.String(p.Do(ctx, "GET", key))
				if !assert.NoError(t, err) || !assert.Equal(t, v, got, "caller %d got another caller's reply", g) {
					return
				}
			}
		})
	}
	wg.Wait()
	s := p.Stats()
	t.Logf("pipelined %d commands in %d writes", s.Pipelined, s.PipelineBatches)
	assert.Equal(t, int64(32*200*2), s.Pipelined)
	assert.Less(t, s.PipelineBatches, s.Pipelined, "commands of concurrent callers share writes")
	assert.LessOrEqual(t, s.Dials, int64(redisalive.DefaultPipelineConns), "Dials: only the shared connections")
}

func TestAutoPipelineKeepsStatefulCommandsOnTheirOwnConnections(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{AutoPipeline: true})
	ctx := context.Background()
	_, err := p.Do(ctx, "SET", "a", "1")
	require.NoError(t, err)
	_, err = p.Do(ctx, "SELECT", 2) // must not switch a shared connection's database
	require.NoError(t, err)
	v, err := redis.String(p.Do(ctx, "GET", "a"))
	require.NoError(t, err)
	assert.Equal(t, "1", v, "a later command on a shared connection still sees database 0")
	reply, err := p.Do(ctx, "BLPOP", "empty", 0.1)
	require.NoError(t, err, "a blocking command, on a connection of its own")
	assert.Nil(t, reply)
}

// stallServer makes srv sleep for d on an admin connection of its own and
// returns once the sleep has begun, and a func that waits for it to end.
func stallServer(t *testing.T, srv *redistest.Server, d time.Duration) (wait func()) {
	t.Helper()
	admin, err := redis.Dial("tcp", srv.Addr(), redis.DialReadTimeout(d+5*time.Second))
	require.NoError(t, err)
	require.NoError(t, admin.Send("DEBUG", "SLEEP", d.Seconds()))
	require.NoError(t, admin.Flush())
	testkit.WaitFor(t, 2*time.Second, "the server to stall", func() bool {
		probe, err := redis.Dial("tcp", srv.Addr(), redis.DialReadTimeout(50*time.Millisecond))
		require.NoError(t, err)
		defer probe.Close()
		_, err = probe.Do("PING")
		return err != nil
	})
	return func() {
		_, err := admin.Receive()
		assert.NoError(t, err, "DEBUG SLEEP")
		admin.Close()
	}
}

// TestAutoPipelineCancelledCallerCostsNoConnectionAndItsReplyReachesNobody:
// a caller whose ctx ends while its command is on the wire returns at once;
// its reply, when it comes, is read and dropped on the shared connection,
// which stays in use.
func TestAutoPipelineCancelledCallerCostsNoConnectionAndItsReplyReachesNobody(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{AutoPipeline: true, PipelineConns: 1, ReadTimeout: 3 * time.Second})
	ctx := context.Background()
	_, err := p.Do(ctx, "PING")
	require.NoError(t, err)
	dials := p.Stats().Dials

	stalled := stallServer(t, srv, 500*time.Millisecond)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	start := time.Now()
	_, err = p.Do(short, "ECHO", "stale")
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 300*time.Millisecond, "the cancelled caller returns at its deadline")
	stalled()

	for i := range 50 {
		v, err := redis.Int(p.Do(ctx, "ECHO", i))
		require.NoError(t, err)
		require.Equal(t, i, v, "a later caller got another's reply")
	}
	s := p.Stats()
	assert.Equal(t, dials, s.Dials, "Dials: the cancelled command cost no connection")
	assert.Zero(t, s.CanceledClosed+s.ErrorClosed, "connections closed: %+v", s)
}

// TestAutoPipelineNoCallerMeetsASharedConnectionTheServerClosed: the
// checker's peek, or the writer's before a quiet connection's first write,
// finds the server's close; the command goes to a new connection.
func TestAutoPipelineNoCallerMeetsASharedConnectionTheServerClosed(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{AutoPipeline: true, PipelineConns: 1})
	ctx := context.Background()
	_, err := p.Do(ctx, "PING")
	require.NoError(t, err)
	for range 2 {
		srv.Do(t, "CLIENT", "KILL", "TYPE", "normal")
		testkit.WaitFor(t, 2*time.Second, "the shared connection in CLOSE_WAIT or closed", func() bool {
			return clientStates(t, srv.Port())["ESTABLISHED"] == 0
		})
		v, err := redis.String(p.Do(ctx, "ECHO", "first try"))
		require.NoError(t, err, "the first command after the server closed the shared connection")
		assert.Equal(t, "first try", v)
	}
	// The reader closes and counts the dead connection as the retried
	// command goes out on a new one: the count may trail the reply, by
	// over a second once in ~200 runs on a loaded 2-core machine. Waiting
	// for any count first tells a late count from a wrong one.
	waitForValue(t, 5*time.Second, "both dead connections closed and counted", int64(2), func() int64 {
		s := p.Stats()
		return s.DeadClosed + s.ErrorClosed
	})
	s := p.Stats()
	assert.Equal(t, int64(2), s.DeadClosed, "DeadClosed, in %+v", s)
}

// TestAutoPipelineIdleSharedConnectionOutlivesReadTimeout: the reader of
// a shared connection waits on its socket even with nothing in flight; that
// wait has no deadline, so quiet is no failure, and the next command goes
// out on the same connection.
func TestAutoPipelineIdleSharedConnectionOutlivesReadTimeout(t *testing.T) {
	srv := redistest.Start(t)
	const readTimeout = 100 * time.Millisecond
	p := pooltest.OnServer(t, srv, redisalive.Options{AutoPipeline: true, PipelineConns: 1, ReadTimeout: readTimeout, HealthCheckInterval: time.Minute})
	ctx := context.Background()
	for i := range 3 {
		v, err := redis.Int(p.Do(ctx, "ECHO", i))
		require.NoError(t, err)
		assert.Equal(t, i, v)
		time.Sleep(5 * readTimeout)
	}
	s := p.Stats()
	assert.Equal(t, int64(1), s.Dials, "Dials: one shared connection throughout")
	assert.Zero(t, s.DeadClosed+s.ErrorClosed, "no connection closed: %+v", s)
}

// TestAutoPipelineCallersOnADeadLinkReturnWithinReadTimeout: commands in
// flight when the link goes silent all fail within ReadTimeout, those not
// yet written go to a new connection, and after healing calls succeed.
func TestAutoPipelineCallersOnADeadLinkReturnWithinReadTimeout(t *testing.T) {
	srv := redistest.Start(t)
	proxy, err := faultproxy.New(srv.Addr())
	require.NoError(t, err)
	defer proxy.Close()
	const readTimeout = 300 * time.Millisecond
	p, err := redisalive.NewPool(redisalive.Options{Addr: proxy.Addr(), AutoPipeline: true, ReadTimeout: readTimeout, DialTimeout: readTimeout})
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	_, err = p.Do(ctx, "PING")
	require.NoError(t, err)

	proxy.Blackhole()
	start := time.Now()
	var wg sync.WaitGroup
	took := make(chan time.Duration, 64)
	for i := range 64 {
		wg.Go(func() {
			_, err := p.Do(ctx, "ECHO", i)
			assert.Error(t, err, "a command on the dead link")
			took <- time.Since(start)
		})
	}
	wg.Wait()
	close(took)
	var slowest time.Duration
	for d := range took {
		slowest = max(slowest, d)
	}
	t.Logf("slowest caller returned after %v", slowest)
	// ReadTimeout for the shared connection to be declared dead, then at
	// most a DialTimeout for a command moved to a new one.
	assert.Less(t, slowest, readTimeout+readTimeout+500*time.Millisecond)

	proxy.Heal()
	testkit.WaitFor(t, 5*time.Second, "calls to succeed after healing", func() bool {
		v, err := redis.Int(p.Do(ctx, "ECHO", 7))
		return err == nil && v == 7
	})
}

// TestAutoPipelineBoundsWhatWaitsOnAStalledServer: past PipelineDepth,
// callers wait for room, each bounded by its own context, and the pool
// serves again once the server does.
func TestAutoPipelineBoundsWhatWaitsOnAStalledServer(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{AutoPipeline: true, PipelineConns: 1, PipelineDepth: 4, ReadTimeout: 3 * time.Second})
	ctx := context.Background()
	_, err := p.Do(ctx, "PING")
	require.NoError(t, err)
	stalled := stallServer(t, srv, time.Second)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 10 {
		wg.Go(func() {
			short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			_, err := p.Do(short, "ECHO", i)
			assert.ErrorIs(t, err, context.DeadlineExceeded, "caller %d", i)
		})
	}
	wg.Wait()
	assert.Less(t, time.Since(start), 800*time.Millisecond, "every caller returned by its deadline, room or not")
	stalled()
	for i := range 20 {
		v, err := redis.Int(p.Do(ctx, "ECHO", i))
		require.NoError(t, err)
		require.Equal(t, i, v)
	}
}

func TestAutoPipelineCallersFindingNoSharedConnectionShareOneDial(t *testing.T) {
	ln := silentServer(t) // accepts and never answers, so the AUTH of each dial waits for DialTimeout
	const dialTimeout = 200 * time.Millisecond
	p, err := redisalive.NewPool(redisalive.Options{Addr: ln.Addr().String(), Password: "secret", AutoPipeline: true, DialTimeout: dialTimeout})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })

	const callers = 16
	errs := make([]error, callers)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range callers {
		wg.Go(func() { _, errs[i] = p.Do(context.Background(), "PING") })
	}
	wg.Wait()
	took := time.Since(start)
	for _, err := range errs {
		require.ErrorContains(t, err, "i/o timeout")
		require.Equal(t, 1, strings.Count(err.Error(), "redisalive:"), "one prefix, naming the dial: %v", err)
	}
	t.Logf("%d callers failed in %v; first error: %v", callers, took, errs[0])
	// Taking turns at the dial, as they once did, they needed callers ×
	// DialTimeout (3.2 s).
	assert.Less(t, took, 5*dialTimeout, "callers share the making of the shared connection")
	assert.LessOrEqual(t, p.Stats().DialErrors, int64(2), "dials made for the callers")
}

// TestAutoPipelineKeepsSmallRepliesOnASlowLinkOnSharedConnections: on a
// link that slices replies into 64-byte segments a millisecond apart,
// small replies still share the pipelined connection: only a reply that
// goes on arriving for milliseconds makes callers bypass it.
func TestAutoPipelineKeepsSmallRepliesOnASlowLinkOnSharedConnections(t *testing.T) {
	srv := redistest.Start(t)
	px, err := faultproxy.New(srv.Addr())
	require.NoError(t, err)
	defer px.Close()
	p := pooltest.New(t, redisalive.Options{Addr: px.Addr(), AutoPipeline: true})
	px.SetSlice(faultproxy.ToClient, 64, time.Millisecond)

	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				want := fmt.Sprintf("caller %d round %d", g, i)
				got, err := redis.String(p.Do(ctx, "ECHO", want))
				if !assert.NoError(t, err) || !assert.Equal(t, want, got) {
					return
				}
			}
		})
	}
	wg.Wait()
	s := p.Stats()
	assert.Equal(t, int64(8*20), s.Pipelined, "Stats.Pipelined")
	assert.Zero(t, s.PipelineBypasses, "Stats.PipelineBypasses")
	assert.LessOrEqual(t, s.Dials, int64(redisalive.DefaultPipelineConns), "Stats.Dials: only the shared connections")
}
