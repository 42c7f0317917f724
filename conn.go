package redisalive

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redisalive/redisalive/internal/resp"
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
//
// A read may also wait quietly (see quiet): then it proves the link with a
// PING whenever nothing has arrived for a while, instead of giving up at a
// deadline that a healthy but silent link would reach.
type limitConn struct {
	net.Conn
	limit  atomic.Int64 // UnixNano of the cap; 0: none. Set by the reader, read by the writer too
	dead   atomic.Bool  // set by abort
	failed atomic.Bool  // a read or write failed: see Close
	tcp    *net.TCPConn // the socket under TLS, if TCP; for Close

	// Owned by the goroutine that reads.
	readDeadline time.Time // as last set, after the cap
	quiet        *quietRead
	quietOK      bool // the deadline last asked for was none: a quiet read may ping
	// replyWithin, on a shared connection, is how long a read may wait
	// while replies are due (repliesDue > 0): each read syscall then gets
	// this deadline, and redigo's per-reply deadlines are ignored. With none
	// due the read waits without a deadline, so the reader sleeps on the
	// socket alone; see armReply for how a write wakes the deadline.
	replyWithin time.Duration
	repliesDue  *atomic.Int64
	stream      *replyStream // told of every read that returns data, with replyWithin
}

// quietRead lets a read wait as long as the link is healthy. It suits a
// connection on which replies arrive unasked (a subscription), where any
// fixed read deadline would fail a healthy but quiet link.
type quietRead struct {
	every  time.Duration // PING after this long with nothing received
	within time.Duration // and expect something within this long of it
	ping   func() bool   // sends a PING; false if a command being sent will bring a reply anyway
}

func (c *limitConn) clamp(t time.Time) time.Time {
	if n := c.limit.Load(); n != 0 && (t.IsZero() || t.UnixNano() > n) {
		return time.Unix(0, n)
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
	t = c.clamp(t)
	c.readDeadline = t
	err := c.Conn.SetDeadline(t)
	c.reabort()
	return err
}

func (c *limitConn) SetReadDeadline(t time.Time) error {
	if c.replyWithin > 0 {
		return nil
	}
	c.quietOK = t.IsZero()
	t = c.clamp(t)
	c.readDeadline = t
	err := c.Conn.SetReadDeadline(t)
	c.reabort()
	return err
}

func (c *limitConn) SetWriteDeadline(t time.Time) error {
	err := c.Conn.SetWriteDeadline(c.clamp(t))
	c.reabort()
	return err
}

// Close closes the socket. One that failed or was aborted is closed with a
// reset, its unsent and unacknowledged bytes dropped (SO_LINGER 0): else the
// kernel goes on retransmitting them, and a command written into a dead
// link reaches the server once the link heals, long after it was
// abandoned. A BRPOP that arrives that way pops an element for a socket
// that no longer reads it (TestFaults/BRPopWrittenIntoBlackhole). redigo
// itself closes the connection on a failed read, so this is the one place
// that sees every such close.
func (c *limitConn) Close() error {
	if c.tcp != nil && (c.failed.Load() || c.dead.Load()) {
		c.tcp.SetLinger(0)
	}
	return c.Conn.Close()
}

func (c *limitConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.failed.Store(true)
	}
	return n, err
}

func (c *limitConn) Read(b []byte) (int, error) {
	n, err := c.read(b)
	if err != nil {
		c.failed.Store(true)
	}
	return n, err
}

func (c *limitConn) read(b []byte) (int, error) {
	switch {
	case c.replyWithin > 0:
		return c.readReply(b)
	case c.quiet != nil && c.quietOK:
		// Waiting for a message; within one, the reader asks for a
		// deadline and gets a plain read.
		return c.readQuietly(b)
	}
	return c.Conn.Read(b)
}

