package redisalive

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// A pool's master can move: Sentinel promotes a replica, or a managed
// service points the pool's fixed address at the promoted replica and
// demotes the old primary. A connection to the old master is then stale as
// surely as a half-open one: writes fail with READONLY, or worse, the old
// master accepts them for seconds and throws them away when it rejoins as
// a replica.
//
// So where new connections go is a target with a generation, and every
// connection remembers the generation it was dialled under. A failover
// replaces the target with one of the next generation: idle connections of
// an older one are closed at once, those in use when returned, blocking
// reads and subscriptions on them are cut so that they go on at the new
// master, and shared AutoPipeline connections take no new commands. The
// checkout and the return check the generation; nothing else needs to know.

// target is where the pool's new connections go.
type target struct {
	addr string
	gen  uint64
	// promoted, if not nil, is closed once addr's server is a master: the
	// sentinels' leader announced it is promoting that replica, and new
	// connections wait for it rather than write to the old master.
	promoted chan struct{}
	once     sync.Once // closes promoted
	since    time.Time
	// moved ends when another target replaces this one: a dial to this one
	// under way is cut, so that it goes to the new one at once.
	moved     context.Context
	markMoved context.CancelFunc
}

func newTarget(addr string, gen uint64, promoting bool) *target {
	t := &target{addr: addr, gen: gen, since: time.Now()}
	if promoting {
		t.promoted = make(chan struct{})
	}
	t.moved, t.markMoved = context.WithCancel(context.Background())
	return t
}

// ready reports whether addr serves as a master now.
func (t *target) ready() bool {
	if t.promoted == nil {
		return true
	}
	select {
	case <-t.promoted:
		return true
	default:
		return false
	}
}

// current is the target new connections go to.
func (p *Pool) current() *target { return p.target.Load() }

// stale reports whether c was dialled under an earlier target than the
// current one.
func (p *Pool) stale(c *conn) bool { return c.gen != p.current().gen }

// promotionWait bounds how long the pool waits for a replica the leader
// announced it is promoting, before it asks the sentinels again.
const promotionWait = 5 * time.Second

// switchTo makes addr the pool's master: a target of the next generation,
// being promoted or serving already, unless the current target is addr in
// the same state. It reports whether it switched. from, if not empty, is
// the address the switch moves away from: a switch announced for another
// master than the current one is stale news and ignored.
func (p *Pool) switchTo(addr, from string, promoting bool, why string) bool {
	for {
		old := p.current()
		if from != "" && old.addr != from {
			return false
		}
		if old.addr == addr && (promoting || old.ready()) {
			if !promoting && old.promoted != nil {
				old.markPromoted()
			}
			return false
		}
		t := newTarget(addr, old.gen+1, promoting)
		if !p.target.CompareAndSwap(old, t) {
			continue
		}
		old.markMoved()
		p.zombies.moveTo(addr)
		p.counters.failovers.Add(1)
		p.cfg.logger.Info("redisalive: master moved", "master", p.cfg.addr, "from", old.addr, "to", addr, "promoting", promoting, "why", why)
		p.each(func(h *Hook) {
			if h.Failover != nil {
				h.Failover(old.addr, addr)
			}
		})
		p.dropStale()
		if promoting {
			p.goBackground(func() { p.awaitPromotion(t) })
		}
		return true
	}
}

// markPromoted closes t.promoted, once.
func (t *target) markPromoted() { t.once.Do(func() { close(t.promoted) }) }

// demote moves the pool off the server of c, which answered that it is no
// longer the master: with Sentinel to where the sentinels now point, else
// to the same address under a new generation, where a new connection may
// reach the promoted replica. It does nothing if c is stale already (the
// pool has moved) or was never dialled to a master (a pool pointed at a
// replica on purpose). It reports whether a command that failed on c may be
// sent again on a new connection.
func (p *Pool) demote(ctx context.Context, c *conn, why string) bool {
	if c.role != roleMaster {
		return false
	}
	if p.stale(c) {
		return true
	}
	if p.sentinel != nil {
		p.sentinel.refresh(ctx, why)
	}
	if cur := p.current(); cur.gen == c.gen {
		p.bumpGen(cur, why) // the same address: a new connection may reach the new master
	}
	return true
}

// bumpGen moves the pool to a new generation of the same target.
func (p *Pool) bumpGen(old *target, why string) {
	t := newTarget(old.addr, old.gen+1, false)
	if !p.target.CompareAndSwap(old, t) {
		return // moved meanwhile
	}
	old.markMoved()
	p.counters.failovers.Add(1)
	p.cfg.logger.Info("redisalive: master demoted under its address; reconnecting", "addr", old.addr, "why", why)
	p.each(func(h *Hook) {
		if h.Failover != nil {
			h.Failover(old.addr, old.addr)
		}
	})
	p.dropStale()
}

