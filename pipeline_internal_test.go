package redisalive

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive/internal/faultproxy"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

// TestARequestHeldFromAnEarlierLifeTouchesNothing: whoever still holds a
// recycled request, as a pipeline that delivered twice would, can neither
// deliver into its next life nor recycle it from under its new caller.
func TestARequestHeldFromAnEarlierLifeTouchesNothing(t *testing.T) {
	r := &request{done: make(chan struct{}, 1)}
	for _, ended := range []uint64{reqDelivered, reqAbandoned, reqDetached} {
		old := r.begin("GET", []any{"old"}, reqWaiting)
		if ended == reqDetached {
			old = r.begin("PING", nil, reqDetached)
		}
		if ended != reqDetached && !old.swap(reqWaiting, ended) {
			t.Fatalf("the first life could not end %d", ended)
		}
		// What recycle does, without pooling r: this test must not hand
		// a request to the pool's other users.
		old.swap(ended, reqFree)
		cur := r.begin("GET", []any{"new"}, reqWaiting)

		if old.swap(reqWaiting, reqDelivered) {
			t.Errorf("after status %d: a reply for the old life was delivered into the new one", ended)
		}
		for _, status := range []uint64{reqAbandoned, reqDetached, reqDelivered, reqWaiting} {
			if old.swap(status, reqFree) {
				t.Errorf("after status %d: the old life recycled the new one as %d", ended, status)
			}
		}
		if !cur.is(reqWaiting) || r.args[0] != "new" {
			t.Errorf("after status %d: the new life's request was changed: state %d, args %v", ended, r.state.Load(), r.args)
		}
		if !cur.swap(reqWaiting, reqDelivered) {
			t.Fatalf("after status %d: the new life cannot be delivered", ended)
		}
		if !cur.swap(reqDelivered, reqFree) {
			t.Fatalf("after status %d: the new life cannot be recycled", ended)
		}
	}
}

// newSlowLinkPool returns a pool with one shared connection, made, through
// a fault proxy to a real server, all closed when the test ends.
func newSlowLinkPool(t *testing.T) (*Pool, *faultproxy.Proxy, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	px, err := faultproxy.New(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	p := openPool(t, Options{Addr: px.Addr(), AutoPipeline: true, PipelineConns: 1})
	if _, err := p.Do(context.Background(), "PING"); err != nil {
		t.Fatal(err)
	}
	return p, px, srv
}

// TestACallerBypassesASharedConnectionBusyWithASlowReply: while a large
// reply trickles in over a slow link, the reader marks its shared
// connection slow, and a caller that would queue behind that reply takes a
// connection of its own and is answered long before it.
func TestACallerBypassesASharedConnectionBusyWithASlowReply(t *testing.T) {
	p, px, srv := newSlowLinkPool(t)
	ctx := context.Background()
	big := strings.Repeat("v", 256<<10)
	srv.Do(t, "SET", "big", big)
	px.SetSlice(faultproxy.ToClient, 1024, time.Millisecond) // 256 KiB in well over 256 ms

	bigDone := make(chan error, 1)
	go func() {
		got, err := redis.String(p.Do(ctx, "GET", "big"))
		if err == nil && got != big {
			err = fmt.Errorf("GET big: got %d bytes, want %d", len(got), len(big))
		}
		bigDone <- err
	}()
	pl := p.pipes[0].pl.Load()
	testkit.WaitFor(t, 5*time.Second, "the shared connection marked slow", func() bool { return pl.slowAt.Load() != 0 })

	got, err := redis.String(p.Do(ctx, "ECHO", "quick"))
	if err != nil || got != "quick" {
		t.Fatalf("ECHO: got %q, %v, want quick, nil", got, err)
	}
	select {
	case err := <-bigDone:
		t.Errorf("the large reply came first (%v): the ECHO waited behind it", err)
	default:
	}
	if n := p.Stats().PipelineBypasses; n != 1 {
		t.Errorf("PipelineBypasses: got %d, want 1", n)
	}
	if err := <-bigDone; err != nil {
		t.Error(err)
	}
}

// TestACommandGivenUpOnASlowSharedConnectionIsNotOvertakenByTheCallersNext:
// a SET written on a shared connection behind a large upload, whose caller
// gave up on it, still reaches the server. The caller's next SET must not
// bypass the connection, though it is slow and busy, or it would run first
// and the SET given up on would overwrite it.
func TestACommandGivenUpOnASlowSharedConnectionIsNotOvertakenByTheCallersNext(t *testing.T) {
	p, px, srv := newSlowLinkPool(t)
	ctx := context.Background()
	pl := p.pipes[0].pl.Load()
	srv.Do(t, "CONFIG", "RESETSTAT")
	// 32 KiB fit the socket buffers at once and take over 500 ms to cross:
	// long enough that the 20 ms SET below is given up on behind them even
	// when a busy machine runs this goroutine late (CI saw 128 ms pass).
	px.SetSlice(faultproxy.ToServer, 256, 4*time.Millisecond)

	uploaded := make(chan error, 1)
	go func() {
		_, err := p.Do(ctx, "SET", "upload", strings.Repeat("u", 32<<10))
		uploaded <- err
	}()
	testkit.WaitFor(t, 5*time.Second, "the upload in flight", func() bool { return pl.outstanding.Load() == 1 })
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err := p.Do(short, "SET", "k", "given up on")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the SET behind the upload: got %v, want context.DeadlineExceeded", err)
	}
	// As if the reader had just seen a slow reply on the connection.
	pl.slowAt.Store(time.Now().UnixNano())

	if _, err := p.Do(ctx, "SET", "k", "latest"); err != nil {
		t.Fatal(err)
	}
	if n := p.Stats().PipelineBypasses; n != 0 {
		t.Errorf("PipelineBypasses: got %d, want 0", n)
	}
	if err := <-uploaded; err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the shared connection idle", func() bool { return pl.outstanding.Load() == 0 })
	if n := p.pipeAbandoned.Load(); n != 0 {
		t.Errorf("commands given up on and unresolved, with nothing outstanding: got %d, want 0", n)
	}
	info, err := redis.String(srv.Do(t, "INFO", "commandstats"), nil)
	if err != nil || !strings.Contains(info, "cmdstat_set:calls=3,") {
		t.Fatalf("the server ran %q, want 3 SETs: without the one given up on, this test proves nothing", info)
	}
	got, err := redis.String(p.Do(ctx, "GET", "k"))
	if err != nil || got != "latest" {
		t.Errorf("GET k: got %q, %v, want latest, nil", got, err)
	}
}

