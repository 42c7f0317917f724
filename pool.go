package redisalive

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// runner is what running commands on a connection needs from its owner:
// the configuration, the counters, and the owner's closing signal, which
// ends blocking reads after their current round. A Pool is one; a redigo
// pool from NewRedigoPool has one of its own, which never closes.
type runner struct {
	cfg      config
	counters counters
	closing  context.Context
	hooks    atomic.Pointer[[]Hook] // nil until AddHook
}

// Pool is a bounded pool of redigo connections to one Redis server. It is
// safe for concurrent use. Every call that can block takes a context and is
// also bounded by the pool's own timeouts, so none can hang on a dead or
// half-open connection.
type Pool struct {
	runner

	cancel    context.CancelFunc // of runner.closing
	wg        sync.WaitGroup     // background goroutines
	closeOnce sync.Once
	closeDone chan struct{} // closed when the first Close or Shutdown returns
	drained   chan struct{} // closed when the pool is closed and numOpen reaches 0

	blockLog logLimit // rate limit for blocking-read warnings

	pipes []pipeSlot // the shared connections of AutoPipeline; nil without it

	// pipeCallers counts the callers inside pipelined: how many commands
	// the shared connections may be asked to carry at once.
	pipeCallers atomic.Int64

	mu      sync.Mutex // guards the fields below
	idle    []*conn    // LIFO: the most recently returned last
	all     map[*conn]struct{}
	numOpen int       // open or being dialled, in use, idle or being checked; <= cfg.maxActive
	waiters list.List // of *waiter, first come first served
	closed  bool
}

// waiter is a checkout waiting for a free connection. It is handed either a
// connection or nil, meaning a free slot it may dial into; its channel is
// closed if the pool closes.
type waiter struct {
	ch     chan *conn
	elem   *list.Element // in Pool.waiters
	queued bool          // still in Pool.waiters; guarded by Pool.mu
}

// NewPool validates opts and returns a pool. It does not connect: the first
// checkout does.
func NewPool(opts Options) (*Pool, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	cfg.logWarnings()
	p := &Pool{
		runner:    runner{cfg: cfg},
		all:       make(map[*conn]struct{}),
		closeDone: make(chan struct{}),
		drained:   make(chan struct{}),
	}
	p.closing, p.cancel = context.WithCancel(context.Background())
	if cfg.pipelineConns > 0 {
		p.pipes = make([]pipeSlot, cfg.pipelineConns)
	}
	p.wg.Add(1)
	go p.healthLoop()
	return p, nil
}

// Options returns the options the pool runs on, every default filled in.
// Changing the result changes nothing: a live pool's options never change.
func (p *Pool) Options() Options { return p.cfg.options() }

// Bounds returns the pool's failure-detection bounds, as its options make
// them.
func (p *Pool) Bounds() Bounds { return p.cfg.bounds() }

// Get checks out a connection. The wait for a free connection ends with ctx
// or, if ctx has no deadline, after Options.PoolTimeout; a wait that times
// out returns a *PoolTimeoutError matching ErrPoolTimeout.
//
// The returned redis.Conn also implements redis.ConnWithContext and
// redis.ConnWithTimeout, and consults the same table of blocking commands
// as Do on every path (Do, DoContext, DoWithTimeout, Send and Receive):
//
//   - an ordinary command's reply must arrive within ReadTimeout (or the
//     timeout of DoWithTimeout and ReceiveWithTimeout), so redigo's "0 means
//     no timeout" does not apply: 0 selects these defaults;
//   - a blocking command sent with Do, DoContext or DoWithTimeout runs in
//     rounds of at most BlockSlice, as Do describes, on this connection: a
//     round that fails returns its error rather than redialling, since the
//     connection is the caller's;
//   - the reply of a blocking command sent with Send may take its block
//     time plus ReadTimeout; one that blocks until a reply is bounded only
//     by the context and by TCP keepalive, since a command already sent
//     cannot be cut into rounds;
//   - once subscribed (SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, as
//     redis.PubSubConn sends them), Receive waits for the next message as
//     long as the link is alive, proving it with a PING whenever nothing
//     has arrived for PubSubPingInterval; Pool.Subscribe also reconnects.
//
// Close returns the connection to the pool; a connection that saw a
// network error or an interrupted command, or left in a subscription or
// other state, is closed instead.
func (p *Pool) Get(ctx context.Context) (redis.Conn, error) {
	if ctx == nil {
		return nil, errNilContext
	}
	start := time.Now()
	c, err := p.get(ctx, start, waitDeadline(ctx, start, p.cfg.poolTimeout))
	if err != nil {
		return nil, err
	}
	return &handle{r: &p.runner, pool: p, c: c}, nil
}

