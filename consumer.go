package redisalive

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

const (
	// forgetDead is how long a dead consumer stays in the consumers set
	// after its items were first requeued. Every heartbeat of a live
	// consumer drains its processing list again meanwhile, because a
	// blocking read the dead consumer sent can still reach the server late
	// (TCP retransmits for up to TCPUserTimeout, 20 s by default) and move
	// an item in after the first drain.
	forgetDead = time.Minute

	// orphanMargin is added to BlockSlice to get how long an item must sit
	// unheld in a consumer's own processing list before it is requeued: by
	// then the BLMOVE reply that moved it has arrived or its read has given
	// up, with 500 ms to spare.
	orphanMargin = time.Second

	// opAttempts bounds the tries of a requeue or heartbeat, and of an ack
	// once Consume's ctx has ended. Giving up is safe: the item stays in
	// the processing list, where the orphan scan or another consumer finds
	// it.
	opAttempts = 4
)

// consumer is the state of one running Consume.
type consumer struct {
	q       *Queue
	handler func(ctx context.Context, payload []byte) error

	mu   sync.Mutex     // guards held
	held map[string]int // items taken by handlers and not yet out of the processing list, counted

	// last is the last connection error of any of its loops, for the
	// error that ends Consume.
	last lastFailure

	// Owned by the heartbeat: suspects maps each item seen unheld in the
	// processing list to when it was first seen so; lastBeat is the server
	// time of our last beat, and blind the spans of server time in which
	// we could not beat.
	suspects map[string]time.Time
	lastBeat int64
	blind    []span
}

// span is a stretch of server time in milliseconds.
type span struct{ from, to int64 }

// work takes items one at a time until ctx is done or the pool closes.
func (c *consumer) work(ctx context.Context) error {
	q := c.q
	failures := 0
	for {
		// The item moves into our processing list before we see it, so a
		// reply lost on the way loses nothing: the orphan scan finds it.
		raw, err := q.pool.blMove(ctx, q.pendingKey, q.processingKey, "RIGHT", "LEFT")
		if err == nil {
			failures = 0
			c.last.clear()
			c.process(ctx, raw)
			continue
		}
		c.last.note(ctx, err)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrPoolClosed) || errors.Is(err, ErrMisconfigured) {
			return err
		}
		// BLMove retries network failures itself; this is a server error
		// such as LOADING or WRONGTYPE, which an operator may fix.
		failures++
		q.warnOp(ctx, "taking an item failed; retrying", "err", err)
		if err := q.pool.backoff(ctx, failures+1); err != nil {
			if errors.Is(err, ErrPoolClosed) {
				return err
			}
			return nil
		}
	}
}

// process runs the handler on one item and settles it.
func (c *consumer) process(ctx context.Context, raw string) {
	q := c.q
	c.hold(raw)
	// Released only once the item has left the processing list, so the
	// orphan scan never takes it from under its handler.
	defer c.release(raw)
	it := parseItem(raw)
	err := c.call(ctx, []byte(it.payload))
	bg := context.WithoutCancel(ctx)
	log := q.pool.logger
	switch {
	case err == nil:
		// Until the ack succeeds the item stays held, so the orphan scan
		// leaves it alone; giving up would hand it to that scan and so to
		// a second handler. Only shutdown may not wait on a server out of
		// reach.
		ackErr := q.retry(bg, func() error {
			_, err := q.pool.do(bg, "LREM", q.processingKey, 1, raw)
			return err
		}, func() bool { return ctx.Err() == nil })
		if ackErr != nil {
			q.warnOp(bg, "ack failed; the item will be requeued and handled again", "err", ackErr)
		}
		q.handled.Add(1)
	case ctx.Err() != nil:
		q.requeued.Add(int64(q.move(bg, raw, raw, q.pendingKey, "RPUSH", 1)))
	case it.attempts+1 >= q.maxAttempts:
		if q.failLog.allow() {
			log.Warn("redisalive: queue: handler failed for the last time; dead-lettering the item",
				"queue", q.name, "attempts", it.attempts+1, "err", err)
		}
		q.deadLettered.Add(int64(q.move(bg, raw, it.payload, q.deadKey, "LPUSH", 1)))
	default:
		log.Debug("redisalive: queue: handler failed; retrying", "queue", q.name, "attempt", it.attempts+1, "err", err)
		next := item{attempts: it.attempts + 1, id: cmp.Or(it.id, newItemID()), payload: it.payload}
		q.retried.Add(int64(q.move(bg, raw, next.String(), q.pendingKey, "LPUSH", 1)))
	}
}

