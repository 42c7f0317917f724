//go:build linux

package redisalive_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
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
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

// TestFaults is the fault model of docs/fault-model.md, measured on real sockets: a
// real redis-server, real TCP over loopback and real kernel faults
// (iptables drops and resets, `ss -K`), in a private network namespace.
// Each subtest injects one failure and asserts the bound the library
// promises for it. Bounds stated with a 20% margin are asserted as
// bound*1.2 + faultSlack; lower bounds prove that the mechanism under test,
// not some other one, ended the wait.
//
// It needs Linux, root, unshare, ip, iptables, ss and redis-server, and is
// skipped without them (it fails instead when
// REDISALIVE_REQUIRE_FAULTNET=1, as in CI).
//
// It is one test, since faultnet.Enter runs the test binary again inside
// the namespace. Its cases live beside it by feature: faults_pool_test.go
// (the pool's core), faults_blocking_test.go, faults_pubsub_test.go,
// faults_redigo_test.go (RedigoPool), faults_cluster_test.go,
// faults_pipeline_test.go and faults_failover_test.go (Sentinel); this
// file keeps the harness they share.
func TestFaults(t *testing.T) {
	if !faultnet.Enter(t) {
		return
	}
	t.Run("BRPopBlackhole", overTCPAndTLS(faultTestBRPopUnderBlackhole))
	t.Run("BRPopWrittenIntoBlackhole", overTCPAndTLS(faultTestBRPopWrittenIntoBlackhole))
	t.Run("HealthCheckBlackhole", overTCPAndTLS(faultTestHealthCheckUnderBlackhole))
	t.Run("KeepAlive", faultTestKeepAliveAlone)
	t.Run("UserTimeout", faultTestUserTimeout)
	t.Run("ServerClosedIdle", overTCPAndTLS(faultTestServerIdleTimeout))
	t.Run("ResetInUse", faultTestResetInUse)
	t.Run("NestedCheckout", faultTestNestedCheckout)
	t.Run("CloseDuringTraffic", faultTestCloseDuringTraffic)
	t.Run("ServerRestart", faultTestServerRestart)
	t.Run("SlowServer", faultTestSlowServer)
	t.Run("BRPopServerForgot", faultTestServerForgotConnection)
	t.Run("Zombie", faultTestZombie)
	t.Run("NoZombieOutlivesABlackhole", faultTestNoZombieOutlivesABlackhole)
	t.Run("XReadGroupBlackhole", faultTestXReadGroupUnderBlackhole)
	t.Run("SubscriptionShortBlackhole", faultTestSubscriptionShortBlackhole)
	t.Run("SubscriptionLongBlackhole", faultTestSubscriptionLongBlackhole)
	t.Run("SubscriptionServerForgot", faultTestSubscriptionServerForgot)
	t.Run("SubscriptionIdle", faultTestSubscriptionIdle)
	t.Run("RedigoPoolBlackhole", faultTestRedigoPoolBlackhole)
	t.Run("RedigoPoolKeepAlive", faultTestRedigoPoolKeepAlive)
	t.Run("ClusterMasterBlackhole", faultTestClusterMasterBlackhole)
	t.Run("ClusterServerClosedIdle", faultTestClusterServerClosedIdle)
	t.Run("ClusterMasterKilled", faultTestClusterMasterKilled)
	t.Run("ClusterMasterBlackholed", faultTestClusterMasterBlackholed)
	t.Run("PipelineBlackhole", faultTestPipelineBlackhole)
	t.Run("PipelineReset", faultTestPipelineReset)
	t.Run("PipelineServerRestart", faultTestPipelineServerRestart)
	t.Run("PipelineCancelDuringBlackhole", faultTestPipelineCancel)
	t.Run("SentinelMasterKilled", faultTestSentinelMasterKilled)
	t.Run("SentinelMasterBlackholed", faultTestSentinelMasterBlackholed)
	t.Run("SentinelMasterCutOffFromTheSentinels", faultTestSentinelMasterCutOff)
	t.Run("SentinelOneDead", faultTestSentinelOneDead)
	t.Run("SentinelWatchedOneBlackholed", faultTestSentinelWatchedOneBlackholed)
}

const (
	// faultSlack is the fixed allowance on top of bound*1.2 for process
	// scheduling under -race on a loaded machine and for the fork/exec of
	// iptables or ss that starts a fault.
	faultSlack = 200 * time.Millisecond
	// faultPoll is how often conditions are polled.
	faultPoll = 2 * time.Millisecond
)

// overTCPAndTLS runs a fault case as subtests TCP and TLS, handing it a
// server of each kind.
func overTCPAndTLS(test func(t *testing.T, start func(testing.TB, ...string) *redistest.Server)) func(*testing.T) {
	return func(t *testing.T) {
		t.Run("TCP", func(t *testing.T) { test(t, redistest.Start) })
		t.Run("TLS", func(t *testing.T) { test(t, redistest.StartTLS) })
	}
}

// faultPlus20 is the assertion limit for a bound stated with a 20% margin.
func faultPlus20(bound time.Duration) time.Duration { return bound + bound/5 + faultSlack }

