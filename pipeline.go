package redisalive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive/internal/resp"
)

// Defaults applied to zero-valued pipelining Options.
const (
	DefaultPipelineConns = 2
	DefaultPipelineDepth = 1024
)

// Bounds of the pipelining Options: past them a few shared connections
// gain nothing measurable, and their queues would cost memory unbounded
// by anything else.
const (
	MaxPipelineConns = 64
	MaxPipelineDepth = 1 << 16
)

// pipelineRetries bounds how often a command is moved to another shared
// connection because the one it was queued on failed before writing it.
const pipelineRetries = 3

// errRequeue tells a caller that the shared connection it queued on
// failed before its command was written: the command provably never
// reached the server, so it may go to another connection.
var errRequeue = errors.New("redisalive: shared connection failed before the command was sent")

// pipeline is one shared connection of an auto-pipelining pool. Callers
// queue commands; a writer goroutine sends whatever is queued in one write;
// a reader goroutine reads the replies, in order, and hands each to its
// caller. redigo allows one goroutine sending and one receiving on a
// connection, which is all this needs.
type pipeline struct {
	p *Pool
	c *conn
	// rc speaks the protocol over c's socket with a write timeout and no
	// read timeout of its own: the socket bounds reads (limitConn.replyWithin).
	rc *resp.Conn

	slots    chan struct{} // a token per command queued or in flight: bounds memory
	wake     chan struct{} // work for the writer
	inflight chan reqRef   // handed to the reader as they are written, in order; closed by the writer as it ends
	done     chan struct{} // closed when the pipeline takes no more commands

	mu    sync.Mutex // guards queue and err
	queue []reqRef   // not yet written
	err   error      // why the pipeline ended

	peekMu sync.Mutex // the writer and the health checker both peek

	outstanding atomic.Int64 // queued or in flight
	lastUsed    atomic.Int64 // UnixNano of the last write

	// due counts the commands handed to the reader whose replies it has
	// not read. The reader waits on the socket, not on inflight, so that a
	// batch wakes it once, by its replies; due tells its reads whether a
	// deadline applies (limitConn.replyWithin).
	due        atomic.Int64
	writerDone atomic.Bool // the writer has ended: with nothing due, so may the reader

	// handed counts the commands handed to the reader, each before any of
	// it can leave. A reply can only come after its command left, so the
	// count as a socket read returns bounds which commands the bytes read
	// can answer (replyStream.handedAtRead): a reply read before its
	// command was handed is one nobody asked for.
	handed atomic.Int64

	// replies counts the replies read, for the checker's watch on a link
	// that delivers bytes but no reply: ReadTimeout bounds silence, not a
	// trickle. The checker's own fields note when it last saw the count
	// move while replies were due.
	replies      atomic.Int64
	seenReplies  int64
	seenMovingAt time.Time

	// slowAt is when the reader last saw a reply arriving for longer than
	// pipelineSlowReply, as UnixNano; 0 if it has not within about
	// pipelineSlowMemory (the health checker clears it). While it is set,
	// callers that would queue behind outstanding commands may bypass the
	// connection (pipelineFor).
	slowAt atomic.Int64

	// abandoned counts its commands whose callers gave up and which may
	// still run: until they have, everything sent goes behind them, here
	// (pipelineFor).
	abandoned atomic.Int64
	stream    replyStream // the reader's: how long the reply being read has been arriving
}

// replyStream follows, for a shared connection's reader, how long the
// reply it is reading has been arriving, and marks the connection slow
// (pipeline.slowAt) when that passes pipelineSlowReply: the reply is
// large, or the link slow, and every reply behind it waits for its bytes.
// Its fields other than slowAt are the reader's alone. It costs a counter
// per socket read and per reply, and a clock reading only for a read that
// continues a reply begun before the previous read.
type replyStream struct {
	slowAt       *atomic.Int64 // the pipeline's
	handed       *atomic.Int64 // the pipeline's
	handedAtRead int64         // handed as the last socket read returned
	reads        int64         // socket reads that returned data
	readsAtReply int64         // reads when the last reply was complete
	since        int64         // UnixNano when the reply being read was seen to span reads; 0 if it has not
}

