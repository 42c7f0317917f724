package redisaliveotel

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/redisalive/redisalive"
)

func TestClassifyNamesEachKindOfFailure(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want outcome
	}{
		{nil, outcome{}},
		{redis.Error("WRONGTYPE Operation against a key holding the wrong kind of value"), outcome{"WRONGTYPE", "WRONGTYPE"}},
		{fmt.Errorf("wrapped: %w", redis.Error("NOSCRIPT No matching script")), outcome{"NOSCRIPT", "NOSCRIPT"}},
		{redis.Error("oops, a script's own words"), outcome{errType: "_OTHER"}},
		{fmt.Errorf("checkout: %w: %w", redisalive.ErrPoolTimeout, context.DeadlineExceeded), outcome{errType: "pool_timeout"}},
		{redisalive.ErrPoolClosed, outcome{errType: "pool_closed"}},
		{fmt.Errorf("GET: %w", context.Canceled), outcome{errType: "canceled"}},
		{fmt.Errorf("GET: %w", context.DeadlineExceeded), outcome{errType: "timeout"}},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, outcome{errType: "timeout"}},
		{fmt.Errorf("GET: %w", io.EOF), outcome{errType: "eof"}},
		{fmt.Errorf("connect: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), outcome{errType: "*net.OpError"}},
	} {
		assert.Equal(t, tc.want, classify(tc.err), "classify(%v)", tc.err)
	}
}

// TestCacheStopsGrowingAtItsBound: past maxCached entries, new keys are
// built each time and kept nowhere.
func TestCacheStopsGrowingAtItsBound(t *testing.T) {
	builds := 0
	c := newCache(func(k opKey) string { builds++; return "v" + k.cmd })
	for i := range maxCached + 10 {
		assert.Equal(t, "v"+strconv.Itoa(i), c.get(opKey{cmd: strconv.Itoa(i)}))
	}
	assert.Len(t, *c.entries.Load(), maxCached)
	c.get(opKey{cmd: "0"})
	c.get(opKey{cmd: strconv.Itoa(maxCached + 1)})
	assert.Equal(t, maxCached+10+1, builds, "builds: a kept key is built once, one past the bound every time")
}

// TestMetricHooksAllocateNothingPerEvent: once a command's attributes are
// built, recording a checkout, a dial, a use or a command's duration
// allocates nothing in this package or the SDK; only the Command hook's
// closure, which carries the start time, is allocated per command.
func TestMetricHooksAllocateNothingPerEvent(t *testing.T) {
	mr := miniredis.RunT(t)
	p, err := redisalive.NewPool(redisalive.Options{Addr: mr.Addr()})
	require.NoError(t, err)
	defer p.Close()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	m, err := newMetrics(mp.Meter("test"), p, "cache")
	require.NoError(t, err)
	ctx := context.Background()

	for name, event := range map[string]func(){
		"checkout": func() { m.checkout(ctx, time.Millisecond, nil) },
		"dial":     func() { m.dial(ctx, time.Millisecond, nil) },
		"use":      func() { m.use(time.Millisecond) },
		"command":  func() { m.commandDone(ctx, "GET", time.Millisecond, nil) },
	} {
		event() // builds what is built once
		assert.Zero(t, testing.AllocsPerRun(100, event), "%s: allocations per event", name)
	}
}

func TestServerAttrsNameTheServerAsOptionsAddrDoes(t *testing.T) {
	base := []attribute.KeyValue{semconv.DBSystemNameRedis, semconv.DBNamespace("2")}
	for _, tc := range []struct {
		o    redisalive.Options
		want []attribute.KeyValue
	}{
		{redisalive.Options{Network: "tcp", Addr: "cache.internal:6380", DB: 2}, []attribute.KeyValue{semconv.ServerAddress("cache.internal"), semconv.ServerPort(6380)}},
		{redisalive.Options{Network: "tcp6", Addr: "[::1]:6379", DB: 2}, []attribute.KeyValue{semconv.ServerAddress("::1"), semconv.ServerPort(6379)}},
		{redisalive.Options{Network: "tcp", Addr: "cache.internal:redis", DB: 2}, []attribute.KeyValue{semconv.ServerAddress("cache.internal")}},
		{redisalive.Options{Network: "unix", Addr: "/run/redis.sock", DB: 2}, []attribute.KeyValue{semconv.ServerAddress("/run/redis.sock")}},
	} {
		assert.Equal(t, append(base, tc.want...), serverAttrs(tc.o), "serverAttrs(%s %s)", tc.o.Network, tc.o.Addr)
	}
}
