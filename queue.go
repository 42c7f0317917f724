package redisalive

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Defaults applied to zero-valued QueueOptions fields.
const (
	DefaultMaxAttempts       = 5
	DefaultHeartbeatInterval = 2 * time.Second
)

const (
	// deadAfterBeats is DeadAfter's default in heartbeats: a consumer may
	// miss four in a row, say through a failover, and keep its items.
	deadAfterBeats = 5

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

	// opAttempts bounds the tries of an ack, requeue or heartbeat. Giving
	// up is safe: the item stays in the processing list, where the orphan
	// scan or another consumer finds it.
	opAttempts = 4

	// envelopePrefix starts every item written by Push; an item without it
	// came from another producer and is taken as a bare payload.
	envelopePrefix = "ra1:"
)

// QueueOptions configures a Queue. The zero value of every field selects a
// default.
type QueueOptions struct {
	// Concurrency is how many handlers one Consume runs at once. Each
	// waits for items on its own connection, so it must be less than the
	// pool's MaxActive. Zero: 1.
	Concurrency int
	// MaxAttempts is how many times an item's handler may fail before the
	// item goes to the dead-letter list. Zero: DefaultMaxAttempts.
	MaxAttempts int
	// HeartbeatInterval is how often a running Consume proves it is alive,
	// recovers the items of dead consumers and scans its own processing
	// list for orphans. Zero: DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// DeadAfter is how long a consumer may go without a heartbeat before
	// the others requeue its items. It must exceed HeartbeatInterval. A
	// consumer declared dead while alive causes duplicates, not losses.
	// Zero: 5 * HeartbeatInterval.
	DeadAfter time.Duration
	// ConsumerID names this consumer in the consumers set and in its
	// processing list's key. Two live consumers must not share one. Zero:
	// "hostname-pid-random".
	ConsumerID string
}

// Queue is an at-least-once work queue on Redis lists. Producers Push
// payloads; Consume hands each to a handler and removes it only once the
// handler has returned nil, so an item survives the death of its consumer,
// of its connection or of the server's reply. The price is that an item
// may be handled more than once: handlers must be idempotent.
//
// All keys begin with the hash tag {name}, so a Redis Cluster keeps them in
// one slot and the Lua scripts may touch them together:
//
//	{name}:pending           list of items waiting; Push adds on the left,
//	                         consumers take from the right
//	{name}:processing:<id>   list of the items consumer <id> has taken
//	{name}:consumers         sorted set of consumer ids, scored by their
//	                         last heartbeat in server milliseconds
//	{name}:dead              list of the payloads that failed MaxAttempts
//	                         times, newest on the left, without envelope so
//	                         an operator can LMOVE them back to pending
//
// An item is "ra1:<attempts>:<id>:<payload>": the attempt count survives
// retries and the random id keeps equal payloads distinct, so acking one
// cannot remove its twin. An item without the "ra1:" prefix, pushed by
// some other producer, is taken whole as a payload with no attempts yet.
//
// A failed item goes back to the left of pending, behind the backlog, so a
// failing item cannot starve the others and a passing fault has time to
// clear; there is no other delay, so a handler that wants backoff on an
// empty queue must wait before returning its error. Items taken back from
// dead consumers, found orphaned or interrupted by shutdown go to the
// right, to be taken next: they were already due.
//
// A Queue is safe for concurrent use, but runs one Consume at a time:
// raise Concurrency, or make another Queue with its own ConsumerID.
type Queue struct {
	p           *Pool
	name, id    string
	concurrency int
	maxAttempts int
	heartbeat   time.Duration
	deadAfter   time.Duration

	pendingKey, processingKey, consumersKey, deadKey string

	consuming                                atomic.Bool
	handled, retried, deadLettered, requeued atomic.Int64

	// Rate limits for warnings that can repeat for every item or beat.
	failLog, opLog logLimit
}

