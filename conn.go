package redisalive

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// aLongTimeAgo is a deadline in the past: setting it makes a blocked read or
// write return at once.
var aLongTimeAgo = time.Unix(1, 0)

// limitConn caps every deadline redigo sets on the socket at a limit, so one
// context deadline can bound a whole command even though redigo computes
// its own read and write deadlines from its timeouts. abort, which may run
// on another goroutine, puts the deadline in the past for good: that is how
// a cancelled context interrupts a command. Each deadline update re-checks
// the abort flag after it, so whichever of the two runs last, the socket
// ends with the past deadline; this costs an atomic load where a mutex
// would cost a lock per update on the hot path.
type limitConn struct {
	net.Conn
	limit time.Time   // zero: no limit; read and written only by the connection's holder
	dead  atomic.Bool // set by abort
}

func (c *limitConn) clamp(t time.Time) time.Time {
	if !c.limit.IsZero() && (t.IsZero() || t.After(c.limit)) {
		return c.limit
	}
	return t
}

// reabort restores an abort that a deadline update may have overwritten.
func (c *limitConn) reabort() {
	if c.dead.Load() {
		c.Conn.SetDeadline(aLongTimeAgo)
	}
}

func (c *limitConn) SetDeadline(t time.Time) error {
	err := c.Conn.SetDeadline(c.clamp(t))
	c.reabort()
	return err
}

func (c *limitConn) SetReadDeadline(t time.Time) error {
	err := c.Conn.SetReadDeadline(c.clamp(t))
	c.reabort()
	return err
}

func (c *limitConn) SetWriteDeadline(t time.Time) error {
	err := c.Conn.SetWriteDeadline(c.clamp(t))
	c.reabort()
	return err
}

func (c *limitConn) setLimit(t time.Time) { c.limit = t }

func (c *limitConn) abort() {
	c.dead.Store(true)
	c.Conn.SetDeadline(aLongTimeAgo)
}

// conn is one pooled connection. Fields other than those marked are owned by
// whoever holds the connection: the caller that checked it out, or the pool
// while it is idle or being checked.
type conn struct {
	rc    redis.Conn // redigo's protocol state over nc
	nc    *limitConn
	check peeker

	createdAt  time.Time
	returnedAt time.Time // last return to the pool by a caller
	pingedAt   time.Time // last health-check PING
	clientID   int64     // the server's CLIENT ID, fetched on first blocking use; -1 if unsupported
	aborted    bool      // a command was interrupted: the socket is unusable

	// Leak detection; guarded by Pool.mu.
	checkedOutAt time.Time
	stack        []uintptr
	leakReported bool
}

func newConn(nc net.Conn, cfg *config, now time.Time) *conn {
	c := &conn{nc: &limitConn{Conn: nc}, createdAt: now, returnedAt: now}
	if _, isTLS := nc.(*tls.Conn); !isTLS {
		// Under TLS the raw socket can hold records the client has not read
		// yet (TLS 1.3 session tickets), which a peek would take for a
		// protocol error; health PINGs cover TLS connections instead.
		c.check.init(nc)
	}
	c.rc = redis.NewConn(c.nc, cfg.readTimeout, cfg.writeTimeout)
	return c
}

// lastActive is when the connection last proved itself alive.
func (c *conn) lastActive() time.Time {
	if c.pingedAt.After(c.returnedAt) {
		return c.pingedAt
	}
	return c.returnedAt
}

// run runs op, one command or reply read, bounded by deadline (zero: only
// the pool's timeouts) and by ctx. An op interrupted by ctx leaves the
// connection unusable: its reply may still be on its way.
func (c *conn) run(ctx context.Context, deadline time.Time, op func() (any, error)) (any, error) {
	if d, ok := ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		deadline = d
	}
	if !deadline.IsZero() {
		c.nc.setLimit(deadline)
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, c.nc.abort)
	}
	reply, err := op()
	if stop != nil && !stop() {
		// abort ran or is running: the socket's deadline is gone for good.
		c.aborted = true
	}
	if !deadline.IsZero() {
		c.nc.setLimit(time.Time{})
	}
	return reply, err
}

// broken reports whether the connection must not be reused.
func (c *conn) broken() bool { return c.aborted || c.rc.Err() != nil }

func (c *conn) close() error { return c.rc.Close() }

// effect is what a command does to connection state that outlives it.
type effect uint8

const (
	effNone    effect = iota
	effOpenTx         // MULTI or WATCH: state a later user must not inherit until closed
	effCloseTx        // EXEC, DISCARD or UNWATCH: ends that state
	effTaint          // state that cannot be safely undone (subscriptions, SELECT, ...)
)

// effectOf classifies cmd without allocating; it is on every command's path.
func effectOf(cmd string, args []any) effect {
	eq := strings.EqualFold
	switch len(cmd) {
	case 4:
		if eq(cmd, "EXEC") {
			return effCloseTx
		}
	case 5:
		switch {
		case eq(cmd, "MULTI"), eq(cmd, "WATCH"):
			return effOpenTx
		case eq(cmd, "HELLO"), eq(cmd, "RESET"):
			return effTaint
		}
	case 6:
		switch {
		case eq(cmd, "SELECT"):
			return effTaint
		case eq(cmd, "CLIENT") && len(args) > 0:
			// CLIENT REPLY OFF|SKIP and CLIENT TRACKING change what later
			// commands receive.
			sub, _ := args[0].(string)
			if eq(sub, "REPLY") || eq(sub, "TRACKING") {
				return effTaint
			}
		}
	case 7:
		switch {
		case eq(cmd, "DISCARD"), eq(cmd, "UNWATCH"):
			return effCloseTx
		case eq(cmd, "MONITOR"):
			return effTaint
		}
	case 9:
		if eq(cmd, "SUBSCRIBE") {
			return effTaint
		}
	case 10:
		if eq(cmd, "PSUBSCRIBE") || eq(cmd, "SSUBSCRIBE") {
			return effTaint
		}
	}
	return effNone
}
