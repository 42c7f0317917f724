package redisalive

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

const (
	// blockGrace is how long past a round's server-side timeout the client
	// keeps reading before it declares the link dead. It covers a round
	// trip and the server's timer, which fires on its 100 ms cron (hz 10),
	// nothing more.
	blockGrace = 500 * time.Millisecond

	// blockCtxMargin is how long before the caller's deadline a round's
	// server-side timeout is made to end, so that its empty reply arrives
	// before the deadline cuts the read: a context deadline then ends a
	// blocking call without costing its connection. It exceeds the server
	// timer's lateness with room for the round trip.
	blockCtxMargin = 200 * time.Millisecond
)

// BRPop pops the last element of the first non-empty list among keys,
// waiting until one has an element or ctx is done. It never blocks longer
// than that: each round asks the server to wait at most BlockSlice and
// reads with a deadline of BlockSlice plus 500 ms, so a read stuck on a
// dead link comes back within one slice. A failed round closes the
// connection and retries on a fresh one with capped exponential backoff
// until ctx is done, and so does a failed dial (nothing listening, say),
// warning through Options.Logger meanwhile; the error that ends the call
// then carries the last connection error. Server error replies (WRONGTYPE,
// ...) are returned at once, as is a new connection the server refuses
// for the pool's configuration: a *DialError matching ErrMisconfigured.
//
// BRPop is at most once: an element the server popped for a round whose
// reply was lost on a dying connection is gone. Use a Queue where that
// matters. Before its first round on a new connection, BRPop kills the
// connection it abandoned (CLIENT KILL ID), so a server that still thinks
// the old connection is alive stops blocking on its behalf; what remains is
// the window between the link failing and the new connection reaching the
// server, at most one BlockSlice plus the reconnect.
//
// When ctx is cancelled, BRPop returns within milliseconds with an error
// matching ctx's error; a ctx deadline ends the last round just before it,
// so the connection is kept. After Close it returns ErrPoolClosed once the
// current round ends, so an element popped in that round is still
// delivered.
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
	reply, err := p.blockForever(ctx, cmd, append(args, 0))
	if err != nil {
		return "", "", err
	}
	return popReply(cmd, reply)
}

// popReply reads the [key, value] reply of BRPOP or BLPOP.
func popReply(cmd string, reply any) (key, value string, err error) {
	kv, err := redis.Strings(reply, nil)
	if err != nil {
		return "", "", fmt.Errorf("redisalive: %s: unexpected reply %v: %w", cmd, reply, err)
	}
	if len(kv) != 2 {
		return "", "", fmt.Errorf("redisalive: %s: got a reply of %d elements, want key and value", cmd, len(kv))
	}
	return kv[0], kv[1], nil
}

// BLMove atomically moves the element at the srcSide ("LEFT" or "RIGHT")
// of src to the dstSide of dst and returns it, waiting as BRPop does. Since
// the element stays in dst until someone removes it, a reply lost on a
// dying connection loses nothing: this is the building block of Queue.
// Needs Redis 6.2 or later.
func (p *Pool) BLMove(ctx context.Context, src, dst, srcSide, dstSide string) (string, error) {
	if err := checkSides(srcSide, dstSide); err != nil {
		return "", err
	}
	reply, err := p.blockForever(ctx, "BLMOVE", []any{src, dst, srcSide, dstSide, 0})
	if err != nil {
		return "", err
	}
	return redis.String(reply, nil)
}

// checkSides rejects a BLMOVE side other than LEFT or RIGHT before it is
// sent.
func checkSides(sides ...string) error {
	for _, side := range sides {
		if !strings.EqualFold(side, "LEFT") && !strings.EqualFold(side, "RIGHT") {
			return fmt.Errorf("redisalive: BLMOVE: side %q, want LEFT or RIGHT", side)
		}
	}
	return nil
}

