package redisalive

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// handle is the redis.Conn that Get returns. It tracks the state its
// commands leave on the connection, so that a connection left inside MULTI
// or WATCH is not handed to the next user, gives each reply the deadline
// its command needs (see Pool.Get), and becomes inert after Close.
//
// As with redigo's own connections, one goroutine may receive while
// another sends: the Pub/Sub pattern of redis.PubSubConn.
type handle struct {
	p *Pool // takes the connection back at Close

	quiet *quietRead // for reads once subscribed; set up by the first

	mu          sync.Mutex // guards the fields below, never held during I/O
	c           *conn      // nil after Close
	txOpen      bool       // MULTI or WATCH without EXEC, DISCARD or UNWATCH
	inMulti     bool       // MULTI without EXEC or DISCARD: commands are queued, not run
	tainted     bool       // state that cannot be undone: close instead of reuse
	subscribed  bool       // replies arrive unasked: reads wait quietly
	subsLeft    [2]int64   // channels and patterns, shard channels: from the last confirmations
	pending     int        // commands sent whose replies are unread
	pendingWait pendingWait
	busy        int // calls using c now: a Close meanwhile must not lend it out
}

// pendingWait is how long the server may hold the unread replies beyond
// the usual reply time: the longest block time among the blocking commands
// sent; forever if one of them blocks until a reply.
type pendingWait struct {
	d       time.Duration
	forever bool
}

func (w *pendingWait) add(d time.Duration) {
	if d == 0 {
		w.forever = true
	}
	w.d = max(w.d, d)
}

// readTimeout is the read timeout for the next reply: the pool's, plus
// what a blocking command may hold it; 0 (none, only ctx and keepalive)
// for one that blocks until a reply.
func (w pendingWait) readTimeout(base time.Duration) time.Duration {
	if w.forever {
		return 0
	}
	return base + w.d
}

var (
	_ redis.Conn            = (*handle)(nil)
	_ redis.ConnWithContext = (*handle)(nil)
	_ redis.ConnWithTimeout = (*handle)(nil)
)

// Close returns the connection to the pool. A connection with unread
// pipelined replies is drained first; one left in a transaction, a
// subscription or a broken state, awaiting the reply of a blocking
// command, or in use by a call on another goroutine (which then fails), is
// closed instead.
func (h *handle) Close() error {
	h.mu.Lock()
	c := h.c
	h.c = nil
	reuse := !h.tainted && (h.pendingWait == pendingWait{}) && h.busy == 0
	cleanup := h.txOpen || h.pending > 0
	txOpen := h.txOpen
	h.mu.Unlock()
	if c == nil {
		return nil
	}
	if reuse && cleanup {
		// Read the outstanding replies and end the transaction, bounded by
		// the usual timeouts; any failure just means the connection is
		// closed rather than reused.
		bg := context.Background()
		_, err := c.run(bg, time.Time{}, func() (any, error) { return c.rc.Do("") })
		if err == nil && txOpen {
			_, err = c.run(bg, time.Time{}, func() (any, error) { return c.rc.Do("DISCARD") })
			if _, isServerErr := err.(redis.Error); isServerErr {
				// ERR DISCARD without MULTI: only WATCH was open.
				_, err = c.run(bg, time.Time{}, func() (any, error) { return c.rc.Do("UNWATCH") })
			}
		}
		reuse = err == nil
	}
	h.p.put(c, reuse)
	return nil
}

// begin starts a call on the connection: it locks h.mu, counts the call
// in busy and returns the connection with h.mu still held, for the caller
// to read or record what it must and then unlock; release ends the call.
// After Close it returns errConnReturned, with h.mu unlocked.
func (h *handle) begin() (*conn, error) {
	h.mu.Lock()
	if h.c == nil {
		h.mu.Unlock()
		return nil, errConnReturned
	}
	h.busy++
	return h.c, nil
}

// release ends a call counted in busy.
func (h *handle) release() {
	h.mu.Lock()
	h.busy--
	h.mu.Unlock()
}

// Err returns a non-nil error if the connection is unusable.
func (h *handle) Err() error {
	h.mu.Lock()
	c := h.c
	h.mu.Unlock()
	if c == nil {
		return errConnReturned
	}
	if c.closedByPool.Load() {
		return h.wrapErr(context.Background(), c, "connection", ErrPoolClosed)
	}
	return c.rc.Err()
}