// readQuietly reads until data arrives, the deadline last set passes, or
// the link fails: after every quiet stretch of q.every it sends a PING and
// gives the link q.within to answer. A timeout of Go's own socket read,
// unlike redigo's, leaves the connection usable (for TLS too: crypto/tls
// keeps a partial record and reports the timeout as temporary), so the
// read can wake, ping and go on.
func (c *limitConn) readQuietly(b []byte) (int, error) {
	q := c.quiet
	hard := c.readDeadline
	wake := time.Now().Add(q.every)
	pinged := false
	for {
		d := wake
		if !hard.IsZero() && hard.Before(d) {
			d = hard
		}
		c.Conn.SetReadDeadline(d)
		c.reabort()
		n, err := c.Conn.Read(b)
		if n > 0 || !isTimeout(err) || pinged || c.dead.Load() || !d.Before(hard) && !hard.IsZero() {
			return n, err
		}
		q.ping()
		pinged = true
		wake = time.Now().Add(q.within)
	}
}

// readReply is a shared connection's read: bounded by replyWithin while
// replies are due, unbounded while none are, so an idle shared connection
// costs no timer and its reader wakes only for data or the server's close.
func (c *limitConn) readReply(b []byte) (int, error) {
	for {
		if c.repliesDue.Load() == 0 {
			// Cleared first, then re-checked: a writer that made a reply
			// due meanwhile has armed the deadline after this clear, or is
			// seen by the check (armReply).
			c.Conn.SetReadDeadline(time.Time{})
		}
		if c.repliesDue.Load() > 0 {
			c.Conn.SetReadDeadline(time.Now().Add(c.replyWithin))
		}
		c.reabort()
		n, err := c.Conn.Read(b)
		if n > 0 && c.stream != nil {
			c.stream.read()
		}
		if n > 0 || !isTimeout(err) || c.dead.Load() || c.repliesDue.Load() > 0 {
			return n, err
		}
		// A writer's arming that came late, for a reply read meanwhile:
		// nothing is due, so wait on.
	}
}

// armReply is the writer's side of a shared connection's read deadline:
// after making the first reply due, it gives the read already waiting
// without a deadline one of replyWithin.
func (c *limitConn) armReply() {
	c.Conn.SetReadDeadline(time.Now().Add(c.replyWithin))
	c.reabort()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *limitConn) setLimit(t time.Time) {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	c.limit.Store(n)
}

func (c *limitConn) abort() {
	c.dead.Store(true)
	c.Conn.SetDeadline(aLongTimeAgo)
}

// conn is one pooled connection. Fields other than those marked are owned by
// whoever holds the connection: the caller that checked it out, or the pool
// while it is idle or being checked.
type conn struct {
	rc    *resp.Conn // the protocol over nc
	nc    *limitConn
	check peeker

	// wmu serialises writers when the holder receives on one goroutine
	// while it sends on another, as redigo allows and Pub/Sub needs: the
	// holder's sends and the PINGs of a quiet read.
	wmu sync.Mutex

	tls *tls.Conn // the TLS layer over the socket; nil for plain TCP and unix

	createdAt  time.Time
	returnedAt time.Time // last return to the pool by a caller
	pingedAt   time.Time // last health-check PING
	peekedAt   time.Time // last peek while idle
	lentAt     time.Time // last checkout

	// replied is set by Do as it returns the connection straight after
	// reading a reply on it, and cleared by the next checkout: such a
	// connection checked out again within freshReply skips the peek.
	replied bool

	// The connection as its server knows it, learned in the handshake: its
	// CLIENT ID (-1 if the server has none) and the server's run_id. A
	// zombie is named by both (fence.go).
	clientID int64
	runID    string
	role     string // the server's ROLE at the handshake; "" if unknown
	addr     string // where it was dialled
	gen      uint64 // the pool's target generation it was dialled under (failover.go)

	// waiting is set while the connection waits on the server for a long
	// time (a blocking round, a subscription): a failover cuts such waits
	// so that they go on at the new master.
	waiting   atomic.Bool
	zombies   *zombies    // the owner's, where the connection is recorded if abandoned; nil: none
	abandoned atomic.Bool // recorded as a zombie

	aborted      atomic.Bool // a command was interrupted: the socket is unusable
	canceled     atomic.Bool // what broke it was the caller's context, not the network
	closedByPool atomic.Bool // Close or Shutdown closed it while it was checked out

	// Leak detection; guarded by Pool.mu.
	checkedOutAt time.Time
	stack        []uintptr
	leakReported bool
}

