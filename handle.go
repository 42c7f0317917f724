package redisalive

import (
	"context"
	"time"

	"github.com/gomodule/redigo/redis"
)

// handle is the redis.Conn that Get returns. It tracks transaction state so
// that a connection left inside MULTI or WATCH is not handed to the next
// user, and it becomes inert after Close.
type handle struct {
	p       *Pool
	c       *conn // nil after Close
	txOpen  bool  // MULTI or WATCH without EXEC, DISCARD or UNWATCH
	tainted bool  // state that cannot be undone: close instead of reuse
	pending int   // commands sent whose replies are unread
}

var (
	_ redis.Conn            = (*handle)(nil)
	_ redis.ConnWithContext = (*handle)(nil)
	_ redis.ConnWithTimeout = (*handle)(nil)
)

// Close returns the connection to the pool. A connection with unread
// pipelined replies is drained first; one left in a transaction, a
// subscription or a broken state is closed instead.
func (h *handle) Close() error {
	c := h.c
	if c == nil {
		return nil
	}
	h.c = nil
	reuse := !h.tainted
	if reuse && (h.txOpen || h.pending > 0) {
		// Read the outstanding replies and end the transaction, bounded by
		// the usual timeouts; any failure just means the connection is
		// closed rather than reused.
		_, err := c.run(context.Background(), time.Time{}, func() (any, error) { return c.rc.Do("") })
		if err == nil && h.txOpen {
			_, err = c.run(context.Background(), time.Time{}, func() (any, error) { return c.rc.Do("DISCARD") })
			if _, isServerErr := err.(redis.Error); isServerErr {
				// ERR DISCARD without MULTI: only WATCH was open.
				_, err = c.run(context.Background(), time.Time{}, func() (any, error) { return c.rc.Do("UNWATCH") })
			}
		}
		reuse = err == nil
	}
	h.p.put(c, reuse)
	return nil
}

// Err returns a non-nil error if the connection is unusable.
func (h *handle) Err() error {
	if h.c == nil {
		return errConnReturned
	}
	return h.c.rc.Err()
}

func (h *handle) track(cmd string, args []any) {
	switch effectOf(cmd, args) {
	case effOpenTx:
		h.txOpen = true
	case effCloseTx:
		h.txOpen = false
	case effTaint:
		h.tainted = true
	}
}

// Do runs a command bounded by ReadTimeout and WriteTimeout.
func (h *handle) Do(cmd string, args ...any) (any, error) {
	return h.DoContext(context.Background(), cmd, args...)
}

// DoContext runs a command bounded also by ctx. If ctx ends first, the call
// returns an error matching ctx's error and the connection will be closed
// when returned, since the reply may still be on its way.
func (h *handle) DoContext(ctx context.Context, cmd string, args ...any) (any, error) {
	return h.do(ctx, 0, cmd, args)
}

// DoWithTimeout runs a command whose reply may take up to timeout, as for
// redis.DoWithTimeout.
func (h *handle) DoWithTimeout(timeout time.Duration, cmd string, args ...any) (any, error) {
	return h.do(context.Background(), timeout, cmd, args)
}

func (h *handle) do(ctx context.Context, timeout time.Duration, cmd string, args []any) (any, error) {
	c := h.c
	if c == nil {
		return nil, errConnReturned
	}
	if cmd != "" {
		h.track(cmd, args)
	}
	reply, err := c.run(ctx, time.Time{}, func() (any, error) {
		if timeout > 0 {
			return redis.DoWithTimeout(c.rc, timeout, cmd, args...)
		}
		return c.rc.Do(cmd, args...)
	})
	h.pending = 0 // Do reads every pending reply
	if err != nil {
		return reply, h.p.wrapErr(ctx, cmd, err)
	}
	return reply, nil
}

// Send writes a command to the output buffer without waiting for its reply.
func (h *handle) Send(cmd string, args ...any) error {
	if h.c == nil {
		return errConnReturned
	}
	h.track(cmd, args)
	if err := h.c.rc.Send(cmd, args...); err != nil {
		return h.p.wrapErr(context.Background(), cmd, err)
	}
	h.pending++
	return nil
}

// Flush writes the output buffer to the server.
func (h *handle) Flush() error {
	if h.c == nil {
		return errConnReturned
	}
	if err := h.c.rc.Flush(); err != nil {
		return h.p.wrapErr(context.Background(), "flush", err)
	}
	return nil
}

// Receive reads one reply, bounded by ReadTimeout.
func (h *handle) Receive() (any, error) {
	return h.ReceiveContext(context.Background())
}

// ReceiveContext reads one reply, bounded also by ctx.
func (h *handle) ReceiveContext(ctx context.Context) (any, error) {
	return h.receive(ctx, 0)
}

// ReceiveWithTimeout reads one reply that may take up to timeout.
func (h *handle) ReceiveWithTimeout(timeout time.Duration) (any, error) {
	return h.receive(context.Background(), timeout)
}

func (h *handle) receive(ctx context.Context, timeout time.Duration) (any, error) {
	c := h.c
	if c == nil {
		return nil, errConnReturned
	}
	reply, err := c.run(ctx, time.Time{}, func() (any, error) {
		if timeout > 0 {
			return redis.ReceiveWithTimeout(c.rc, timeout)
		}
		return c.rc.Receive()
	})
	if h.pending > 0 {
		h.pending--
	}
	if err != nil {
		return reply, h.p.wrapErr(ctx, "receive", err)
	}
	return reply, nil
}
