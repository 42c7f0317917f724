package redisalive

import (
	"context"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a pool's state. Gauges describe the moment of the
// call; counters accumulate from NewPool.
type Stats struct {
	// Active is the number of open connections, in use or idle (as redigo's
	// ActiveCount), including those being dialled.
	Active int
	// Idle is the number of connections ready for checkout.
	Idle int
	// InUse is Active minus Idle: checked out, being dialled or being
	// health-checked.
	InUse int
	// Waiting is the number of callers waiting for a free connection.
	Waiting int
	// Subscriptions is the number of open Subscriptions; each holds one
	// connection, counted in InUse, except while it reconnects.
	Subscriptions int

	Dials        int64         // connections opened
	DialErrors   int64         // failed attempts to open a connection
	WaitCount    int64         // checkouts that had to wait for a free connection
	WaitDuration time.Duration // total time spent in those waits
	PoolTimeouts int64         // waits that ended without a connection
	HealthChecks int64         // PINGs sent to idle connections and quiet subscriptions
	Leaks        int64         // connections held longer than LeakDetectionThreshold

	// Connections closed, by reason.
	DeadClosed     int64 // found dead by the checkout peek or a health PING
	IdleClosed     int64 // idle longer than IdleTimeout
	LifetimeClosed int64 // older than MaxConnLifetime
	ErrorClosed    int64 // saw a network error while in use
	CanceledClosed int64 // its command was cut short by the caller's context while the reply was on its way
	StateClosed    int64 // left in a transaction, subscription or other state by its user
	MaxIdleClosed  int64 // returned, or back from a health check, while MaxIdle connections were already idle

	BlockingRounds  int64 // blocking commands sent: one per round of a blocking read
	BlockingRedials int64 // times a blocking read replaced a failed connection

	SubscriptionGaps int64 // times a Subscription reconnected and reported lost messages

	// With AutoPipeline: commands sent over shared connections, and the
	// writes that sent them; their ratio is the mean batch.
	Pipelined       int64
	PipelineBatches int64
}

// CloseReason is why the pool closed a connection; Stats counts each, and a
// Hook sees each.
type CloseReason int

const (
	CloseDead     CloseReason = iota // found dead by a peek or a health PING
	CloseIdle                        // idle longer than IdleTimeout
	CloseLifetime                    // older than MaxConnLifetime
	CloseError                       // saw a network error while in use
	CloseCanceled                    // its command was cut short by the caller's context
	CloseState                       // left in a transaction, subscription or other state
	CloseMaxIdle                     // returned while MaxIdle connections were idle
	numCloseReasons
)

var closeReasonNames = [numCloseReasons]string{"dead", "idle", "lifetime", "error", "canceled", "state", "max_idle"}

// CloseReasons returns every CloseReason, for ranging over Stats.ClosedBy.
func CloseReasons() []CloseReason {
	rs := make([]CloseReason, numCloseReasons)
	for i := range rs {
		rs[i] = CloseReason(i)
	}
	return rs
}

// ClosedBy returns how many connections were closed for reason: the
// counter of Stats named after it.
func (s Stats) ClosedBy(reason CloseReason) int64 {
	switch reason {
	case CloseDead:
		return s.DeadClosed
	case CloseIdle:
		return s.IdleClosed
	case CloseLifetime:
		return s.LifetimeClosed
	case CloseError:
		return s.ErrorClosed
	case CloseCanceled:
		return s.CanceledClosed
	case CloseState:
		return s.StateClosed
	case CloseMaxIdle:
		return s.MaxIdleClosed
	}
	return 0
}

// String returns the reason as a metric label: dead, idle, lifetime,
// error, canceled, state or max_idle.
func (r CloseReason) String() string {
	if r < 0 || r >= numCloseReasons {
		return "unknown"
	}
	return closeReasonNames[r]
}

// counters are updated with atomics so that the hot path takes no lock for
// them.
type counters struct {
	dials, dialErrors               atomic.Int64
	waits, waitNanos, poolTimeouts  atomic.Int64
	healthChecks, leaks             atomic.Int64
	closed                          [numCloseReasons]atomic.Int64
	blockingRounds, blockingRedials atomic.Int64
	subscriptions, subscriptionGaps atomic.Int64
	pipelined, pipelineBatches      atomic.Int64
}

// Stats returns a snapshot of the pool's gauges and counters. It takes the
// pool's lock once, briefly, so it is cheap enough to call per request.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	s := Stats{
		Active:  p.numOpen,
		Idle:    len(p.idle),
		InUse:   p.numOpen - len(p.idle),
		Waiting: p.waiters.Len(),
	}
	p.mu.Unlock()
	c := &p.counters
	s.Dials, s.DialErrors = c.dials.Load(), c.dialErrors.Load()
	s.WaitCount, s.WaitDuration = c.waits.Load(), time.Duration(c.waitNanos.Load())
	s.PoolTimeouts = c.poolTimeouts.Load()
	s.HealthChecks, s.Leaks = c.healthChecks.Load(), c.leaks.Load()
	s.DeadClosed = c.closed[CloseDead].Load()
	s.IdleClosed = c.closed[CloseIdle].Load()
	s.LifetimeClosed = c.closed[CloseLifetime].Load()
	s.ErrorClosed = c.closed[CloseError].Load()
	s.CanceledClosed = c.closed[CloseCanceled].Load()
	s.StateClosed = c.closed[CloseState].Load()
	s.MaxIdleClosed = c.closed[CloseMaxIdle].Load()
	s.BlockingRounds, s.BlockingRedials = c.blockingRounds.Load(), c.blockingRedials.Load()
	s.Subscriptions, s.SubscriptionGaps = int(c.subscriptions.Load()), c.subscriptionGaps.Load()
	s.Pipelined, s.PipelineBatches = c.pipelined.Load(), c.pipelineBatches.Load()
	return s
}

