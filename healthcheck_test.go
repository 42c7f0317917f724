package redisalive

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPlanHealthSortsIdleConnectionsByWhatIsDue(t *testing.T) {
	cfg := &config{healthInterval: 10 * time.Second, idleTimeout: time.Minute, maxLifetime: time.Hour}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	idleConn := func(created, returned, pinged, peeked time.Duration) *conn {
		return &conn{createdAt: ago(created), returnedAt: ago(returned), pingedAt: ago(pinged), peekedAt: ago(peeked)}
	}
	fresh := idleConn(time.Minute, time.Second, time.Hour, 300*time.Millisecond)
	unpeeked := idleConn(time.Minute, 2*time.Second, time.Hour, 2*time.Second)
	quiet := idleConn(time.Minute, 15*time.Second, time.Hour, 0)
	pinged := idleConn(time.Minute, 30*time.Second, 2*time.Second, 0)
	long := idleConn(5*time.Minute, 2*time.Minute, time.Hour, 0)
	old := idleConn(2*time.Hour, time.Second, time.Hour, 0)

	keep, peek, ping, expired, next := planHealth(cfg, []*conn{old, long, pinged, quiet, unpeeked, fresh}, now)

	assert.Equal(t, []*conn{pinged, fresh}, keep, "recently used or pinged, recently peeked connections stay, in order")
	assert.Equal(t, []*conn{unpeeked}, peek, "a connection not peeked at for a second gets a peek")
	assert.Equal(t, []*conn{quiet}, ping, "a connection quiet for a full interval gets a PING")
	assert.Equal(t, []expiry{{old, CloseLifetime}, {long, CloseIdle}}, expired)
	assert.Equal(t, now.Add(700*time.Millisecond), next, "the next wake-up is fresh's next peek")
}

func TestJudgeIsOneRuleForCheckoutAndChecker(t *testing.T) {
	cfg := &config{healthInterval: 10 * time.Second, idleTimeout: time.Minute}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	c := &conn{createdAt: now.Add(-time.Hour), returnedAt: now.Add(-10 * time.Second), peekedAt: now}
	v, _ := cfg.judge(c, now)
	assert.Equal(t, pingIt, v, "exactly HealthCheckInterval quiet is due a PING")
	c.returnedAt = now.Add(-time.Minute)
	v, _ = cfg.judge(c, now)
	assert.Equal(t, expireIdle, v, "exactly IdleTimeout idle is expired")
}

func TestPlanHealthWakesAfterOneIntervalWhenNothingIsIdle(t *testing.T) {
	cfg := &config{healthInterval: 3 * time.Second, idleTimeout: time.Minute}
	now := time.Now()
	keep, peek, ping, expired, next := planHealth(cfg, nil, now)
	assert.Empty(t, keep)
	assert.Empty(t, peek)
	assert.Empty(t, ping)
	assert.Empty(t, expired)
	assert.Equal(t, now.Add(3*time.Second), next)
}

func TestHealthPingClosesAndCountsConnectionsMaxIdleNoLongerHasRoomFor(t *testing.T) {
	mr := miniredis.RunT(t)
	p := openPool(t, Options{Addr: mr.Addr(), MaxIdle: 1, HealthCheckInterval: time.Hour})
	ctx := context.Background()
	var out []*conn
	for range 3 {
		c, err := p.get(ctx, time.Now(), time.Now().Add(time.Second))
		require.NoError(t, err)
		out = append(out, c)
	}
	// While the checker holds two connections, a caller returns the third
	// and fills MaxIdle.
	p.put(out[2], true)
	p.putBack(p.ping(out[:2], time.Now()))

	s := p.Stats()
	assert.Equal(t, int64(2), s.HealthChecks)
	assert.Equal(t, int64(2), s.MaxIdleClosed, "both checked connections found MaxIdle full")
	assert.Equal(t, 1, s.Active)
	assert.Equal(t, 1, s.Idle)
}

// TestHealthPassWakesWhenAConnectionItPeekedFallsDueAPing: a connection
// peeked just before its PING falls due must get that PING on time, not a
// whole peek interval later.
func TestHealthPassWakesWhenAConnectionItPeekedFallsDueAPing(t *testing.T) {
	srv := newFakeServer(t, nil)
	p := openPool(t, Options{Addr: srv.addr(), HealthCheckInterval: time.Second})
	c, err := p.get(context.Background(), time.Now(), time.Now().Add(time.Second))
	require.NoError(t, err)
	now := time.Now()
	c.peekedAt = now.Add(-peekEvery)                // a peek is due now
	p.put(c, true)                                  // returned now: its PING is due in a second
	c.returnedAt = now.Add(-900 * time.Millisecond) // ... in 100 ms
	next := p.healthPass(now)
	assert.Equal(t, now.Add(100*time.Millisecond), next, "the next wake-up: when the PING falls due")
}