// QueueStats counts what a Queue's consumers have done since NewQueue.
type QueueStats struct {
	Handled      int64 // items whose handler returned nil
	Retried      int64 // failed items pushed back to pending with one more attempt
	DeadLettered int64 // failed items moved to the dead-letter list after MaxAttempts
	// Requeued counts items put back without counting an attempt: taken
	// from dead consumers, found orphaned in this consumer's processing
	// list, or interrupted by shutdown.
	Requeued int64
}

// NewQueue returns the queue called name on p. It validates opts and
// reports the first invalid field with an error matching
// ErrInvalidOptions. It sends no command.
func NewQueue(p *Pool, name string, opts QueueOptions) (*Queue, error) {
	bad := func(field string, v any, reason string) (*Queue, error) {
		return nil, &OptionError{Field: field, Value: v, Reason: reason, of: "QueueOptions"}
	}
	if p == nil {
		return nil, fmt.Errorf("redisalive: NewQueue: nil Pool: %w", ErrInvalidOptions)
	}
	if name == "" {
		return nil, fmt.Errorf("redisalive: NewQueue: a queue name is required: %w", ErrInvalidOptions)
	}
	if opts.Concurrency < 0 {
		return bad("Concurrency", opts.Concurrency, "must not be negative (zero selects 1)")
	}
	if opts.MaxAttempts < 0 {
		return bad("MaxAttempts", opts.MaxAttempts, "must not be negative (zero selects the default)")
	}
	if opts.HeartbeatInterval < 0 {
		return bad("HeartbeatInterval", opts.HeartbeatInterval, "must not be negative (zero selects the default)")
	}
	if opts.DeadAfter < 0 {
		return bad("DeadAfter", opts.DeadAfter, "must not be negative (zero selects the default)")
	}
	q := &Queue{
		p:           p,
		name:        name,
		id:          cmp.Or(opts.ConsumerID, defaultConsumerID()),
		concurrency: cmp.Or(opts.Concurrency, 1),
		maxAttempts: cmp.Or(opts.MaxAttempts, DefaultMaxAttempts),
		heartbeat:   cmp.Or(opts.HeartbeatInterval, DefaultHeartbeatInterval),
	}
	q.deadAfter = cmp.Or(opts.DeadAfter, deadAfterBeats*q.heartbeat)
	if q.deadAfter <= q.heartbeat {
		return bad("DeadAfter", q.deadAfter, fmt.Sprintf("must exceed HeartbeatInterval (%v), or live consumers are declared dead between beats", q.heartbeat))
	}
	if q.concurrency >= p.cfg.maxActive {
		return bad("Concurrency", q.concurrency, fmt.Sprintf("must be less than the pool's MaxActive (%d): each handler slot holds a connection while it waits, and acks need another", p.cfg.maxActive))
	}
	tag := "{" + name + "}:"
	q.pendingKey, q.consumersKey, q.deadKey = tag+"pending", tag+"consumers", tag+"dead"
	q.processingKey = q.processingKeyOf(q.id)
	return q, nil
}

func defaultConsumerID() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return fmt.Sprintf("%s-%d-%08x", host, os.Getpid(), rand.Uint32())
}

func (q *Queue) processingKeyOf(id string) string { return "{" + q.name + "}:processing:" + id }

// Name returns the queue's name.
func (q *Queue) Name() string { return q.name }

// ConsumerID returns the id this Queue consumes under.
func (q *Queue) ConsumerID() string { return q.id }

// PendingKey returns the key of the list of items waiting to be consumed.
// Producers in other languages may LPUSH bare payloads onto it.
func (q *Queue) PendingKey() string { return q.pendingKey }

// ProcessingKey returns the key of the list of items this consumer has
// taken and not yet acknowledged.
func (q *Queue) ProcessingKey() string { return q.processingKey }

// ConsumersKey returns the key of the sorted set of consumer ids scored by
// their last heartbeat.
func (q *Queue) ConsumersKey() string { return q.consumersKey }

