package redisalive

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
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
	// list for orphans. At most 20 years. Zero: DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// DeadAfter is how long a consumer may go without a heartbeat before
	// the others requeue its items. Time in which a consumer could not
	// beat itself does not count toward the silence of the others: after
	// an outage that cut them all off, the first one back does not take
	// the rest, still reconnecting, for dead. It must exceed
	// HeartbeatInterval. A consumer declared dead while alive causes
	// duplicates, not losses. At most 100 years. Zero: 5 *
	// HeartbeatInterval.
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
	pool        queuePool
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

// QueueBackend is what a Queue runs on: a *Pool, or a *Cluster, on which
// the queue's keys, sharing the hash tag {name}, live on one node.
type QueueBackend interface {
	queueSeam(name string) queuePool
}

// queuePool is what a Queue uses of its Pool or Cluster: the calls it
// makes and the settings it depends on, captured once by NewQueue, so that
// the queue depends on this much of them and nothing more.
type queuePool struct {
	do         func(ctx context.Context, cmd string, args ...any) (any, error)
	get        func(ctx context.Context) (redis.Conn, error)
	blMove     func(ctx context.Context, src, dst, srcSide, dstSide string) (string, error)
	backoff    func(ctx context.Context, failures int) error
	logger     *slog.Logger
	blockSlice time.Duration
	maxActive  int
	// closing is done once the pool's Close or Shutdown begins.
	closing context.Context
}

func (p *Pool) queueSeam(string) queuePool {
	return queuePool{
		do:         p.Do,
		get:        p.Get,
		blMove:     p.BLMove,
		backoff:    p.backoff,
		logger:     p.cfg.logger,
		blockSlice: p.cfg.blockSlice,
		maxActive:  p.cfg.maxActive,
		closing:    p.closing,
	}
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

// NewQueue returns the queue called name on b, a *Pool or a *Cluster. It
// validates opts and reports the first invalid field with an error
// matching ErrInvalidOptions. It sends no command.
//
// The name must not be empty nor contain '{' or '}': every key of the
// queue begins with the hash tag {name}, and a brace in the name would
// change or empty that tag, so that on a Cluster the keys, scattered over
// slots, could not be used together. Such a name is rejected, on a Pool
// too, with an error matching ErrInvalidOptions.
func NewQueue(b QueueBackend, name string, opts QueueOptions) (*Queue, error) {
	bad := func(field string, v any, reason string) (*Queue, error) {
		return nil, &OptionError{Field: field, Value: v, Reason: reason, of: "QueueOptions"}
	}
	switch b := b.(type) {
	case nil:
		return nil, &invalidError{"redisalive: NewQueue: nil backend"}
	case *Pool:
		if b == nil {
			return nil, &invalidError{"redisalive: NewQueue: nil Pool"}
		}
	case *Cluster:
		if b == nil {
			return nil, &invalidError{"redisalive: NewQueue: nil Cluster"}
		}
	}
	if name == "" {
		return nil, &invalidError{"redisalive: NewQueue: a queue name is required"}
	}
	if strings.ContainsAny(name, "{}") {
		return nil, &invalidError{fmt.Sprintf("redisalive: NewQueue: queue name %q contains '{' or '}', which would break the hash tag {name} its keys share", name)}
	}
	if opts.Concurrency < 0 {
		return bad("Concurrency", opts.Concurrency, "must not be negative (zero selects 1)")
	}
	if opts.MaxAttempts < 0 {
		return bad("MaxAttempts", opts.MaxAttempts, "must not be negative (zero selects the default)")
	}
	// DeadAfter, or 5 HeartbeatIntervals, is added to times and to a
	// minute: past 292 years a time.Duration wraps negative.
	if opts.HeartbeatInterval < 0 || opts.HeartbeatInterval > maxAddedTimeout/deadAfterBeats {
		return bad("HeartbeatInterval", opts.HeartbeatInterval, fmt.Sprintf("must be from 0 (the default) to %v", maxAddedTimeout/deadAfterBeats))
	}
	if opts.DeadAfter < 0 || opts.DeadAfter > maxAddedTimeout {
		return bad("DeadAfter", opts.DeadAfter, fmt.Sprintf("must be from 0 (the default) to %v", maxAddedTimeout))
	}
	q := &Queue{
		pool:        b.queueSeam(name),
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
	if q.concurrency >= q.pool.maxActive {
		return bad("Concurrency", q.concurrency, fmt.Sprintf("must be less than the pool's MaxActive (%d): each handler slot holds a connection while it waits, and acks need another", q.pool.maxActive))
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
	if ctx == nil {
		return ErrNilContext
	}
	if len(payloads) == 0 {
		return nil
	}
	args := make([]any, 0, 1+len(payloads))
	args = append(args, q.pendingKey)
	for _, pl := range payloads {
		args = append(args, item{id: newItemID(), payload: string(pl)}.String())
	}
	_, err := q.pool.do(ctx, "LPUSH", args...)
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
// A new connection the server refuses for the pool's configuration (a
// *DialError matching ErrMisconfigured: a wrong password, say) ends
// Consume at once with that error; any other connection failure is
// retried, with rate-limited warnings through the pool's Logger, and the
// error that ends Consume then carries the last of them.
//
// Consume returns an error matching ctx's error, ErrPoolClosed or
// ErrMisconfigured only after every handler it started has returned and
// its goroutines have ended. It then requeues anything left in its
// processing list. It leaves its entry in the consumers set to go stale: a
// BLMOVE it abandoned may still move an item into its list on the server,
// and the other consumers will recover that item once the entry is
// DeadAfter old. That is also how the items of handlers interrupted by the
// pool closing come back: nothing can be acked or requeued through a
// closed pool.
func (q *Queue) Consume(ctx context.Context, handler func(ctx context.Context, payload []byte) error) error {
	if ctx == nil {
		return ErrNilContext
	}
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
	// Workers waiting in BLMove see the close themselves; handlers would not.
	defer context.AfterFunc(q.pool.closing, func() { stop(ErrPoolClosed) })()
	var workers, beater sync.WaitGroup
	for range q.concurrency {
		workers.Go(func() {
			if err := c.work(work); err != nil {
				stop(err)
			}
		})
	}
	// Beats continue while handlers drain, or others would take their items.
	beats, stopBeats := context.WithCancel(bg)
	beater.Go(func() { c.beatLoop(beats) })
	workers.Wait()
	stopBeats()
	beater.Wait()
	c.requeueLeftovers(bg)

	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redisalive: queue %s: consume: %w", q.name, c.last.wrap(err))
	}
	if err := context.Cause(work); errors.Is(err, ErrPoolClosed) {
		return c.last.wrap(err)
	} else if err != nil {
		return fmt.Errorf("redisalive: queue %s: consume: %w", q.name, err)
	}
	return nil
}

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
// envelope as a bare payload. A count of math.MaxInt is not well-formed:
// counting one more failure would wrap it negative, and the retried item
// would no longer parse as the envelope it was.
func parseItem(raw string) item {
	if rest, ok := strings.CutPrefix(raw, envelopePrefix); ok {
		attempts, rest, ok1 := strings.Cut(rest, ":")
		id, payload, ok2 := strings.Cut(rest, ":")
		if n, err := strconv.Atoi(attempts); ok1 && ok2 && err == nil && n >= 0 && n < math.MaxInt && id != "" {
			return item{attempts: n, id: id, payload: payload}
		}
	}
	return item{payload: raw}
}
