package redisalive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
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
	p  *Pool
	c  *conn
	rc redis.Conn // redigo over c's socket without timeouts: set once per write and per read instead

	slots    chan struct{} // a token per command queued or in flight: bounds memory
	wake     chan struct{} // work for the writer
	inflight chan *request // handed to the reader as they are written, in order; closed by the writer as it ends
	done     chan struct{} // closed when the pipeline takes no more commands

	mu    sync.Mutex // guards queue and err
	queue []*request // not yet written
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
}

// request is one caller's command on a pipeline. Requests are recycled:
// the one of a caller that gave up is recycled by the pipeline once its
// reply is read, or when it is skipped unwritten.
type request struct {
	cmd   string
	args  []any
	reply any
	err   error
	state atomic.Uint32
	done  chan struct{} // capacity 1: the reply is in reply and err
}

const (
	reqWaiting   uint32 = iota
	reqAbandoned        // the caller gave up: not sent if not yet written, reply dropped
	reqDelivered
	reqDetached // nobody waits (a health PING): sent, reply dropped
)

var requests = sync.Pool{New: func() any { return &request{done: make(chan struct{}, 1)} }}

func newRequest(cmd string, args []any) *request {
	r := requests.Get().(*request)
	r.cmd, r.args = cmd, args
	r.state.Store(reqWaiting)
	return r
}