// trackLocked records what a command about to be sent does to the
// connection, and returns its table entry; blocking is false inside MULTI,
// where the server queues a blocking command instead of blocking.
func (h *handle) trackLocked(cmd string, args []any) (info cmdInfo, total time.Duration, blocking bool) {
	info = lookupCommand(cmd, args)
	if info.block.kind != notBlocking && !h.inMulti {
		total, blocking = info.block.blockTime(args)
	}
	switch info.effect {
	case effOpenTx:
		h.txOpen = true
	case effMulti:
		h.txOpen, h.inMulti = true, true
	case effCloseTx:
		h.txOpen, h.inMulti = false, false
	case effUnwatch:
		if !h.inMulti { // inside MULTI it is only queued
			h.txOpen = false
		}
	case effTaint, effMonitor:
		h.tainted = true
	case effSubscribe:
		h.tainted, h.subscribed = true, true
	}
	return info, total, blocking
}

// Do runs a command as DoContext does, with a context that never ends.
func (h *handle) Do(cmd string, args ...any) (any, error) {
	return h.do(context.Background(), 0, cmd, args)
}

// DoContext runs a command bounded also by ctx. If ctx ends first, the call
// returns an error matching ctx's error and the connection will be closed
// when returned, since the reply may still be on its way. Its reply gets
// the deadline Pool.Get describes: ReadTimeout, or for a blocking command,
// rounds of BlockSlice until it replies or its block time is used up.
func (h *handle) DoContext(ctx context.Context, cmd string, args ...any) (any, error) {
	if ctx == nil {
		return nil, ErrNilContext
	}
	return h.do(ctx, 0, cmd, args)
}

// DoWithTimeout runs a command whose reply may take up to timeout instead
// of ReadTimeout. A blocking command still runs in rounds, and timeout
// caps the whole call: when it passes first, the error matches
// context.DeadlineExceeded. A timeout of 0 means no extra limit, as Do.
func (h *handle) DoWithTimeout(timeout time.Duration, cmd string, args ...any) (any, error) {
	return h.do(context.Background(), timeout, cmd, args)
}

// do runs a command under the Command hooks; Do(""), which flushes and
// reads the replies Send asked for, runs without them.
func (h *handle) do(ctx context.Context, timeout time.Duration, cmd string, args []any) (any, error) {
	if cmd == "" {
		return h.call(ctx, timeout, cmd, args)
	}
	return h.p.underHooks(ctx, cmd, func(ctx context.Context) (any, error) { return h.call(ctx, timeout, cmd, args) })
}

