// Package faultproxy is an in-process TCP proxy that injects network faults
// between a client and a server on loopback, so tests can exercise failure
// handling without root privileges or external tools.
//
// It models what a userspace proxy can model: a link blackholed one way or
// both, a server that forgot its connections (half-open client sockets),
// connection resets, latency, slow closes, a name that moves to another
// server, as DNS or a managed endpoint does on failover, a connection cut
// after a given number of bytes (in the middle of a reply, or of a
// command), a middlebox that still delivers what it holds for the server
// after losing the client, and replies sliced into small, spaced segments
// (a slow link). It cannot model anything the kernel does on its own: the
// proxy's sockets are ordinary sockets whose kernel keeps ACKing whatever
// the client sends, even while the proxy is blackholed. TCP keepalive
// probes and TCP_USER_TIMEOUT therefore always succeed through the proxy
// and cannot be tested with it.
package faultproxy

import (
	"context"
	"net"
	"sync"
	"time"
)

// bufSize is the size of each read; a read is the unit that latency delays.
const bufSize = 32 << 10

// Proxy forwards connections accepted on a loopback address to a target,
// injecting the faults its methods switch on. All methods are safe for
// concurrent use.
type Proxy struct {
	ln *net.TCPListener
	wg sync.WaitGroup

	mu     sync.Mutex
	target string // where connections accepted now go
	// healed holds, per Direction, a channel closed while forwarding that
	// way is allowed; Blackhole replaces it with an open channel so that
	// waiters block until Heal closes it.
	healed    [2]chan struct{}
	latency   [2]time.Duration // per Direction
	slice     [2]slicing       // per Direction
	cut       Cut
	slowClose time.Duration
	rto       time.Duration
	conns     map[*conn]struct{}
	accepted  int
	held      int      // chunks read from one side and not yet delivered to the other, or dropped
	received  [2]int64 // bytes read to forward, per Direction
	closed    bool
}

// conn is one proxied connection. Its upstream and forgotten fields are
// guarded by Proxy.mu.
type conn struct {
	client *net.TCPConn
	target string // fixed at accept
	// ctx is cancelled when the connection is torn down, which interrupts
	// every wait the connection's goroutines may be in.
	ctx       context.Context
	cancel    context.CancelFunc
	upstream  net.Conn
	forgotten bool
	crossed   [2]int64      // bytes forwarded, per Direction
	cutAt     time.Time     // when the client side was cut; zero: not cut
	linger    time.Duration // of the cut: see Cut.Linger
}

// Cut describes how every connection is cut once a number of bytes has
// crossed it one way, as a middlebox that drops connections does.
type Cut struct {
	Dir   Direction // the direction whose bytes are counted
	After int64     // bytes that cross before the cut; the rest of the chunk is dropped; 0: never cut
	Reset bool      // close the client side with a TCP RST rather than a FIN
	// Linger is how long after the cut the commands the proxy already
	// read from the client may still reach the server: a middlebox that
	// lost the client flushing what it held toward the server late. The
	// upstream is closed once they are delivered. Zero: at once.
	Linger time.Duration
}

// slicing forwards bytes in segments of at most size, each after gap.
type slicing struct {
	size int
	gap  time.Duration
}

// Direction is a way bytes flow through the proxy.
type Direction int

const (
	ToServer Direction = iota // from the client to the target
	ToClient                  // from the target to the client
)

// New starts a proxy listening on 127.0.0.1:0 that forwards each accepted
// connection to target.
func New(target string) (*Proxy, error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		target: target,
		ln:     ln,
		conns:  make(map[*conn]struct{}),
	}
	for d := range p.healed {
		p.healed[d] = make(chan struct{})
		close(p.healed[d])
	}
	p.wg.Go(p.acceptLoop)
	return p, nil
}

// Addr returns the address clients should dial instead of the target.
func (p *Proxy) Addr() string {
	return p.ln.Addr().String()
}

