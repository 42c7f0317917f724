package redisalive

import (
	"context"
	"errors"
	"time"

	"github.com/gomodule/redigo/redis"
)

// NewRedigoPool returns a plain redigo *redis.Pool configured from opts, for
// code that passes a *redis.Pool around, such as libraries built on redigo
// (redsync's redigo adapter, for one). It validates opts as NewPool does,
// and gives its connections what a Pool gives its own:
//
//   - every socket gets TCP keepalive with explicit idle, interval and
//     count, TCP_USER_TIMEOUT, the dial, read and write timeouts, TLS, AUTH
//     and SELECT;
//   - a connection is checked before it is lent (TestOnBorrowContext) by
//     the same rule as Pool's checkout: a non-blocking peek that sees a
//     server's close, and a PING when it has been idle longer than
//     HealthCheckInterval, so a connection the server closed is never lent;
//   - MaxActive, MaxIdle, IdleTimeout and MaxConnLifetime are redigo's own;
//   - commands get the deadlines described at Pool.Get: blocking commands
//     in rounds of BlockSlice, quiet subscriptions kept alive with PINGs.
//
// No Get may block forever: redigo's Get with Wait set waits without limit
// for a free connection, the very deadlock this package exists to prevent.
// So the pool is created with Wait false: at MaxActive, Get and GetContext
// return redis.ErrPoolExhausted at once. redigo offers no bounded wait in
// between (GetContext waits only when Wait is set, and then Get waits
// forever); use Pool.Get(ctx) for a wait bounded by its context.
//
// What a *redis.Pool cannot do that a Pool does: one deadline over
// checkout and command (Pool.Do), a background health checker (here a
// connection is checked only when borrowed, so one the server closed waits
// in CLOSE_WAIT until then or until IdleTimeout), blocking reads that
// redial in rounds (here a failed round returns its error, as on a
// connection from Pool.Get), Shutdown with a bound, and Stats by close
// reason. Move call sites to a Pool as you touch them: NewPool takes the
// same Options, and Pool.Get returns a redis.Conn for code that needs one.
func NewRedigoPool(opts Options) (*redis.Pool, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	cfg.logWarnings()
	// A redigo pool has no Close hook to end anything, so this runner never
	// closes and nothing runs in the background.
	r := &runner{cfg: cfg, closing: context.Background()}
	return &redis.Pool{
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			now := time.Now()
			deadline := now.Add(cfg.dialTimeout)
			if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
				deadline = d
			}
			c, err := cfg.connect(ctx, deadline, now)
			if err != nil {
				r.counters.dialErrors.Add(1)
				return nil, r.wrapErr(ctx, "connect", err)
			}
			r.counters.dials.Add(1)
			return &handle{r: r, c: c}, nil
		},
		TestOnBorrowContext: func(ctx context.Context, rc redis.Conn, lastUsed time.Time) error {
			return r.testOnBorrow(ctx, rc, lastUsed)
		},
		MaxActive:       cfg.maxActive,
		MaxIdle:         cfg.maxIdle,
		IdleTimeout:     cfg.idleTimeout,
		MaxConnLifetime: cfg.maxLifetime,
		Wait:            false,
	}, nil
}

var errNotOurConn = errors.New("redisalive: a redigo pool from NewRedigoPool was given a connection it did not dial")

// testOnBorrow applies the pool's health rule to a connection redigo is
// about to lend.
func (r *runner) testOnBorrow(ctx context.Context, rc redis.Conn, lastUsed time.Time) error {
	h, ok := rc.(*handle)
	if !ok {
		return errNotOurConn
	}
	h.mu.Lock()
	c := h.c
	h.mu.Unlock()
	if c == nil {
		return errConnReturned
	}
	now := time.Now()
	c.returnedAt = lastUsed
	v, _ := r.cfg.judge(c, now)
	if v == expireIdle || v == expireLifetime {
		return errExpired // redigo prunes only the oldest idle connections itself
	}
	if err := c.checkIdle(now); err != nil || v != pingIt {
		return err
	}
	r.counters.healthChecks.Add(1)
	_, err := c.run(ctx, now.Add(r.cfg.readTimeout), func() (any, error) { return c.rc.Do("PING") })
	if err == nil {
		c.pingedAt = now
	}
	return err
}
