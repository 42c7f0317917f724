package redisalive

import (
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
	DialErrors   int64         // failed attempts to open a connection, not counting those the caller's context cancelled
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
	StaleClosed    int64 // its server was no longer the pool's master: closed at a failover, or when returned after one

	BlockingRounds  int64 // blocking commands sent: one per round of a blocking read
	BlockingRedials int64 // times a blocking read replaced a failed connection

	SubscriptionGaps int64 // times a Subscription reconnected and reported lost messages

	// Failovers counts the times the pool moved to a new master: the
	// sentinels announced or named one, or the server under a fixed
	// address answered that it is no longer the master (READONLY).
	Failovers int64

	// ZombiesKilled counts connections the pool abandoned after a failure
	// and then killed on the server (CLIENT KILL ID) before sending
	// anything more: their commands can no longer run late, and the server
	// does not keep them open.
	ZombiesKilled int64

	// With AutoPipeline: commands sent over shared connections, and the
	// writes that sent them; their ratio is the mean batch.
	Pipelined       int64
	PipelineBatches int64
	// PipelineBypasses counts the commands that, with AutoPipeline, went on
	// a connection of their own because the shared connection they would
	// have queued on was busy with slow or large replies.
	PipelineBypasses int64
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
	CloseStale                       // its server is no longer the pool's master: a failover
	numCloseReasons
)

var closeReasonNames = [numCloseReasons]string{"dead", "idle", "lifetime", "error", "canceled", "state", "max_idle", "stale"}

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
	case CloseStale:
		return s.StaleClosed
	}
	return 0
}

// String returns the reason as a metric label: dead, idle, lifetime,
// error, canceled, state, max_idle or stale.
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
	pipelineBypasses                atomic.Int64
	zombiesKilled, failovers        atomic.Int64
	// Connections held now by Subscriptions and by blocking reads, for
	// the PoolTimeoutError that reports who holds the pool.
	subscriptionConns, blockingConns atomic.Int64
}

// Stats returns a snapshot of the pool's gauges and counters. It takes the
// pool's lock once, briefly, so it is cheap enough to call per request.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	s := Stats{
		Active:  p.numOpen,
		Idle:    len(p.idle),
		InUse:   p.numOpen - len(p.idle),
		Waiting: p.waiters.len(),
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
	s.StaleClosed = c.closed[CloseStale].Load()
	s.BlockingRounds, s.BlockingRedials = c.blockingRounds.Load(), c.blockingRedials.Load()
	s.Subscriptions, s.SubscriptionGaps = int(c.subscriptions.Load()), c.subscriptionGaps.Load()
	s.Pipelined, s.PipelineBatches = c.pipelined.Load(), c.pipelineBatches.Load()
	s.PipelineBypasses = c.pipelineBypasses.Load()
	s.ZombiesKilled, s.Failovers = c.zombiesKilled.Load(), c.failovers.Load()
	return s
}