// Hook observes a pool's events, for metrics and tracing: the modules
// extra/redisaliveotel and extra/redisaliveprom are built on it. Every
// field is optional. Hooks run on the goroutine of the event, often the
// caller's, so they must be quick; they may read Stats. Some run on the
// pool's own goroutines (the health checker's, a Subscription's, the
// AutoPipeline connections'), which Close waits for: a hook must not call
// the pool's Close or Shutdown, nor a Subscription's Close, or it waits
// for itself. To close the pool on some event, do it from another
// goroutine.
type Hook struct {
	// Command is called before each command a caller runs through
	// Pool.Do, the blocking reads (BRPop, BLPop, BLMove) or Do, DoContext
	// and DoWithTimeout on a connection from Get; not before the pool's own
	// commands (health PINGs and the like). It returns the context to run
	// the command with: the caller's, or one carrying a span, say; nil
	// stands for the caller's.
	Command func(ctx context.Context, cmd string) context.Context
	// CommandDone is called when such a command returns, with the context
	// this hook's Command returned (the caller's if it has none), how long
	// the command took from checkout to reply, and its error.
	CommandDone func(ctx context.Context, cmd string, took time.Duration, err error)
	// Checkout is called when a checkout ends, with how long it took to
	// get a connection (waiting for a free one, checking an idle one,
	// dialling a new one) and its error.
	Checkout func(ctx context.Context, took time.Duration, err error)
	// Dial is called after each attempt to open a connection.
	Dial func(ctx context.Context, took time.Duration, err error)
	// Use is called when a caller returns a connection, with how long it
	// held it.
	Use func(held time.Duration)
	// Closed is called when the pool closes a connection, with why; not
	// for the connections Close and Shutdown close.
	Closed func(reason CloseReason)
	// Redial is called when a round of a blocking read failed on the
	// network and the read goes on on a new connection.
	Redial func(ctx context.Context, cmd string, err error)
	// PoolClosing is called once, when the pool's Close or Shutdown
	// begins, so that a hook can release what it holds for the pool. The
	// Close or Shutdown that calls it is still running: calling either
	// again from here waits for it, that is, for ever or until its ctx
	// ends.
	PoolClosing func()
}

// AddHook adds h to the pool's hooks. Hooks run in the order they were
// added (Command hooks nest: the first is outermost) and cannot be
// removed. With no hook, an event costs one atomic load.
func (p *Pool) AddHook(h Hook) {
	for {
		old := p.hooks.Load()
		var hooks []Hook
		if old != nil {
			hooks = append(hooks, *old...)
		}
		hooks = append(hooks, h)
		if p.hooks.CompareAndSwap(old, &hooks) {
			return
		}
	}
}

// commandHooks carries a command's hook state from before to after it:
// each hook's own context, inline for the usual few hooks.
type commandHooks struct {
	start time.Time
	ctxs  []context.Context
	inl   [4]context.Context
}

// beforeCommand runs the Command hooks before a caller's command and
// returns the context to run it with.
func (r *runner) beforeCommand(ctx context.Context, cmd string, h *commandHooks) context.Context {
	hooks := *r.hooks.Load()
	h.start = time.Now()
	h.ctxs = h.inl[:0]
	for i := range hooks {
		if hooks[i].Command != nil {
			if hctx := hooks[i].Command(ctx, cmd); hctx != nil {
				ctx = hctx
			}
		}
		h.ctxs = append(h.ctxs, ctx)
	}
	return ctx
}

// afterCommand runs the CommandDone hooks, the last added first, as
// deferred calls would.
func (r *runner) afterCommand(cmd string, h *commandHooks, err error) {
	hooks := *r.hooks.Load()
	took := time.Since(h.start)
	for i := min(len(hooks), len(h.ctxs)) - 1; i >= 0; i-- {
		if hooks[i].CommandDone != nil {
			hooks[i].CommandDone(h.ctxs[i], cmd, took, err)
		}
	}
}

// each calls f for every hook, if there are any.
func (r *runner) each(f func(h *Hook)) {
	if hooks := r.hooks.Load(); hooks != nil {
		for i := range *hooks {
			f(&(*hooks)[i])
		}
	}
}
