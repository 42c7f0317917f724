package redisalive

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// Backoff between failed rounds of a blocking read: full jitter over an
// exponential ceiling, so that consumers reconnecting after an outage do
// not arrive at the server in lockstep. The cap keeps recovery within about
// a second of the server coming back.
const (
	backoffBase = 50 * time.Millisecond
	backoffCap  = time.Second
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

// lastFailure is the last connection error of a retry loop: a blocking
// read's, a Subscription's or a Consume's. The loop notes each failure and
// clears it once through; the error that ends the loop by its context or
// Close goes through wrap, so that it says why the loop never got through.
type lastFailure struct {
	mu  sync.Mutex
	err error
}

// note records err, met by a loop running under ctx, as the last
// connection error, unless ctx had ended or the pool closed: then err is
// their doing, which ends a loop and does not explain it. (A dial's own
// timeout matches context.DeadlineExceeded too, so the error alone cannot
// tell.) An error that ended an inner loop gives up the connection error
// it carries.
func (l *lastFailure) note(ctx context.Context, err error) {
	if re := (*retryEnded)(nil); errors.As(err, &re) {
		err = re.last
	} else if err == nil || ctxErr(ctx) != nil || errors.Is(err, ErrPoolClosed) {
		return
	}
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

// clear forgets the last failure: the loop got through since.
func (l *lastFailure) clear() {
	l.mu.Lock()
	l.err = nil
	l.mu.Unlock()
}

// wrap returns err, which ends the loop, with the last connection error
// attached, if there is one and err does not carry it already.
func (l *lastFailure) wrap(err error) error {
	l.mu.Lock()
	last := l.err
	l.mu.Unlock()
	if re := (*retryEnded)(nil); last == nil || err == nil || errors.As(err, &re) || errors.Is(err, last) {
		return err
	}
	return &retryEnded{err: err, last: last}
}
