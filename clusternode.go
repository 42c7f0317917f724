package redisalive

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// downRetry is how often, while a node is down, the slot map is refreshed
// (so that a replica promoted in its place is found about that soon) and
// the node probed (so that its return is).
const downRetry = minRefreshGap

// node is one node of a Cluster: its Pool, and what the cluster has seen
// of its health.
type node struct {
	addr string
	pool *Pool
	// down is when the node's current outage was first seen, in UnixNano;
	// 0 while it answers. A call on it failed on the network, and no call
	// or probe has succeeded since.
	down atomic.Int64
	// retired is closed when the slot map stops naming the node a master,
	// as its pool is closed.
	retired chan struct{}
	// watching is set while a goroutine watches the node (watch): at
	// most one does.
	watching atomic.Bool

	err error // the failure that last found it down; guarded by Cluster.mu
}

func (n *node) isDown() bool { return n.down.Load() != 0 }

func (n *node) isRetired() bool {
	select {
	case <-n.retired:
		return true
	default:
		return false
	}
}

// nodeDown records that a call on n failed on the network with err. The
// first failure of an outage wakes the callers waiting for a change, and
// n is watched until it answers again or leaves the slot map.
func (c *Cluster) nodeDown(n *node, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n.err = err
	if !n.isDown() {
		n.down.Store(time.Now().UnixNano())
		c.notifyLocked()
	}
	if !c.closed && !n.isRetired() && n.watching.CompareAndSwap(false, true) {
		c.wg.Go(func() { c.watch(n) })
	}
}

// nodeUp records that n answered.
func (c *Cluster) nodeUp(n *node) {
	if !n.isDown() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.isDown() {
		n.down.Store(0)
		c.notifyLocked()
	}
}

// downErr is the error of a call that gave up waiting for slot s, whose
// master n is down.
func (c *Cluster) downErr(n *node, s int) error {
	c.mu.Lock()
	err := n.err
	c.mu.Unlock()
	since := time.Since(time.Unix(0, n.down.Load())).Round(time.Millisecond)
	if s < 0 {
		return fmt.Errorf("redisalive: cluster: no master reachable; %s unreachable for %v: %w", n.addr, since, err)
	}
	return fmt.Errorf("redisalive: cluster: %s, the master of slot %d, unreachable for %v: %w", n.addr, s, since, err)
}

// notifyLocked wakes every caller waiting for the slot map or a node's
// health to change.
func (c *Cluster) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// changes returns a channel closed at the next change of the slot map or
// of a node's health.
func (c *Cluster) changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// watch runs while n is down: every downRetry it refreshes the slot map and
// probes n with a PING, one probe at a time, each bounded by DialTimeout
// plus ReadTimeout. It ends when n answers, leaves the slot map, or the
// cluster closes.
func (c *Cluster) watch(n *node) {
	for {
		c.watchWhileDown(n)
		n.watching.Store(false)
		// Down again as the watch ended, and nodeDown saw it watched?
		if !n.isDown() || n.isRetired() || c.closing.Err() != nil || !n.watching.CompareAndSwap(false, true) {
			return
		}
	}
}

func (c *Cluster) watchWhileDown(n *node) {
	tick := time.NewTicker(downRetry)
	defer tick.Stop()
	var probes sync.WaitGroup
	defer probes.Wait()
	var probing atomic.Bool
	for n.isDown() && !n.isRetired() {
		c.refreshSoon()
		if probing.CompareAndSwap(false, true) {
			probes.Go(func() {
				defer probing.Store(false)
				ctx, cancel := context.WithTimeout(c.closing, c.dialTimeout+c.readTimeout)
				defer cancel()
				if _, err := n.pool.Do(ctx, "PING"); err == nil {
					c.nodeUp(n)
				}
			})
		}
		select {
		case <-tick.C:
		case <-n.retired:
		case <-c.closing.Done():
			return
		}
	}
}

// awaitNode waits while n, the node the slot map names for slot s (any
// master for -1), is down: until the map names another node for s, or
// for -1 a master is up (returned), n answers again (returned), deadline
// passes or ctx ends (an error wrapping n's failure, and ctx's error if
// ctx ended it).
func (c *Cluster) awaitNode(ctx context.Context, s int, n *node, deadline time.Time) (*node, error) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		changed := c.changes()
		next, err := c.current(s)
		if err != nil {
			return nil, err
		}
		if !next.isDown() || s >= 0 && next != n {
			return next, nil // the caller waits again if next is down too
		}
		c.refreshSoon()
		select {
		case <-changed:
		case <-timer.C:
			return nil, c.downErr(n, s)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ctx.Err(), c.downErr(n, s))
		case <-c.closing.Done():
			return nil, ErrPoolClosed
		}
	}
}

// installed retires the nodes that m, the slot map just installed, does
// not name as masters, and wakes the callers waiting for a change. A
// retired node's pool is closed in the background: gracefully if m names
// it a replica (it was demoted, and answers), and at once, cutting the
// calls in flight on it, if m names it nowhere (the cluster failed it
// over, or it left). Callers that held it go on to the slot's new master.
func (c *Cluster) installed(m *slotMap) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	for addr, n := range c.nodes {
		if m.isMaster(n) {
			continue
		}
		delete(c.nodes, addr)
		close(n.retired)
		demoted := m.hasReplica(addr)
		c.wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), c.closeBound)
			defer cancel()
			if !demoted {
				cancel() // the calls in flight are cut at once
			}
			err := n.pool.Shutdown(ctx)
			c.logger.Info("redisalive: cluster: node no longer in the slot map; its pool is closed",
				"addr", n.addr, "demoted", demoted, "err", err)
		})
	}
	c.notifyLocked()
}

// notSent reports whether err is a failure to connect, before anything
// was sent: a call may then go to another node without running twice.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