// read notes a socket read that returned data.
func (s *replyStream) read() {
	s.handedAtRead = s.handed.Load()
	s.reads++
	if s.readsAtReply >= s.reads-1 {
		// A reply was completed after the previous read: this read starts
		// a reply, or ends one begun at the end of the previous read.
		return
	}
	// No reply was completed since the previous read: the reply being read
	// spans reads.
	now := time.Now().UnixNano()
	if s.since == 0 {
		s.since = now
	} else if time.Duration(now-s.since) > pipelineSlowReply {
		s.slowAt.Store(now)
	}
}

// replied notes a reply read whole.
func (s *replyStream) replied() {
	s.readsAtReply, s.since = s.reads, 0
}

// request is one caller's command on a pipeline. Requests are recycled,
// so each use of one is a life of its own: its state word holds the life
// with the status, and every act on a request (delivering a reply,
// abandoning it, recycling it) is a compare-and-swap on that word for the
// life its actor was handed. An actor that still holds a request from an
// earlier life matches nothing and touches nothing; the fields are written
// only by whoever wins such a swap. So a reply can reach only the caller
// whose command it answers, even if a bug or a server out of step made
// the pipeline deliver twice.
type request struct {
	cmd   string
	args  []any
	reply any
	err   error
	state atomic.Uint64 // life<<reqStatusBits | status
	done  chan struct{} // capacity 1: the reply is in reply and err
}

// reqRef is a request in one of its lives, as its holders see it.
type reqRef struct {
	*request
	life uint64
}

const (
	reqWaiting   uint64 = iota // the caller waits for the reply
	reqAbandoned               // the caller gave up: not sent if not yet written, reply dropped
	reqDelivered               // the reply is the caller's
	reqDetached                // nobody waits (a health PING): sent, reply dropped
	reqFree                    // recycled: this life is over

	reqStatusBits = 3
)

var requests = sync.Pool{New: func() any { return &request{done: make(chan struct{}, 1)} }}

// newRequest starts a request's next life, with status (reqWaiting or
// reqDetached).
func newRequest(cmd string, args []any, status uint64) reqRef {
	return requests.Get().(*request).begin(cmd, args, status)
}

// begin starts r's next life.
func (r *request) begin(cmd string, args []any, status uint64) reqRef {
	r.cmd, r.args = cmd, args
	life := r.state.Load()>>reqStatusBits + 1
	r.state.Store(life<<reqStatusBits | status)
	return reqRef{r, life}
}

func (r reqRef) is(status uint64) bool { return r.state.Load() == r.life<<reqStatusBits|status }

func (r reqRef) swap(from, to uint64) bool {
	return r.state.CompareAndSwap(r.life<<reqStatusBits|from, r.life<<reqStatusBits|to)
}

// recycle ends the request's life, if it is in status, and pools it: its
// owner's act, or the pipeline's for a request nobody waits for. It
// reports whether the request was in status.
func (r reqRef) recycle(status uint64) bool {
	if !r.swap(status, reqFree) {
		return false
	}
	r.cmd, r.args, r.reply, r.err = "", nil, nil, nil
	requests.Put(r.request)
	return true
}

// pipeSlot holds one of a pool's shared connections.
type pipeSlot struct {
	pl atomic.Pointer[pipeline]

	mu     sync.Mutex
	making *pipeMake // the shared connection being made for the slot, if any
}

// pipeMake is one attempt to make a slot's shared connection. Every caller
// that finds the slot empty meanwhile waits for it and shares its outcome,
// so a server that cannot be reached costs them all one dial, not one each
// in turn.
type pipeMake struct {
	done chan struct{} // closed when pl or err is set
	pl   *pipeline
	err  error
}