// Do checks out a connection, runs one command and returns the connection,
// all bounded by one deadline: ctx's, or if it has none, PoolTimeout plus
// ReadTimeout from the call. Replies are redigo's, so redigo's helpers
// apply: redis.String(p.Do(ctx, "GET", key)).
//
// Blocking commands (BLPOP, BRPOP, BRPOPLPUSH, BLMOVE, BLMPOP, BZPOPMIN,
// BZPOPMAX, BZMPOP, XREAD and XREADGROUP with BLOCK, WAIT, WAITAOF) wait
// for as long as they ask, and no longer on a dead link: the command is
// sent in rounds of at most BlockSlice, each read with a deadline of its
// server-side timeout plus 500 ms, and re-issued while the server answers
// that its time ran out, until a reply arrives or the command's own block
// time is used up; then the server's own reply (nil, or WAIT's count) is
// returned with no error. A timeout of 0 (BLOCK 0) waits until a reply
// arrives or ctx ends. XREAD's "$" is pinned to the stream's last entry
// before the first round, so nothing added between rounds is missed. A
// round that fails on the network is retried on a new connection as BRPop
// describes, except WAIT and WAITAOF, whose meaning is tied to their
// connection.
//
// Errors other than the server's own replies (redis.Error) are wrapped with
// the command and address; they match the context's error with errors.Is
// when the context ended the call.
func (p *Pool) Do(ctx context.Context, cmd string, args ...any) (reply any, err error) {
	if ctx == nil {
		return nil, errNilContext
	}
	if p.hooks.Load() != nil {
		var hooked commandHooks
		ctx = p.beforeCommand(ctx, cmd, &hooked)
		defer func() { p.afterCommand(cmd, &hooked, err) }()
	}
	info := lookupCommand(cmd, args)
	if info.block.kind != notBlocking {
		if total, ok := info.block.blockTime(args); ok {
			return p.block(ctx, newBlockingCall(cmd, args, info.block, total, time.Now()))
		}
	}
	if p.pipes != nil && info.effect == effNone && cmd != "" {
		return p.pipelined(ctx, cmd, args)
	}
	start := time.Now()
	wait := waitDeadline(ctx, start, p.cfg.poolTimeout)
	deadline := wait
	if _, ok := ctx.Deadline(); !ok {
		deadline = wait.Add(p.cfg.readTimeout)
	}
	c, err := p.get(ctx, start, wait)
	if err != nil {
		return nil, err
	}
	reply, err = c.run(ctx, deadline, func() (any, error) { return c.rc.Do(cmd, args...) })
	p.put(c, info.effect.reusable())
	if err != nil {
		return reply, p.wrapErr(ctx, cmd, err)
	}
	return reply, nil
}

// waitDeadline is how long a checkout may wait: ctx's deadline, or
// PoolTimeout.
func waitDeadline(ctx context.Context, start time.Time, poolTimeout time.Duration) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return start.Add(poolTimeout)
}

// get checks out a connection: an idle one that passes the checkout checks,
// a new one if the pool has room, or the first one freed before
// waitDeadline.
func (p *Pool) get(ctx context.Context, start, waitDeadline time.Time) (*conn, error) {
	c, err := p.take(ctx, start, waitDeadline)
	if p.hooks.Load() != nil {
		took := time.Since(start)
		p.each(func(h *Hook) {
			if h.Checkout != nil {
				h.Checkout(ctx, took, err)
			}
		})
	}
	return c, err
}