// call is do inside the hooks.
func (h *handle) call(ctx context.Context, timeout time.Duration, cmd string, args []any) (reply any, err error) {
	c, err := h.begin()
	if err != nil {
		return nil, err
	}
	defer h.release()
	var (
		info     cmdInfo
		total    time.Duration
		blocking bool
	)
	if cmd != "" {
		info, total, blocking = h.trackLocked(cmd, args)
	}
	pending, wait := h.pending, h.pendingWait
	h.pending, h.pendingWait = 0, pendingWait{} // Do reads every pending reply
	h.mu.Unlock()

	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !blocking {
		readTimeout := timeout
		if readTimeout <= 0 {
			readTimeout = wait.readTimeout(h.p.cfg.readTimeout)
		}
		var deadline time.Time // a trickling reply's cap, for a ctx without deadline
		if _, ok := ctx.Deadline(); !ok && readTimeout > 0 {
			deadline = time.Now().Add(replyCap(readTimeout))
		}
		reply, err = c.run(ctx, deadline, func() (any, error) {
			return c.rc.DoWithTimeout(readTimeout, cmd, args...)
		})
		h.noteDemotion(ctx, c, err)
		return reply, h.wrapErr(ctx, c, cmd, err)
	}

	// Replies sent before the blocking command come first, as in redigo:
	// the first server error among them is the call's error.
	var firstErr error
	if pending > 0 {
		replies, err := redis.Values(c.run(ctx, time.Time{}, func() (any, error) {
			return c.rc.DoWithTimeout(wait.readTimeout(h.p.cfg.readTimeout), "")
		}))
		if err != nil {
			return nil, h.wrapErr(ctx, c, cmd, err)
		}
		for _, r := range replies {
			if e, ok := r.(redis.Error); ok {
				firstErr = e
				break
			}
		}
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	reply, err = h.p.rounds(ctx, c, newBlockingCall(cmd, args, info.block, total, time.Now()))
	if err == nil {
		err = firstErr
	}
	h.noteDemotion(ctx, c, err)
	return reply, h.wrapErr(ctx, c, cmd, err)
}

// noteDemotion tells the pool when c's server answered that it is no
// longer the master. The caller gets the answer: its command was not run,
// but on a connection of its own it decides what to do; the connection,
// stale now, is closed when returned.
func (h *handle) noteDemotion(ctx context.Context, c *conn, err error) {
	if isDemotion(err) {
		h.p.demote(ctx, c, err.Error())
	}
}

// wrapErr wraps an error of c as the pool's wrapErr does. Once the pool's
// Close has closed c under its holder, any error of it is that.
func (h *handle) wrapErr(ctx context.Context, c *conn, op string, err error) error {
	if err == nil {
		return nil
	}
	if op == "" {
		op = "reading pending replies" // Do(""): flush, then read what Send asked for
	}
	if c.closedByPool.Load() {
		return fmt.Errorf("redisalive: %s on %s: the pool's Close closed this connection, still checked out: %w", op, h.p.cfg.addr, ErrPoolClosed)
	}
	return h.p.wrapErr(ctx, op, err)
}

// Send writes a command to the output buffer without waiting for its reply.
func (h *handle) Send(cmd string, args ...any) error {
	c, err := h.begin()
	if err != nil {
		return err
	}
	defer h.release()
	if _, total, blocking := h.trackLocked(cmd, args); blocking {
		h.pendingWait.add(total)
	}
	h.pending++
	h.mu.Unlock()
	c.wmu.Lock()
	err = c.rc.Send(cmd, args...)
	c.wmu.Unlock()
	return h.wrapErr(context.Background(), c, cmd, err)
}

// Flush writes the output buffer to the server.
func (h *handle) Flush() error {
	c, err := h.begin()
	if err != nil {
		return err
	}
	defer h.release()
	h.mu.Unlock()
	c.wmu.Lock()
	err = c.rc.Flush()
	c.wmu.Unlock()
	return h.wrapErr(context.Background(), c, "flush", err)
}

// Receive reads one reply as ReceiveContext does, with a context that
// never ends.
func (h *handle) Receive() (any, error) {
	return h.receive(context.Background(), 0)
}

// ReceiveContext reads one reply, bounded also by ctx. It waits
// ReadTimeout, or longer for the reply of a blocking command sent with
// Send (its block time plus ReadTimeout; only ctx and TCP keepalive bound
// one that blocks until a reply). On a subscribed connection it waits for
// the next message as long as the link is alive: whenever nothing has
// arrived for PubSubPingInterval it sends a PING, and a link that does not
// answer within ReadTimeout fails the read. Those PINGs' replies are never
// returned.
func (h *handle) ReceiveContext(ctx context.Context) (any, error) {
	if ctx == nil {
		return nil, ErrNilContext
	}
	return h.receive(ctx, 0)
}

// ReceiveWithTimeout reads one reply that may take up to timeout; a
// timeout of 0 waits as Receive does.
func (h *handle) ReceiveWithTimeout(timeout time.Duration) (any, error) {
	return h.receive(context.Background(), timeout)
}

func (h *handle) receive(ctx context.Context, timeout time.Duration) (any, error) {
	c, err := h.begin()
	if err != nil {
		return nil, err
	}
	defer h.release()
	subscribed, wait := h.subscribed, h.pendingWait
	h.mu.Unlock()
	readTimeout := timeout
	if readTimeout <= 0 {
		readTimeout = wait.readTimeout(h.p.cfg.readTimeout)
	}
	// What follows the reply's first byte comes within ReadTimeout, however
	// long the wait for it.
	rest := min(readTimeout, h.p.cfg.readTimeout)
	if readTimeout == 0 {
		rest = h.p.cfg.readTimeout
	}
	if subscribed {
		if timeout <= 0 {
			readTimeout = 0
		}
		if h.quiet == nil {
			h.quiet = h.p.quietRead(c)
		}
		c.nc.quiet = h.quiet
		defer func() { c.nc.quiet = nil }()
	}
	for {
		reply, err := c.run(ctx, time.Time{}, func() (any, error) {
			return c.rc.ReceiveWithTimeouts(readTimeout, rest)
		})
		if err == nil && subscribed && isKeepalivePong(reply) {
			continue
		}
		h.mu.Lock()
		if n, shard, ok := subscriptionCount(reply); err == nil && subscribed && ok {
			// With no subscription left, replies answer commands again:
			// the Close of a redigo pool's connection (RedigoPool)
			// unsubscribes from everything, then reads an ECHO's reply.
			if shard {
				h.subsLeft[1] = n
			} else {
				h.subsLeft[0] = n
			}
			h.subscribed = h.subsLeft != [2]int64{}
		}
		if h.pending > 0 {
			if h.pending--; h.pending == 0 {
				h.pendingWait = pendingWait{}
			}
		}
		h.mu.Unlock()
		h.noteDemotion(ctx, c, err)
		return reply, h.wrapErr(ctx, c, "receive", err)
	}
}