func newConn(nc net.Conn, cfg *config, now time.Time) *conn {
	c := &conn{nc: &limitConn{Conn: nc}, createdAt: now, returnedAt: now, peekedAt: now}
	raw := nc
	if tc, ok := nc.(*tls.Conn); ok {
		c.tls, raw = tc, tc.NetConn()
	}
	c.nc.tcp, _ = raw.(*net.TCPConn)
	c.check.init(raw)
	c.rc = resp.NewConn(c.nc, cfg.readTimeout, cfg.writeTimeout, resp.MaxBulkLen(cfg.maxBulkLen))
	return c
}

// tlsAbsorbWaits are the waits, in turn, an idle check gives crypto/tls to
// read what the peek saw waiting on a TLS connection. The bytes are already
// in the kernel, so reading them is immediate; the first wait only ends the
// read once they turned out to be no application data. The later ones are
// for a busy machine: a deadline that passes before the read begins makes
// Go return without reading at all, and under load (measured with the race
// detector and two CPU hogs on two cores) that left a server-closed
// connection looking healthy. So while the bytes are still unread, the read
// is tried again, for longer.
var tlsAbsorbWaits = [...]time.Duration{time.Millisecond, 5 * time.Millisecond, 25 * time.Millisecond}

// testHookTLSAbsorb runs between setting an absorb read's deadline and the
// read, so a test can play the scheduler that delays one.
var testHookTLSAbsorb = func() {}

// checkIdle checks an idle connection without a round trip: nil if it
// looks healthy, an error if the server closed it or the protocol is out
// of step.
//
// On TLS a peek at the raw socket sees records, not replies: the session
// tickets a TLS 1.3 server sends after the handshake look like data, and a
// close_notify alert is data too. So when bytes are waiting, crypto/tls
// reads them briefly: it absorbs tickets and other post-handshake messages
// (healthy), reports close_notify or EOF (closed), or returns application
// data (out of step). Tickets arrive with a connection's first reply, which
// consumes them, so this costs one millisecond rarely, and no round trip
// ever; reading the tickets right after the handshake instead would cost
// every new connection a wait for them.
func (c *conn) checkIdle(now time.Time) error {
	c.peekedAt = now
	err := c.check.check()
	if err != errUnexpectedData || c.tls == nil {
		return err
	}
	var b [1]byte
	for _, wait := range tlsAbsorbWaits {
		c.tls.SetReadDeadline(time.Now().Add(wait))
		testHookTLSAbsorb()
		n, err := c.tls.Read(b[:])
		c.tls.SetReadDeadline(time.Time{})
		switch {
		case n > 0 || err == nil:
			return errUnexpectedData
		case !isTimeout(err):
			return err
		}
		// Timed out: healthy if crypto/tls took every waiting byte and found
		// no data in them; if the bytes are still in the kernel, the
		// deadline passed before the read began.
		if err := c.check.check(); err != errUnexpectedData {
			return err
		}
	}
	// Bytes waiting that three reads never reached: too unsure to hand out.
	return errUnexpectedData
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
		c.aborted.Store(true)
	}
	if c.broken() {
		if ctxErr(ctx) != nil {
			// Also when op succeeded just before abort ran: the socket is
			// poisoned all the same, and the cause is still the caller's.
			c.canceled.Store(true)
		}
		// Recorded before the caller hears of the failure, so that what it
		// sends next is fenced.
		c.zombies.add(c)
	}
	if !deadline.IsZero() {
		c.nc.setLimit(time.Time{})
	}
	return reply, err
}

// broken reports whether the connection must not be reused.
func (c *conn) broken() bool { return c.aborted.Load() || c.rc.Err() != nil }

// close closes the connection, recording it as a zombie if its socket
// failed: the server may not have heard of the close.
func (c *conn) close() error {
	if c.nc.failed.Load() || c.nc.dead.Load() {
		c.zombies.add(c)
	}
	return c.rc.Close()
}

// sendKeepalivePing sends a PING for a quiet read, unless a writer is busy:
// the command it sends will bring a reply, which proves the link as well.
func (c *conn) sendKeepalivePing() bool {
	if !c.wmu.TryLock() {
		return false
	}
	defer c.wmu.Unlock()
	// A failed write breaks the redigo connection, which closes the socket
	// and so ends the read that asked for the PING.
	if c.rc.Send("PING", keepalivePing) == nil {
		c.rc.Flush()
	}
	return true
}
