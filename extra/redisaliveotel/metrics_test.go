package redisaliveotel_test

import (
	"context"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/extra/redisaliveotel"
	"github.com/redisalive/redisalive/internal/testkit"
)

// TestInstrumentMetricsReportsEveryInstrumentAfterKnownTraffic runs a
// known script through a pool of one connection and compares every
// instrument, its unit and each of its points with what the script did.
// It collects while a caller holds the connection and another waits for
// it, so that nothing (the health checker's peek included) can move the
// gauges.
func TestInstrumentMetricsReportsEveryInstrumentAfterKnownTraffic(t *testing.T) {
	p := newMiniPool(t, redisalive.Options{MaxActive: 1})
	mp, reader := newMeterProvider(t)
	require.NoError(t, redisaliveotel.InstrumentMetrics(p, redisaliveotel.WithMeterProvider(mp), redisaliveotel.WithPoolName("cache")))
	ctx := context.Background()

	do := func(cmd string, args ...any) error {
		_, err := p.Do(ctx, cmd, args...)
		return err
	}
	require.NoError(t, do("SET", "k", "v")) // dials the pool's one connection
	require.NoError(t, do("GET", "k"))      // reuses it
	var reply redis.Error
	require.ErrorAs(t, do("LPUSH", "k", "x"), &reply) // WRONGTYPE
	require.NoError(t, do("LPUSH", "jobs", "a"))
	_, _, err := p.BRPop(ctx, "jobs") // one blocking round
	require.NoError(t, err)

	held, err := p.Get(ctx)
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err = p.Do(short, "PING")
	cancel()
	require.ErrorIs(t, err, redisalive.ErrPoolTimeout)
	require.NoError(t, held.Close())

	require.NoError(t, do("SELECT", "1")) // leaves state: its connection is closed
	held, err = p.Get(ctx)                // dials again
	require.NoError(t, err)
	waited := make(chan error, 1)
	go func() { waited <- do("GET", "k") }()
	testkit.WaitFor(t, 2*time.Second, "a caller waiting", func() bool { return p.Stats().Waiting == 1 })

	got := collect(t, reader)

	require.NoError(t, held.Close())
	require.NoError(t, <-waited)

	op := func(cmd string, failure ...attribute.KeyValue) string {
		return attrKey(append(commandAttrs(t, p.Options().Addr, cmd), failure...)...)
	}
	reason := func(r string) string { return attrKey(attribute.String("reason", r)) }
	want := map[string]struct {
		unit   string
		points map[string]float64
	}{
		"db.client.connection.count": {"{connection}", map[string]float64{
			attrKey(semconv.DBClientConnectionStateIdle): 0,
			attrKey(semconv.DBClientConnectionStateUsed): 1,
		}},
		"db.client.connection.max":              {"{connection}", map[string]float64{"": 1}},
		"db.client.connection.idle.max":         {"{connection}", map[string]float64{"": 1}},
		"db.client.connection.pending_requests": {"{request}", map[string]float64{"": 1}},
		"db.client.connection.timeouts":         {"{timeout}", map[string]float64{"": 1}},
		// Histograms: how many were recorded.
		"db.client.connection.wait_time":   {"s", map[string]float64{"": 8}}, // every checkout but the one that timed out
		"db.client.connection.create_time": {"s", map[string]float64{"": 2}},
		"db.client.connection.use_time":    {"s", map[string]float64{"": 7}}, // every checkout but the one held
		"db.client.operation.duration": {"s", map[string]float64{
			op("SET"): 1, op("GET"): 1, op("LPUSH"): 1, op("BRPOP"): 1, op("SELECT"): 1,
			op("LPUSH", semconv.ErrorTypeKey.String("WRONGTYPE"), semconv.DBResponseStatusCode("WRONGTYPE")): 1,
			op("PING", semconv.ErrorTypeKey.String("pool_timeout")):                                          1,
		}},
		"redisalive.client.connection.closed": {"{connection}", map[string]float64{
			reason("dead"): 0, reason("idle"): 0, reason("lifetime"): 0, reason("error"): 0,
			reason("canceled"): 0, reason("state"): 1, reason("max_idle"): 0, reason("stale"): 0,
		}},
		"redisalive.client.connection.dial_errors":    {"{error}", map[string]float64{"": 0}},
		"redisalive.client.connection.leaks":          {"{connection}", map[string]float64{"": 0}},
		"redisalive.client.connection.health_checks":  {"{check}", map[string]float64{"": 0}},
		"redisalive.client.blocking.rounds":           {"{round}", map[string]float64{"": 1}},
		"redisalive.client.blocking.redials":          {"{redial}", map[string]float64{"": 0}},
		"redisalive.client.subscription.count":        {"{subscription}", map[string]float64{"": 0}},
		"redisalive.client.subscription.gaps":         {"{gap}", map[string]float64{"": 0}},
		"redisalive.client.connection.zombies_killed": {"{connection}", map[string]float64{"": 0}},
		"redisalive.client.failovers":                 {"{failover}", map[string]float64{"": 0}},
	}
	for name, w := range want {
		m, ok := got[name]
		if !assert.True(t, ok, "instrument %s not collected", name) {
			continue
		}
		assert.Equal(t, w.unit, m.Unit, "%s: unit", name)
		assert.NotEmpty(t, m.Description, "%s: description", name)
		assert.Equal(t, w.points, points(t, m, "cache"), "%s: points", name)
	}
	for name := range got {
		_, ok := want[name]
		assert.True(t, ok, "got instrument %s, want none of that name", name)
	}
}