// SetTarget makes the connections accepted from now on go to target, as a
// DNS name or a managed endpoint that moves to another server does.
// Connections accepted before keep theirs, even those that a blackhole
// keeps from being dialled yet: a client keeps the address it resolved
// when it connected.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// Blackhole stops forwarding in both directions without closing anything:
// bytes, and a close, are held back as if the link dropped packets that
// will be retransmitted. New connections are accepted but not forwarded
// either; they are dialled to the target only after Heal, as a
// retransmitted SYN would be.
func (p *Proxy) Blackhole() {
	p.BlackholeOneWay(ToServer)
	p.BlackholeOneWay(ToClient)
}

// BlackholeOneWay stops forwarding in direction d only, as a link that
// drops the packets going one way: toward the server, commands are held
// back; toward the client, commands run but their replies are held back.
// New connections wait for Heal, since a handshake needs both ways.
func (p *Proxy) BlackholeOneWay(d Direction) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.healed[d]:
		p.healed[d] = make(chan struct{})
	default:
	}
}

// Heal resumes forwarding both ways; held bytes flow on at once, or when
// their retransmission is due if SetRetransmission is set.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ch := range p.healed {
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
}

// Forget models a server that lost its state while the link was down: every
// current upstream connection is closed, while its client side is left open
// and silent forever. Nothing more is sent to such a client, not even a FIN,
// and whatever it writes is read and discarded. Connections accepted after
// Forget are forwarded normally.
func (p *Proxy) Forget() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if c.upstream != nil {
			c.forgotten = true
			c.upstream.Close()
		}
	}
}

// ResetAll aborts every proxied connection with a TCP RST on the client side
// and closes its upstream.
func (p *Proxy) ResetAll() {
	for _, c := range p.snapshot() {
		p.drop(c, true)
	}
}

// SetLatency delays every forwarded chunk in both directions by d; 0 means
// no delay.
func (p *Proxy) SetLatency(d time.Duration) {
	p.SetLatencyOneWay(ToServer, d)
	p.SetLatencyOneWay(ToClient, d)
}

// SetLatencyOneWay delays every chunk forwarded in direction dir by d; 0
// means no delay.
func (p *Proxy) SetLatencyOneWay(dir Direction, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency[dir] = d
}

// SetCut cuts every connection, current and future, as c describes once
// c.After bytes have crossed it in c.Dir since it was accepted. The zero Cut
// cuts nothing.
func (p *Proxy) SetCut(c Cut) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = c
}

// SetSlice forwards bytes in direction dir in segments of at most size
// bytes, each written gap after the one before: a slow or fragmenting link.
// A size of 1 byte and a gap of 2 s is a trickle; 4 KiB every 62.5 ms is 64
// KiB/s. A size of 0 turns slicing off.
func (p *Proxy) SetSlice(dir Direction, size int, gap time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slice[dir] = slicing{size: size, gap: gap}
}

// SetRetransmission makes bytes held back by a blackhole cross after Heal
// only when TCP would resend them: rto, 3*rto, 7*rto... after they were
// sent, the timer doubling each time, as Linux does from its minimum RTO of
// 200 ms. Connections accepted during the blackhole are timed from their
// accept, like a resent SYN. Without it, everything held crosses at once
// when the link heals, which no real network does: replies and late
// commands then arrive together, hiding races between them. Zero, the
// default: at once.
func (p *Proxy) SetRetransmission(rto time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rto = rto
}

// SetSlowClose makes the proxy wait d after an upstream closes before it
// closes the client side, modelling a slow FIN; 0 means no delay.
func (p *Proxy) SetSlowClose(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slowClose = d
}

// Conns returns the number of proxied connections whose client side is
// currently open, including forgotten ones.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Held returns how many chunks the proxy has read from one side and not
// yet delivered to the other or dropped: bytes in flight on the link.
func (p *Proxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// Received returns how many bytes the proxy has read, over all
// connections, to forward in direction dir, whether or not they crossed.
func (p *Proxy) Received(dir Direction) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.received[dir]
}

