package resp

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

var (
	_ redis.ConnWithTimeout = (*Conn)(nil)
	_ redis.ConnWithContext = (*Conn)(nil)
)

// ErrClosed is what a Conn returns, and Err reports, once it is closed.
var ErrClosed = errors.New("resp: connection closed")

const (
	// writeBufferSize is redigo's.
	writeBufferSize = 4096

	// writeChunk is the most handed to the socket under one write
	// deadline, so that the write timeout bounds a stall rather than the
	// time a large argument takes over a slow link.
	writeChunk = 64 << 10
)

// Conn is a connection to a Redis server that behaves as redigo's own (see
// NewConn for where it does not). As redigo's, it allows one goroutine to
// receive while another sends and flushes, as Pub/Sub needs; Do must have
// the connection to itself.
type Conn struct {
	nc          net.Conn
	readTimeout time.Duration

	mu      sync.Mutex  // guards pending and err
	pending int         // commands sent whose replies are unread
	err     error       // the first fatal error, or ErrClosed; it sticks
	broken  atomic.Bool // err is set: a check without the lock, for Flush and Receive

	// The receiving goroutine's.
	rd *Reader
	dr deadlineReader

	// The sending goroutine's.
	w  writer
	dw deadlineWriter
}

// NewConn returns a connection over nc that replaces redis.NewConn(nc,
// readTimeout, writeTimeout), reading replies with a Reader limited by opts.
//
// It differs from redigo's connection on purpose in these ways:
//   - A timeout bounds silence, not work in progress: the read deadline is
//     moved to now+readTimeout (or the timeout of DoWithTimeout and
//     ReceiveWithTimeout) as each read from nc starts, so a large reply
//     that arrives slowly but steadily succeeds while a link that stops
//     delivering fails within the timeout. To keep the cost of that low, a
//     move of less than a 128th of the timeout (at most 1 ms) is skipped.
//     writeTimeout likewise bounds each write to nc, of at most 64 KiB. A
//     timeout of 0 sets the zero deadline, none, at the first read of each
//     call and before each write, so a deadline left from an earlier call
//     does not linger and nc may apply a cap of its own. Every deadline is
//     set through nc's SetReadDeadline and SetWriteDeadline.
//   - Replies are read by a Reader, with its limits: where redigo would
//     allocate what a peer declares, or wrap a number past int64 around,
//     it returns a *ProtocolError; a reply cut short gives
//     io.ErrUnexpectedEOF where redigo gives io.EOF for a cut line.
//   - A fatal error sticks: once a read or write fails, or the connection
//     is closed, every call returns that error without touching nc.
//   - DoContext and ReceiveContext start no goroutine: a context that ends
//     during the call closes the connection, so that the blocked read or
//     write returns, and the call returns the context's error unless the
//     reply had been read in full. A context already done when the call
//     starts fails it without touching the connection.
func NewConn(nc net.Conn, readTimeout, writeTimeout time.Duration, opts ...Option) *Conn {
	c := &Conn{nc: nc, readTimeout: readTimeout}
	c.dr.nc = nc
	c.rd = NewReader(&c.dr, opts...)
	c.dw = deadlineWriter{nc: nc, timeout: writeTimeout}
	c.w.bw = bufio.NewWriterSize(&c.dw, writeBufferSize)
	return c
}

