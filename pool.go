package redisalive

import (
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

// Pool is a bounded pool of redigo connections to one Redis server. It is
// safe for concurrent use. Every call that can block takes a context and is
// also bounded by the pool's own timeouts, so none can hang on a dead or
// half-open connection.
type Pool struct {
	cfg      config
	counters counters
	hooks    atomic.Pointer[[]Hook] // nil until AddHook

	// closing is done once Close or Shutdown begins: blocking reads end
	// after their current round, background goroutines stop.
	closing   context.Context
	cancel    context.CancelFunc // of closing
	wg        sync.WaitGroup     // background goroutines
	closeGate closeGate          // the first Close or Shutdown closes; the others wait for it
	drained   chan struct{}      // closed when the pool is closed and numOpen reaches 0

	retryLog logLimit // rate limit for the warnings of retry loops: blocking reads, Subscriptions

	pipes []pipeSlot // the shared connections of AutoPipeline; nil without it

	zombies zombies // connections abandoned after a failure, to kill before anything more is sent

	target   atomic.Pointer[target] // where new connections go (failover.go)
	reaping  atomic.Bool            // a reapAway runs (fence.go)
	lastReap time.Time              // when the health checker last started one; its own
	sentinel *sentinels             // with Options.Sentinel; else nil

	// pipeCallers counts the callers inside pipelined: how many commands
	// the shared connections may be asked to carry at once.
	pipeCallers atomic.Int64
	// pipeAbandoned counts the commands on shared connections whose
	// callers gave up on them and that are neither answered nor dropped
	// unsent: commands that may still run (pipelineFor).
	pipeAbandoned atomic.Int64

	mu      sync.Mutex // guards the fields below
	idle    []*conn    // LIFO: the most recently returned last
	all     map[*conn]struct{}
	numOpen int       // open or being dialled, in use, idle or being checked; <= cfg.maxActive
	waiters waitQueue // checkouts waiting for a connection (waiters.go)
	closed  bool
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
		cfg:     cfg,
		all:     make(map[*conn]struct{}),
		drained: make(chan struct{}),
	}
	p.closing, p.cancel = context.WithCancel(context.Background())
	if cfg.pipelineConns > 0 {
		p.pipes = make([]pipeSlot, cfg.pipelineConns)
	}
	first := newTarget("", 1, false)
	if cfg.sentinel == nil {
		first.addr = cfg.addr
	}
	p.target.Store(first)
	p.zombies.moveTo(first.addr)
	p.wg.Add(1)
	go p.healthLoop()
	if cfg.sentinel != nil {
		p.sentinel = newSentinels(p, cfg.sentinel)
	}
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
		return nil, ErrNilContext
	}
	start := time.Now()
	c, err := p.get(ctx, start, waitDeadline(ctx, start, p.cfg.poolTimeout))
	if err != nil {
		return nil, err
	}
	return &handle{p: p, c: c}, nil
}

// Do checks out a connection, runs one command and returns the connection,
// all bounded by one deadline: ctx's, or if it has none, Bounds.Command
// (PoolTimeout plus 10 ReadTimeouts) from the call; ReadTimeout bounds
// each silence of the reply. Replies are redigo's, so redigo's helpers
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
// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and MONITOR are refused, unsent, with
// an error saying what to use instead: after them the server sends
// replies nobody asked for, which Do, returning the connection after one
// reply, would lose.
//
// A connection that could not be opened fails the call with its
// *DialError, which names the address and the step; one the server
// refused for the pool's configuration also matches ErrMisconfigured.
// Other errors than the server's own replies (redis.Error) are wrapped
// with the command and address; they match the context's error with
// errors.Is when the context ended the call.
func (p *Pool) Do(ctx context.Context, cmd string, args ...any) (any, error) {
	if ctx == nil {
		return nil, ErrNilContext
	}
	return p.underHooks(ctx, cmd, func(ctx context.Context) (any, error) { return p.do(ctx, cmd, args) })
}

