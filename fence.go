package redisalive

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// A connection abandoned after a failure, with a command written but
// unanswered, is a hazard until the server has dropped it: a middlebox, or
// a server too busy to read it yet, may still hold that command, and run
// it after a later one sent on another connection. A caller whose SET
// failed and whose next SET succeeded would then read its older value back
// (TestAFailedWriteHeldByAMiddleboxNeverLandsAfterALaterAcknowledgedOne). It is also a
// connection the server may keep ESTABLISHED forever: the reset that closed
// it may have been lost on the dead link, and a server with tcp-keepalive
// 0 never probes.
//
// So the pool fences: every connection it abandons after a failure is a
// zombie until the server has answered a CLIENT KILL ID for it, and every
// command sent after the failure goes out on a connection that has killed
// every zombie first (a checkout kills them in one round trip), so the
// server has dropped the old connection before it runs anything new. A
// kill names the server by its run_id as well as the connection by its id:
// ids restart at 1 when a server restarts, and killing an id on another
// server could kill an innocent connection.

// maxZombies bounds the zombies remembered. Only a mass failure of more
// connections than this at once loses some, and with them their fence.
const maxZombies = 1024

// fenceTries bounds the connections a checkout tries to fence on before it
// gives up: a kill fails only when its connection does.
const fenceTries = 3

// A zombie on a server the pool has left (a failover moved it) cannot be
// killed through the pool's connections: the health checker dials that
// server for it, every reapEvery at most, until zombieLifetime has passed.
const (
	reapEvery      = 2 * time.Second
	zombieLifetime = 10 * time.Minute
)

// zombie is a connection abandoned after a failure, named as its server
// knows it.
type zombie struct {
	addr   string // where it was dialled
	server string // the server's run_id
	id     int64  // the connection's CLIENT ID there
	since  time.Time
}

// zombies are the connections a pool abandoned after a failure and has not
// yet killed on their server.
type zombies struct {
	n         atomic.Int64 // zombies at the pool's current address: the check on every command
	elsewhere atomic.Int64 // zombies at other addresses, for the health checker
	off       atomic.Bool  // the server refused CLIENT KILL: fencing is impossible

	mu   sync.Mutex // guards the fields below
	here string     // the pool's current address
	list []zombie
}

// pending reports whether a command must be fenced before it is sent.
func (z *zombies) pending() bool { return z != nil && z.n.Load() > 0 }

// add records an abandoned connection. It runs before the failure is
// reported to anyone, so that every command sent because of that report
// is fenced.
func (z *zombies) add(c *conn) {
	if z == nil || c.clientID <= 0 || c.runID == "" || z.off.Load() || !c.abandoned.CompareAndSwap(false, true) {
		return
	}
	z.mu.Lock()
	if len(z.list) == maxZombies {
		z.list = append(z.list[:0], z.list[1:]...)
	}
	z.list = append(z.list, zombie{addr: c.addr, server: c.runID, id: c.clientID, since: time.Now()})
	z.countLocked()
	z.mu.Unlock()
}

// countLocked updates the counts after a change of list or here.
func (z *zombies) countLocked() {
	var n int64
	for _, zb := range z.list {
		if zb.addr == z.here {
			n++
		}
	}
	z.n.Store(n)
	z.elsewhere.Store(int64(len(z.list)) - n)
}

// moveTo records where the pool's connections go now: zombies elsewhere no
// longer hold up its commands.
func (z *zombies) moveTo(addr string) {
	z.mu.Lock()
	z.here = addr
	z.countLocked()
	z.mu.Unlock()
}

// keep keeps the zombies for which keep returns true.
func (z *zombies) keep(keep func(zb zombie) bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	kept := z.list[:0]
	for _, zb := range z.list {
		if keep(zb) {
			kept = append(kept, zb)
		}
	}
	clear(z.list[len(kept):])
	z.list = kept
	z.countLocked()
}

// on returns the ids of the zombies at addr on the server whose run_id is
// server. It forgets those at addr on another server: the address leads
// elsewhere now (the server restarted, or a managed endpoint moved), so
// they can be neither killed through it nor a hazard to commands sent
// there.
func (z *zombies) on(addr, server string) []int64 {
	var ids []int64
	z.keep(func(zb zombie) bool {
		if zb.addr != addr {
			return true
		}
		if zb.server == server {
			ids = append(ids, zb.id)
		}
		return zb.server == server
	})
	return ids
}

// killed forgets the zombies whose kill the server has answered.
func (z *zombies) killed(server string, ids []int64) {
	z.keep(func(zb zombie) bool { return zb.server != server || !slices.Contains(ids, zb.id) })
}

