package redisalive

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
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

func TestServerTimeoutFormatsWholeAndFractionalSeconds(t *testing.T) {
	assert.Equal(t, "1", serverTimeout(time.Second))
	assert.Equal(t, "30", serverTimeout(30*time.Second))
	assert.Equal(t, "0.25", serverTimeout(250*time.Millisecond))
}