// pipelined runs a command on one of the pool's shared connections, or,
// when the one it would queue on is busy with slow or large replies, on a
// connection of its own if one is free at once (bypass). It is bounded as
// Do is: waiting for room in the pipeline by ctx or PoolTimeout, waiting
// for the reply by ctx, and by ReadTimeout on a link that stops answering.
func (p *Pool) pipelined(ctx context.Context, cmd string, args []any) (any, error) {
	p.pipeCallers.Add(1)
	defer p.pipeCallers.Add(-1)
	for try := 1; ; try++ {
		pl, slow, err := p.pipelineFor(ctx)
		if err != nil {
			return nil, err // says already what failed: the checkout or the dial
		}
		if slow && try == 1 {
			// A checkout that finds nothing free, or fails, leaves the
			// command to the shared connection, which may still serve it.
			if c, _ := p.get(ctx, time.Now(), time.Time{}); c != nil {
				return p.bypass(ctx, c, cmd, args)
			}
		}
		req := newRequest(cmd, args, reqWaiting)
		if err = pl.enqueue(ctx, req); err != nil {
			req.recycle(reqWaiting)
			if errors.Is(err, errRequeue) && try < pipelineRetries {
				continue
			}
			return nil, p.wrapErr(ctx, cmd, err)
		}
		select {
		case <-req.done:
		case <-ctx.Done():
			// Counted before the caller can send anything more, which must
			// not overtake this command (pipelineFor).
			pl.abandoned.Add(1)
			p.pipeAbandoned.Add(1)
			if req.swap(reqWaiting, reqAbandoned) {
				// The pipeline drops the reply when it comes and recycles
				// the request; the connection stays in use.
				return nil, p.wrapErr(ctx, cmd, ctx.Err())
			}
			pl.abandoned.Add(-1)
			p.pipeAbandoned.Add(-1)
			<-req.done // delivered as ctx ended: take it
		}
		reply, err := req.reply, req.err
		req.recycle(reqDelivered)
		if (errors.Is(err, errRequeue) || isDemotion(err) && p.demote(ctx, pl.c, err.Error())) && try < pipelineRetries {
			// Never sent, or refused by a server no longer the master: it
			// goes to another connection.
			continue
		}
		if err != nil {
			return reply, p.wrapErr(ctx, cmd, err)
		}
		return reply, nil
	}
}

// pipelineSpill is how many commands a shared connection carries before
// callers spill onto the next: filling one first makes fuller batches,
// which cost the same one write, and a second connection pays only once
// the first is busy enough that its reader is the bottleneck.
const pipelineSpill = 32

// pipelineGather is how many callers must be running pipelined commands
// for the writer to yield before it writes, to gather more of them.
const pipelineGather = pipelineSpill

// pipelineSlowReply is how long a reply may go on arriving, read after
// read, before its shared connection counts as slow: a caller that would
// queue behind its outstanding commands then takes a connection of its own
// if one is free at once, rather than wait for the bytes of theirs. It is
// far above what a reply takes where pipelining pays (on a 1 Gbit/s LAN,
// 100 KiB arrive within 1 ms) and above the reader's own scheduling
// delays between two reads.
const pipelineSlowReply = 2 * time.Millisecond

// pipelineSlowMemory is how long a shared connection stays slow after its
// last slow reply, so that callers do not flock back to it between two
// large replies. The health checker ends it, within a second more.
const pipelineSlowMemory = time.Second

// pipelineFor returns a serving shared connection: the first with room
// under pipelineSpill, else the least busy; it makes one in an empty or
// failed slot. slow reports that the one returned has commands outstanding
// and is slow, so a caller may take a connection of its own instead
// (bypass) — unless a command whose caller gave up on it may still run
// (pipeAbandoned): that caller's next command must not overtake it on
// another connection, or a SET given up on could land after a later SET.
func (p *Pool) pipelineFor(ctx context.Context) (pl *pipeline, slow bool, err error) {
	if p.pipeAbandoned.Load() > 0 {
		if pl, err := p.behindAbandoned(ctx); pl != nil || err != nil {
			return pl, false, err
		}
	}
	for i := range p.pipes {
		next := p.pipes[i].pl.Load()
		if next == nil || next.ended() || p.stale(next.c) {
			pl, err = p.makePipeline(ctx, &p.pipes[i])
			return pl, false, err
		}
		if next.outstanding.Load() < pipelineSpill {
			pl = next
			break
		}
		if pl == nil || next.outstanding.Load() < pl.outstanding.Load() {
			pl = next
		}
	}
	slow = pl.slowAt.Load() != 0 && pl.outstanding.Load() > 0 && p.pipeAbandoned.Load() == 0
	return pl, slow, nil
}