// DeadLetterKey returns the key of the list of payloads that failed
// MaxAttempts times.
func (q *Queue) DeadLetterKey() string { return q.deadKey }

// Stats returns the queue's counters. It reads atomics only.
func (q *Queue) Stats() QueueStats {
	return QueueStats{
		Handled:      q.handled.Load(),
		Retried:      q.retried.Load(),
		DeadLettered: q.deadLettered.Load(),
		Requeued:     q.requeued.Load(),
	}
}

// Push adds payloads to the queue in one LPUSH; they are taken in the
// order given. Push does not retry: after an error the payloads may or may
// not have been added.
func (q *Queue) Push(ctx context.Context, payloads ...[]byte) error {
	if len(payloads) == 0 {
		return nil
	}
	args := make([]any, 0, 1+len(payloads))
	args = append(args, q.pendingKey)
	for _, pl := range payloads {
		args = append(args, item{id: newItemID(), payload: string(pl)}.String())
	}
	_, err := q.p.Do(ctx, "LPUSH", args...)
	return err
}

// Consume runs handler on the queue's items, Concurrency at a time, until
// ctx is done or the pool closes. An item handled without error is
// removed. One whose handler fails or panics goes back to pending with one
// more attempt, or to the dead-letter list after MaxAttempts; but if ctx
// was done by then, it goes back without counting the attempt, since
// shutdown is not the item's fault. The handler's ctx is cancelled when
// Consume's ctx is done or the pool closes.
//
// While it runs, Consume beats every HeartbeatInterval, requeues the items
// of consumers silent for DeadAfter, and requeues items that sit in its own
// processing list without a handler: the reply of a BLMOVE lost on a
// failing connection leaves the item there unseen.
//
// Consume returns an error matching ctx's error, or ErrPoolClosed, only
// after every handler it started has returned and its goroutines have
// ended. It then requeues anything left in its processing list. It leaves
// its entry in the consumers set to go stale: a BLMOVE it abandoned may
// still move an item into its list on the server, and the other consumers
// will recover that item once the entry is DeadAfter old.
func (q *Queue) Consume(ctx context.Context, handler func(ctx context.Context, payload []byte) error) error {
	if handler == nil {
		return errors.New("redisalive: Queue.Consume: nil handler")
	}
	if !q.consuming.CompareAndSwap(false, true) {
		return fmt.Errorf("redisalive: queue %s: Consume is already running as consumer %s", q.name, q.id)
	}
	defer q.consuming.Store(false)

	c := &consumer{q: q, handler: handler, held: make(map[string]int), suspects: make(map[string]time.Time)}
	// Registered before any item can enter our processing list, or a
	// consumer dying at once would leave its items with no owner to recover.
	if err := c.register(ctx); err != nil {
		return err
	}
	// Acks, requeues and heartbeats outlive ctx: handlers still running
	// after it ends must finish their items. The pool's timeouts bound them.
	bg := context.WithoutCancel(ctx)
	work, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var workers, beater sync.WaitGroup
	for range q.concurrency {
		workers.Go(func() {
			if err := c.work(work); err != nil {
				stop(err)
			}
		})
	}
	// Beats continue while handlers drain, or others would take their items.
	beatStop := make(chan struct{})
	beater.Go(func() { c.beatLoop(bg, beatStop) })
	workers.Wait()
	close(beatStop)
	beater.Wait()
	c.requeueLeftovers(bg)

	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redisalive: queue %s: consume: %w", q.name, err)
	}
	return context.Cause(work)
}

// consumer is the state of one running Consume.
type consumer struct {
	q       *Queue
	handler func(ctx context.Context, payload []byte) error

	mu   sync.Mutex     // guards held
	held map[string]int // items taken by handlers and not yet out of the processing list, counted

	// suspects maps each item seen unheld in the processing list to when
	// it was first seen so; owned by the heartbeat.
	suspects map[string]time.Time
}