// faultAssertElapsed checks lo <= got <= hi and logs got, so every run's -v
// output records the measured values against their bounds.
func faultAssertElapsed(t *testing.T, what string, got, lo, hi time.Duration) {
	t.Helper()
	t.Logf("%s: %v (want %v..%v)", what, got.Round(time.Millisecond), lo, hi)
	if got < lo || got > hi {
		t.Errorf("%s: got %v, want between %v and %v", what, got, lo, hi)
	}
}

// faultInfoInt returns an integer field of the server's INFO section.
func faultInfoInt(t *testing.T, srv *redistest.Server, section, field string) int64 {
	t.Helper()
	info, err := redis.String(srv.Do(t, "INFO", section), nil)
	require.NoError(t, err)
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			require.NoError(t, err, "INFO %s %s", section, field)
			return n
		}
	}
	t.Fatalf("INFO %s: no field %s", section, field)
	return 0
}

// faultWaitBlocked waits until n clients are blocked in a blocking command.
func faultWaitBlocked(t *testing.T, srv *redistest.Server, n int64) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, fmt.Sprintf("blocked_clients == %d", n), func() bool {
		return faultInfoInt(t, srv, "clients", "blocked_clients") == n
	})
}

// faultConsumer runs BRPop on one key in a loop and hands over what it pops.
type faultConsumer struct {
	got    chan faultPop
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	errs []error // errors BRPop returned other than for ctx's end
}

// brPopper is a Pool or a Cluster.
type brPopper interface {
	BRPop(ctx context.Context, keys ...string) (key, value string, err error)
}

// faultStartConsumer starts a consumer that runs until the test ends, its stop
// method is called, or the pool closes.
func faultStartConsumer(t *testing.T, p brPopper, key string) *faultConsumer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &faultConsumer{got: make(chan faultPop, 100), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, v, err := p.BRPop(ctx, key)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				c.mu.Lock()
				c.errs = append(c.errs, err)
				c.mu.Unlock()
				if errors.Is(err, redisalive.ErrPoolClosed) {
					return
				}
				continue
			}
			c.got <- faultPop{v, time.Now()}
		}
	}()
	t.Cleanup(func() { c.stop(t) })
	return c
}

// stop ends the consumer and waits for its goroutine, at most 5 s.
func (c *faultConsumer) stop(t *testing.T) {
	t.Helper()
	c.cancel()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Errorf("consumer still running 5s after its context was cancelled")
	}
}

func (c *faultConsumer) errors() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.errs)
}

// faultPop is an element a consumer popped and when BRPop returned it.
type faultPop struct {
	v  string
	at time.Time
}

// receive waits for the consumer to pop an element and returns it with the
// time BRPop returned it.
func (c *faultConsumer) receive(t *testing.T, within time.Duration) (string, time.Time) {
	t.Helper()
	select {
	case e := <-c.got:
		return e.v, e.at
	case <-time.After(within):
		t.Fatalf("consumer popped nothing within %v (errors: %v)", within, c.errors())
		return "", time.Time{}
	}
}

// faultPush pushes v onto key from an admin connection and returns when the
// push began.
func faultPush(t *testing.T, srv *redistest.Server, key, v string) time.Time {
	t.Helper()
	start := time.Now()
	srv.Do(t, "LPUSH", key, v)
	return start
}

func faultIsTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// faultStartWithSocket starts a server that also listens on a unix socket,
// which the iptables faults on its TCP port do not touch: a publisher or
// producer on it keeps working through a blackhole, as one on another host
// would.
func faultStartWithSocket(t *testing.T, args ...string) (*redistest.Server, redis.Conn) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "redis.sock")
	srv := redistest.Start(t, append([]string{"--unixsocket", sock, "--unixsocketperm", "700"}, args...)...)
	admin, err := redis.Dial("unix", sock, redis.DialReadTimeout(2*time.Second), redis.DialWriteTimeout(2*time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { admin.Close() })
	return srv, admin
}

// faultAssertKeepAliveKill waits for the kernel to end c's socket, silent
// on a blackholed link since lastTraffic, asserts it did so within bound,
// and that a command on it then fails at once with the kernel's verdict.
func faultAssertKeepAliveKill(t *testing.T, srv *redistest.Server, c redis.Conn, lastTraffic time.Time, bound time.Duration) {
	t.Helper()
	testkit.WaitFor(t, 2*faultPlus20(bound), "the kernel to end the client socket", func() bool {
		return clientStates(t, srv.Port())["ESTABLISHED"] == 0
	})
	faultAssertElapsed(t, "keepalive kill after the last traffic", time.Since(lastTraffic), bound-200*time.Millisecond, faultPlus20(bound))
	start := time.Now()
	_, err := c.Do("PING")
	require.ErrorIs(t, err, syscall.ETIMEDOUT, "the kernel's verdict on the socket")
	assert.Less(t, time.Since(start), 100*time.Millisecond, "a command on the dead socket must fail at once")
}