// Accepted returns the number of connections accepted since New.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops the listener, closes every connection, and waits for all of the
// proxy's goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range p.snapshot() {
		p.drop(c, false)
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	for {
		nc, err := p.ln.AcceptTCP()
		if err != nil {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		c := &conn{client: nc, ctx: ctx, cancel: cancel}
		p.mu.Lock()
		c.target = p.target
		p.accepted++
		if p.closed {
			// Close has already snapshotted the connections and would
			// never tear this one down.
			p.mu.Unlock()
			cancel()
			nc.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.serve(c) })
	}
}

// serve dials the target for c once forwarding is allowed, then relays
// client-to-server bytes itself while a second goroutine relays the reverse.
func (p *Proxy) serve(c *conn) {
	accepted := time.Now()
	if !p.cross(c, ToServer, accepted) || !p.cross(c, ToClient, accepted) {
		return
	}
	var d net.Dialer
	up, err := d.DialContext(c.ctx, "tcp", c.target)
	if err != nil {
		p.drop(c, false)
		return
	}
	p.mu.Lock()
	if c.ctx.Err() != nil {
		// Torn down while dialling: drop has already run and will not see
		// this upstream.
		p.mu.Unlock()
		up.Close()
		return
	}
	c.upstream = up
	p.mu.Unlock()
	p.wg.Go(func() { p.toClient(c, up) })
	p.toServer(c, up)
}

// toServer relays the client's bytes to up, or discards them once c is
// forgotten so that the client's writes keep succeeding.
func (p *Proxy) toServer(c *conn, up net.Conn) {
	buf := make([]byte, bufSize)
	for {
		n, err := c.client.Read(buf)
		sent := time.Now()
		if n > 0 && !p.isForgotten(c) {
			// A write failing because Forget closed up is expected: the
			// client must go on being drained, not disconnected.
			if !p.send(c, ToServer, up, buf[:n], sent) && !p.isForgotten(c) {
				p.drop(c, false)
				return
			}
		}
		if err != nil {
			// The client's close crosses the link like its bytes.
			p.cross(c, ToServer, sent)
			p.drop(c, false)
			return
		}
	}
}

// toClient relays up's bytes to the client and forwards the upstream's close
// after the slow-close delay, unless c is forgotten, in which case the client
// must hear nothing at all.
func (p *Proxy) toClient(c *conn, up net.Conn) {
	buf := make([]byte, bufSize)
	for {
		n, err := up.Read(buf)
		sent := time.Now()
		if p.isForgotten(c) {
			return
		}
		if n > 0 && !p.send(c, ToClient, c.client, buf[:n], sent) {
			if !p.isCut(c) {
				p.drop(c, false)
			}
			// Cut: toServer delivers what it holds, then tears c down.
			return
		}
		if err != nil {
			p.mu.Lock()
			d := p.slowClose
			p.mu.Unlock()
			if pause(c.ctx, d) {
				p.cross(c, ToClient, sent.Add(d))
			}
			p.drop(c, false)
			return
		}
	}
}

