package redisalive

import (
	"context"

	"github.com/gomodule/redigo/redis"
)

// RedigoPool returns a redigo *redis.Pool whose connections are p's, for
// code that passes a *redis.Pool around, such as libraries built on redigo
// (redsync's redigo adapter, for one).
//
// It is only a shell: it keeps no connection of its own (its MaxIdle and
// MaxActive are 0), so each of its Get and GetContext calls checks a
// connection out of p, as p.Get does, and closing what it lent returns the
// connection to p. So:
//
//   - at MaxActive, Get waits for a free connection at most PoolTimeout,
//     and GetContext until its ctx ends or, with no deadline, PoolTimeout:
//     neither fails at once nor waits forever. A wait that times out fails
//     with a *PoolTimeoutError matching ErrPoolTimeout; Get, which returns
//     no error, returns a connection whose Err and every command report it,
//     as redigo does for any failed Get;
//   - the connections are p's: checked on checkout and in the background,
//     fenced after a failure (CLIENT KILL), counted in p.Stats, and closed
//     by p.Close and p.Shutdown like every other. Commands on them get the
//     deadlines described at Pool.Get;
//   - a connection returned inside MULTI or WATCH, or subscribed, is cleaned
//     up by redigo first (DISCARD or UNWATCH, or unsubscribing from
//     everything), then checked by p as at Pool.Get's Close: one left in a
//     state that cannot be undone, which includes having been subscribed,
//     is closed, never lent again.
//
// The shell's own counts describe only its traffic: ActiveCount is the
// number of connections it has lent and not had back, IdleCount is always
// 0, and its Stats count no waits (p.Stats counts them, with those of p's
// other users). Its Close only makes its own later Get calls fail (with
// redigo's "get on closed pool"): it does not close p, and connections it
// lent still return to p when closed. Close p to end everything.
//
// Each call returns a new shell. Do not change its fields: with MaxIdle
// above 0, connections would idle outside p, unchecked and uncounted, and
// with TestOnBorrow set they would be checked twice.
func (p *Pool) RedigoPool() *redis.Pool {
	return &redis.Pool{
		DialContext: func(ctx context.Context) (redis.Conn, error) { return p.Get(ctx) },
	}
}
