package redisaliveprom_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/extra/redisaliveprom"
	"github.com/redisalive/redisalive/internal/testkit"
)

// scrapeAfterKnownTraffic runs a known script through a pool of one
// connection and calls scrape while one caller holds that connection and
// another waits for it, so that nothing (the health checker's peek
// included) can move the gauges during the scrape.
func scrapeAfterKnownTraffic(t *testing.T, p *redisalive.Pool, scrape func()) {
	t.Helper()
	ctx := context.Background()
	_, err := p.Do(ctx, "SET", "k", "v") // dials the pool's one connection
	require.NoError(t, err)
	_, err = p.Do(ctx, "LPUSH", "jobs", "a")
	require.NoError(t, err)
	_, _, err = p.BRPop(ctx, "jobs") // one blocking round
	require.NoError(t, err)

	held, err := p.Get(ctx)
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err = p.Do(short, "PING") // waits, then times out
	cancel()
	require.ErrorIs(t, err, redisalive.ErrPoolTimeout)
	require.NoError(t, held.Close())

	_, err = p.Do(ctx, "SELECT", "1") // leaves state: its connection is closed
	require.NoError(t, err)
	held, err = p.Get(ctx) // dials again
	require.NoError(t, err)
	waited := make(chan error, 1)
	go func() {
		_, err := p.Do(ctx, "GET", "k")
		waited <- err
	}()
	testkit.WaitFor(t, 2*time.Second, "a caller waiting", func() bool { return p.Stats().Waiting == 1 })

	scrape()

	require.NoError(t, held.Close())
	require.NoError(t, <-waited)
}

// TestCollectorReportsStatsAfterKnownTraffic compares a scrape with what
// a known script did to the pool: names, types, help, labels and values.
func TestCollectorReportsStatsAfterKnownTraffic(t *testing.T) {
	p := newMiniPool(t, redisalive.Options{MaxActive: 1})
	c := redisaliveprom.NewCollector(p, "cache")
	var compared error
	var count int
	var waitSeconds float64
	scrapeAfterKnownTraffic(t, p, func() {
		compared = testutil.CollectAndCompare(c, strings.NewReader(wantScrape), wantNames...)
		count = testutil.CollectAndCount(c)
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		families, err := reg.Gather()
		require.NoError(t, err)
		for _, f := range families {
			if f.GetName() == "redisalive_wait_seconds_total" {
				waitSeconds = f.GetMetric()[0].GetCounter().GetValue()
			}
		}
	})
	assert.NoError(t, compared)
	assert.Equal(t, 26, count, "series: every metric but connections and connections_closed_total has one")
	// The timed-out wait lasted its context's 20 ms; the one in progress
	// is added when it ends.
	assert.GreaterOrEqual(t, waitSeconds, 0.01, "redisalive_wait_seconds_total")
	assert.Less(t, waitSeconds, 2.0, "redisalive_wait_seconds_total")
}

// wantNames are the metrics wantScrape describes: all but
// redisalive_wait_seconds_total, whose value the clock decides.
var wantNames = []string{
	"redisalive_connections", "redisalive_max_connections", "redisalive_max_idle_connections",
	"redisalive_waiting_requests", "redisalive_subscriptions", "redisalive_dials_total",
	"redisalive_dial_errors_total", "redisalive_waits_total", "redisalive_pool_timeouts_total",
	"redisalive_health_checks_total", "redisalive_leaks_total", "redisalive_connections_closed_total",
	"redisalive_blocking_rounds_total", "redisalive_blocking_redials_total", "redisalive_subscription_gaps_total",
	"redisalive_zombies_killed_total", "redisalive_failovers_total",
}

