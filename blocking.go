package redisalive

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// blockGrace is how long past a blocking command's server-side timeout the
// client keeps reading before it declares the link dead. It covers a round
// trip and the server's timer resolution, nothing more.
const blockGrace = 500 * time.Millisecond

// BRPop pops the last element of the first non-empty list among keys,
// waiting until one has an element or ctx is done. It never blocks longer
// than that: each round asks the server to wait at most BlockSlice and
// reads with a deadline of BlockSlice plus 500 ms, so a read stuck on a
// dead link comes back within one slice. A failed round closes the
// connection and retries on a fresh one with capped exponential backoff
// until ctx is done; server error replies (WRONGTYPE, ...) are returned at
// once.
//
// BRPop is at most once: an element the server popped for a round whose
// reply was lost on a dying connection is gone. Use a Queue where that
// matters. Before its first round on a new connection, BRPop kills the
// connection it abandoned (CLIENT KILL ID), so a server that still thinks
// the old connection is alive stops blocking on its behalf; what remains is
// the window between the link failing and the new connection reaching the
// server, at most one BlockSlice plus the reconnect.
//
// When ctx ends, BRPop returns within milliseconds with an error matching
// ctx's error. After Close it returns ErrPoolClosed once the current round
// ends, so an element popped in that round is still delivered.
func (p *Pool) BRPop(ctx context.Context, keys ...string) (key, value string, err error) {
	return p.blockingPop(ctx, "BRPOP", keys)
}

// BLPop is BRPop for the head of the list.
func (p *Pool) BLPop(ctx context.Context, keys ...string) (key, value string, err error) {
	return p.blockingPop(ctx, "BLPOP", keys)
}

func (p *Pool) blockingPop(ctx context.Context, cmd string, keys []string) (string, string, error) {
	if len(keys) == 0 {
		return "", "", fmt.Errorf("redisalive: %s needs at least one key", cmd)
	}
	args := make([]any, len(keys), len(keys)+1)
	for i, k := range keys {
		args[i] = k
	}
	reply, err := p.block(ctx, cmd, args)
	if err != nil {
		return "", "", err
	}
	kv, err := redis.Strings(reply, nil)
	if err != nil || len(kv) != 2 {
		return "", "", fmt.Errorf("redisalive: %s: unexpected reply %v: %w", cmd, reply, err)
	}
	return kv[0], kv[1], nil
}

// BLMove atomically moves the element at the srcSide ("LEFT" or "RIGHT")
// of src to the dstSide of dst and returns it, waiting as BRPop does. Since
// the element stays in dst until someone removes it, a reply lost on a
// dying connection loses nothing: this is the building block of Queue.
// Needs Redis 6.2 or later.
func (p *Pool) BLMove(ctx context.Context, src, dst, srcSide, dstSide string) (string, error) {
	for _, side := range []string{srcSide, dstSide} {
		if !strings.EqualFold(side, "LEFT") && !strings.EqualFold(side, "RIGHT") {
			return "", fmt.Errorf("redisalive: BLMOVE: side %q, want LEFT or RIGHT", side)
		}
	}
	reply, err := p.block(ctx, "BLMOVE", []any{src, dst, srcSide, dstSide})
	if err != nil {
		return "", err
	}
	return redis.String(reply, nil)
}

// block runs a blocking command in rounds of at most BlockSlice until it
// returns an element, ctx ends, the pool closes, or the server answers with
// an error. args are the command's arguments without its timeout.
func (p *Pool) block(ctx context.Context, cmd string, args []any) (any, error) {
	args = append(args, serverTimeout(p.cfg.blockSlice))
	readTimeout := p.cfg.blockSlice + blockGrace
	var (
		c        *conn
		failures int
		zombies  []int64 // server ids of connections abandoned mid-round
	)
	defer func() {
		if c != nil {
			p.put(c, true)
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return nil, p.wrapErr(ctx, cmd, err)
		}
		if p.closing.Err() != nil {
			return nil, ErrPoolClosed
		}
		if c == nil {
			var err error
			if c, err = p.blockingConn(ctx, &zombies); err != nil {
				if errors.Is(err, ErrPoolClosed) || ctx.Err() != nil {
					return nil, p.wrapErr(ctx, cmd, err)
				}
				failures++
				p.warnUnreachable(cmd, err, failures)
				if err := p.backoff(ctx, failures); err != nil {
					return nil, p.wrapErr(ctx, cmd, err)
				}
				continue
			}
		}
		p.counters.blockingRounds.Add(1)
		reply, err := c.run(ctx, time.Time{}, func() (any, error) {
			return redis.DoWithTimeout(c.rc, readTimeout, cmd, args...)
		})
		if err == nil {
			if failures > 0 {
				p.cfg.logger.Info("redisalive: blocking read recovered", "addr", p.cfg.addr, "cmd", cmd, "failed_rounds", failures)
				failures = 0
			}
			if reply == nil {
				continue // the slice ran out with no element: ask again
			}
			return reply, nil
		}
		if _, ok := err.(redis.Error); ok && !c.broken() {
			return nil, err
		}
		if c.clientID > 0 {
			zombies = append(zombies, c.clientID)
		}
		p.put(c, false)
		c = nil
		if ctx.Err() != nil {
			return nil, p.wrapErr(ctx, cmd, err)
		}
		failures++
		p.counters.blockingRedials.Add(1)
		p.warnUnreachable(cmd, err, failures)
		if err := p.backoff(ctx, failures); err != nil {
			return nil, p.wrapErr(ctx, cmd, err)
		}
	}
}

// blockingConn checks out a connection for blocking reads: it learns the
// connection's server id, so it can be killed if abandoned, and first kills
// the connections abandoned before it. A checkout without a context
// deadline waits PoolTimeout per attempt.
func (p *Pool) blockingConn(ctx context.Context, zombies *[]int64) (*conn, error) {
	start := time.Now()
	c, err := p.get(ctx, start, waitDeadline(ctx, start, p.cfg.poolTimeout))
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(p.cfg.readTimeout)
	if c.clientID == 0 {
		id, err := redis.Int64(c.run(ctx, deadline, func() (any, error) { return c.rc.Do("CLIENT", "ID") }))
		switch {
		case err == nil:
			c.clientID = id
		case c.broken():
			p.put(c, false)
			return nil, err
		default:
			c.clientID = -1 // the server has no CLIENT ID (miniredis): no zombie killing
		}
	}
	for _, id := range *zombies {
		// "No such client" just means the server already dropped it.
		c.run(ctx, deadline, func() (any, error) { return c.rc.Do("CLIENT", "KILL", "ID", id) })
	}
	*zombies = (*zombies)[:0]
	if c.broken() {
		p.put(c, false)
		return nil, errors.New("connection failed while killing abandoned connections")
	}
	return c, nil
}

// serverTimeout formats a blocking command's timeout in seconds: whole
// seconds as an integer, which every Redis version accepts, else a decimal
// (Redis 6+).
func serverTimeout(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10)
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}