// TestInstrumentMetricsUsesTheAdvisedDurationBuckets: the semantic
// conventions advise the boundaries of db.client.operation.duration; the
// pool's histograms, in seconds too, use the same, not the SDK's default
// (0 to 10000, for milliseconds).
func TestInstrumentMetricsUsesTheAdvisedDurationBuckets(t *testing.T) {
	p := newMiniPool(t, redisalive.Options{})
	mp, reader := newMeterProvider(t)
	require.NoError(t, redisaliveotel.InstrumentMetrics(p, redisaliveotel.WithMeterProvider(mp)))
	_, err := p.Do(context.Background(), "PING")
	require.NoError(t, err)

	advised := []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10}
	got := collect(t, reader)
	for _, name := range []string{"db.client.operation.duration", "db.client.connection.wait_time", "db.client.connection.create_time", "db.client.connection.use_time"} {
		h, ok := got[name].Data.(metricdata.Histogram[float64])
		if assert.True(t, ok, "%s: got %T, want a Histogram[float64]", name, got[name].Data) && assert.Len(t, h.DataPoints, 1, name) {
			assert.Equal(t, advised, h.DataPoints[0].Bounds, "%s: bucket boundaries", name)
		}
	}
}

// TestInstrumentMetricsNamesThePoolByItsAddressByDefault: without
// WithPoolName, db.client.connection.pool.name is Options.Addr.
func TestInstrumentMetricsNamesThePoolByItsAddressByDefault(t *testing.T) {
	p := newMiniPool(t, redisalive.Options{MaxActive: 3})
	mp, reader := newMeterProvider(t)
	require.NoError(t, redisaliveotel.InstrumentMetrics(p, redisaliveotel.WithMeterProvider(mp)))
	assert.Equal(t, map[string]float64{"": 3}, points(t, collect(t, reader)["db.client.connection.max"], p.Options().Addr))
}

func TestInstrumentMetricsAndTracingRejectANilPool(t *testing.T) {
	for name, instrument := range map[string]func(*redisalive.Pool, ...redisaliveotel.Option) error{
		"InstrumentMetrics": redisaliveotel.InstrumentMetrics,
		"InstrumentTracing": redisaliveotel.InstrumentTracing,
	} {
		err := instrument(nil)
		if assert.Error(t, err, name) {
			assert.Contains(t, err.Error(), "nil *redisalive.Pool", name)
		}
	}
}

// TestInstrumentMetricsStopsObservingAClosedPool: once the pool closes,
// its Stats are no longer read at collection, and the meter provider no
// longer keeps the pool reachable.
func TestInstrumentMetricsStopsObservingAClosedPool(t *testing.T) {
	p := newMiniPool(t, redisalive.Options{})
	mp, reader := newMeterProvider(t)
	require.NoError(t, redisaliveotel.InstrumentMetrics(p, redisaliveotel.WithMeterProvider(mp)))
	require.Contains(t, collect(t, reader), "db.client.connection.count", "observed while open")
	require.NoError(t, p.Close())
	assert.NotContains(t, collect(t, reader), "db.client.connection.count", "observed after Close")
}
