package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestTheDemoHandlesEveryJobAndSaysItIsConsuming(t *testing.T) {
	var logged testkit.LogBuffer
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := run(ctx, "", "jobs", 200, 4, slog.New(slog.NewTextHandler(&logged, nil))); err != nil {
		t.Fatalf("run: got %v, want nil", err)
	}
	if !strings.Contains(logged.String(), "msg=consuming") {
		t.Errorf("got log %q, want a consuming line", logged.String())
	}
}

// TestAWrongPasswordEndsTheRunAtOnceWithoutSayingConsuming: a worker that
// never connected does not claim to be consuming, and one the server
// refuses exits with the reason instead of retrying for ever.
func TestAWrongPasswordEndsTheRunAtOnceWithoutSayingConsuming(t *testing.T) {
	srv := redistest.Start(t)
	srv.Do(t, "CONFIG", "SET", "requirepass", "secret")
	var logged testkit.LogBuffer
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := run(ctx, "redis://:wrong@"+srv.Addr(), "jobs", 0, 4, slog.New(slog.NewTextHandler(&logged, nil)))
	if !errors.Is(err, redisalive.ErrMisconfigured) {
		t.Fatalf("run: got %v, want an error matching ErrMisconfigured", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("run returned after %v, want at once", took)
	}
	if strings.Contains(logged.String(), "msg=consuming") {
		t.Errorf("got log %q, want no consuming line", logged.String())
	}
}

// TestAServerNotUpYetIsWaitedForWithAWarningNotAConsumingLine: nothing
// listening is no configuration error (the server may be starting), so
// the worker waits for it, saying so.
func TestAServerNotUpYetIsWaitedForWithAWarningNotAConsumingLine(t *testing.T) {
	var logged testkit.LogBuffer
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	err := run(ctx, "127.0.0.1:1", "jobs", 0, 4, slog.New(slog.NewTextHandler(&logged, nil)))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run: got %v, want the context's deadline", err)
	}
	got := logged.String()
	if strings.Contains(got, "msg=consuming") || !strings.Contains(got, `msg="not connected yet: consuming once the server answers"`) {
		t.Errorf("got log %q, want a not-connected warning and no consuming line", got)
	}
}

// TestTheSentinelFlagsMakeASentinelURL: -sentinel and -master are the
// redis+sentinel:// URL that the pool reads.
func TestTheSentinelFlagsMakeASentinelURL(t *testing.T) {
	opts, err := poolOptions(sentinelURL("10.0.0.1:26379,10.0.0.2", "my master"))
	if err != nil {
		t.Fatal(err)
	}
	if opts.Sentinel == nil || opts.Sentinel.MasterName != "my master" || len(opts.Sentinel.Addrs) != 2 {
		t.Fatalf("got %+v, want the sentinels 10.0.0.1:26379 and 10.0.0.2:26379 and the master \"my master\"", opts.Sentinel)
	}
}