func (p *Pool) take(ctx context.Context, start, waitDeadline time.Time) (*conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, p.wrapErr(ctx, "checkout", err)
	}
	now := start
	for waited := false; ; {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		var c *conn
		if n := len(p.idle); n > 0 {
			c = p.idle[n-1]
			p.idle[n-1] = nil
			p.idle = p.idle[:n-1]
			p.mu.Unlock()
		} else if p.numOpen < p.cfg.maxActive {
			p.numOpen++
			p.mu.Unlock()
			return p.dial(ctx)
		} else {
			w := p.enqueueLocked()
			p.mu.Unlock()
			var err error
			c, err = p.await(ctx, w, start, waitDeadline)
			if !waited { // one checkout, one wait, however many turns it takes
				p.counters.waits.Add(1) // with WaitDuration's first share
				waited = true
			}
			if err != nil {
				return nil, err
			}
			if c == nil { // handed a free slot
				return p.dial(ctx)
			}
			now = time.Now()
		}
		if err := p.checkout(ctx, c, now); err != nil {
			if ctx.Err() != nil {
				return nil, p.wrapErr(ctx, "checkout", err)
			}
			now = time.Now() // a failed PING may have taken a while
			continue         // that one was dead; the failure happened before any command
		}
		return c, nil
	}
}

// checkout vets an idle connection about to be handed out at now by the
// pool's health rule, cheapest test first (age, a peek, a PING only when
// it has been quiet a while), and closes it if it fails one.
func (p *Pool) checkout(ctx context.Context, c *conn, now time.Time) error {
	v, _ := p.cfg.judge(c, now)
	reason, err := v.closeReason(), errExpired
	switch v {
	case expireIdle, expireLifetime:
	default:
		reason = CloseDead
		if err = c.checkIdle(now); err == nil && v == pingIt {
			p.counters.healthChecks.Add(1)
			if _, err = c.run(ctx, now.Add(p.cfg.readTimeout), func() (any, error) { return c.rc.Do("PING") }); err == nil {
				c.pingedAt = now
			}
		}
	}
	if err != nil {
		p.discard(c, reason)
		return err
	}
	c.lentAt = now
	if p.cfg.leakThreshold > 0 {
		p.trackCheckout(c, now)
	}
	return nil
}

var errExpired = errors.New("redisalive: connection expired")

// enqueueLocked queues a checkout for the next free connection or slot.
func (p *Pool) enqueueLocked() *waiter {
	w := &waiter{ch: make(chan *conn, 1), queued: true}
	w.elem = p.waiters.PushBack(w)
	return w
}

// await waits for what is handed to w until ctx ends or deadline passes;
// start is when the checkout began, for the error's report. Only the time
// spent here counts as WaitDuration, so a checkout that waits twice (its
// first connection was dead) does not count its first wait again.
func (p *Pool) await(ctx context.Context, w *waiter, start, deadline time.Time) (*conn, error) {
	begin := time.Now()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var ctxErr error
	select {
	case c, ok := <-w.ch:
		p.counters.waitNanos.Add(int64(time.Since(begin)))
		if !ok {
			return nil, ErrPoolClosed
		}
		return c, nil
	case <-ctx.Done():
		ctxErr = ctx.Err()
	case <-timer.C:
	}
	p.counters.waitNanos.Add(int64(time.Since(begin)))

	p.mu.Lock()
	closed := p.closed
	handedOver := !w.queued
	if w.queued {
		p.waiters.Remove(w.elem)
		w.queued = false
	}
	tErr := &PoolTimeoutError{
		Addr: p.cfg.addr, Waited: time.Since(start),
		InUse: p.numOpen - len(p.idle), MaxActive: p.cfg.maxActive, Waiting: p.waiters.Len(),
	}
	p.mu.Unlock()
	if handedOver {
		// A connection or slot arrived as we gave up: pass it on. (Close
		// closes the channel instead.)
		if c, ok := <-w.ch; ok {
			if c != nil {
				p.put(c, true)
			} else {
				p.mu.Lock()
				p.freeSlotLocked()
				p.mu.Unlock()
			}
		}
	}
	if closed {
		// Close woke us as the timer fired: what ended the wait is Close.
		return nil, ErrPoolClosed
	}
	if errors.Is(ctxErr, context.Canceled) {
		return nil, fmt.Errorf("redisalive: waiting for a connection to %s: %w", p.cfg.addr, ctxErr)
	}
	p.counters.poolTimeouts.Add(1)
	if _, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) {
		tErr.cause = context.DeadlineExceeded
	}
	return nil, tErr
}