// work takes items one at a time until ctx is done or the pool closes.
func (c *consumer) work(ctx context.Context) error {
	q := c.q
	failures := 0
	for {
		// The item moves into our processing list before we see it, so a
		// reply lost on the way loses nothing: the orphan scan finds it.
		raw, err := q.p.BLMove(ctx, q.pendingKey, q.processingKey, "RIGHT", "LEFT")
		if err == nil {
			failures = 0
			c.process(ctx, raw)
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrPoolClosed) {
			return err
		}
		// BLMove retries network failures itself; this is a server error
		// such as LOADING or WRONGTYPE, which an operator may fix.
		failures++
		q.warnOp(ctx, "taking an item failed; retrying", "err", err)
		if err := q.p.backoff(ctx, failures+1); err != nil {
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
	log := q.p.cfg.logger
	switch {
	case err == nil:
		ackErr := q.retry(bg, func() error {
			_, err := q.p.Do(bg, "LREM", q.processingKey, 1, raw)
			return err
		})
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
				c.q.p.cfg.logger.Error("redisalive: queue: handler panicked", "queue", c.q.name, "panic", r, "stack", string(debug.Stack()))
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
	})
	if err != nil {
		q.warnOp(ctx, "moving an item out of processing failed; it stays there to be requeued", "to", dst, "err", err)
	}
	return moved
}

// register beats until the server has our entry, so that nothing enters
// our processing list while no one could recover it.
func (c *consumer) register(ctx context.Context) error {
	for failures := 1; ; failures++ {
		err := c.tick(ctx)
		if err == nil || errors.Is(err, ErrPoolClosed) {
			return err
		}
		c.q.warnOp(ctx, "registering the consumer failed; retrying", "err", err)
		if err := c.q.p.backoff(ctx, failures+1); err != nil {
			return fmt.Errorf("redisalive: queue %s: registering consumer %s: %w", c.q.name, c.q.id, err)
		}
	}
}

func (c *consumer) beatLoop(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(c.q.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if err := c.tick(ctx); err != nil {
			c.q.warnOp(ctx, "heartbeat failed", "err", err)
		}
	}
}

// tick beats, requeues the items of dead consumers and scans for orphans.
// Only a failed beat is returned; the rest is retried at the next tick.
func (c *consumer) tick(ctx context.Context) error {
	q := c.q
	dead, err := redis.Strings(q.eval(ctx, heartbeatScript, q.consumersKey, q.id, q.deadAfter.Milliseconds()))
	if err != nil {
		return err
	}
	for _, id := range dead {
		n, err := redis.Int(q.eval(ctx, drainScript, q.processingKeyOf(id), q.pendingKey, q.consumersKey,
			id, q.deadAfter.Milliseconds(), forgetDead.Milliseconds()))
		if err != nil {
			q.warnOp(ctx, "requeueing a dead consumer's items failed", "consumer", id, "err", err)
			continue
		}
		if n > 0 {
			q.requeued.Add(int64(n))
			q.p.cfg.logger.Warn("redisalive: queue: requeued the items of a dead consumer", "queue", q.name, "consumer", id, "items", n)
		}
	}
	if err := c.scanOrphans(ctx); err != nil {
		q.warnOp(ctx, "scanning for orphaned items failed", "err", err)
	}
	return nil
}

// scanOrphans requeues items in our processing list that no handler holds.
// A BLMOVE reply on its way makes an item look orphaned for a moment, so an
// item is requeued only if it looked orphaned in consecutive scans at least
// BlockSlice + orphanMargin apart: by then that reply has arrived or its
// read has timed out.
func (c *consumer) scanOrphans(ctx context.Context) error {
	q := c.q
	now := time.Now() // before the read: the item may have moved in during it
	items, err := redis.Strings(q.p.Do(ctx, "LRANGE", q.processingKey, 0, -1))
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
		if now.Sub(since) < q.p.cfg.blockSlice+orphanMargin {
			continue
		}
		delete(c.suspects, raw)
		if moved := q.move(ctx, raw, raw, q.pendingKey, "RPUSH", n); moved > 0 {
			q.requeued.Add(int64(moved))
			q.p.cfg.logger.Info("redisalive: queue: requeued orphaned items", "queue", q.name, "items", moved)
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
	})
	if err != nil {
		q.p.cfg.logger.Warn("redisalive: queue: requeueing leftover items at exit failed; other consumers will recover them",
			"queue", q.name, "after", q.deadAfter, "err", err)
		return
	}
	if n > 0 {
		q.requeued.Add(int64(n))
		q.p.cfg.logger.Info("redisalive: queue: requeued items left in processing at exit", "queue", q.name, "items", n)
	}
}