// call runs the handler, turning a panic into an error so that one bad
// item cannot take the consumer down.
func (c *consumer) call(ctx context.Context, payload []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("redisalive: queue %s: handler panicked: %v", c.q.name, r)
			if c.q.failLog.allow() {
				c.q.pool.logger.Error("redisalive: queue: handler panicked", "queue", c.q.name, "panic", r, "stack", string(debug.Stack()))
			}
		}
	}()
	return c.handler(ctx, payload)
}

func (c *consumer) hold(raw string) {
	c.mu.Lock()
	c.held[raw]++
	c.mu.Unlock()
}

func (c *consumer) release(raw string) {
	c.mu.Lock()
	if c.held[raw]--; c.held[raw] == 0 {
		delete(c.held, raw)
	}
	c.mu.Unlock()
}

// move atomically takes up to n copies of raw out of the processing list
// and pushes repl onto dst with push (LPUSH or RPUSH) for each. It returns
// how many it moved: fewer when copies had already left the list, which is
// also what makes retrying it after a lost reply safe. If it fails the
// item stays in the processing list, where the orphan scan finds it.
func (q *Queue) move(ctx context.Context, raw, repl, dst, push string, n int) int {
	var moved int
	err := q.retry(ctx, func() error {
		var err error
		moved, err = redis.Int(q.eval(ctx, moveScript, q.processingKey, dst, raw, repl, push, n))
		return err
	}, nil)
	if err != nil {
		q.warnOp(ctx, "moving an item out of processing failed; it stays there to be requeued", "to", dst, "err", err)
	}
	return moved
}

// register beats until the server has our entry, so that nothing enters
// our processing list while no one could recover it. A configuration
// error ends it at once.
func (c *consumer) register(ctx context.Context) error {
	for failures := 1; ; failures++ {
		err := c.tick(ctx)
		if err == nil || errors.Is(err, ErrPoolClosed) || errors.Is(err, ErrMisconfigured) {
			if err != nil {
				err = fmt.Errorf("redisalive: queue %s: registering consumer %s: %w", c.q.name, c.q.id, c.last.wrap(err))
			}
			return err
		}
		c.last.note(ctx, err)
		c.q.warnOp(ctx, "registering the consumer failed; retrying", "err", err)
		if err := c.q.pool.backoff(ctx, failures+1); err != nil {
			return fmt.Errorf("redisalive: queue %s: registering consumer %s: %w", c.q.name, c.q.id, c.last.wrap(err))
		}
	}
}

// beatLoop ticks until ctx is done, which also cuts short a tick stuck
// retrying in an outage.
func (c *consumer) beatLoop(ctx context.Context) {
	t := time.NewTicker(c.q.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.tick(ctx); err != nil {
			c.last.note(ctx, err)
			c.q.warnOp(ctx, "heartbeat failed", "err", err)
		} else {
			c.last.clear()
		}
	}
}

