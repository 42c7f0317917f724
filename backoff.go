package redisalive

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Backoff between failed rounds of a blocking read: full jitter over an
// exponential ceiling, so that consumers reconnecting after an outage do
// not arrive at the server in lockstep. The cap keeps recovery within about
// a second of the server coming back.
const (
	backoffBase = 50 * time.Millisecond
	backoffCap  = time.Second
	warnEvery   = 10 * time.Second // rate limit for "still unreachable" warnings
)

// backoff waits before the next attempt after failures consecutive
// failures; the first retry is immediate.
func (p *Pool) backoff(ctx context.Context, failures int) error {
	return backoffWait(ctx, p.closing, failures)
}

// backoffWait is the backoff of anything that ends with closing: a Pool,
// a Cluster.
func backoffWait(ctx, closing context.Context, failures int) error {
	if failures <= 1 {
		return nil
	}
	ceiling := min(backoffCap, backoffBase<<min(failures-2, 10))
	t := time.NewTimer(rand.N(ceiling) + time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-closing.Done():
		return ErrPoolClosed
	}
}

// logLimit lets one log line of a kind through per warnEvery, so that a
// failure repeating for every item or every beat cannot flood the log.
type logLimit struct{ last atomic.Int64 }

func (l *logLimit) allow() bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	return now-last >= int64(warnEvery) && l.last.CompareAndSwap(last, now)
}
