package redisalive

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// subscriptionBuffer is how many messages a Subscription holds for a slow
// receiver before it stops reading; the server then buffers them, up to
// its client-output-buffer-limit for pubsub, past which it drops the
// connection, and the subscription reconnects and reports the gap.
const subscriptionBuffer = 256

// Message is a message received by a Subscription.
type Message struct {
	// Channel is the channel the message was published to.
	Channel string
	// Pattern is the pattern that matched Channel, for a message received
	// through PSubscribe; "" otherwise.
	Pattern string
	// Sharded is true for a message of a shard channel (SSubscribe).
	Sharded bool
	// Data is the message.
	Data []byte
}

// GapError is returned once by Subscription.Receive after the subscription
// lost its connection and subscribed again on a new one: messages
// published between Since and Until may have been lost, since Pub/Sub
// keeps nothing for a client that is not connected. The subscription
// stays usable; an application that must not miss a change resynchronises
// from the source of truth on this error, knowing that every message
// published after Until will be received.
type GapError struct {
	Addr  string
	Since time.Time // the last time anything arrived on the lost connection
	Until time.Time // when every channel and pattern was subscribed again
	Cause error     // why the connection was lost
}

// Error says how long the subscription was down and why.
func (e *GapError) Error() string {
	return fmt.Sprintf("redisalive: subscription to %s was down for %v (%v); messages published meanwhile were lost",
		e.Addr, e.Until.Sub(e.Since).Round(time.Millisecond), e.Cause)
}

// Unwrap lets errors.Is match ErrMessagesLost and the cause.
func (e *GapError) Unwrap() []error { return []error{ErrMessagesLost, e.Cause} }

// subKind is the flavour of a subscription: what subscribes, unsubscribes,
// confirms and delivers.
type subKind uint8

const (
	kindChannel subKind = iota
	kindPattern
	kindShard
	numSubKinds
)

var subVerbs = [numSubKinds]struct {
	sub, unsub, confirm, message string
}{
	kindChannel: {"SUBSCRIBE", "UNSUBSCRIBE", "subscribe", "message"},
	kindPattern: {"PSUBSCRIBE", "PUNSUBSCRIBE", "psubscribe", "pmessage"},
	kindShard:   {"SSUBSCRIBE", "SUNSUBSCRIBE", "ssubscribe", "smessage"},
}

// Subscription is a Pub/Sub subscription that survives dead links. It
// holds one connection of the pool, counted in Stats.InUse and MaxActive
// and in Stats.Subscriptions, on which one goroutine reads. While nothing
// arrives it PINGs every PubSubPingInterval and expects a reply within
// ReadTimeout, so a dead link is noticed within their sum; it then
// reconnects with capped, jittered backoff, subscribes again to every
// channel and pattern, and reports the gap (see GapError). Pub/Sub is at
// most once: messages published during a gap are lost.
//
// A Subscription is safe for concurrent use. Close it, or close the pool,
// to release its connection; no goroutine of it outlives either.
type Subscription struct {
	pool   subscriptionPool
	ctx    context.Context    // ends with Close or the pool's
	cancel context.CancelFunc // Close
	out    chan delivery      // to Receive, in order
	done   chan struct{}      // closed when the reader has ended and returned its connection
	last   lastFailure        // the last connection failure, for errors while connecting

	mu       sync.Mutex // guards the fields below
	conn     *subConn   // the current connection; nil while reconnecting
	subs     [numSubKinds]map[string]bool
	inflight []pendingSub      // subscribe commands sent on conn, confirmations due, in order
	failed   map[subName]error // names the server refused, until their Subscribe returns
	changed  chan struct{}     // closed and replaced when the above change
	ended    error             // why the reader ended: ErrSubscriptionClosed, ErrPoolClosed or a configuration error
}