// dropStale closes the idle connections of earlier targets, cuts the
// blocking reads and subscriptions waiting on them so that they go on at
// the current one, and ends the shared connections to them, whose queued
// commands go to new ones.
func (p *Pool) dropStale() {
	gen := p.current().gen
	p.mu.Lock()
	var idle []*conn
	kept := p.idle[:0]
	for _, c := range p.idle {
		if c.gen != gen {
			idle = append(idle, c)
			p.forgetLocked(c)
		} else {
			kept = append(kept, c)
		}
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	var waiting []*conn
	for c := range p.all {
		if c.gen != gen && c.waiting.Load() {
			waiting = append(waiting, c)
		}
	}
	p.mu.Unlock()
	for _, c := range idle {
		p.noteClose(CloseStale)
		c.close()
	}
	for _, c := range waiting {
		c.nc.abort()
	}
	for i := range p.pipes {
		if pl := p.pipes[i].pl.Load(); pl != nil && pl.c.gen != gen {
			pl.end(errRequeue)
		}
	}
}

// awaitPromotion watches a replica the leader announced it is promoting,
// with a ROLE every promotionPoll on a connection of its own, until it is a
// master, another target replaces it, or promotionWait passes: the pool
// then asks the sentinels where the master is.
func (p *Pool) awaitPromotion(t *target) {
	tick := time.NewTicker(promotionPoll)
	defer tick.Stop()
	giveUp := time.NewTimer(promotionWait)
	defer giveUp.Stop()
	var c *conn
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	for !t.ready() && p.current() == t {
		select {
		case <-p.closing.Done():
			return
		case <-t.promoted:
			return
		case <-giveUp.C:
			p.sentinel.refresh(p.closing, "the promoted replica did not become a master within "+promotionWait.String())
			return
		case <-tick.C:
		}
		now := time.Now()
		if c == nil {
			var err error
			if c, err = p.cfg.connect(p.closing, t.addr, now.Add(p.cfg.dialTimeout), now); err != nil {
				continue
			}
			if c.role != roleMaster {
				continue
			}
		} else if role, err := c.run(p.closing, now.Add(p.cfg.readTimeout), func() (any, error) { return c.rc.Do("ROLE") }); err != nil {
			c.close()
			c = nil
			continue
		} else if roleOf(role) != roleMaster {
			continue
		}
		t.markPromoted()
		p.cfg.logger.Info("redisalive: promoted replica serves as master", "master", p.cfg.addr, "addr", t.addr,
			"after", time.Since(t.since).Round(time.Millisecond))
	}
}

// promotionPoll is how often awaitPromotion asks the replica for its role.
const promotionPoll = 10 * time.Millisecond

// errNotMaster is what a dial reports when the server it reached is not
// the master the pool wants.
var errNotMaster = errors.New("redisalive: the server is not a master")

// openConn dials a connection to the current target, before waitDeadline.
// With Sentinel it keeps at it while the master is unreachable, is not a
// master, or is being promoted, asking the sentinels between tries: a
// checkout during a failover waits for the new master rather than fail.
func (p *Pool) openConn(ctx context.Context, waitDeadline time.Time) (*conn, error) {
	if p.sentinel != nil {
		p.sentinel.start()
	}
	for try := 1; ; try++ {
		t := p.current()
		if t.addr == "" {
			// Not asked yet: the sentinels' answer is the first target.
			err := p.sentinel.refresh(ctx, "first connection")
			if errors.Is(err, ErrMisconfigured) || ctxErr(ctx) != nil || !time.Now().Before(waitDeadline) {
				return nil, err
			}
			if err != nil {
				wctx, cancel := context.WithDeadline(ctx, waitDeadline)
				werr := backoffWait(wctx, p.closing, try+1)
				cancel()
				if werr != nil {
					return nil, err
				}
			}
			continue
		}
		if !t.ready() {
			if err := waitClosed(ctx, t.promoted, waitDeadline); err != nil {
				return nil, fmt.Errorf("waiting for %s to be promoted to master: %w", t.addr, err)
			}
			continue
		}
		now := time.Now()
		deadline := now.Add(p.cfg.dialTimeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		dctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(t.moved, cancel)
		c, err := p.cfg.connect(dctx, t.addr, deadline, now)
		stop()
		cancel()
		if err != nil && ctxErr(ctx) == nil && t.moved.Err() != nil {
			continue // cut by a move: to the new master at once
		}
		if err == nil && p.sentinel != nil && c.role != roleMaster {
			c.close()
			err = fmt.Errorf("%w: %s answered ROLE %q", errNotMaster, t.addr, c.role)
		}
		if p.hooks.Load() != nil {
			took := time.Since(now)
			p.each(func(h *Hook) {
				if h.Dial != nil {
					h.Dial(ctx, took, err)
				}
			})
		}
		if err == nil {
			c.gen = t.gen
			return c, nil
		}
		if !canceled(ctx) { // a caller that gave up is no dial error
			p.counters.dialErrors.Add(1)
		}
		if p.sentinel == nil || ctxErr(ctx) != nil || !time.Now().Before(waitDeadline) || p.closing.Err() != nil {
			return nil, err
		}
		if p.current() == t {
			p.sentinel.refresh(ctx, err.Error())
		}
		if p.current() == t {
			// The wait ends early if the master moves meanwhile: the
			// sentinels' announcement beats the next try.
			wctx, cancel := context.WithDeadline(ctx, waitDeadline)
			stop := context.AfterFunc(t.moved, cancel)
			werr := backoffWait(wctx, p.closing, try+1)
			stop()
			cancel()
			if werr != nil && t.moved.Err() == nil {
				return nil, err
			}
		}
	}
}

// waitClosed waits for ch to close, bounded by ctx and deadline.
func waitClosed(ctx context.Context, ch chan struct{}, deadline time.Time) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return context.DeadlineExceeded
	}
}

// isDemotion reports whether a server's error reply says it is no longer
// the master: READONLY for a write, or, for a blocked read, -UNBLOCKED with
// "instance state changed" (Redis 7 ends blocked reads so when a master
// becomes a replica).
func isDemotion(err error) bool {
	if err == nil {
		return false // before errors.As, whose target escapes: no allocation on success
	}
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	s := string(re)
	return strings.HasPrefix(s, "READONLY") || strings.HasPrefix(s, "UNBLOCKED") && strings.Contains(s, "instance state changed")
}