// behindAbandoned returns the shared connection that holds the commands
// whose callers gave up and which may still run, so that what is sent next
// goes behind them: a caller whose SET timed out and who sends the next one
// must not see it overtaken by the one it gave up on. While two shared
// connections hold such commands no one connection can follow both, so it
// waits until one has none, bounded by ctx or PoolTimeout; their replies
// come within ReadTimeout, or the connection fails. It returns nil, nil
// when none holds any any more.
func (p *Pool) behindAbandoned(ctx context.Context) (*pipeline, error) {
	deadline := waitDeadline(ctx, time.Now(), p.cfg.poolTimeout)
	for wait := 50 * time.Microsecond; ; wait = min(2*wait, 10*time.Millisecond) {
		var holder *pipeline
		holders, held := 0, int64(0)
		for i := range p.pipes {
			if pl := p.pipes[i].pl.Load(); pl != nil && !pl.ended() {
				if n := pl.abandoned.Load(); n > 0 {
					holder, holders, held = pl, holders+1, held+n
				}
			}
		}
		// The rest are on shared connections that have ended, listed or
		// already replaced. Such a command is settled, and stops counting,
		// only after its connection is closed and recorded as a zombie,
		// whose kill then comes before anything else is sent there; until
		// then a held copy of it could still run after the next command.
		settling := p.pipeAbandoned.Load() > held
		if holders <= 1 && !settling {
			return holder, nil // nil: none
		}
		if !time.Now().Add(wait).Before(deadline) {
			return nil, p.wrapErr(ctx, "checkout", fmt.Errorf("%d commands given up on, on shared connections, still unanswered: %w", p.pipeAbandoned.Load(), context.DeadlineExceeded))
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, p.wrapErr(ctx, "checkout", ctx.Err())
		}
	}
}

// bypass runs a command on a connection of its own, c, for a caller that
// found the shared connection it would queue on slow and busy. It is
// bounded as a pipelined command is: by ctx, and by ReadTimeout of
// silence, not by a deadline over a reply that keeps arriving.
func (p *Pool) bypass(ctx context.Context, c *conn, cmd string, args []any) (any, error) {
	p.counters.pipelineBypasses.Add(1)
	reply, err := c.run(ctx, time.Time{}, func() (any, error) { return c.rc.Do(cmd, args...) })
	p.put(c, true)
	if err != nil {
		return reply, p.wrapErr(ctx, cmd, err)
	}
	return reply, nil
}

// makePipeline returns the shared connection of slot, making it unless
// another caller already is. The making runs apart from the callers, so
// that each can leave when its ctx ends; it is bounded by PoolTimeout and
// DialTimeout, and by the pool closing.
func (p *Pool) makePipeline(ctx context.Context, slot *pipeSlot) (*pipeline, error) {
	slot.mu.Lock()
	if pl := slot.pl.Load(); pl != nil && !pl.ended() {
		if !p.stale(pl.c) {
			slot.mu.Unlock()
			return pl, nil // made while we waited for the lock
		}
		pl.end(errRequeue) // to a former master: what it holds goes elsewhere
	}
	m := slot.making
	if m == nil {
		m = &pipeMake{done: make(chan struct{})}
		if !p.goBackground(func() { p.fillSlot(slot, m) }) {
			slot.mu.Unlock()
			return nil, ErrPoolClosed
		}
		slot.making = m
	}
	slot.mu.Unlock()
	select {
	case <-m.done:
		return m.pl, m.err
	case <-ctx.Done():
		return nil, p.wrapErr(ctx, "checkout", ctx.Err())
	}
}

// fillSlot makes the shared connection of slot for m.
func (p *Pool) fillSlot(slot *pipeSlot, m *pipeMake) {
	m.pl, m.err = p.newPipeline(p.closing)
	if m.err != nil && p.closing.Err() != nil {
		m.err = ErrPoolClosed
	}
	slot.mu.Lock()
	if m.err == nil {
		slot.pl.Store(m.pl)
	}
	slot.making = nil
	slot.mu.Unlock()
	close(m.done)
}