// tick beats, requeues the items of dead consumers and scans for orphans.
// Only a failed beat is returned; the rest is retried at the next tick.
func (c *consumer) tick(ctx context.Context) error {
	q := c.q
	// Retried at once, on a fresh connection: a beat stuck on a dead one
	// until the next tick would make us look dead for longer than the
	// fault lasted.
	var reply []any
	err := q.retry(ctx, func() error {
		var err error
		reply, err = redis.Values(q.eval(ctx, heartbeatScript, q.consumersKey, q.id, q.deadAfter.Milliseconds()))
		return err
	}, nil)
	if err != nil {
		return err
	}
	var now int64
	var stale []string
	if _, err := redis.Scan(reply, &now, &stale); err != nil {
		return err
	}
	c.noteBeat(now)
	for i := 0; i+1 < len(stale); i += 2 {
		id, seen := stale[i], stale[i+1]
		beat, err := strconv.ParseFloat(seen, 64)
		if err != nil || c.watched(int64(beat), now) < q.deadAfter.Milliseconds() {
			continue
		}
		n, err := redis.Int(q.eval(ctx, drainScript, q.processingKeyOf(id), q.pendingKey, q.consumersKey,
			id, seen, (q.deadAfter + forgetDead).Milliseconds()))
		if err != nil {
			q.warnOp(ctx, "requeueing a dead consumer's items failed", "consumer", id, "err", err)
			continue
		}
		if n > 0 {
			q.requeued.Add(int64(n))
			q.pool.logger.Warn("redisalive: queue: requeued the items of a dead consumer", "queue", q.name, "consumer", id, "items", n)
		}
	}
	if err := c.scanOrphans(ctx); err != nil {
		q.warnOp(ctx, "scanning for orphaned items failed", "err", err)
	}
	return nil
}

// noteBeat records a beat at server time now. A beat more than one
// interval late ends a span in which we could not reach the server, so we
// could not have heard the others either.
func (c *consumer) noteBeat(now int64) {
	interval := c.q.heartbeat.Milliseconds()
	if c.lastBeat > 0 && now-c.lastBeat > 2*interval {
		c.blind = append(c.blind, span{c.lastBeat + interval, now})
	}
	c.lastBeat = now
	// A consumer silent for longer than this is forgotten, never judged.
	horizon := now - (c.q.deadAfter + forgetDead).Milliseconds()
	c.blind = slices.DeleteFunc(c.blind, func(s span) bool { return s.to < horizon })
}

// watched returns how much of the server time from since to now we spent
// able to reach the server. A consumer is dead once it has been silent for
// DeadAfter of that time: when an outage cuts off every consumer, the one
// back first must not take the items of the others, still on their way
// back, for dead.
func (c *consumer) watched(since, now int64) int64 {
	d := now - since
	for _, s := range c.blind {
		d -= max(0, min(s.to, now)-max(s.from, since))
	}
	return d
}

// scanOrphans requeues items in our processing list that no handler holds.
// A BLMOVE reply on its way makes an item look orphaned for a moment, so an
// item is requeued only if it looked orphaned in consecutive scans at least
// BlockSlice + orphanMargin apart: by then that reply has arrived or its
// read has timed out.
func (c *consumer) scanOrphans(ctx context.Context) error {
	q := c.q
	now := time.Now() // before the read: the item may have moved in during it
	items, err := redis.Strings(q.pool.do(ctx, "LRANGE", q.processingKey, 0, -1))
	if err != nil {
		return err
	}
	unheld := make(map[string]int, len(items))
	for _, raw := range items {
		unheld[raw]++
	}
	c.mu.Lock()
	for raw := range unheld {
		if unheld[raw] -= c.held[raw]; unheld[raw] <= 0 {
			delete(unheld, raw)
		}
	}
	c.mu.Unlock()
	for raw := range c.suspects {
		if _, ok := unheld[raw]; !ok {
			delete(c.suspects, raw)
		}
	}
	for raw, n := range unheld {
		since, ok := c.suspects[raw]
		if !ok {
			c.suspects[raw] = now
			continue
		}
		if now.Sub(since) < q.pool.blockSlice+orphanMargin {
			continue
		}
		delete(c.suspects, raw)
		if moved := q.move(ctx, raw, raw, q.pendingKey, "RPUSH", n); moved > 0 {
			q.requeued.Add(int64(moved))
			q.pool.logger.Info("redisalive: queue: requeued orphaned items", "queue", q.name, "items", moved)
		}
	}
	return nil
}