// TestTheHealthCheckerForgetsASharedConnectionsSlownessAfterPipelineSlowMemory:
// a shared connection marked slow stays so for pipelineSlowMemory after its
// last slow reply; the health checker's first visit after that clears it.
func TestTheHealthCheckerForgetsASharedConnectionsSlownessAfterPipelineSlowMemory(t *testing.T) {
	p, _, _ := newSlowLinkPool(t)
	pl := p.pipes[0].pl.Load()
	slowAt := time.Now()
	pl.slowAt.Store(slowAt.UnixNano())
	p.checkShared(slowAt.Add(pipelineSlowMemory - time.Millisecond))
	if pl.slowAt.Load() == 0 {
		t.Errorf("slow mark cleared %v after the slow reply, want kept until %v", pipelineSlowMemory-time.Millisecond, pipelineSlowMemory)
	}
	p.checkShared(slowAt.Add(pipelineSlowMemory))
	if got := pl.slowAt.Load(); got != 0 {
		t.Errorf("slow mark %v after the slow reply: got %d, want 0", pipelineSlowMemory, got)
	}
}

// TestCommandsGoBehindTheOnesTheirCallersGaveUpOn: while a shared
// connection holds a command whose caller gave up on it, which may still
// run, every new command goes to that connection, behind it, even one the
// spill would send to the other; while two hold such commands, none can be
// followed by both, and a new command waits, bounded by its context.
func TestCommandsGoBehindTheOnesTheirCallersGaveUpOn(t *testing.T) {
	p := openPool(t, Options{Addr: "127.0.0.1:1", AutoPipeline: true, PipelineConns: 2})
	gen := p.current().gen
	var pls [2]*pipeline
	for i := range pls {
		pls[i] = &pipeline{p: p, c: &conn{gen: gen}, done: make(chan struct{})}
		p.pipes[i].pl.Store(pls[i])
	}
	pls[0].outstanding.Store(pipelineSpill) // full: the spill picks the other
	ctx := context.Background()
	if got, _, err := p.pipelineFor(ctx); err != nil || got != pls[1] {
		t.Fatalf("with nothing given up on: got %p, %v; want the second connection, %p", got, err, pls[1])
	}

	pls[0].abandoned.Add(1)
	p.pipeAbandoned.Add(1)
	if got, _, err := p.pipelineFor(ctx); err != nil || got != pls[0] {
		t.Fatalf("with a command given up on the first: got %p, %v; want the first, %p", got, err, pls[0])
	}

	pls[1].abandoned.Add(1)
	p.pipeAbandoned.Add(1)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if got, _, err := p.pipelineFor(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("with commands given up on both: got %p, %v; want to wait until the context's deadline", got, err)
	}
	pls[1].abandoned.Add(-1)
	p.pipeAbandoned.Add(-1)
	pls[0].abandoned.Add(-1)
	p.pipeAbandoned.Add(-1)
	for i := range pls {
		p.pipes[i].pl.Store(nil)
	}
}

// TestACommandGivenUpOnAnEndedSharedConnectionHoldsBackTheNextUntilSettled:
// a shared connection that has ended still holds the commands given up on
// it until its reader has closed it and recorded it as a zombie, whose
// kill comes before anything else is sent. Until then the caller's next
// command must wait, not go elsewhere at once: a copy of the one given up
// on, held in the link, could still run after it.
func TestACommandGivenUpOnAnEndedSharedConnectionHoldsBackTheNextUntilSettled(t *testing.T) {
	p, _, _ := newSlowLinkPool(t)
	pl := p.pipes[0].pl.Load()
	// As pipelined counts a command given up on, and as the connection
	// ends with it in flight, before the reader has settled it.
	pl.abandoned.Add(1)
	p.pipeAbandoned.Add(1)
	pl.end(errors.New("cut"))

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if got, err := p.behindAbandoned(ctx); got != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("behind a command given up on an ended, unsettled connection: got %v, %v; want to wait until the deadline", got, err)
	}
	// Settled, as deliver does once the connection is closed.
	pl.abandoned.Add(-1)
	p.pipeAbandoned.Add(-1)
	if got, err := p.behindAbandoned(context.Background()); got != nil || err != nil {
		t.Fatalf("with nothing given up on: got %v, %v; want nil, nil", got, err)
	}
}
