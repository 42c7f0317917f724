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
}

type closeReason int

const (
	closedDead closeReason = iota
	closedIdle
	closedLifetime
	closedError
	closedCanceled
	closedState
	closedMaxIdle
	numCloseReasons
)

// counters are updated with atomics so that the hot path takes no lock for
// them.
type counters struct {
	dials, dialErrors               atomic.Int64
	waits, waitNanos, poolTimeouts  atomic.Int64
	healthChecks, leaks             atomic.Int64
	closed                          [numCloseReasons]atomic.Int64
	blockingRounds, blockingRedials atomic.Int64
	subscriptions, subscriptionGaps atomic.Int64
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
	s.DeadClosed = c.closed[closedDead].Load()
	s.IdleClosed = c.closed[closedIdle].Load()
	s.LifetimeClosed = c.closed[closedLifetime].Load()
	s.ErrorClosed = c.closed[closedError].Load()
	s.CanceledClosed = c.closed[closedCanceled].Load()
	s.StateClosed = c.closed[closedState].Load()
	s.MaxIdleClosed = c.closed[closedMaxIdle].Load()
	s.BlockingRounds, s.BlockingRedials = c.blockingRounds.Load(), c.blockingRedials.Load()
	s.Subscriptions, s.SubscriptionGaps = int(c.subscriptions.Load()), c.subscriptionGaps.Load()
	return s
}