// newPipeline checks out a connection and starts a pipeline on it.
func (p *Pool) newPipeline(ctx context.Context) (*pipeline, error) {
	start := time.Now()
	c, err := p.get(ctx, start, waitDeadline(ctx, start, p.cfg.poolTimeout))
	if err != nil {
		return nil, err
	}
	pl := &pipeline{
		p:        p,
		c:        c,
		rc:       resp.NewConn(c.nc, 0, p.cfg.writeTimeout, resp.MaxBulkLen(p.cfg.maxBulkLen)),
		slots:    make(chan struct{}, p.cfg.pipelineDepth),
		wake:     make(chan struct{}, 1),
		inflight: make(chan reqRef, p.cfg.pipelineDepth),
		done:     make(chan struct{}),
	}
	pl.stream.slowAt, pl.stream.handed = &pl.slowAt, &pl.handed
	c.nc.replyWithin, c.nc.repliesDue, c.nc.stream = p.cfg.readTimeout, &pl.due, &pl.stream
	pl.lastUsed.Store(start.UnixNano())
	if !p.goBackground(pl.run) {
		p.put(c, false)
		return nil, ErrPoolClosed
	}
	return pl, nil
}

// run runs the pipeline's writer, and its reader on a goroutine of its
// own, and returns when both have ended.
func (pl *pipeline) run() {
	var reader sync.WaitGroup
	reader.Go(pl.read)
	pl.write()
	reader.Wait()
}

// enqueue queues req, waiting for room by ctx or, without a ctx deadline,
// PoolTimeout. It reports errRequeue if the pipeline has ended.
func (pl *pipeline) enqueue(ctx context.Context, req reqRef) error {
	select {
	case pl.slots <- struct{}{}:
	default:
		// Full: the server is slow or stalled. Wait for room, bounded.
		wait := time.Until(waitDeadline(ctx, time.Now(), pl.p.cfg.poolTimeout))
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case pl.slots <- struct{}{}:
		case <-pl.done:
			return errRequeue
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			pl.p.counters.poolTimeouts.Add(1)
			return &PoolTimeoutError{Addr: pl.p.cfg.addr, Waited: wait, InUse: len(pl.slots), MaxActive: cap(pl.slots)}
		}
	}
	pl.mu.Lock()
	if pl.err != nil {
		pl.mu.Unlock()
		<-pl.slots
		return errRequeue
	}
	pl.queue = append(pl.queue, req)
	pl.outstanding.Add(1)
	pl.mu.Unlock()
	select {
	case pl.wake <- struct{}{}:
	default: // the writer has been woken already
	}
	return nil
}

func (pl *pipeline) ended() bool {
	select {
	case <-pl.done:
		return true
	default:
		return false
	}
}

// end stops the pipeline taking commands, for err, and answers every
// command still queued: those never reached the socket, so they may go
// elsewhere, unless the pool is closing. It reports whether this call
// ended it.
func (pl *pipeline) end(err error) bool {
	pl.mu.Lock()
	if pl.err != nil {
		pl.mu.Unlock()
		return false
	}
	pl.err = err
	queued := pl.queue
	pl.queue = nil
	close(pl.done)
	pl.mu.Unlock()
	unsent := errRequeue
	if errors.Is(err, ErrPoolClosed) {
		unsent = ErrPoolClosed
	}
	for _, req := range queued {
		pl.deliver(req, nil, unsent)
	}
	return true
}

// deliver hands a reply to its caller, or recycles the request of one
// that gave up or of nobody, and frees the request's token.
func (pl *pipeline) deliver(req reqRef, reply any, err error) {
	if req.swap(reqWaiting, reqDelivered) {
		req.reply, req.err = reply, err
		req.done <- struct{}{}
	} else if req.recycle(reqAbandoned) {
		// Answered, failed or dropped unsent: it can be overtaken now.
		pl.abandoned.Add(-1)
		pl.p.pipeAbandoned.Add(-1)
	} else {
		req.recycle(reqDetached)
	}
	pl.outstanding.Add(-1)
	<-pl.slots
}