// subscriptionPool is what a Subscription uses of its Pool: the calls it
// makes and the settings it depends on, captured once by subscribe, so
// that the subscription depends on this much of the pool and nothing more.
type subscriptionPool struct {
	addr   string
	logger *slog.Logger
	// confirmWait bounds a wait for the server's confirmation when the
	// caller's ctx has no deadline: PoolTimeout plus ReadTimeout.
	confirmWait time.Duration
	// closing is done once the pool's Close or Shutdown begins.
	closing context.Context
	// goBackground runs the reader on a goroutine the pool's Close waits
	// for; it reports false, running nothing, once the pool is closed.
	goBackground func(f func()) bool
	// connect checks out a connection to subscribe on (subConn).
	connect func(ctx context.Context) (*subConn, error)
	backoff func(ctx context.Context, failures int) error
	// warnRetry logs a warning of a retry loop, at most once per
	// warnEvery for the whole pool.
	warnRetry func(msg string, args ...any)
	// open counts the open Subscriptions, gaps the gaps they reported:
	// Stats.Subscriptions and Stats.SubscriptionGaps.
	open, gaps *atomic.Int64
}

// delivery is a message, or the report of a gap.
type delivery struct {
	msg Message
	err error
}

// pendingSub is one subscribe command whose confirmations are due: the
// server confirms each name of it in order.
type pendingSub struct {
	kind      subKind
	names     []string
	confirmed int
}

type subName struct {
	kind subKind
	name string
}

// Subscribe subscribes to channels on a connection of the subscription's
// own and returns once the server has confirmed them, or when ctx (or, if
// ctx has no deadline, PoolTimeout plus ReadTimeout) ends; that error
// carries the last connection error, if connecting failed. A dial the
// server refused for the pool's configuration (ErrMisconfigured) is
// returned at once. See Subscription.
func (p *Pool) Subscribe(ctx context.Context, channels ...string) (*Subscription, error) {
	return p.subscribe(ctx, kindChannel, channels)
}

// PSubscribe is Subscribe for patterns, as PSUBSCRIBE.
func (p *Pool) PSubscribe(ctx context.Context, patterns ...string) (*Subscription, error) {
	return p.subscribe(ctx, kindPattern, patterns)
}

// SSubscribe is Subscribe for shard channels, as SSUBSCRIBE (Redis 7).
func (p *Pool) SSubscribe(ctx context.Context, channels ...string) (*Subscription, error) {
	return p.subscribe(ctx, kindShard, channels)
}