// away returns the addresses, other than the current one, where zombies
// are, forgetting those older than zombieLifetime.
func (z *zombies) away() []string {
	old := time.Now().Add(-zombieLifetime)
	z.keep(func(zb zombie) bool { return zb.since.After(old) })
	z.mu.Lock()
	defer z.mu.Unlock()
	var addrs []string
	for _, zb := range z.list {
		if zb.addr != z.here && !slices.Contains(addrs, zb.addr) {
			addrs = append(addrs, zb.addr)
		}
	}
	return addrs
}

// disable gives up fencing for good, for a server that refuses CLIENT KILL.
func (z *zombies) disable() {
	z.off.Store(true)
	z.keep(func(zombie) bool { return false })
}

// reapAway kills the zombies on servers the pool has left, dialling each
// for it, bounded by ctx and DialTimeout and ReadTimeout: a failover leaves
// the old master's zombies there, which no connection of the pool reaches.
// An address it cannot reach is tried again at a later pass.
func (p *Pool) reapAway(ctx context.Context) {
	for _, addr := range p.zombies.away() {
		// Bounded by reapEvery too: a former master still unreachable is
		// tried again at the next pass.
		now := time.Now()
		c, err := p.cfg.connect(ctx, addr, now.Add(min(p.cfg.dialTimeout, reapEvery)), now)
		if err != nil {
			continue
		}
		if err := p.fence(ctx, c); err != nil {
			p.cfg.logger.Debug("redisalive: killing the connections abandoned on a former master failed", "addr", addr, "err", err)
		}
		c.close()
	}
}

// reapSoon starts reapAway on a goroutine of its own, unless one runs or
// there is nothing to reap; the health checker calls it every reapEvery.
func (p *Pool) reapSoon() {
	if p.zombies.elsewhere.Load() == 0 || !p.reaping.CompareAndSwap(false, true) {
		return
	}
	if !p.goBackground(func() {
		defer p.reaping.Store(false)
		p.reapAway(p.closing)
	}) {
		p.reaping.Store(false)
	}
}

// fenceAtClose kills the zombies left at Close, so that the pool leaves no
// connection open on the server: through an idle connection, or one dialled
// for it, bounded by ctx, DialTimeout and ReadTimeout. Failing is only
// logged: the pool is closing either way.
func (p *Pool) fenceAtClose(ctx context.Context, idle []*conn) {
	p.reapAway(ctx)
	if !p.zombies.pending() {
		return
	}
	var c *conn
	if len(idle) > 0 {
		c = idle[len(idle)-1]
	} else {
		now := time.Now()
		deadline := now.Add(p.cfg.dialTimeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		var err error
		if c, err = p.cfg.connect(ctx, p.current().addr, deadline, now); err != nil {
			p.cfg.logger.Warn("redisalive: closing: cannot reach the server to kill the connections abandoned after a failure",
				"addr", p.cfg.addr, "err", err)
			return
		}
		defer c.close()
	}
	if err := p.fence(ctx, c); err != nil {
		p.cfg.logger.Warn("redisalive: closing: killing the connections abandoned after a failure failed",
			"addr", p.cfg.addr, "err", err)
	}
}

// fence kills, through c, every zombie on c's server, in one round trip,
// bounded by ctx and ReadTimeout. An error means c failed and must be
// closed; a server that refuses the kill (an ACL without CLIENT KILL, a
// proxy) turns fencing off with a warning rather than failing anyone.
func (p *Pool) fence(ctx context.Context, c *conn) error {
	if c.clientID <= 0 || c.runID == "" {
		return nil // a server without CLIENT ID has no zombies
	}
	ids := p.zombies.on(c.addr, c.runID)
	if len(ids) == 0 {
		return nil
	}
	replies, err := redis.Values(c.run(ctx, time.Now().Add(p.cfg.readTimeout), func() (any, error) {
		for _, id := range ids {
			if err := c.rc.Send("CLIENT", "KILL", "ID", id); err != nil {
				return nil, err
			}
		}
		return c.rc.Do("")
	}))
	if err != nil {
		return err
	}
	var killed int64
	for _, r := range replies {
		n, isCount := r.(int64)
		killed += n
		if !isCount {
			p.zombies.disable()
			p.cfg.logger.Warn("redisalive: the server refuses CLIENT KILL; connections abandoned after a failure "+
				"are left to its timeout, and a command written into one may still run after later commands",
				"addr", p.cfg.addr, "reply", strings.TrimSpace(fmt.Sprint(r)))
			return nil
		}
	}
	p.counters.zombiesKilled.Add(killed)
	p.zombies.killed(c.runID, ids)
	return nil
}
