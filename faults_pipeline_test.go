//go:build linux

package redisalive_test

import (
	"context"
	"sync"
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

// The fault cases of AutoPipeline's shared connections: subtests of
// TestFaults, on its harness (faults_test.go).

// pipelineCallers runs n callers at once, each an ECHO of its own value
// with ctx, and returns how long the slowest took and how many got their
// own value back.
func pipelineCallers(p *redisalive.Pool, ctx context.Context, n int) (slowest time.Duration, ok int, errs []error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			v, err := redis.Int(p.Do(ctx, "ECHO", i))
			mu.Lock()
			defer mu.Unlock()
			slowest = max(slowest, time.Since(start))
			if err == nil && v == i {
				ok++
			} else if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	return slowest, ok, errs
}

// 22. Auto-pipelining, the link dies with 64 callers in flight: every one
// returns within ReadTimeout (the shared connection is declared dead when
// no reply comes for that long), plus a DialTimeout for those moved to a
// new connection; after healing, calls succeed again.
func faultTestPipelineBlackhole(t *testing.T) {
	srv := redistest.Start(t)
	const readTimeout = 500 * time.Millisecond
	p := pooltest.OnServer(t, srv, redisalive.Options{AutoPipeline: true, ReadTimeout: readTimeout, DialTimeout: readTimeout})
	_, ok, _ := pipelineCallers(p, context.Background(), 64)
	require.Equal(t, 64, ok, "calls before the fault")
	heal := faultnet.Blackhole(t, srv.Port(), faultnet.Both)
	slowest, ok, errs := pipelineCallers(p, context.Background(), 64)
	faultAssertElapsed(t, "slowest of 64 callers on the dead link", slowest, 0, faultPlus20(readTimeout+readTimeout))
	assert.Zero(t, ok, "no call can succeed through the blackhole")
	assert.Len(t, errs, 64)
	assert.Positive(t, p.Stats().DeadClosed, "the shared connection, found dead")
	heal()
	testkit.WaitFor(t, 5*time.Second, "calls to succeed after healing", func() bool {
		_, ok, _ := pipelineCallers(p, context.Background(), 64)
		return ok == 64
	})
}

// 23. Auto-pipelining, the server answers with a reset: the callers in
// flight fail at once, and calls succeed once the resets stop.
func faultTestPipelineReset(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{AutoPipeline: true})
	_, ok, _ := pipelineCallers(p, context.Background(), 64)
	require.Equal(t, 64, ok, "calls before the fault")
	heal := faultnet.Reset(t, srv.Port())
	slowest, ok, _ := pipelineCallers(p, context.Background(), 64)
	faultAssertElapsed(t, "slowest of 64 callers on a reset connection", slowest, 0, faultPlus20(100*time.Millisecond))
	assert.Zero(t, ok, "no call can succeed through the resets")
	heal()
	_, ok, errs := pipelineCallers(p, context.Background(), 64)
	assert.Equal(t, 64, ok, "calls after the resets stopped: %v", errs)
}

// 24. Auto-pipelining across a server restart: the callers in flight fail
// at once, and the first calls after it succeed.
func faultTestPipelineServerRestart(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{AutoPipeline: true, DialTimeout: 500 * time.Millisecond})
	_, ok, _ := pipelineCallers(p, context.Background(), 64)
	require.Equal(t, 64, ok, "calls before the restart")
	srv.Restart(t)
	_, ok, errs := pipelineCallers(p, context.Background(), 64)
	assert.Equal(t, 64, ok, "calls after the restart: the dead shared connections are found before use: %v", errs)
}

// 25. Auto-pipelining, a caller cancelled while its command is on a
// blackholed link returns at its deadline and costs no connection: its
// reply, delayed by the blackhole (shorter than ReadTimeout), is read and
// dropped when the link heals, and no later caller reads it.
func faultTestPipelineCancel(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{AutoPipeline: true, PipelineConns: 1, ReadTimeout: 3 * time.Second})
	_, ok, _ := pipelineCallers(p, context.Background(), 8)
	require.Equal(t, 8, ok)
	dials := p.Stats().Dials
	heal := faultnet.Blackhole(t, srv.Port(), faultnet.Both)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	start := time.Now()
	_, err := p.Do(ctx, "ECHO", "stale")
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	faultAssertElapsed(t, "the cancelled caller returning", time.Since(start), 190*time.Millisecond, 200*time.Millisecond+faultSlack)
	time.Sleep(500 * time.Millisecond) // holds the fault, shorter than ReadTimeout; not synchronisation
	heal()
	_, ok, errs := pipelineCallers(p, context.Background(), 64)
	assert.Equal(t, 64, ok, "every later caller gets its own reply: %v", errs)
	s := p.Stats()
	assert.Equal(t, dials, s.Dials, "Dials: the cancelled command cost no connection")
	assert.Zero(t, s.DeadClosed+s.ErrorClosed+s.CanceledClosed, "connections closed: %+v", s)
}