func (p *Pool) subscribe(ctx context.Context, kind subKind, names []string) (*Subscription, error) {
	if ctx == nil {
		return nil, ErrNilContext
	}
	s := &Subscription{
		pool:    p.subscriptionSeam(),
		out:     make(chan delivery, subscriptionBuffer),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
		failed:  make(map[subName]error),
	}
	for k := range s.subs {
		s.subs[k] = make(map[string]bool)
	}
	for _, n := range names {
		s.subs[kind][n] = false
	}
	s.ctx, s.cancel = context.WithCancel(s.pool.closing)
	if !s.pool.goBackground(s.run) {
		s.cancel()
		return nil, ErrPoolClosed
	}
	if err := s.await(ctx, kind, names); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Subscribe adds channels and returns once the server has confirmed them
// or ctx ends; if ctx ends first, they are still subscribed as soon as the
// connection allows. Subscribing to a channel twice has no effect.
func (s *Subscription) Subscribe(ctx context.Context, channels ...string) error {
	return s.change(ctx, kindChannel, true, channels)
}

// PSubscribe adds patterns, as Subscribe does channels.
func (s *Subscription) PSubscribe(ctx context.Context, patterns ...string) error {
	return s.change(ctx, kindPattern, true, patterns)
}

// SSubscribe adds shard channels, as Subscribe does channels.
func (s *Subscription) SSubscribe(ctx context.Context, channels ...string) error {
	return s.change(ctx, kindShard, true, channels)
}

// Unsubscribe drops channels, or every channel if none is given. From its
// return on, Receive returns no message of theirs. It does not wait for
// the server's confirmation, so ctx only bounds the wait for a concurrent
// Subscribe's command to be written.
func (s *Subscription) Unsubscribe(ctx context.Context, channels ...string) error {
	return s.change(ctx, kindChannel, false, channels)
}

// PUnsubscribe drops patterns, or every pattern if none is given, as
// Unsubscribe does channels.
func (s *Subscription) PUnsubscribe(ctx context.Context, patterns ...string) error {
	return s.change(ctx, kindPattern, false, patterns)
}

// SUnsubscribe drops shard channels, or all of them if none is given, as
// Unsubscribe does channels.
func (s *Subscription) SUnsubscribe(ctx context.Context, channels ...string) error {
	return s.change(ctx, kindShard, false, channels)
}

func (s *Subscription) change(ctx context.Context, kind subKind, on bool, names []string) error {
	if ctx == nil {
		return ErrNilContext
	}
	if on && len(names) == 0 {
		return fmt.Errorf("redisalive: %s needs at least one name", subVerbs[kind].sub)
	}
	s.mu.Lock()
	if s.ended != nil {
		s.mu.Unlock()
		return s.ended
	}
	var send []string
	if on {
		for _, n := range names {
			if _, ok := s.subs[kind][n]; !ok {
				s.subs[kind][n] = false
				send = append(send, n)
			}
		}
	} else {
		if len(names) == 0 {
			names = sortedKeys(s.subs[kind])
		}
		for _, n := range names {
			if _, ok := s.subs[kind][n]; ok {
				delete(s.subs[kind], n)
				send = append(send, n)
			}
		}
	}
	c := s.conn
	if c != nil && len(send) > 0 {
		if on {
			s.inflight = append(s.inflight, pendingSub{kind: kind, names: send})
		}
		// Taken before s.mu is released, so commands reach the wire in
		// the order their confirmations are queued.
		c.lockWrites()
	}
	s.mu.Unlock()
	if c != nil && len(send) > 0 {
		// A failed write breaks the connection; the reader then
		// subscribes again on the next one to what s.subs holds.
		verb := subVerbs[kind].sub
		if !on {
			verb = subVerbs[kind].unsub
		}
		if c.send(verb, send) == nil {
			c.flush()
		}
		c.unlockWrites()
	}
	if !on {
		return nil
	}
	return s.await(ctx, kind, names)
}

// await waits until the server has confirmed names on the current
// connection (or, with no names, until there is one). Without a ctx
// deadline it waits PoolTimeout plus ReadTimeout.
func (s *Subscription) await(ctx context.Context, kind subKind, names []string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.pool.confirmWait)
		defer cancel()
	}
	for {
		s.mu.Lock()
		done, err := s.conn != nil, s.ended
		for _, n := range names {
			if e, ok := s.failed[subName{kind, n}]; ok {
				delete(s.failed, subName{kind, n})
				err = e
			}
			if confirmed, ok := s.subs[kind][n]; ok && !confirmed {
				done = false
			}
		}
		changed := s.changed
		s.mu.Unlock()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return s.last.wrap(fmt.Errorf("redisalive: %s on %s: not confirmed: %w", subVerbs[kind].sub, s.pool.addr, ctx.Err()))
		}
	}
}

// Receive returns the next message. It returns a *GapError (matching
// ErrMessagesLost) once after a reconnect, an error matching ctx's error
// when ctx ends first, ErrSubscriptionClosed after Close, ErrPoolClosed
// after the pool's Close, and the *DialError (matching ErrMisconfigured)
// of a reconnect the server refused for the pool's configuration; the
// subscription stays usable after the first two, and has ended after the
// others.
func (s *Subscription) Receive(ctx context.Context) (Message, error) {
	if ctx == nil {
		return Message{}, ErrNilContext
	}
	for {
		select {
		case <-s.done:
			return Message{}, s.endErr()
		default:
		}
		select {
		case d := <-s.out:
			if d.err != nil {
				return Message{}, d.err
			}
			if !s.wants(d.msg) {
				continue // unsubscribed since it arrived
			}
			return d.msg, nil
		case <-ctx.Done():
			return Message{}, fmt.Errorf("redisalive: receive on %s: %w", s.pool.addr, ctx.Err())
		case <-s.done:
			return Message{}, s.endErr()
		}
	}
}