// Close closes the connection. It returns the error that broke the
// connection, or ErrClosed, if there was one, as redigo does.
func (c *Conn) Close() error {
	c.mu.Lock()
	err := c.err
	if err == nil {
		c.err = ErrClosed
		c.broken.Store(true)
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.nc.Close()
}

// Unread returns how many bytes arrived that no reply has taken: with no
// reply pending, bytes the server sent unasked, which would be read as the
// answer to the next command.
func (c *Conn) Unread() int { return c.rd.Buffered() }

// Err returns the error that broke the connection, ErrClosed after Close,
// or nil while the connection is usable.
func (c *Conn) Err() error {
	if !c.broken.Load() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// fatal records err as what broke the connection, unless something already
// did, closes nc so that a read or write on another goroutine returns, and
// returns err.
func (c *Conn) fatal(err error) error {
	c.mu.Lock()
	first := c.err == nil
	if first {
		c.err = err
		c.broken.Store(true)
	}
	c.mu.Unlock()
	if first {
		c.nc.Close()
	}
	return err
}

// Send writes the command to the output buffer, counting its reply as
// pending. The buffer is written to the server when it fills, by Flush, or
// by Do.
func (c *Conn) Send(cmd string, args ...any) error {
	c.mu.Lock()
	err := c.err
	if err == nil {
		c.pending++
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := c.w.writeCommand(cmd, args); err != nil {
		return c.fatal(err)
	}
	return nil
}

// Flush writes the output buffer to the server.
func (c *Conn) Flush() error {
	if err := c.Err(); err != nil {
		return err
	}
	if err := c.w.bw.Flush(); err != nil {
		return c.fatal(err)
	}
	return nil
}

// Receive reads one reply, bounding silence by the read timeout. An error
// reply is returned as (nil, redis.Error).
func (c *Conn) Receive() (any, error) {
	return c.ReceiveWithTimeout(c.readTimeout)
}

// ReceiveWithTimeout is Receive with timeout in place of the read timeout.
func (c *Conn) ReceiveWithTimeout(timeout time.Duration) (any, error) {
	return c.ReceiveWithTimeouts(timeout, timeout)
}

// ReceiveWithTimeouts is Receive with two timeouts: first bounds the
// silence before the reply's first byte, as the wait of a blocking command
// or of a subscription may, and rest the silence after it, once the
// server has begun to answer. 0 means none.
func (c *Conn) ReceiveWithTimeouts(first, rest time.Duration) (any, error) {
	if err := c.Err(); err != nil {
		return nil, err
	}
	c.dr.start(first, rest)
	reply, err := c.rd.ReadReply()
	if err != nil {
		return nil, c.fatal(err)
	}
	// Pub/Sub receives more replies than it sends commands; pending stays
	// at 0 then, so the connection is usable again after unsubscribing.
	c.mu.Lock()
	if c.pending > 0 {
		c.pending--
	}
	c.mu.Unlock()
	if e, ok := reply.(redis.Error); ok {
		return nil, e
	}
	return reply, nil
}

// ReceiveContext is Receive, ended early by ctx; see NewConn.
func (c *Conn) ReceiveContext(ctx context.Context) (any, error) {
	return c.withContext(ctx, func() (any, error) { return c.ReceiveWithTimeout(c.readTimeout) })
}

// Do sends the command, flushes, and reads the replies of the commands
// pending before it and then its own, which it returns. The error is the
// first redis.Error among those replies, if any, or what broke the
// connection. With cmd "", Do sends nothing and returns the pending
// replies as []any, error replies among them as values.
func (c *Conn) Do(cmd string, args ...any) (any, error) {
	return c.DoWithTimeout(c.readTimeout, cmd, args...)
}

// DoContext is Do, ended early by ctx; see NewConn.
func (c *Conn) DoContext(ctx context.Context, cmd string, args ...any) (any, error) {
	return c.withContext(ctx, func() (any, error) { return c.DoWithTimeout(c.readTimeout, cmd, args...) })
}

// DoWithTimeout is Do with timeout in place of the read timeout.
func (c *Conn) DoWithTimeout(timeout time.Duration, cmd string, args ...any) (any, error) {
	return c.DoWithTimeouts(timeout, timeout, cmd, args...)
}

// DoWithTimeouts is Do with the two timeouts of ReceiveWithTimeouts: first
// until the first byte of the replies, rest after it.
func (c *Conn) DoWithTimeouts(first, rest time.Duration, cmd string, args ...any) (any, error) {
	c.mu.Lock()
	err := c.err
	pending := c.pending
	if err == nil {
		c.pending = 0
	}
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if cmd == "" && pending == 0 {
		return nil, nil
	}
	if cmd != "" {
		if err := c.w.writeCommand(cmd, args); err != nil {
			return nil, c.fatal(err)
		}
	}
	if err := c.w.bw.Flush(); err != nil {
		return nil, c.fatal(err)
	}

	c.dr.start(first, rest)
	if cmd == "" {
		replies := make([]any, pending)
		for i := range replies {
			reply, err := c.rd.ReadReply()
			if err != nil {
				return nil, c.fatal(err)
			}
			replies[i] = reply
		}
		return replies, nil
	}
	var reply any
	var firstErr error
	for range pending + 1 {
		if reply, err = c.rd.ReadReply(); err != nil {
			return nil, c.fatal(err)
		}
		if e, ok := reply.(redis.Error); ok && firstErr == nil {
			firstErr = e
		}
	}
	return reply, firstErr
}

// withContext runs call, closing c if ctx ends first; see NewConn.
func (c *Conn) withContext(ctx context.Context, call func() (any, error)) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ctx.Done() == nil {
		return call()
	}
	stop := context.AfterFunc(ctx, func() { c.fatal(ctx.Err()) })
	reply, err := call()
	if stop() {
		return reply, err
	}
	// The close may still be under way on the AfterFunc's goroutine; this
	// one makes sure Err reports it on return.
	c.fatal(ctx.Err())
	if _, replied := err.(redis.Error); err != nil && !replied {
		// What the call saw was, most likely, the close.
		return nil, ctx.Err()
	}
	return reply, err
}

// deadlineReader moves the read deadline before each read from the socket,
// so that the timeout bounds silence rather than a whole reply.
//
// Moving it costs a timer update in the runtime, dearer than many reads
// of a reply that arrives fast, so a read that would move the deadline by
// less than a slack (a 128th of the timeout, at most a millisecond) leaves
// it: silence fails a call after between the timeout less the slack and
// the timeout. The first read of each call always sets it, as another may
// have set the socket's deadline between calls.
type deadlineReader struct {
	nc      net.Conn
	timeout time.Duration // of the call under way, now; 0: none
	rest    time.Duration // once a byte has arrived
	slack   time.Duration
	armed   bool      // a deadline was set in this call, since the first byte if any
	set     time.Time // that deadline
	begun   bool      // a byte has arrived in this call
}

// start prepares for the reads of a call: first bounds silence until a
// byte arrives, rest from then on.
func (d *deadlineReader) start(first, rest time.Duration) {
	d.timeout, d.rest = first, rest
	d.slack = min(first/128, time.Millisecond)
	d.armed, d.begun = false, false
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if t := deadline(d.timeout); !d.armed || t.Sub(d.set) > d.slack {
		if err := d.nc.SetReadDeadline(t); err != nil {
			return 0, err
		}
		d.armed, d.set = true, t
	}
	n, err := d.nc.Read(p)
	if n > 0 && !d.begun {
		d.begun = true
		if d.rest != d.timeout {
			d.timeout, d.slack, d.armed = d.rest, min(d.rest/128, time.Millisecond), false
		}
	}
	return n, err
}

// deadlineWriter moves the write deadline before each write to the socket,
// in parts of at most writeChunk.
type deadlineWriter struct {
	nc      net.Conn
	timeout time.Duration // 0: none
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	var n int
	for len(p) > 0 {
		if err := d.nc.SetWriteDeadline(deadline(d.timeout)); err != nil {
			return n, err
		}
		m, err := d.nc.Write(p[:min(len(p), writeChunk)])
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

// deadline is now+timeout, or the zero time, no deadline, for timeout 0.
func deadline(timeout time.Duration) time.Time {
	if timeout == 0 {
		return time.Time{}
	}
	return time.Now().Add(timeout)
}