// write is the writer: it sends all that is queued in one write, until the
// pipeline ends or the pool closes. A command whose caller gave up before
// it was written is not sent at all.
func (pl *pipeline) write() {
	defer func() {
		close(pl.inflight) // the reader then finishes what is in flight
		pl.writerDone.Store(true)
		if pl.due.Load() == 0 {
			// Nothing in flight: wake the reader from its wait on the
			// socket. Else the reader sees writerDone after its last reply
			// (both sides store, then load: one sees the other).
			pl.c.nc.abort()
		}
	}()
	var batch []reqRef
	for {
		select {
		case <-pl.wake:
		case <-pl.done:
			return
		case <-pl.p.closing.Done():
			pl.end(ErrPoolClosed)
			return
		}
		// With many callers, let those that are running queue their
		// commands too: one write for many is the point, and a write costs
		// a syscall. With few, the yield only delays the write: every
		// caller ends up in one batch, and client and server take turns
		// idling (BENCHMARKS.md has the numbers).
		if pl.p.pipeCallers.Load() >= pipelineGather {
			runtime.Gosched()
		}
		pl.mu.Lock()
		batch, pl.queue = pl.queue, batch[:0]
		pl.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		// Nothing in flight means the link was quiet, and a server's close
		// shows only now: a peek finds it before anything is written, and
		// the batch can go elsewhere.
		if pl.outstanding.Load() == int64(len(batch)) {
			if err := pl.peek(true); err != nil {
				pl.fail(err, batch)
				return
			}
		}
		// Made due before any of it can leave, once for the batch: the
		// counter is shared with the reader's core.
		if n := int64(len(batch)); pl.due.Add(n) == n {
			pl.c.nc.armReply() // the reader may be waiting without a deadline
		}
		sent, unsent := 0, batch[:0]
		var err error
		for i, req := range batch {
			if req.is(reqAbandoned) {
				pl.due.Add(-1)
				pl.deliver(req, nil, nil) // recycles it
				continue
			}
			// Handed to the reader before any of it can leave, so that its
			// reply finds it there, and even if Send fails, since part of it
			// may have left: the reader fails it with the connection. From
			// then on the request is the reader's: a server out of step may
			// answer before Send returns, and the caller recycle it, so
			// Send must not read it.
			cmd, args := req.cmd, req.args
			pl.handed.Add(1)
			pl.inflight <- req // never blocks: the tokens bound what is in flight
			err = pl.rc.Send(cmd, args...)
			sent++
			if err != nil {
				unsent = batch[i+1:]
				pl.due.Add(-int64(len(unsent)))
				break
			}
		}
		// Counted before the flush, whose replies may reach their callers
		// before the writer runs again.
		pl.p.counters.pipelined.Add(int64(sent))
		pl.p.counters.pipelineBatches.Add(1)
		if err == nil {
			err = pl.rc.Flush()
		}
		pl.lastUsed.Store(time.Now().UnixNano())
		if err != nil {
			pl.fail(err, unsent) // what the reader holds fails there
			return
		}
		clear(batch)
	}
}

// peek tells whether the server closed the connection. The writer, when
// nothing is in flight (quiet), also learns whether it sent what nobody
// asked for: every reply due has been read then, and only the writer
// sends, so bytes waiting on a plain socket are a reply nobody asked for,
// which the batch about to go would take for its own. The health checker
// cannot know that nothing was sent since it looked (a reply may be on
// its way), and under TLS the bytes may be records of the protocol
// itself (a TLS 1.3 session ticket arrives after the handshake, unasked):
// for them, bytes waiting say nothing; the reader still finds a reply
// read before its command was handed (replyStream.handedAtRead).
func (pl *pipeline) peek(quiet bool) error {
	pl.peekMu.Lock()
	defer pl.peekMu.Unlock()
	if err := pl.c.check.check(); err != errUnexpectedData || quiet && pl.c.tls == nil {
		return err
	}
	return nil
}

// fail ends the pipeline after a failure of its connection: the commands
// in unsent get err as the rest of the queue does, and the socket is
// closed so the reader fails what is in flight at once.
func (pl *pipeline) fail(err error, unsent []reqRef) {
	pl.end(err)
	for _, req := range unsent {
		pl.deliver(req, nil, errRequeue)
	}
	pl.c.nc.abort()
}