// dial opens a connection into a slot the caller already holds.
func (p *Pool) dial(ctx context.Context) (*conn, error) {
	now := time.Now()
	deadline := now.Add(p.cfg.dialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c, err := p.cfg.connect(ctx, deadline, now)
	if p.hooks.Load() != nil {
		took := time.Since(now)
		p.each(func(h *Hook) {
			if h.Dial != nil {
				h.Dial(ctx, took, err)
			}
		})
	}
	if err != nil {
		p.counters.dialErrors.Add(1)
		p.mu.Lock()
		p.freeSlotLocked()
		p.mu.Unlock()
		return nil, p.wrapErr(ctx, "connect", err)
	}
	p.counters.dials.Add(1)
	p.mu.Lock()
	if p.closed {
		p.freeSlotLocked()
		p.mu.Unlock()
		c.close()
		return nil, ErrPoolClosed
	}
	p.all[c] = struct{}{}
	p.mu.Unlock()
	c.lentAt = now
	if p.cfg.leakThreshold > 0 {
		p.trackCheckout(c, now)
	}
	return c, nil
}

// put takes back a connection from its user. reuse is false when the user
// left state on it that a later user must not inherit.
func (p *Pool) put(c *conn, reuse bool) {
	reason := CloseState
	if c.broken() {
		reuse, reason = false, CloseError
		if c.canceled.Load() {
			reason = CloseCanceled
		}
	} else if reuse {
		c.returnedAt = time.Now()
	}
	if p.hooks.Load() != nil {
		held := time.Since(c.lentAt)
		p.each(func(h *Hook) {
			if h.Use != nil {
				h.Use(held)
			}
		})
	}
	p.mu.Lock()
	if p.cfg.leakThreshold > 0 {
		c.checkedOutAt, c.stack = time.Time{}, nil
	}
	count := !p.closed // once closed, every connection goes for that reason
	if reuse {
		if p.putIdleLocked(c, false) {
			p.mu.Unlock()
			return
		}
		reason = CloseMaxIdle
	}
	p.forgetLocked(c)
	p.mu.Unlock()
	if count {
		p.noteClose(reason)
	}
	c.close()
}

// putIdleLocked hands a healthy connection to the first waiter, or keeps it
// idle if there is room: on top of the stack, or at the bottom for one that
// was not used but only checked. It reports false if the connection must be
// closed: the pool is closed, or MaxIdle connections are idle already.
func (p *Pool) putIdleLocked(c *conn, bottom bool) bool {
	if p.closed {
		return false
	}
	if w := p.popWaiterLocked(); w != nil {
		w.ch <- c
		return true
	}
	if len(p.idle) >= p.cfg.maxIdle {
		return false
	}
	if bottom {
		p.idle = slices.Insert(p.idle, 0, c)
	} else {
		p.idle = append(p.idle, c)
	}
	return true
}

// discard closes a connection the pool took back, counting why unless the
// pool is closed: then every connection goes, for the same reason.
func (p *Pool) discard(c *conn, reason CloseReason) {
	p.mu.Lock()
	count := !p.closed
	p.forgetLocked(c)
	p.mu.Unlock()
	if count {
		p.noteClose(reason)
	}
	c.close()
}

// noteClose counts a connection closed for reason and tells the hooks. It
// is called without p.mu: a hook may read Stats.
func (p *Pool) noteClose(reason CloseReason) {
	p.counters.closed[reason].Add(1)
	p.each(func(h *Hook) {
		if h.Closed != nil {
			h.Closed(reason)
		}
	})
}

// goBackground runs f on a goroutine that Close waits for. It reports
// false, running nothing, once the pool is closed: Close's wait has begun.
func (p *Pool) goBackground(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Go(f)
	return true
}

// forgetLocked drops a connection about to be closed and frees its slot.
func (p *Pool) forgetLocked(c *conn) {
	delete(p.all, c)
	p.freeSlotLocked()
}

// freeSlotLocked gives a freed slot to the first waiter, who will dial into
// it, or releases it.
func (p *Pool) freeSlotLocked() {
	if !p.closed {
		if w := p.popWaiterLocked(); w != nil {
			w.ch <- nil
			return
		}
	}
	p.numOpen--
	if p.closed && p.numOpen == 0 {
		close(p.drained)
	}
}

func (p *Pool) popWaiterLocked() *waiter {
	e := p.waiters.Front()
	if e == nil {
		return nil
	}
	w := p.waiters.Remove(e).(*waiter)
	w.queued = false
	return w
}

// wrapErr adds the operation and address to a connection-level error, and
// the context's error when the context ended the call. Server error replies
// pass through unchanged so that type switches on redis.Error keep working.
func (p *runner) wrapErr(ctx context.Context, op string, err error) error {
	if _, ok := err.(redis.Error); ok || errors.Is(err, ErrPoolClosed) {
		return err
	}
	ctxErr := ctx.Err()
	if d, ok := ctx.Deadline(); ok && ctxErr == nil && !time.Now().Before(d) {
		ctxErr = context.DeadlineExceeded // the socket deadline beat the context's timer
	}
	if ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("redisalive: %s on %s: %w: %w", op, p.cfg.addr, ctxErr, err)
	}
	return fmt.Errorf("redisalive: %s on %s: %w", op, p.cfg.addr, err)
}