// blockForever runs a blocking command whose last argument is a timeout of
// 0: until an element arrives.
func (p *Pool) blockForever(ctx context.Context, cmd string, args []any) (any, error) {
	if ctx == nil {
		return nil, ErrNilContext
	}
	spec := blockSpec{kind: blockPop, arg: len(args) - 1, unit: time.Second}
	return p.runBlocking(ctx, newBlockingCall(cmd, args, spec, 0, time.Now()))
}

// runBlocking runs b on p under the Command hooks.
func (p *Pool) runBlocking(ctx context.Context, b *blockingCall) (any, error) {
	return p.underHooks(ctx, b.cmd, func(ctx context.Context) (any, error) { return p.block(ctx, b) })
}

// blockingCall is one blocking command run in rounds: each round is the
// command with its timeout replaced by at most one BlockSlice, re-issued
// while its reply says the time ran out, until the caller's own block time
// is used up. Re-issuing is equivalent to one long block because every
// command in the table is idempotent when it times out, except XREAD with
// "$", whose IDs are pinned to the streams' last entries before the first
// round.
type blockingCall struct {
	cmd    string
	args   []any // the caller's, copied: rounds rewrite the timeout
	spec   blockSpec
	total  time.Duration // the block time asked for; 0: until a reply
	start  time.Time
	sent   bool // a round has been sent
	pinned bool // XREAD's "$" IDs are resolved

	// retryHere, if set, is told of a round that failed on the network,
	// or of a failed dial, and asked whether to retry on this pool; if
	// not, the call ends with that failure, for its caller to go on
	// elsewhere.
	retryHere func(err error) bool
}

func newBlockingCall(cmd string, args []any, spec blockSpec, total time.Duration, now time.Time) *blockingCall {
	return &blockingCall{cmd: cmd, args: append([]any(nil), args...), spec: spec, total: total, start: now}
}

// roundPlan is what a blocking call does next.
type roundPlan uint8

const (
	planRound    roundPlan = iota // send a round
	planTimedOut                  // the block time is used up: return the last round's reply
	planAwaitCtx                  // the ctx deadline is too close for a round to end before it
)

// plan decides the next round at now: its server-side wait, or why there
// is none. The first round is always sent, however short, so that an
// element already waiting is returned even to a caller in a hurry.
func (b *blockingCall) plan(now, ctxDeadline time.Time, slice time.Duration, first bool) (time.Duration, roundPlan) {
	wait := slice
	if b.total > 0 {
		if b.usedUp(now) && !first {
			return 0, planTimedOut
		}
		wait = min(wait, b.start.Add(b.total).Sub(now))
	}
	if !ctxDeadline.IsZero() {
		if room := ctxDeadline.Sub(now) - blockCtxMargin; room < wait {
			if room < time.Millisecond && !first {
				return 0, planAwaitCtx
			}
			wait = room
		}
	}
	// XREAD and WAIT take whole milliseconds.
	return max(ceilMillis(wait), time.Millisecond), planRound
}

// ceilMillis rounds a positive d up to whole milliseconds.
func ceilMillis(d time.Duration) time.Duration {
	if r := d % time.Millisecond; r > 0 {
		d += time.Millisecond - r
	}
	return d
}

// ends reports whether a round's reply ends the wait, that is, anything
// but the reply of a round whose time ran out.
func (b *blockingCall) ends(reply any) bool {
	switch b.spec.kind {
	case blockWait:
		got, ok := reply.(int64)
		want, _ := argFloat(b.args[0])
		return !ok || float64(got) >= want
	case blockWaitAOF:
		got, ok := reply.([]any)
		if !ok || len(got) != 2 {
			return true
		}
		local, ok1 := got[0].(int64)
		replicas, ok2 := got[1].(int64)
		wantLocal, _ := argFloat(b.args[0])
		wantReplicas, _ := argFloat(b.args[1])
		return !ok1 || !ok2 || float64(local) >= wantLocal && float64(replicas) >= wantReplicas
	}
	return reply != nil
}

// usedUp reports whether a finite block time has run out at now.
func (b *blockingCall) usedUp(now time.Time) bool {
	return b.total > 0 && !now.Before(b.start.Add(b.total))
}

