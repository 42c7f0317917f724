package redisalive

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"
)

// minHealthWake keeps the checker from spinning when work falls due in a
// burst.
const minHealthWake = 10 * time.Millisecond

// peekEvery is how often the checker peeks at each idle connection. A peek
// costs one non-blocking syscall and no network traffic, and it finds a
// connection the server closed, so that such a socket spends about a
// second in CLOSE_WAIT rather than HealthCheckInterval.
const peekEvery = time.Second

// verdict is what an idle connection needs at a given moment.
type verdict uint8

const (
	keepIt         verdict = iota // nothing is due
	peekIt                        // a peek is due (the checker's; a checkout peeks unless freshReply spares it)
	pingIt                        // quiet for HealthCheckInterval: prove it with a PING
	expireIdle                    // idle past IdleTimeout
	expireLifetime                // older than MaxConnLifetime
)

// judge is the pool's one health rule, used by checkout and the checker
// alike: what c needs at now, and when it next needs anything.
func (cfg *config) judge(c *conn, now time.Time) (verdict, time.Time) {
	var lifeEnd time.Time
	if cfg.maxLifetime > 0 {
		lifeEnd = c.createdAt.Add(cfg.maxLifetime)
	}
	idleEnd := c.returnedAt.Add(cfg.idleTimeout)
	pingAt := c.lastActive().Add(cfg.healthInterval)
	peekAt := c.peekedAt.Add(peekEvery)
	switch {
	case !lifeEnd.IsZero() && !now.Before(lifeEnd):
		return expireLifetime, time.Time{}
	case !now.Before(idleEnd):
		return expireIdle, time.Time{}
	case !now.Before(pingAt):
		return pingIt, time.Time{}
	case !now.Before(peekAt):
		return peekIt, time.Time{}
	}
	return keepIt, earliest(peekAt, pingAt, idleEnd, lifeEnd)
}

func (v verdict) closeReason() CloseReason {
	if v == expireLifetime {
		return CloseLifetime
	}
	return CloseIdle
}

// expiry is an idle connection the health checker closes without a round
// trip, and why.
type expiry struct {
	c      *conn
	reason CloseReason
}

// planHealth is the health checker's pure step: given the idle list at now,
// it splits off the connections to close, to PING and to peek, keeps the
// rest in their order, and says when the next connection falls due. It
// reuses idle's backing array for keep.
func planHealth(cfg *config, idle []*conn, now time.Time) (keep, peek, ping []*conn, expired []expiry, next time.Time) {
	next = now.Add(cfg.healthInterval)
	keep = idle[:0]
	for _, c := range idle {
		switch v, due := cfg.judge(c, now); v {
		case expireIdle, expireLifetime:
			expired = append(expired, expiry{c, v.closeReason()})
		case pingIt:
			ping = append(ping, c)
		case peekIt:
			peek = append(peek, c)
		default:
			keep = append(keep, c)
			next = earliest(next, due)
		}
	}
	clear(idle[len(keep):])
	return keep, peek, ping, expired, next
}

func earliest(t time.Time, ts ...time.Time) time.Time {
	for _, u := range ts {
		if !u.IsZero() && u.Before(t) {
			t = u
		}
	}
	return t
}

// healthLoop runs the checker until the pool closes.
func (p *Pool) healthLoop() {
	defer p.wg.Done()
	first := min(p.cfg.healthInterval, peekEvery)
	if p.cfg.leakThreshold > 0 {
		first = min(first, p.cfg.leakThreshold)
	}
	timer := time.NewTimer(first)
	defer timer.Stop()
	for {
		select {
		case <-p.closing.Done():
			return
		case <-timer.C:
		}
		next := p.healthPass(time.Now())
		timer.Reset(max(time.Until(next), minHealthWake))
	}
}

// healthPass runs one step: it takes the connections due for attention out
// of the idle list, so no caller can check one out mid-check, closes, peeks
// at or PINGs them outside the lock, puts the healthy ones back, reports
// leaks, and returns the next wake-up.
func (p *Pool) healthPass(now time.Time) time.Time {
	p.mu.Lock()
	keep, peek, ping, expired, next := planHealth(&p.cfg, p.idle, now)
	p.idle = keep
	leaks, leakNext := p.leaksLocked(now)
	p.mu.Unlock()

	for _, e := range expired {
		p.discard(e.c, e.reason)
	}
	// A peek is cheaper than a PING and tells a closed connection as
	// surely, so connections due a PING are peeked first too. What was
	// checked falls due again later: a PING, say, just after a peek.
	peek = p.peekAll(peek, now)
	ping = p.ping(p.peekAll(ping, now), now)
	for _, checked := range [][]*conn{peek, ping} {
		for _, c := range checked {
			_, due := p.cfg.judge(c, now)
			next = earliest(next, due)
		}
	}
	p.putBack(peek)
	p.putBack(ping) // last, to the bottom: the least recently used
	if p.pipes != nil {
		p.checkShared(now)
		next = earliest(next, now.Add(peekEvery))
	}
	if p.zombies.elsewhere.Load() > 0 {
		// Zombies left on a former master: reached by a dial of their own.
		if !now.Before(p.lastReap.Add(reapEvery)) {
			p.lastReap = now
			p.reapSoon()
		}
		next = earliest(next, p.lastReap.Add(reapEvery))
	}

	for _, l := range leaks {
		p.cfg.logger.Warn("redisalive: connection held longer than LeakDetectionThreshold",
			"addr", p.cfg.addr, "held", l.held.Round(time.Millisecond), "checked_out_at", l.stack)
	}
	return earliest(next, leakNext)
}

