package redisalive_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/faultproxy"
	"github.com/redisalive/redisalive/internal/pooltest"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

// hookKey marks a context as passed through a Command hook.
type hookKey string

// hookLog records what a pool's hooks were told, in order.
type hookLog struct {
	mu     sync.Mutex
	events []string
}

func (l *hookLog) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, fmt.Sprintf(format, args...))
}

func (l *hookLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

func (l *hookLog) hook(name string) redisalive.Hook {
	return redisalive.Hook{
		Command: func(ctx context.Context, cmd string) context.Context {
			l.add("%s command %s", name, cmd)
			return context.WithValue(ctx, hookKey(name), true)
		},
		CommandDone: func(ctx context.Context, cmd string, took time.Duration, err error) {
			if ctx.Value(hookKey(name)) == nil {
				l.add("%s done without the context its Command made", name)
			}
			l.add("%s done %s err=%v", name, cmd, err != nil)
		},
		PoolClosing: func() { l.add("%s pool closing", name) },
		Checkout: func(ctx context.Context, took time.Duration, err error) {
			l.add("%s checkout err=%v", name, err != nil)
		},
		Dial:   func(ctx context.Context, took time.Duration, err error) { l.add("%s dial err=%v", name, err != nil) },
		Use:    func(held time.Duration) { l.add("%s use", name) },
		Closed: func(reason redisalive.CloseReason) { l.add("%s closed %s", name, reason) },
		Redial: func(ctx context.Context, cmd string, err error) { l.add("%s redial %s", name, cmd) },
	}
}

func TestHooksSeeEveryEventInOrderAndNestCommands(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{})
	var log hookLog
	p.AddHook(log.hook("a"))
	p.AddHook(log.hook("b"))
	_, err := p.Do(context.Background(), "SET", "k", "v")
	require.NoError(t, err)
	assert.Equal(t, []string{
		"a command SET", "b command SET", // nested: a is outermost
		"a dial err=false", "b dial err=false",
		"a checkout err=false", "b checkout err=false",
		"a use", "b use",
		"b done SET err=false", "a done SET err=false",
	}, log.all())
	p.Close()
	assert.Equal(t, []string{"a pool closing", "b pool closing"}, log.all()[10:])
}

func TestHookReturningNoContextLeavesTheCallersInPlace(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{})
	p.AddHook(redisalive.Hook{Command: func(context.Context, string) context.Context { return nil }})
	_, err := p.Do(context.Background(), "SET", "k", "v")
	require.NoError(t, err)
}

func TestHooksSeeClosesAndPoolTimeouts(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{MaxActive: 1, PoolTimeout: 50 * time.Millisecond})
	var mu sync.Mutex
	counts := map[string]int{}
	note := func(s string) { mu.Lock(); counts[s]++; mu.Unlock() }
	p.AddHook(redisalive.Hook{
		Checkout: func(ctx context.Context, took time.Duration, err error) {
			if errors.Is(err, redisalive.ErrPoolTimeout) {
				note("pool timeout")
			}
		},
		Closed: func(reason redisalive.CloseReason) { note("closed " + reason.String()) },
	})
	held, err := p.Get(context.Background())
	require.NoError(t, err)
	_, err = p.Do(context.Background(), "PING")
	require.ErrorIs(t, err, redisalive.ErrPoolTimeout)
	_, err = held.Do("SELECT", 2)
	require.NoError(t, err)
	require.NoError(t, held.Close()) // left in another database: closed
	mu.Lock()
	assert.Equal(t, map[string]int{"pool timeout": 1, "closed state": 1}, counts)
	mu.Unlock()
}

func TestRedialHookSeesABlockingReadRideOutADeadLink(t *testing.T) {
	srv := redistest.Start(t)
	proxy, err := faultproxy.New(srv.Addr())
	require.NoError(t, err)
	defer proxy.Close()
	p, err := redisalive.NewPool(redisalive.Options{Addr: proxy.Addr(), BlockSlice: 100 * time.Millisecond, DialTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	defer p.Close()
	redials := make(chan string, 10)
	p.AddHook(redisalive.Hook{Redial: func(ctx context.Context, cmd string, err error) { redials <- cmd }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, _, err := p.BRPop(ctx, "q"); done <- err }()
	testkit.WaitFor(t, 2*time.Second, "the first round", func() bool { return p.Stats().BlockingRounds > 0 })
	proxy.Blackhole()
	select {
	case cmd := <-redials:
		assert.Equal(t, "BRPOP", cmd)
	case <-time.After(3 * time.Second):
		t.Fatal("no Redial hook within 3s of the link dying")
	}
	proxy.Heal()
	srv.Do(t, "LPUSH", "q", "x")
	require.NoError(t, <-done)
}

// TestEveryCloseReasonHasANameAndACounter: what ranges over CloseReasons
// (the metrics modules do) sees every reason, each with its counter.
func TestEveryCloseReasonHasANameAndACounter(t *testing.T) {
	s := redisalive.Stats{DeadClosed: 1, IdleClosed: 2, LifetimeClosed: 3, ErrorClosed: 4, CanceledClosed: 5, StateClosed: 6, MaxIdleClosed: 7, StaleClosed: 8}
	var names []string
	var sum int64
	for _, r := range redisalive.CloseReasons() {
		names = append(names, r.String())
		sum += s.ClosedBy(r)
	}
	assert.Equal(t, []string{"dead", "idle", "lifetime", "error", "canceled", "state", "max_idle", "stale"}, names)
	assert.Equal(t, int64(1+2+3+4+5+6+7+8), sum, "every counter, once")
}