// do is Do inside the Command hooks.
func (p *Pool) do(ctx context.Context, cmd string, args []any) (any, error) {
	info := lookupCommand(cmd, args)
	if why := info.effect.notThroughDo(); why != "" {
		return nil, fmt.Errorf("redisalive: %s through Do, not sent: %s", cmd, why)
	}
	if info.block.kind != notBlocking {
		if total, ok := info.block.blockTime(args); ok {
			return p.block(ctx, newBlockingCall(cmd, args, info.block, total, time.Now()))
		}
	}
	if p.pipes != nil && info.effect == effNone && cmd != "" && !p.zombies.pending() {
		// While a connection abandoned after a failure awaits its kill,
		// commands take the fenced path of a checkout (fence.go).
		return p.pipelined(ctx, cmd, args)
	}
	start := time.Now()
	wait := waitDeadline(ctx, start, p.cfg.poolTimeout)
	deadline := wait
	if _, ok := ctx.Deadline(); !ok {
		deadline = wait.Add(replyCap(p.cfg.readTimeout))
	}
	for resent := false; ; resent = true {
		c, err := p.get(ctx, start, wait)
		if err != nil {
			return nil, err
		}
		reply, err := c.run(ctx, deadline, func() (any, error) { return c.rc.Do(cmd, args...) })
		// A server that answers it is no longer the master did not run the
		// command: it goes once more to the master, on a new connection.
		again := !resent && isDemotion(err) && p.demote(ctx, c, err.Error())
		c.replied = err == nil
		p.put(c, info.effect.reusable())
		if again {
			continue
		}
		if err != nil {
			return reply, p.wrapErr(ctx, cmd, err)
		}
		return reply, nil
	}
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
// waitDeadline. With a zero waitDeadline it does not wait: if no
// connection is free at once, it returns neither a connection nor an
// error, and that is no checkout (no hook sees it).
func (p *Pool) get(ctx context.Context, start, waitDeadline time.Time) (*conn, error) {
	c, err := p.take(ctx, start, waitDeadline)
	for try := 1; c != nil && p.zombies.pending(); try++ {
		if err = p.fence(ctx, c); err == nil {
			break
		}
		// The kill failed on the network: that connection is dead too,
		// and nothing was sent for the caller yet, so another may serve.
		p.put(c, false)
		c = nil
		if ctxErr(ctx) != nil || try == fenceTries {
			err = p.wrapErr(ctx, "checkout", err)
			break
		}
		c, err = p.take(ctx, start, waitDeadline)
	}
	if c == nil && err == nil {
		return nil, nil // none free at once
	}
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

// take is get before the fence: a connection as get describes, or with a
// zero waitDeadline none and no error if none is free at once.
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
			return p.dial(ctx, waitDeadline)
		} else if waitDeadline.IsZero() {
			p.mu.Unlock()
			return nil, nil // the caller will not wait
		} else {
			w := p.waiters.push()
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
				return p.dial(ctx, waitDeadline)
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

// freshReply is how soon after Do returned a connection, its reply just
// read, a checkout may hand it out again without the peek.
//
// The peek finds a connection the server closed, or sent bytes on unasked,
// while it sat unused; its worth grows with the time unused. A connection
// Do returned a moment ago sat unused only that moment, and no check closes
// the window between a checkout and the command's write anyway: skipping
// the peek widens that window by at most freshReply. What closes a busy
// connection (a restart, CLIENT KILL) fails the commands in flight on the
// others whatever the checkout does; bytes sent unasked in the reply's own
// write are caught at the return (put). Under load every connection is
// that fresh, and the peek's recvfrom was then the one thing Do did that
// redigo does not: 6-11% of the client's CPU per command, and 0.89-0.94x
// redigo's throughput at 16 goroutines (BENCHMARKS.md, "Contended").
const freshReply = time.Millisecond

// checkout vets a connection about to be handed out at now by the pool's
// health rule, cheapest test first (age, a peek, a PING only when it has
// been quiet a while), and closes it if it fails one.
func (p *Pool) checkout(ctx context.Context, c *conn, now time.Time) error {
	fresh := c.replied && now.Sub(c.returnedAt) < freshReply
	c.replied = false
	if p.stale(c) {
		p.discard(c, CloseStale) // dropStale's sweep missed it: it was being checked
		return errStale
	}
	v, _ := p.cfg.judge(c, now)
	reason, err := v.closeReason(), errExpired
	switch v {
	case expireIdle, expireLifetime:
	default:
		reason, err = CloseDead, nil
		if !fresh {
			err = c.checkIdle(now)
		}
		if err == nil && v == pingIt {
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

var (
	errExpired = errors.New("redisalive: connection expired")
	errStale   = errors.New("redisalive: connection to a former master")
)

// await waits for what is handed to w until ctx ends or deadline passes;
// start is when the checkout began, for the error's report. Only the time
// spent here counts as WaitDuration, so a checkout that waits twice (its
// first connection was dead) does not count its first wait again.
func (p *Pool) await(ctx context.Context, w *waiter, start, deadline time.Time) (*conn, error) {
	begin := time.Now()
	// A deadline that is ctx's own needs no timer of ours: ctx.Done says it.
	d, hasDeadline := ctx.Deadline()
	c, end := w.wait(ctx.Done(), deadline, !hasDeadline || !d.Equal(deadline))
	p.counters.waitNanos.Add(int64(time.Since(begin)))
	switch end {
	case endHanded:
		w.release()
		return c, nil
	case endClosed:
		return nil, ErrPoolClosed
	}
	var ctxErr error
	if end == endDone {
		ctxErr = ctx.Err()
	}

	p.mu.Lock()
	closed := p.closed
	handedOver := !w.queued
	if w.queued {
		p.waiters.remove(w)
	}
	tErr := &PoolTimeoutError{
		Addr: p.cfg.addr, Waited: time.Since(start),
		InUse: p.numOpen - len(p.idle), MaxActive: p.cfg.maxActive, Waiting: p.waiters.len(),
		Subscriptions: int(p.counters.subscriptionConns.Load()),
		BlockingReads: int(p.counters.blockingConns.Load()),
	}
	p.mu.Unlock()
	if !handedOver {
		w.release()
	} else if c, ok := <-w.ch; ok {
		// A connection or slot arrived as we gave up: pass it on. (Close
		// closes the channel instead.)
		w.release()
		if c != nil {
			c.replied = false // put times its return from now, not from the reply
			p.put(c, true)
		} else {
			p.mu.Lock()
			p.freeSlotLocked()
			p.mu.Unlock()
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

// dial opens a connection into a slot the caller already holds: each try
// bounded by DialTimeout, and with Sentinel, trying again until
// waitDeadline (openConn). Close abandons a dial in flight: a dead server
// does not hold Close, or a caller, for a DialTimeout.
func (p *Pool) dial(ctx context.Context, waitDeadline time.Time) (*conn, error) {
	now := time.Now()
	dialCtx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(p.closing, cancel)
	c, err := p.openConn(dialCtx, waitDeadline)
	stop()
	cancel()
	if err != nil && p.closing.Err() != nil && ctx.Err() == nil {
		err = ErrPoolClosed
	}
	if err != nil {
		p.mu.Lock()
		p.freeSlotLocked()
		p.mu.Unlock()
		return nil, err // a *DialError: it names the address and the step
	}
	p.counters.dials.Add(1)
	c.zombies = &p.zombies
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
	switch {
	case p.stale(c): // cut by the failover, perhaps: that is why it broke
		reuse, reason = false, CloseStale
	case c.broken():
		reuse, reason = false, CloseError
		if c.canceled.Load() {
			reason = CloseCanceled
		}
	case reuse && c.rc.Unread() > 0:
		// The server sent more than was asked: the next caller would read
		// it as the answer to its own command.
		reuse, reason = false, CloseError
	case reuse:
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
	if w := p.waiters.pop(); w != nil {
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
		if w := p.waiters.pop(); w != nil {
			w.ch <- nil
			return
		}
	}
	p.numOpen--
	if p.closed && p.numOpen == 0 {
		close(p.drained)
	}
}

// wrapErr adds the operation and address to a connection-level error, and
// the context's error when the context ended the call. Server error replies
// pass through unchanged so that type switches on redis.Error keep working.
//
// A *DialError, which names the address and the step already, passes
// through too, unless the context has ended since and it does not say so.
func (p *Pool) wrapErr(ctx context.Context, op string, err error) error {
	if _, ok := err.(redis.Error); ok || errors.Is(err, ErrPoolClosed) {
		return err
	}
	ctxErr := ctx.Err()
	if d, ok := ctx.Deadline(); ok && ctxErr == nil && !time.Now().Before(d) {
		ctxErr = context.DeadlineExceeded // the socket deadline beat the context's timer
	}
	if _, ok := err.(*DialError); ok && (ctxErr == nil || errors.Is(err, ctxErr)) {
		return err
	}
	if ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("redisalive: %s on %s: %w: %w", op, p.cfg.addr, ctxErr, err)
	}
	return fmt.Errorf("redisalive: %s on %s: %w", op, p.cfg.addr, err)
}

// Close closes the pool: new calls fail with ErrPoolClosed at once, and so
// do calls dialling a connection, idle connections are closed at once,
// blocking reads stop after their current round, and connections in use
// are closed as they are returned. Close waits
// for those at most as long as a well-behaved command can take (the longest
// of DialTimeout, ReadTimeout+WriteTimeout and BlockSlice+500ms), then
// closes the stragglers' sockets under them and reports how many. When it
// returns, no goroutine of the pool is running and no socket of it is
// open. Calling it again is safe.
//
// The error, if connections were still checked out when the wait ended,
// says how many and matches ErrInUseAtClose; their holders' next use of
// them fails with an error matching ErrPoolClosed.
func (p *Pool) Close() error {
	wait := p.cfg.bounds().Close
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err := p.shutdown(ctx)
	if e, ok := err.(*inUseAtClose); ok {
		e.op, e.waited, e.ctxErr = "Close", wait, nil // Close's own wait, not a caller's context
	}
	return err
}

// Shutdown closes the pool gracefully: it refuses new checkouts, lets calls
// in flight finish until ctx is done, then closes everything as Close does.
// If connections were still in use when ctx ended, it returns an error
// matching ErrInUseAtClose and ctx's error; their holders' next use of
// them fails with an error matching ErrPoolClosed.
func (p *Pool) Shutdown(ctx context.Context) error {
	if ctx == nil {
		return ErrNilContext
	}
	return p.shutdown(ctx)
}

func (p *Pool) shutdown(ctx context.Context) error {
	if first, err := p.closeGate.enter(ctx); !first {
		return err
	}
	defer p.closeGate.leave()
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
	p.waiters.closeAll()
	if p.numOpen == 0 {
		close(p.drained)
	}
	p.mu.Unlock()

	p.cancel()
	p.wg.Wait()
	if p.sentinel != nil {
		p.sentinel.close() // its watchers, background goroutines, have ended
	}
	p.fenceAtClose(ctx, idle)
	for _, c := range idle {
		c.close()
	}

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
		c.closedByPool.Store(true) // before the close its holder may see
		c.nc.Conn.Close()          // the holder's next use fails; its return frees the slot
	}
	return &inUseAtClose{op: "Shutdown", n: len(stragglers), ctxErr: ctx.Err()}
}

// trackCheckout records who checked a connection out, for leak reports.
func (p *Pool) trackCheckout(c *conn, now time.Time) {
	pcs := make([]uintptr, 32)
	pcs = pcs[:runtime.Callers(3, pcs)]
	p.mu.Lock()
	c.checkedOutAt, c.stack, c.leakReported = now, pcs, false
	p.mu.Unlock()
}