// Close closes the pool: new calls fail with ErrPoolClosed at once, idle
// connections are closed at once, blocking reads stop after their current
// round, and connections in use are closed as they are returned. Close waits
// for those at most as long as a well-behaved command can take (the longest
// of DialTimeout, ReadTimeout+WriteTimeout and BlockSlice+500ms), then
// closes the stragglers' sockets under them and reports how many. When it
// returns, no goroutine of the pool is running and no socket of it is
// open. Calling it again is safe.
func (p *Pool) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.bounds().Close)
	defer cancel()
	return p.Shutdown(ctx)
}

// Shutdown closes the pool gracefully: it refuses new checkouts, lets calls
// in flight finish until ctx is done, then closes everything as Close does.
// It returns an error matching ctx's error if connections were still in use
// when ctx ended.
func (p *Pool) Shutdown(ctx context.Context) error {
	if ctx == nil {
		return errNilContext
	}
	first := false
	p.closeOnce.Do(func() { first = true })
	if !first {
		select {
		case <-p.closeDone:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer close(p.closeDone)
	p.each(func(h *Hook) {
		if h.PoolClosing != nil {
			h.PoolClosing()
		}
	})

	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	for _, c := range idle {
		delete(p.all, c)
	}
	p.numOpen -= len(idle)
	for e := p.waiters.Front(); e != nil; e = e.Next() {
		w := e.Value.(*waiter)
		w.queued = false
		close(w.ch)
	}
	p.waiters.Init()
	if p.numOpen == 0 {
		close(p.drained)
	}
	p.mu.Unlock()

	p.cancel()
	for _, c := range idle {
		c.close()
	}
	p.wg.Wait()

	// Drained first: a ctx already done must not turn a clean shutdown
	// into an error.
	select {
	case <-p.drained:
		return nil
	default:
	}
	select {
	case <-p.drained:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	stragglers := make([]*conn, 0, len(p.all))
	for c := range p.all {
		stragglers = append(stragglers, c)
	}
	p.mu.Unlock()
	if len(stragglers) == 0 {
		return nil // the last one came back as ctx ended
	}
	for _, c := range stragglers {
		c.nc.Conn.Close() // the holder's next use fails; its return frees the slot
	}
	noun := "connections"
	if len(stragglers) == 1 {
		noun = "connection"
	}
	return fmt.Errorf("redisalive: closed %d %s still in use at shutdown: %w", len(stragglers), noun, ctx.Err())
}

// trackCheckout records who checked a connection out, for leak reports.
func (p *Pool) trackCheckout(c *conn, now time.Time) {
	pcs := make([]uintptr, 32)
	pcs = pcs[:runtime.Callers(3, pcs)]
	p.mu.Lock()
	c.checkedOutAt, c.stack, c.leakReported = now, pcs, false
	p.mu.Unlock()
}
