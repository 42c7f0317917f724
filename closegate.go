package redisalive

import (
	"context"
	"sync"
)

// closeGate is the once-only gate of a Close or Shutdown: the first call
// through it closes, and every later one waits until the first has
// returned (or its own ctx has ended). It serves a Pool and a Cluster
// alike. The zero value is ready.
type closeGate struct {
	once sync.Once
	done chan struct{} // made by the first call, closed when it returns
}

// enter reports whether the caller is the first through the gate: it then
// does the closing and calls leave when it returns. A later caller has
// waited for that, and returns err: nil, or ctx's error if ctx ended first.
func (g *closeGate) enter(ctx context.Context) (first bool, err error) {
	g.once.Do(func() {
		first = true
		g.done = make(chan struct{})
	})
	if first {
		return true, nil
	}
	select {
	case <-g.done:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// leave lets the callers waiting at the gate go: the first has returned.
func (g *closeGate) leave() { close(g.done) }