// send writes b, read at sent, to dst, which lies in direction dir, after
// the configured latency, holding it back while that direction is
// blackholed, sliced and cut as configured. It reports false if c was torn
// down, cut, or the write failed.
func (p *Proxy) send(c *conn, dir Direction, dst net.Conn, b []byte, sent time.Time) bool {
	p.mu.Lock()
	d := p.latency[dir]
	p.held++
	p.received[dir] += int64(len(b))
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.held--
		p.mu.Unlock()
	}()
	if !pause(c.ctx, d) || !p.cross(c, dir, sent.Add(d)) {
		return false
	}
	p.mu.Lock()
	cutAt, linger := c.cutAt, c.linger
	p.mu.Unlock()
	if !cutAt.IsZero() {
		// Read before the cut: a command still held reaches the server
		// late, a reply never reaches the client.
		if dir == ToClient || !pause(c.ctx, time.Until(cutAt.Add(linger))) {
			return false
		}
	}
	for len(b) > 0 {
		p.mu.Lock()
		sl, cut := p.slice[dir], p.cut
		chunk := b
		if sl.size > 0 && len(chunk) > sl.size {
			chunk = chunk[:sl.size]
		}
		cutNow := false
		if cut.After > 0 && cut.Dir == dir && c.cutAt.IsZero() && c.crossed[dir]+int64(len(chunk)) >= cut.After {
			// A cut set after more than After bytes crossed: at once.
			chunk, cutNow = chunk[:max(0, cut.After-c.crossed[dir])], true
		}
		c.crossed[dir] += int64(len(chunk))
		p.mu.Unlock()
		if len(chunk) > 0 {
			if _, err := dst.Write(chunk); err != nil {
				return false
			}
		}
		if cutNow {
			p.cutClient(c, cut.Reset, cut.Linger)
			return dir == ToServer && len(chunk) == len(b) // nothing was dropped
		}
		b = b[len(chunk):]
		if len(b) > 0 && sl.size > 0 && !pause(c.ctx, sl.gap) {
			return false
		}
	}
	return true
}

// CutAll cuts every current connection now, as SetCut describes, with a
// reset if asked, delivering what the proxy holds for the server linger
// after the cut.
func (p *Proxy) CutAll(reset bool, linger time.Duration) {
	for _, c := range p.snapshot() {
		p.cutClient(c, reset, linger)
	}
}

// cutClient closes c's client side, with a reset if asked, and leaves its
// upstream open for what the proxy still holds for the server: toServer
// closes it once it has delivered that and finds the client gone.
func (p *Proxy) cutClient(c *conn, reset bool, linger time.Duration) {
	p.mu.Lock()
	if !c.cutAt.IsZero() {
		p.mu.Unlock()
		return
	}
	c.cutAt, c.linger = time.Now(), linger
	p.mu.Unlock()
	if reset {
		c.client.SetLinger(0)
	}
	c.client.Close()
}

// cross blocks until what was sent in direction dir at sent may cross the
// link: at once if the link is up, else once it heals and, with
// SetRetransmission, the next resend is due. It reports whether c is still
// alive then.
func (p *Proxy) cross(c *conn, dir Direction, sent time.Time) bool {
	held := false
	for {
		p.mu.Lock()
		healed, rto := p.healed[dir], p.rto
		p.mu.Unlock()
		select {
		case <-healed:
			if !held || rto <= 0 {
				return c.ctx.Err() == nil
			}
			// The resend goes out when due; should the link be down
			// again by then, it is lost too and the loop waits again.
			if !pause(c.ctx, untilResend(sent, rto, time.Now())) {
				return false
			}
			held = false
		default:
			held = true
			select {
			case <-healed:
			case <-c.ctx.Done():
				return false
			}
		}
	}
}

// untilResend returns how long after now the first resend of a segment
// sent at sent is due, with a retransmission timer starting at rto and
// doubling at each resend.
func untilResend(sent time.Time, rto time.Duration, now time.Time) time.Duration {
	due := sent.Add(rto)
	for !due.After(now) {
		rto *= 2
		due = due.Add(rto)
	}
	return due.Sub(now)
}

func (p *Proxy) isCut(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !c.cutAt.IsZero()
}

func (p *Proxy) isForgotten(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return c.forgotten
}

func (p *Proxy) snapshot() []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	return cs
}

// drop tears c down, sending an RST to the client if reset is set. It is
// idempotent so that whichever goroutine notices a failure first can call it.
func (p *Proxy) drop(c *conn, reset bool) {
	p.mu.Lock()
	delete(p.conns, c)
	// Cancelling under the lock pairs with serve's check, so an upstream is
	// either visible here or closed by serve itself.
	c.cancel()
	up := c.upstream
	p.mu.Unlock()
	if reset {
		c.client.SetLinger(0)
	}
	c.client.Close()
	if up != nil {
		up.Close()
	}
}

// pause waits for d unless ctx ends first, and reports whether ctx is still
// alive.
func pause(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