// Close ends the subscription and closes its connection, so nothing of it
// stays on the server. It is safe to call more than once.
func (s *Subscription) Close() error {
	s.cancel()
	<-s.done
	return nil
}

func (s *Subscription) endErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// wants reports whether a message is still subscribed to.
func (s *Subscription) wants(m Message) bool {
	kind, name := kindChannel, m.Channel
	switch {
	case m.Pattern != "":
		kind, name = kindPattern, m.Pattern
	case m.Sharded:
		kind = kindShard
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.subs[kind][name]
	return ok
}

// run is the subscription's one goroutine: it connects, reads and
// delivers until the subscription or the pool closes, and reconnects when
// the link fails.
func (s *Subscription) run() {
	p := s.pool
	defer close(s.done) // last: Close returns once everything below is undone
	p.open.Add(1)
	defer p.open.Add(-1)
	var (
		gap      *GapError // a lost connection, reported once subscribed again
		failures int
		lastRead = time.Now()
	)
	for {
		c, err := s.connect()
		if err == nil {
			if failures > 0 || gap != nil {
				p.logger.Info("redisalive: subscription reconnected", "addr", p.addr, "failed_attempts", failures)
			}
			failures = 0
			err = s.read(c, &gap, &lastRead)
			s.drop(c, err)
		}
		if s.ctx.Err() != nil {
			s.end(nil)
			return
		}
		if errors.Is(err, ErrMisconfigured) {
			s.end(err) // retrying cannot mend it: every caller hears of it
			return
		}
		if gap == nil {
			gap = &GapError{Addr: p.addr, Since: lastRead, Cause: err}
		}
		failures++
		p.warnRetry("redisalive: subscription lost its connection; reconnecting",
			"addr", p.addr, "consecutive_failures", failures, "err", err)
		if p.backoff(s.ctx, failures) != nil {
			s.end(nil)
			return
		}
	}
}

// connect checks out a connection and subscribes on it to everything the
// subscription holds.
func (s *Subscription) connect() (*subConn, error) {
	c, err := s.pool.connect(s.ctx)
	if err != nil {
		s.last.note(s.ctx, err)
		return nil, err
	}
	s.last.clear()
	s.mu.Lock()
	s.conn = c
	s.inflight = s.inflight[:0]
	for k := range s.subs {
		if names := sortedKeys(s.subs[k]); len(names) > 0 {
			for _, n := range names {
				s.subs[k][n] = false
			}
			s.inflight = append(s.inflight, pendingSub{kind: subKind(k), names: names})
		}
	}
	cmds := slices.Clone(s.inflight)
	s.broadcastLocked()
	c.lockWrites()
	s.mu.Unlock()
	for _, cmd := range cmds {
		err = c.send(subVerbs[cmd.kind].sub, cmd.names)
	}
	if err == nil {
		err = c.flush()
	}
	c.unlockWrites()
	if err != nil {
		s.drop(c, err)
		return nil, err
	}
	return c, nil
}

// read reads from c until it fails or the subscription ends, delivering
// messages, and the pending gap once every name is confirmed again.
func (s *Subscription) read(c *subConn, gap **GapError, lastRead *time.Time) error {
	stop := context.AfterFunc(s.ctx, c.abort)
	defer stop()
	for {
		if *gap != nil && s.confirmedAll() {
			(*gap).Until = time.Now()
			if !s.deliver(delivery{err: *gap}) {
				return ErrSubscriptionClosed
			}
			s.pool.gaps.Add(1)
			*gap = nil
		}
		reply, err := c.receive()
		if serverErr, ok := err.(redis.Error); ok && c.sound() {
			s.refuse(serverErr)
			continue
		}
		if err != nil {
			return err
		}
		*lastRead = time.Now()
		if isKeepalivePong(reply) {
			continue
		}
		if m, ok := s.handle(reply); ok && !s.deliver(delivery{msg: m}) {
			return ErrSubscriptionClosed
		}
	}
}

// handle takes in one reply: it records a confirmation and returns a
// message to deliver.
func (s *Subscription) handle(reply any) (Message, bool) {
	r, err := redis.Values(reply, nil)
	if err != nil || len(r) < 3 {
		return Message{}, false
	}
	kind, _ := redis.String(r[0], nil)
	for k, v := range subVerbs {
		switch kind {
		case v.confirm:
			name, _ := redis.String(r[1], nil)
			s.confirm(subKind(k), name)
			return Message{}, false
		case v.message:
			m := Message{Sharded: subKind(k) == kindShard}
			if subKind(k) == kindPattern {
				if len(r) < 4 {
					return Message{}, false
				}
				m.Pattern, _ = redis.String(r[1], nil)
				r = r[1:]
			}
			m.Channel, _ = redis.String(r[1], nil)
			m.Data, _ = redis.Bytes(r[2], nil)
			return m, s.wants(m)
		}
	}
	return Message{}, false // an unsubscribe confirmation or the like
}

// deliver hands d to Receive, waiting for room; false if the subscription
// ended meanwhile.
func (s *Subscription) deliver(d delivery) bool {
	select {
	case s.out <- d:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func (s *Subscription) confirm(kind subKind, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[kind][name]; ok {
		s.subs[kind][name] = true
	}
	if len(s.inflight) > 0 && s.inflight[0].kind == kind {
		if s.inflight[0].confirmed++; s.inflight[0].confirmed >= len(s.inflight[0].names) {
			s.inflight = s.inflight[1:]
		}
	}
	s.broadcastLocked()
}

// refuse records the server's error reply to the oldest subscribe command
// in flight (an ACL refusal, say): its names are dropped and their
// Subscribe calls return the error.
func (s *Subscription) refuse(err redis.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.inflight) == 0 {
		return
	}
	cmd := s.inflight[0]
	s.inflight = s.inflight[1:]
	for _, n := range cmd.names {
		delete(s.subs[cmd.kind], n)
		s.failed[subName{cmd.kind, n}] = err
	}
	s.broadcastLocked()
}

func (s *Subscription) confirmedAll() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inflight) == 0
}