func (r *request) recycle() {
	r.cmd, r.args, r.reply, r.err = "", nil, nil, nil
	requests.Put(r)
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

// pipelined runs a command on one of the pool's shared connections. It is
// bounded as Do is: waiting for room in the pipeline by ctx or PoolTimeout,
// waiting for the reply by ctx, and by the reader's ReadTimeout on a link
// that stops answering.
func (p *Pool) pipelined(ctx context.Context, cmd string, args []any) (any, error) {
	p.pipeCallers.Add(1)
	defer p.pipeCallers.Add(-1)
	req := newRequest(cmd, args)
	for try := 1; ; try++ {
		pl, err := p.pipelineFor(ctx)
		if err != nil {
			req.recycle()
			return nil, err // says already what failed: the checkout or the dial
		}
		if err = pl.enqueue(ctx, req); err != nil {
			req.recycle()
			if errors.Is(err, errRequeue) && try < pipelineRetries {
				req = newRequest(cmd, args)
				continue
			}
			return nil, p.wrapErr(ctx, cmd, err)
		}
		select {
		case <-req.done:
		case <-ctx.Done():
			if req.state.CompareAndSwap(reqWaiting, reqAbandoned) {
				// The pipeline drops the reply when it comes and recycles
				// the request; the connection stays in use.
				return nil, p.wrapErr(ctx, cmd, ctx.Err())
			}
			<-req.done // delivered as ctx ended: take it
		}
		reply, err := req.reply, req.err
		req.recycle()
		if errors.Is(err, errRequeue) && try < pipelineRetries {
			req = newRequest(cmd, args)
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

// pipelineFor returns a serving shared connection: the first with room
// under pipelineSpill, else the least busy; it makes one in an empty or
// failed slot.
func (p *Pool) pipelineFor(ctx context.Context) (*pipeline, error) {
	var best *pipeline
	for i := range p.pipes {
		pl := p.pipes[i].pl.Load()
		if pl == nil || pl.ended() {
			return p.makePipeline(ctx, &p.pipes[i])
		}
		if pl.outstanding.Load() < pipelineSpill {
			return pl, nil
		}
		if best == nil || pl.outstanding.Load() < best.outstanding.Load() {
			best = pl
		}
	}
	return best, nil
}

// makePipeline returns the shared connection of slot, making it unless
// another caller already is. The making runs apart from the callers, so
// that each can leave when its ctx ends; it is bounded by PoolTimeout and
// DialTimeout, and by the pool closing.
func (p *Pool) makePipeline(ctx context.Context, slot *pipeSlot) (*pipeline, error) {
	slot.mu.Lock()
	if pl := slot.pl.Load(); pl != nil && !pl.ended() {
		slot.mu.Unlock()
		return pl, nil // made while we waited for the lock
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
		rc:       redis.NewConn(c.nc, 0, 0),
		slots:    make(chan struct{}, p.cfg.pipelineDepth),
		wake:     make(chan struct{}, 1),
		inflight: make(chan *request, p.cfg.pipelineDepth),
		done:     make(chan struct{}),
	}
	c.nc.replyWithin, c.nc.repliesDue = p.cfg.readTimeout, &pl.due
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
func (pl *pipeline) enqueue(ctx context.Context, req *request) error {
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
// that gave up, and frees the request's token.
func (pl *pipeline) deliver(req *request, reply any, err error) {
	req.reply, req.err = reply, err
	if req.state.CompareAndSwap(reqWaiting, reqDelivered) {
		req.done <- struct{}{}
	} else {
		req.recycle()
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
	var batch []*request
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
			if err := pl.peek(); err != nil {
				pl.fail(err, batch)
				return
			}
		}
		pl.c.nc.Conn.SetWriteDeadline(time.Now().Add(pl.p.cfg.writeTimeout))
		// Made due before any of it can leave, once for the batch: the
		// counter is shared with the reader's core.
		if n := int64(len(batch)); pl.due.Add(n) == n {
			pl.c.nc.armReply() // the reader may be waiting without a deadline
		}
		sent, unsent := 0, batch[:0]
		var err error
		for i, req := range batch {
			if req.state.Load() == reqAbandoned {
				pl.due.Add(-1)
				pl.deliver(req, nil, nil) // recycles it
				continue
			}
			// Handed to the reader before any of it can leave, so that its
			// reply finds it there, and even if Send fails, since part of it
			// may have left: the reader fails it with the connection.
			pl.inflight <- req // never blocks: the tokens bound what is in flight
			err = pl.rc.Send(req.cmd, req.args...)
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

// peek tells whether the server closed the connection. Bytes waiting
// say nothing here, unlike on an idle pooled connection: they may be a
// reply the reader is about to read, or TLS records.
func (pl *pipeline) peek() error {
	pl.peekMu.Lock()
	defer pl.peekMu.Unlock()
	if err := pl.c.check.check(); err != errUnexpectedData {
		return err
	}
	return nil
}

// fail ends the pipeline after a failure of its connection: the commands
// in unsent get err as the rest of the queue does, and the socket is
// closed so the reader fails what is in flight at once.
func (pl *pipeline) fail(err error, unsent []*request) {
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
		var req *request
		select {
		case req = <-pl.inflight:
		default:
			// A reply before any command: not this connection's protocol.
			failed = errUnexpectedData
		}
		if failed != nil {
			break
		}
		pl.due.Add(-1)
		pl.deliver(req, reply, err)
	}
	if failed != nil {
		pl.fail(failed, nil)
	}
	// What is still in flight fails with the connection, once the writer
	// has let go of it. Its callers hear of it after the connection is
	// closed and counted, so that Stats agree with what they saw.
	var unanswered []*request
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
	case isTimeout(cause), errors.Is(cause, io.EOF):
		reason = CloseDead // no reply within ReadTimeout, or the server closed it
	}
	pl.p.discard(pl.c, reason)
	for _, req := range unanswered {
		pl.due.Add(-1)
		pl.deliver(req, nil, failed)
	}
}

// checkShared is the health checker's visit to the shared connections: a
// peek at each one with nothing in flight, which finds a server's close
// (the reader, waiting on the socket, usually has already), and a PING
// through one quiet for HealthCheckInterval, which finds a dead link by
// its reply not coming within ReadTimeout.
func (p *Pool) checkShared(now time.Time) {
	for i := range p.pipes {
		pl := p.pipes[i].pl.Load()
		if pl == nil || pl.ended() || pl.outstanding.Load() != 0 {
			continue
		}
		if err := pl.peek(); err != nil {
			pl.fail(fmt.Errorf("idle shared connection: %w", err), nil)
			continue
		}
		if now.Sub(time.Unix(0, pl.lastUsed.Load())) >= p.cfg.healthInterval {
			ping := newRequest("PING", nil)
			ping.state.Store(reqDetached)
			if pl.enqueue(context.Background(), ping) == nil {
				p.counters.healthChecks.Add(1)
			} else {
				ping.recycle()
			}
		}
	}
}
