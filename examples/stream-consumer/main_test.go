package main

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gomodule/redigo/redis"
	"go.uber.org/goleak"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/redistest"
)

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds each run; a run that has not settled everything by
// then stops and its summary falls short.
const testTimeout = 8 * time.Second

// testConfig returns small timings: the handlers take microseconds.
func testConfig(addr string) config {
	return config{addr: addr, stream: "s", group: "g", consumer: "alive", concurrency: 4,
		handlerTimeout: 100 * time.Millisecond, minIdle: 300 * time.Millisecond}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func runToEnd(t *testing.T, cfg config) summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	got, err := run(ctx, cfg, quiet())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("run did not settle its entries within %v: %+v", testTimeout, got)
	}
	return got
}

// prepare creates the group and adds entries through a pool of its own,
// closed before run starts.
func prepare(t *testing.T, addr string, entries, poison int) {
	t.Helper()
	p, err := redisalive.NewPool(redisalive.Options{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := createGroup(t.Context(), p, "s", "g"); err != nil {
		t.Fatalf("XGROUP CREATE: %v", err)
	}
	if err := seed(t.Context(), p, "s", "g", entries, poison, 0); err != nil {
		t.Fatalf("seed: %v", err)
	}
}

// pending returns how many entries the group has pending, in all and
// under one consumer.
func pending(t *testing.T, addr, consumer string) (all, ofConsumer int) {
	t.Helper()
	c, err := redis.Dial("tcp", addr, redis.DialReadTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	summary, err := redis.Values(c.Do("XPENDING", "s", "g"))
	if err != nil || len(summary) != 4 {
		t.Fatalf("XPENDING s g: got %v (%v)", summary, err)
	}
	all, _ = redis.Int(summary[0], nil)
	rows, err := redis.Values(c.Do("XPENDING", "s", "g", "-", "+", 1000, consumer))
	if err != nil {
		t.Fatalf("XPENDING s g - + 1000 %s: %v", consumer, err)
	}
	return all, len(rows)
}

func TestDemoHandlesEverySeededEntryExactlyOnce(t *testing.T) {
	cfg := testConfig("")
	cfg.entries, cfg.crashed = 300, 5
	got := runToEnd(t, cfg)
	// The crashed consumer's entries come back through a reclaim, once each.
	if want := (summary{Handled: 300, Reclaimed: 5}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestAnEntryWhoseHandlerAlwaysFailsEndsInTheDeadLetterStream(t *testing.T) {
	mr := miniredis.RunT(t)
	prepare(t, mr.Addr(), 20, 1)
	cfg := testConfig(mr.Addr())
	cfg.stopAfter = 21 // the run's own "XGROUP CREATE" meets BUSYGROUP, as a second worker would

	got := runToEnd(t, cfg)
	// Delivered maxDeliveries times, each failing; the next claim moves it.
	want := summary{Handled: 20, Retried: maxDeliveries, DeadLettered: 1, Reclaimed: maxDeliveries}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	dead, err := mr.Stream("s:dead")
	if err != nil || len(dead) != 1 {
		t.Fatalf("dead-letter stream: got %v (%v), want one entry", dead, err)
	}
	all, _ := mr.Stream("s")
	poison := all[len(all)-1] // seeded last
	e := entry{id: dead[0].ID, fields: dead[0].Values}
	wantDeliveries := strconv.Itoa(maxDeliveries + 1)
	if e.field("source-id") != poison.ID || e.field("job") != "poison/0" || e.field("deliveries") != wantDeliveries {
		t.Errorf("dead letter: got fields %q, want source-id %s, job poison/0, deliveries %s",
			e.fields, poison.ID, wantDeliveries)
	}
	if all, _ := pending(t, mr.Addr(), "alive"); all != 0 {
		t.Errorf("pending after the run: got %d, want 0", all)
	}
}

func TestASecondConsumerReclaimsTheEntriesADeadConsumerLeftPending(t *testing.T) {
	srv := redistest.Start(t)
	prepare(t, srv.Addr(), 20, 0)
	// The dead consumer: it reads half the entries and never acks them.
	srv.Do(t, "XREADGROUP", "GROUP", "g", "dead", "COUNT", 10, "STREAMS", "s", ">")
	if _, n := pending(t, srv.Addr(), "dead"); n != 10 {
		t.Fatalf("pending under the dead consumer before the run: got %d, want 10", n)
	}

	cfg := testConfig(srv.Addr())
	cfg.stopAfter = 20
	got := runToEnd(t, cfg)
	if want := (summary{Handled: 20, Reclaimed: 10}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if all, dead := pending(t, srv.Addr(), "dead"); all != 0 || dead != 0 {
		t.Errorf("pending after the run: got %d (%d under the dead consumer), want 0", all, dead)
	}
	srv.WaitConnectedClients(t, 0, 2*time.Second) // Shutdown released every connection
}

// TestARunThatEndsOnItsOwnSaysNothingOfStopping: releasing the signal
// handling after a run that no signal ended logs nothing, where it used
// to announce a stop and a second signal that would kill at once.
func TestARunThatEndsOnItsOwnSaysNothingOfStopping(t *testing.T) {
	var logged strings.Builder
	ctx, release := stopOnSignal(slog.New(slog.NewTextHandler(&logged, nil)))
	release()
	<-ctx.Done() // released: the context ends, as the signal's would
	if logged.Len() != 0 {
		t.Errorf("got log %q, want none", logged.String())
	}
}