// drop gives up the current connection after err.
func (s *Subscription) drop(c *subConn, err error) {
	s.last.note(s.ctx, err)
	s.mu.Lock()
	s.conn = nil
	s.inflight = s.inflight[:0]
	s.broadcastLocked()
	s.mu.Unlock()
	reason := CloseError
	switch {
	case s.ctx.Err() != nil:
		reason = CloseState // a normal end, counted as any connection left subscribed
	case isTimeout(err):
		reason = CloseDead // its keepalive PING went unanswered
	}
	c.giveBack(reason)
}

// end records why the reader ended, err or else the close of the
// subscription or the pool, and wakes everyone waiting.
func (s *Subscription) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		s.ended = err
	case s.pool.closing.Err() != nil:
		s.ended = ErrPoolClosed
	default:
		s.ended = ErrSubscriptionClosed
	}
	s.broadcastLocked()
}

func (s *Subscription) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// The pool's side of a Subscription's seam: all it reaches of the pool
// and of a connection goes through here.

// subscriptionSeam captures a Subscription's subscriptionPool.
func (p *Pool) subscriptionSeam() subscriptionPool {
	return subscriptionPool{
		addr:         p.cfg.addr,
		logger:       p.cfg.logger,
		confirmWait:  p.cfg.poolTimeout + p.cfg.readTimeout,
		closing:      p.closing,
		goBackground: p.goBackground,
		connect:      p.lendToSubscription,
		backoff:      p.backoff,
		warnRetry:    p.warnRetry,
		open:         &p.counters.subscriptions,
		gaps:         &p.counters.subscriptionGaps,
	}
}