// redialable reports whether a round that failed may be retried on a new
// connection. WAIT and WAITAOF count the acknowledgements of the writes
// made on their own connection: on another one they would mean nothing.
func (b *blockingCall) redialable() bool {
	return b.spec.kind != blockWait && b.spec.kind != blockWaitAOF
}

// rounds runs b on c until a round's reply ends the wait (that reply is
// returned), the block time is used up (the last round's reply is
// returned), ctx ends, the pool closes, or a round fails (its error is
// returned; the caller decides whether to retry elsewhere).
func (p *Pool) rounds(ctx context.Context, c *conn, b *blockingCall) (any, error) {
	var last any
	for {
		if err := ctxErr(ctx); err != nil {
			return nil, err
		}
		if p.closing.Err() != nil {
			return nil, ErrPoolClosed
		}
		ctxDeadline, _ := ctx.Deadline()
		wait, plan := b.plan(time.Now(), ctxDeadline, p.cfg.blockSlice, !b.sent)
		switch plan {
		case planTimedOut:
			return last, nil // the server's own "time ran out" reply
		case planAwaitCtx:
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-p.closing.Done():
				return nil, ErrPoolClosed
			}
		}
		if b.spec.kind == blockXRead && !b.pinned && (b.total == 0 || b.total > wait) {
			if err := b.pinLastIDs(ctx, c, p.cfg.readTimeout); err != nil {
				return nil, err
			}
		}
		b.sent = true
		b.args[b.spec.arg] = formatTimeout(wait, b.spec.unit)
		p.counters.blockingRounds.Add(1)
		// Without a ctx deadline, the round's cap: its wait, then a reply
		// that may trickle in for at most replyCap.
		var roundCap time.Time
		if ctxDeadline.IsZero() {
			roundCap = time.Now().Add(wait + blockGrace + replyCap(p.cfg.readTimeout))
		}
		c.waiting.Store(true) // a failover cuts the round: it goes on at the new master
		reply, err := c.run(ctx, roundCap, func() (any, error) {
			// Once the server has begun to answer, silence means a dead
			// link or a peer out of step, not a wait.
			return c.rc.DoWithTimeouts(wait+blockGrace, p.cfg.readTimeout, b.cmd, b.args...)
		})
		c.waiting.Store(false)
		if err != nil {
			return reply, err
		}
		if b.ends(reply) {
			return reply, nil
		}
		last = reply
	}
}

// pinLastIDs replaces each "$" among XREAD's IDs with the last ID of its
// stream ("0-0" if it has none), so that a re-issued round does not miss
// what was added between two rounds. The lookups share one round trip.
func (b *blockingCall) pinLastIDs(ctx context.Context, c *conn, readTimeout time.Duration) error {
	b.pinned = true
	keys, ids, ok := xreadStreams(b.args, 0)
	if !ok {
		return nil // malformed: the server will say so
	}
	var dollars []int
	for i, id := range ids {
		if argIs(id, "$") {
			dollars = append(dollars, i)
		}
	}
	if len(dollars) == 0 {
		return nil
	}
	_, err := c.run(ctx, time.Now().Add(readTimeout), func() (any, error) {
		for _, i := range dollars {
			if err := c.rc.Send("XREVRANGE", keys[i], "+", "-", "COUNT", 1); err != nil {
				return nil, err
			}
		}
		replies, err := redis.Values(c.rc.Do(""))
		if err != nil {
			return nil, err
		}
		for j, i := range dollars {
			ids[i] = "0-0"
			if last, err := redis.Values(replies[j], nil); err == nil && len(last) > 0 {
				entry, err := redis.Values(last[0], nil)
				if err != nil || len(entry) == 0 {
					return nil, fmt.Errorf("unexpected XREVRANGE reply %v", replies[j])
				}
				ids[i] = entry[0]
			} else if serverErr, ok := replies[j].(redis.Error); ok {
				return nil, serverErr
			}
		}
		return nil, nil
	})
	return err
}