// read is the reader: it hands each reply to the caller of the command at
// the head of the in-flight queue. It waits on the socket even when
// nothing is in flight, so a batch costs it one wake-up, by the replies,
// and a server's close is seen at once. A reply slower than ReadTimeout,
// an EOF or a reset fails the connection and every command on it at once.
// When the writer has ended and nothing is in flight, it returns the
// connection to the pool, closed.
func (pl *pipeline) read() {
	var failed, readErr error
	var taken int64 // commands taken from inflight
	var held reqRef // taken, and not answered by the reply read
	for !pl.writerDone.Load() || pl.due.Load() != 0 {
		reply, err := pl.rc.Receive()
		if _, isServerErr := err.(redis.Error); err != nil && !isServerErr {
			readErr = err
			if pl.writerDone.Load() && pl.due.Load() == 0 {
				break // woken by the writer's end, with nothing due
			}
			failed = err
			break
		}
		pl.stream.replied()
		var req reqRef
		select {
		case req = <-pl.inflight:
			taken++
			if taken > pl.stream.handedAtRead {
				// Its last bytes were read before this command was handed,
				// so before it could leave: a reply nobody asked for, read
				// with the one before it and taken for this one's. The
				// command fails with the rest in flight.
				failed, held = errUnexpectedData, req
			}
		default:
			// A reply before any command: not this connection's protocol.
			failed = errUnexpectedData
		}
		if failed != nil {
			break
		}
		pl.due.Add(-1)
		pl.replies.Add(1)
		if taken == pl.stream.handedAtRead && pl.rc.Unread() > 0 {
			// Every command handed when these bytes were read is answered,
			// so what follows answers none: a reply nobody asked for. The
			// pipeline ends before this caller hears its own reply, so
			// that its next command goes elsewhere.
			failed = errUnexpectedData
			pl.fail(failed, nil)
			pl.deliver(req, reply, err)
			break
		}
		pl.deliver(req, reply, err)
	}
	if failed != nil {
		pl.fail(failed, nil)
	}
	// What is still in flight fails with the connection, once the writer
	// has let go of it. Its callers hear of it after the connection is
	// closed and counted, so that Stats agree with what they saw.
	var unanswered []reqRef
	if held.request != nil {
		unanswered = append(unanswered, held)
	}
	for req := range pl.inflight {
		unanswered = append(unanswered, req)
	}
	pl.end(ErrPoolClosed) // for a writer that ended on its own
	pl.mu.Lock()
	cause := pl.err
	pl.mu.Unlock()
	if errors.Is(cause, net.ErrClosed) && readErr != nil {
		// redigo closes the socket as a read fails, so the writer's peek
		// can find it closed before the reader has said why.
		cause = readErr
	}
	reason := CloseError
	switch {
	case errors.Is(cause, ErrPoolClosed):
		reason = CloseState // not counted: the pool is closed
	case isTimeout(cause), errors.Is(cause, io.EOF), errors.Is(cause, io.ErrUnexpectedEOF):
		reason = CloseDead // no reply within ReadTimeout, or the server closed it
	}
	pl.p.discard(pl.c, reason)
	for _, req := range unanswered {
		pl.due.Add(-1)
		pl.deliver(req, nil, failed)
	}
}

// checkShared is the health checker's visit to the shared connections: it
// fails one whose replies are due and none has come in full for
// replyCap (a peer that trickles bytes, never silent long enough for
// ReadTimeout), and it peeks at each one with nothing in flight, which finds a server's close
// (the reader, waiting on the socket, usually has already), and a PING
// through one quiet for HealthCheckInterval, which finds a dead link by
// its reply not coming within ReadTimeout.
func (p *Pool) checkShared(now time.Time) {
	for i := range p.pipes {
		pl := p.pipes[i].pl.Load()
		if pl == nil || pl.ended() {
			continue
		}
		if s := pl.slowAt.Load(); s != 0 && now.Sub(time.Unix(0, s)) >= pipelineSlowMemory {
			pl.slowAt.CompareAndSwap(s, 0)
		}
		if n := pl.replies.Load(); n != pl.seenReplies || pl.due.Load() == 0 || pl.seenMovingAt.IsZero() {
			pl.seenReplies, pl.seenMovingAt = n, now
		} else if now.Sub(pl.seenMovingAt) > replyCap(p.cfg.readTimeout) {
			pl.fail(fmt.Errorf("shared connection: replies due, and none complete for %v: %w", now.Sub(pl.seenMovingAt).Round(time.Millisecond), os.ErrDeadlineExceeded), nil)
			continue
		}
		if pl.outstanding.Load() != 0 {
			continue
		}
		if err := pl.peek(false); err != nil {
			pl.fail(fmt.Errorf("idle shared connection: %w", err), nil)
			continue
		}
		if now.Sub(time.Unix(0, pl.lastUsed.Load())) >= p.cfg.healthInterval {
			ping := newRequest("PING", nil, reqDetached)
			if pl.enqueue(context.Background(), ping) == nil {
				p.counters.healthChecks.Add(1)
			} else {
				ping.recycle(reqDetached)
			}
		}
	}
}
