package redisalive

import (
	"sync"
	"time"
)

// waiter is a checkout waiting for a free connection. It is handed either a
// connection or nil, meaning a free slot it may dial into; its channel is
// closed if the pool closes.
//
// Waiters are reused (waiterPool): with more goroutines than connections
// most checkouts wait, and a waiter's channel, timer and queue node
// allocated afresh for each wait were seven allocations per call.
type waiter struct {
	ch         chan *conn  // capacity 1: handing over never blocks the giver
	timer      *time.Timer // made by the first wait that needs one, then reset
	prev, next *waiter     // in waitQueue; guarded by Pool.mu
	queued     bool        // still in the queue; guarded by Pool.mu
}

var waiterPool = sync.Pool{New: func() any { return &waiter{ch: make(chan *conn, 1)} }}

// release returns w for reuse once its wait is over. Call it only when the
// channel is known to be open and empty: nothing was handed over, or what
// was has been received. A waiter whose channel Close closed is dropped.
func (w *waiter) release() { waiterPool.Put(w) }

// waitEnd is what ended a wait.
type waitEnd uint8

const (
	endHanded   waitEnd = iota // a connection, or nil for a free slot, was handed over
	endClosed                  // Close closed the channel
	endDone                    // done was closed
	endDeadline                // the deadline passed
)

// wait blocks until something is handed to w, Close closes its channel,
// done is closed, or deadline passes; only the first returns a connection.
// A nil done never closes. timed false leaves the deadline to done.
func (w *waiter) wait(done <-chan struct{}, deadline time.Time, timed bool) (*conn, waitEnd) {
	var tick <-chan time.Time
	if timed {
		if w.timer == nil {
			w.timer = time.NewTimer(time.Until(deadline))
		} else {
			w.timer.Reset(time.Until(deadline))
		}
		defer w.timer.Stop()
		tick = w.timer.C
	}
	for {
		select {
		case c, ok := <-w.ch:
			if !ok {
				return nil, endClosed
			}
			return c, endHanded
		case <-done:
			return nil, endDone
		case <-tick:
			// Under GODEBUG=asynctimerchan=1 (a main module older than Go
			// 1.23) Stop leaves a fired timer's value in its channel, and
			// the next wait would read it: a tick before the deadline is
			// such a leftover, not this wait's end.
			if time.Now().Before(deadline) {
				continue
			}
			return nil, endDeadline
		}
	}
}

// waitQueue is the pool's first-come-first-served queue of waiters, an
// intrusive list so that queueing allocates nothing. It is guarded by
// Pool.mu.
type waitQueue struct {
	head, tail *waiter
	n          int
}

func (q *waitQueue) len() int { return q.n }

// push queues a waiter from waiterPool and returns it.
func (q *waitQueue) push() *waiter {
	w := waiterPool.Get().(*waiter)
	w.queued, w.prev, w.next = true, q.tail, nil
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.n++
	return w
}

// remove takes w, which must be queued, out of the queue.
func (q *waitQueue) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	q.n--
}

// closeAll empties the queue, closing every waiter's channel: the pool is
// closed.
func (q *waitQueue) closeAll() {
	for w := q.head; w != nil; {
		next := w.next
		w.prev, w.next, w.queued = nil, nil, false
		close(w.ch)
		w = next
	}
	*q = waitQueue{}
}

// pop removes and returns the first waiter, or nil if none waits.
func (q *waitQueue) pop() *waiter {
	w := q.head
	if w != nil {
		q.remove(w)
	}
	return w
}