// block runs a blocking command on connections of its own until a round's
// reply ends the wait, the block time is used up, ctx ends, the pool
// closes, or the server answers with an error. A round that fails on the
// network is retried on a new connection, with capped, jittered backoff;
// the checkout first kills the abandoned one on the server (fence.go). A
// round ended by ctx is not a failure and ends the call.
//
// A dial the server refused for the pool's configuration (ErrMisconfigured)
// is returned at once, never retried. An error that ends the call after
// failed rounds or dials carries the last of those failures.
func (p *Pool) block(ctx context.Context, b *blockingCall) (any, error) {
	var (
		c        *conn
		failures int
		last     lastFailure
	)
	defer func() {
		if c != nil {
			p.counters.blockingConns.Add(-1)
			p.put(c, true)
		}
	}()
	for {
		if err := ctxErr(ctx); err != nil {
			return nil, last.wrap(p.wrapErr(ctx, b.cmd, err))
		}
		if p.closing.Err() != nil {
			return nil, last.wrap(ErrPoolClosed)
		}
		if c == nil {
			var err error
			// A checkout without a context deadline waits PoolTimeout per
			// attempt.
			start := time.Now()
			if c, err = p.get(ctx, start, waitDeadline(ctx, start, p.cfg.poolTimeout)); err != nil {
				if errors.Is(err, ErrMisconfigured) {
					return nil, err
				}
				if errors.Is(err, ErrPoolClosed) || ctxErr(ctx) != nil || !b.redialable() || b.usedUp(time.Now()) {
					return nil, last.wrap(p.wrapErr(ctx, b.cmd, err))
				}
				if b.retryHere != nil && !b.retryHere(err) {
					return nil, p.wrapErr(ctx, b.cmd, err)
				}
				last.note(ctx, err)
				failures++
				p.warnUnreachable(b.cmd, err, failures)
				if err := p.backoff(ctx, failures); err != nil {
					return nil, last.wrap(p.wrapErr(ctx, b.cmd, err))
				}
				continue
			}
			p.counters.blockingConns.Add(1)
		}
		reply, err := p.rounds(ctx, c, b)
		if err == nil {
			if failures > 0 {
				p.cfg.logger.Info("redisalive: blocking read recovered", "addr", p.cfg.addr, "cmd", b.cmd, "failed_rounds", failures)
			}
			return reply, nil
		}
		if ctxErr(ctx) == nil && p.closing.Err() == nil && (p.stale(c) || isDemotion(err) && p.demote(ctx, c, err.Error())) {
			// The master moved (a failover cut the round, or the server
			// answered it is no longer the master): not a failure; the
			// read goes on at once at the new one.
			p.put(c, false)
			c = nil
			continue
		}
		if _, ok := err.(redis.Error); ok && !c.broken() {
			return nil, err
		}
		if errors.Is(err, ErrPoolClosed) || ctxErr(ctx) != nil || !b.redialable() || b.usedUp(time.Now()) ||
			errors.Is(err, ErrProtocol) { // a peer out of its mind: a new connection will not cure it
			return nil, last.wrap(p.wrapErr(ctx, b.cmd, err))
		}
		if b.retryHere != nil && !b.retryHere(err) {
			return nil, p.wrapErr(ctx, b.cmd, err)
		}
		p.counters.blockingConns.Add(-1)
		p.put(c, false)
		c = nil
		last.note(ctx, err)
		failures++
		p.counters.blockingRedials.Add(1)
		p.each(func(h *Hook) {
			if h.Redial != nil {
				h.Redial(ctx, b.cmd, err)
			}
		})
		p.warnUnreachable(b.cmd, err, failures)
		if err := p.backoff(ctx, failures); err != nil {
			return nil, last.wrap(p.wrapErr(ctx, b.cmd, err))
		}
	}
}

// warnUnreachable logs a failed blocking round, at most once per warnEvery
// for the whole pool, so an outage does not flood the log.
func (p *Pool) warnUnreachable(cmd string, err error, failures int) {
	p.warnRetry("redisalive: blocking read failed; retrying on a new connection",
		"addr", p.cfg.addr, "cmd", cmd, "consecutive_failures", failures, "err", err)
}