// requeueLeftovers empties our processing list once no handler runs: what
// is left was moved by a BLMOVE whose reply never came, or was not acked.
func (c *consumer) requeueLeftovers(ctx context.Context) {
	q := c.q
	var n int
	err := q.retry(ctx, func() error {
		var err error
		n, err = redis.Int(q.eval(ctx, drainScript, q.processingKey, q.pendingKey, q.consumersKey, q.id, -1, 0))
		return err
	}, nil)
	if err != nil {
		q.pool.logger.Warn("redisalive: queue: requeueing leftover items at exit failed; other consumers will recover them",
			"queue", q.name, "after", q.deadAfter, "err", err)
		return
	}
	if n > 0 {
		q.requeued.Add(int64(n))
		q.pool.logger.Info("redisalive: queue: requeued items left in processing at exit", "queue", q.name, "items", n)
	}
}

// retry runs op until it succeeds, the server rejects it or the pool
// closes, with backoff: at most opAttempts times, or for as long as
// persist, if not nil, reports true. Transient failures are worth retrying
// because a lost ack means a duplicate and a lost requeue means a delay
// until the orphan scan.
func (q *Queue) retry(ctx context.Context, op func() error, persist func() bool) error {
	for try := 1; ; try++ {
		err := op()
		var serverErr redis.Error
		if err == nil || errors.As(err, &serverErr) || errors.Is(err, ErrPoolClosed) || errors.Is(err, ErrMisconfigured) ||
			try >= opAttempts && (persist == nil || !persist()) {
			return err
		}
		if q.pool.backoff(ctx, try+1) != nil {
			return err
		}
	}
}

// eval runs a Lua script on a connection of its own.
func (q *Queue) eval(ctx context.Context, s *redis.Script, keysAndArgs ...any) (any, error) {
	conn, err := q.pool.get(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return s.DoContext(ctx, conn, keysAndArgs...)
}

// luaNow sets now to the server's clock in milliseconds. Heartbeats use the
// server's clock so that skew between consumers' hosts cannot make a live
// consumer look dead.
const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

var (
	// moveScript: KEYS src, dst; ARGV item, replacement, LPUSH|RPUSH, count.
	// The item leaves src only together with the push, so no failure
	// between the two can lose or double it.
	moveScript = redis.NewScript(2, `
local n = redis.call('LREM', KEYS[1], ARGV[4], ARGV[1])
for _ = 1, n do
	redis.call(ARGV[3], KEYS[2], ARGV[2])
end
return n
`)

	// heartbeatScript: KEYS consumers; ARGV id, DeadAfter in ms. It
	// records the beat and returns the server's time and a flat list of
	// the id and last beat of each consumer silent for DeadAfter.
	heartbeatScript = redis.NewScript(1, luaNow+`
redis.call('ZADD', KEYS[1], now, ARGV[1])
return {now, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]), 'WITHSCORES')}
`)

	// drainScript: KEYS processing, pending, consumers; ARGV id, its last
	// beat as the caller saw it or -1 to drain unconditionally, the age in
	// ms at which to forget it. It moves the whole processing list to the
	// right of pending, oldest item rightmost, if the consumer has not
	// beaten since the caller judged it dead: the check and the move are
	// atomic, so two consumers cannot both move one item, nor one move it
	// from a consumer that has just come back.
	drainScript = redis.NewScript(3, `
local seen = tonumber(ARGV[2])
if seen >= 0 then
	local beat = redis.call('ZSCORE', KEYS[3], ARGV[1])
	if not beat or tonumber(beat) > seen then
		return 0
	end
`+luaNow+`
	if now - tonumber(beat) >= tonumber(ARGV[3]) then
		redis.call('ZREM', KEYS[3], ARGV[1])
	end
end
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do
	n = n + 1
end
return n
`)
)

// warnOp logs a failed Redis operation, rate-limited, unless ctx ended: a
// cancelled operation is no news.
func (q *Queue) warnOp(ctx context.Context, msg string, args ...any) {
	if ctx.Err() == nil && q.opLog.allow() {
		q.pool.logger.Warn("redisalive: queue: "+msg, append([]any{"queue", q.name}, args...)...)
	}
}