const wantScrape = `
# HELP redisalive_connections Open connections, by state: idle, or in_use (checked out, being dialled or being health-checked).
# TYPE redisalive_connections gauge
redisalive_connections{pool="cache",state="idle"} 0
redisalive_connections{pool="cache",state="in_use"} 1
# HELP redisalive_max_connections The most connections the pool opens at once (Options.MaxActive).
# TYPE redisalive_max_connections gauge
redisalive_max_connections{pool="cache"} 1
# HELP redisalive_max_idle_connections The most idle connections the pool keeps (Options.MaxIdle).
# TYPE redisalive_max_idle_connections gauge
redisalive_max_idle_connections{pool="cache"} 1
# HELP redisalive_waiting_requests Callers waiting for a free connection.
# TYPE redisalive_waiting_requests gauge
redisalive_waiting_requests{pool="cache"} 1
# HELP redisalive_subscriptions Open Subscriptions; each holds a connection, counted as in_use, except while it reconnects.
# TYPE redisalive_subscriptions gauge
redisalive_subscriptions{pool="cache"} 0
# HELP redisalive_dials_total Connections opened.
# TYPE redisalive_dials_total counter
redisalive_dials_total{pool="cache"} 2
# HELP redisalive_dial_errors_total Failed attempts to open a connection.
# TYPE redisalive_dial_errors_total counter
redisalive_dial_errors_total{pool="cache"} 0
# HELP redisalive_waits_total Checkouts that had to wait for a free connection.
# TYPE redisalive_waits_total counter
redisalive_waits_total{pool="cache"} 1
# HELP redisalive_pool_timeouts_total Waits for a free connection that ended without one.
# TYPE redisalive_pool_timeouts_total counter
redisalive_pool_timeouts_total{pool="cache"} 1
# HELP redisalive_health_checks_total PINGs sent to check idle connections and quiet subscriptions.
# TYPE redisalive_health_checks_total counter
redisalive_health_checks_total{pool="cache"} 0
# HELP redisalive_leaks_total Connections held checked out longer than LeakDetectionThreshold.
# TYPE redisalive_leaks_total counter
redisalive_leaks_total{pool="cache"} 0
# HELP redisalive_blocking_rounds_total Blocking commands sent: one per round of at most BlockSlice of a blocking read.
# TYPE redisalive_blocking_rounds_total counter
redisalive_blocking_rounds_total{pool="cache"} 1
# HELP redisalive_blocking_redials_total Times a blocking read replaced a connection that failed during a round.
# TYPE redisalive_blocking_redials_total counter
redisalive_blocking_redials_total{pool="cache"} 0
# HELP redisalive_subscription_gaps_total Times a Subscription reconnected and reported that messages may have been lost.
# TYPE redisalive_subscription_gaps_total counter
redisalive_subscription_gaps_total{pool="cache"} 0
# HELP redisalive_failovers_total Times the pool moved to a new master: Sentinel announced or named one, or the server under a fixed address answered it is no longer the master.
# TYPE redisalive_failovers_total counter
redisalive_failovers_total{pool="cache"} 0
# HELP redisalive_zombies_killed_total Connections abandoned after a failure and then killed on the server (CLIENT KILL ID) before anything more was sent.
# TYPE redisalive_zombies_killed_total counter
redisalive_zombies_killed_total{pool="cache"} 0
# HELP redisalive_connections_closed_total Connections the pool closed, by reason: dead, idle, lifetime, error, canceled, state, max_idle or stale.
# TYPE redisalive_connections_closed_total counter
redisalive_connections_closed_total{pool="cache",reason="canceled"} 0
redisalive_connections_closed_total{pool="cache",reason="dead"} 0
redisalive_connections_closed_total{pool="cache",reason="error"} 0
redisalive_connections_closed_total{pool="cache",reason="idle"} 0
redisalive_connections_closed_total{pool="cache",reason="lifetime"} 0
redisalive_connections_closed_total{pool="cache",reason="max_idle"} 0
redisalive_connections_closed_total{pool="cache",reason="stale"} 0
redisalive_connections_closed_total{pool="cache",reason="state"} 1
`

func TestCollectorIsPromlintClean(t *testing.T) {
	p := newMiniPool(t, redisalive.Options{})
	problems, err := testutil.CollectAndLint(redisaliveprom.NewCollector(p, "cache"))
	require.NoError(t, err)
	assert.Empty(t, problems)
}

// TestCollectorsOfTwoPoolsRegisterSideBySide: the pool label keeps two
// pools apart in one registry, and a second collector under a name
// already registered is refused rather than mixed in.
func TestCollectorsOfTwoPoolsRegisterSideBySide(t *testing.T) {
	cache, queue := newMiniPool(t, redisalive.Options{MaxActive: 2}), newMiniPool(t, redisalive.Options{MaxActive: 5})
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(redisaliveprom.NewCollector(cache, "cache")))
	require.NoError(t, reg.Register(redisaliveprom.NewCollector(queue, "queue")))
	assert.Error(t, reg.Register(redisaliveprom.NewCollector(queue, "cache")), "a second collector named cache")

	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP redisalive_max_connections The most connections the pool opens at once (Options.MaxActive).
# TYPE redisalive_max_connections gauge
redisalive_max_connections{pool="cache"} 2
redisalive_max_connections{pool="queue"} 5
`), "redisalive_max_connections")
	assert.NoError(t, err)
}

func TestNewCollectorPanicsOnANilPoolSayingSo(t *testing.T) {
	assert.PanicsWithValue(t, "redisaliveprom: NewCollector with a nil *redisalive.Pool", func() {
		redisaliveprom.NewCollector(nil, "cache")
	})
}