// peekAll peeks at each connection, closes the dead ones and returns the
// rest in their order.
func (p *Pool) peekAll(conns []*conn, now time.Time) []*conn {
	alive := conns[:0]
	for _, c := range conns {
		if c.checkIdle(now) != nil {
			p.discard(c, CloseDead)
			continue
		}
		alive = append(alive, c)
	}
	clear(conns[len(alive):])
	return alive
}

// ping checks idle connections with one PING each, sent to all of them
// before any reply is read, so the pass takes one ReadTimeout however many
// connections are dead; it closes the dead ones and returns the rest.
// Closing the pool interrupts it.
func (p *Pool) ping(conns []*conn, now time.Time) []*conn {
	if len(conns) == 0 {
		return nil
	}
	p.counters.healthChecks.Add(int64(len(conns)))
	deadline := now.Add(p.cfg.readTimeout)
	stop := context.AfterFunc(p.closing, func() {
		for _, c := range conns {
			c.nc.abort()
		}
	})
	sent := make([]bool, len(conns))
	for i, c := range conns {
		c.nc.setLimit(deadline)
		sent[i] = c.rc.Send("PING") == nil && c.rc.Flush() == nil
	}
	var alive []*conn
	for i, c := range conns {
		if sent[i] {
			_, err := c.rc.Receive()
			sent[i] = err == nil
		}
		c.nc.setLimit(time.Time{})
		if sent[i] {
			c.pingedAt = now
			alive = append(alive, c)
		} else {
			p.discard(c, CloseDead)
		}
	}
	if !stop() {
		// Close interrupted the pass: no socket here is trustworthy now.
		for _, c := range alive {
			c.aborted.Store(true)
		}
	}
	return alive
}

// putBack returns checked connections to the idle list. They are the least
// recently used, so they go to the bottom of the stack, in their order.
// MaxIdle may have filled while they were out.
func (p *Pool) putBack(conns []*conn) {
	if len(conns) == 0 {
		return
	}
	p.mu.Lock()
	var reject []*conn
	maxIdle, stale := 0, 0 // rejected for want of room, or for a failover, rather than for closing
	for i := len(conns) - 1; i >= 0; i-- {
		c := conns[i]
		switch {
		case c.aborted.Load():
			reject = append(reject, c) // Close interrupted its check
		case p.stale(c):
			reject = append(reject, c)
			stale++
		case !p.putIdleLocked(c, true):
			reject = append(reject, c)
			if !p.closed {
				maxIdle++
			}
		}
	}
	for _, c := range reject {
		p.forgetLocked(c)
	}
	p.mu.Unlock()
	for range maxIdle {
		p.noteClose(CloseMaxIdle)
	}
	for range stale {
		p.noteClose(CloseStale)
	}
	for _, c := range reject {
		c.close()
	}
}

// leak is a connection held past LeakDetectionThreshold.
type leak struct {
	held  time.Duration
	stack string
}

// leaksLocked finds connections newly held past the threshold and returns
// them with the next time one could cross it.
func (p *Pool) leaksLocked(now time.Time) (leaks []leak, next time.Time) {
	if p.cfg.leakThreshold == 0 {
		return nil, time.Time{}
	}
	for c := range p.all {
		if c.checkedOutAt.IsZero() || c.leakReported {
			continue
		}
		due := c.checkedOutAt.Add(p.cfg.leakThreshold)
		if now.Before(due) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		c.leakReported = true
		p.counters.leaks.Add(1)
		leaks = append(leaks, leak{held: now.Sub(c.checkedOutAt), stack: formatStack(c.stack)})
	}
	if next.IsZero() {
		next = now.Add(p.cfg.leakThreshold)
	}
	return leaks, next
}

func formatStack(pcs []uintptr) string {
	var b strings.Builder
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		fmt.Fprintf(&b, "%s\n\t%s:%d\n", f.Function, f.File, f.Line)
		if !more {
			return b.String()
		}
	}
}
