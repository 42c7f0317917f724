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
	fresh := &conn{createdAt: ago(time.Minute), returnedAt: ago(time.Second)}
	quiet := &conn{createdAt: ago(time.Minute), returnedAt: ago(15 * time.Second)}
	pinged := &conn{createdAt: ago(time.Minute), returnedAt: ago(30 * time.Second), pingedAt: ago(2 * time.Second)}
	idle := &conn{createdAt: ago(5 * time.Minute), returnedAt: ago(2 * time.Minute)}
	old := &conn{createdAt: ago(2 * time.Hour), returnedAt: ago(time.Second)}

	keep, ping, expired, next := planHealth(cfg, []*conn{old, idle, pinged, quiet, fresh}, now)

	assert.Equal(t, []*conn{pinged, fresh}, keep, "recently used or pinged connections stay, in order")
	assert.Equal(t, []*conn{quiet}, ping, "a connection quiet for a full interval gets a PING")
	assert.Equal(t, []expiry{{old, closedLifetime}, {idle, closedIdle}}, expired)
	assert.Equal(t, now.Add(8*time.Second), next, "the next wake-up is when pinged falls due")
}

func TestPlanHealthWakesAfterOneIntervalWhenNothingIsIdle(t *testing.T) {
	cfg := &config{healthInterval: 3 * time.Second, idleTimeout: time.Minute}
	now := time.Now()
	keep, ping, expired, next := planHealth(cfg, nil, now)
	assert.Empty(t, keep)
	assert.Empty(t, ping)
	assert.Empty(t, expired)
	assert.Equal(t, now.Add(3*time.Second), next)
}

func TestHealthPingClosesAndCountsConnectionsMaxIdleNoLongerHasRoomFor(t *testing.T) {
	mr := miniredis.RunT(t)
	p, err := NewPool(Options{Addr: mr.Addr(), MaxIdle: 1, HealthCheckInterval: time.Hour})
	require.NoError(t, err)
	defer p.Close()
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
	p.ping(out[:2], time.Now())

	s := p.Stats()
	assert.Equal(t, int64(2), s.HealthChecks)
	assert.Equal(t, int64(2), s.MaxIdleClosed, "both checked connections found MaxIdle full")
	assert.Equal(t, 1, s.Active)
	assert.Equal(t, 1, s.Idle)
}