// subConn is a connection lent to a Subscription. Its reads wait quietly
// (quietRead), and writers hold its write lock, since a keepalive PING
// may be sent from the reading goroutine.
type subConn struct {
	p *Pool
	c *conn
}

// lendToSubscription checks out a connection for a Subscription, waiting
// at most PoolTimeout: counted as a subscription's, read quietly, and cut
// by a failover, so that the subscription moves to the new master.
func (p *Pool) lendToSubscription(ctx context.Context) (*subConn, error) {
	start := time.Now()
	c, err := p.get(ctx, start, start.Add(p.cfg.poolTimeout))
	if err != nil {
		return nil, err
	}
	p.counters.subscriptionConns.Add(1)
	c.nc.quiet = p.quietRead(c)
	c.waiting.Store(true)
	return &subConn{p: p, c: c}, nil
}

func (sc *subConn) lockWrites()   { sc.c.wmu.Lock() }
func (sc *subConn) unlockWrites() { sc.c.wmu.Unlock() }

// send writes a (un)subscribe command for names to the output buffer; the
// caller holds the write lock.
func (sc *subConn) send(verb string, names []string) error {
	return sc.c.rc.Send(verb, redis.Args{}.AddFlat(names)...)
}

// flush writes the output buffer; the caller holds the write lock.
func (sc *subConn) flush() error { return sc.c.rc.Flush() }

// receive reads the next reply, waiting quietly for it; once it has begun,
// the rest must come within ReadTimeout.
func (sc *subConn) receive() (any, error) {
	return sc.c.rc.ReceiveWithTimeouts(0, sc.p.cfg.readTimeout)
}

// sound reports whether the connection is still usable: an error reply
// leaves it so, a failed read does not.
func (sc *subConn) sound() bool { return sc.c.rc.Err() == nil }

// abort cuts a read in progress; the connection is unusable after it.
func (sc *subConn) abort() { sc.c.nc.abort() }

// giveBack closes the connection, counting why.
func (sc *subConn) giveBack(reason CloseReason) {
	sc.c.nc.quiet = nil
	sc.p.counters.subscriptionConns.Add(-1)
	sc.p.discard(sc.c, reason)
}

// quietRead sets up the quiet reads of a subscribed connection; its PINGs
// count as health checks.
func (p *Pool) quietRead(c *conn) *quietRead {
	return &quietRead{
		every:  p.cfg.pingInterval,
		within: p.cfg.readTimeout,
		ping: func() bool {
			if !c.sendKeepalivePing() {
				return false
			}
			p.counters.healthChecks.Add(1)
			return true
		},
	}
}

// keepalivePing is the argument of the PINGs a quiet read sends; replies
// carrying it are the pool's own and never reach a caller. The random part
// keeps an application's PING from being taken for one.
var keepalivePing = func() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "redisalive-keepalive-" + hex.EncodeToString(b)
}()

// isKeepalivePong reports whether reply answers sendKeepalivePing: a bulk
// string outside subscribed mode, ["pong", arg] inside it.
func isKeepalivePong(reply any) bool {
	if r, ok := reply.([]any); ok && len(r) == 2 {
		if kind, ok := r[0].([]byte); ok && string(kind) == "pong" {
			reply = r[1]
		}
	}
	b, ok := reply.([]byte)
	return ok && string(b) == keepalivePing
}

// subscriptionCount reads a (un)subscribe confirmation: the count of the
// subscriptions left, which Redis keeps apart for shard channels and for
// channels and patterns together; ok is false for any other reply.
func subscriptionCount(reply any) (n int64, shard, ok bool) {
	r, isArray := reply.([]any)
	if !isArray || len(r) != 3 {
		return 0, false, false
	}
	kind, _ := r[0].([]byte)
	n, isCount := r[2].(int64)
	if !isCount {
		return 0, false, false
	}
	for k, v := range subVerbs {
		if strings.EqualFold(string(kind), v.sub) || strings.EqualFold(string(kind), v.unsub) {
			return n, subKind(k) == kindShard, true
		}
	}
	return 0, false, false
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