// retry runs op until it succeeds, the server rejects it or the pool
// closes, at most opAttempts times with backoff. Transient failures are
// worth retrying because a lost ack means a duplicate and a lost requeue
// means a delay until the orphan scan.
func (q *Queue) retry(ctx context.Context, op func() error) error {
	for try := 1; ; try++ {
		err := op()
		var serverErr redis.Error
		if err == nil || errors.As(err, &serverErr) || errors.Is(err, ErrPoolClosed) || try == opAttempts {
			return err
		}
		if q.p.backoff(ctx, try+1) != nil {
			return err
		}
	}
}

// eval runs a Lua script on a connection of its own.
func (q *Queue) eval(ctx context.Context, s *redis.Script, keysAndArgs ...any) (any, error) {
	conn, err := q.p.Get(ctx)
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
	// records the beat and returns the ids of the consumers that are dead.
	heartbeatScript = redis.NewScript(1, luaNow+`
redis.call('ZADD', KEYS[1], now, ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
`)

	// drainScript: KEYS processing, pending, consumers; ARGV id, DeadAfter
	// in ms or -1 to drain unconditionally, forgetDead in ms. It moves the
	// whole processing list to the right of pending, oldest item rightmost,
	// if its consumer is still dead when the script runs: the check and the
	// move are atomic, so two consumers cannot both move one item, nor one
	// move it from a consumer that has just come back.
	drainScript = redis.NewScript(3, `
local maxAge = tonumber(ARGV[2])
if maxAge >= 0 then
	local beat = redis.call('ZSCORE', KEYS[3], ARGV[1])
	if not beat then
		return 0
	end
`+luaNow+`
	local age = now - tonumber(beat)
	if age < maxAge then
		return 0
	end
	if age >= maxAge + tonumber(ARGV[3]) then
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

// item is a queue element: "ra1:<attempts>:<id>:<payload>".
type item struct {
	attempts int
	id       string // "" for an item pushed without envelope
	payload  string
}

func newItemID() string { return strconv.FormatUint(rand.Uint64(), 36) }

func (it item) String() string {
	return envelopePrefix + strconv.Itoa(it.attempts) + ":" + it.id + ":" + it.payload
}

// parseItem decodes an item, taking anything that is not a well-formed
// envelope as a bare payload.
func parseItem(raw string) item {
	if rest, ok := strings.CutPrefix(raw, envelopePrefix); ok {
		attempts, rest, ok1 := strings.Cut(rest, ":")
		id, payload, ok2 := strings.Cut(rest, ":")
		if n, err := strconv.Atoi(attempts); ok1 && ok2 && err == nil && n >= 0 && id != "" {
			return item{attempts: n, id: id, payload: payload}
		}
	}
	return item{payload: raw}
}

// warnOp logs a failed Redis operation, rate-limited, unless ctx ended: a
// cancelled operation is no news.
func (q *Queue) warnOp(ctx context.Context, msg string, args ...any) {
	if ctx.Err() == nil && q.opLog.allow() {
		q.p.cfg.logger.Warn("redisalive: queue: "+msg, append([]any{"queue", q.name}, args...)...)
	}
}
