package redisaliveotel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/dbconv"

	"github.com/redisalive/redisalive"
)

// durationBuckets are the histogram boundaries, in seconds, that the
// semantic conventions advise for db.client.operation.duration. They
// advise none for the pool's own histograms, which use the same: the
// SDK's default boundaries (0 to 10000) suit milliseconds, not seconds.
var durationBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10}

// InstrumentMetrics reports p's metrics through the meter provider
// (WithMeterProvider). From the database semantic conventions:
//
//   - db.client.connection.count ({connection}; db.client.connection.state
//     idle or used), db.client.connection.max, db.client.connection.idle.max
//     and db.client.connection.pending_requests ({request}, callers waiting
//     for a free connection): gauges, as UpDownCounters;
//   - db.client.connection.timeouts ({timeout}): checkouts that gave up
//     waiting for a free connection;
//   - db.client.connection.wait_time, create_time and use_time (s):
//     histograms of successful checkouts (waiting, checking and dialling
//     included), successful dials, and how long callers held connections;
//   - db.client.operation.duration (s): each command a caller ran, from
//     its checkout to its reply, with db.system.name, db.operation.name,
//     server.address, server.port, db.namespace and, on failure,
//     error.type (see the package doc). A blocking read's duration
//     includes its wait.
//
// And for what those do not name, all counters but the first:
//
//   - redisalive.client.subscription.count ({subscription}): open
//     Subscriptions;
//   - redisalive.client.connection.closed ({connection}; reason: dead,
//     idle, lifetime, error, canceled, state, max_idle or stale), the
//     connections the pool closed, and why;
//   - redisalive.client.connection.dial_errors ({error}),
//     redisalive.client.connection.leaks ({connection}, held longer than
//     LeakDetectionThreshold), redisalive.client.connection.health_checks
//     ({check}), redisalive.client.blocking.rounds ({round}),
//     redisalive.client.blocking.redials ({redial}),
//     redisalive.client.subscription.gaps ({gap}),
//     redisalive.client.failovers ({failover}, moves to a new master) and
//     redisalive.client.connection.zombies_killed ({connection}, abandoned
//     after a failure and killed on the server).
//
// Every point carries db.client.connection.pool.name. The histograms use
// the boundaries the conventions advise for db.client.operation.duration.
// Gauges and counters are read from p.Stats() when the metrics are
// collected, so they cost nothing between collections and start from
// NewPool, not from this call; the histograms are recorded by a Hook.
//
// Call it once per pool. Call InstrumentTracing first if exemplars should
// link the command durations to their spans.
func InstrumentMetrics(p *redisalive.Pool, opts ...Option) error {
	c, err := newConfig(p, opts)
	if err != nil {
		return err
	}
	meter := c.meterProvider.Meter(scope, metric.WithSchemaURL(semconv.SchemaURL))
	m, err := newMetrics(meter, p, c.poolName)
	if err != nil {
		return fmt.Errorf("redisaliveotel: instruments for pool %q: %w", c.poolName, err)
	}
	p.AddHook(redisalive.Hook{CommandDone: m.commandDone, Checkout: m.checkout, Dial: m.dial, Use: m.use, PoolClosing: m.unregister})
	return nil
}

// metrics records one pool's events in its histograms.
type metrics struct {
	callback                                  metric.Registration // of the Stats observations
	waitTime, createTime, useTime, opDuration metric.Float64Histogram
	// pool is the options of a point with the pool's name alone, built
	// once, like ops, so that recording allocates nothing.
	pool []metric.RecordOption
	ops  *cache[[]metric.RecordOption]
}

// observation is one value read from Stats at each collection.
type observation struct {
	inst  metric.Int64Observable
	value func(*redisalive.Stats) int64
	attrs metric.ObserveOption
}

func newMetrics(meter metric.Meter, p *redisalive.Pool, poolName string) (*metrics, error) {
	poolAttr := semconv.DBClientConnectionPoolName(poolName)
	withPool := func(kv ...attribute.KeyValue) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append(kv, poolAttr)...))
	}
	pool := withPool()
	buckets := metric.WithExplicitBucketBoundaries(durationBuckets...)
	waitTime, err1 := dbconv.NewClientConnectionWaitTime(meter, buckets)
	createTime, err2 := dbconv.NewClientConnectionCreateTime(meter, buckets)
	useTime, err3 := dbconv.NewClientConnectionUseTime(meter, buckets)
	opDuration, err4 := dbconv.NewClientOperationDuration(meter, buckets)
	count, err5 := dbconv.NewClientConnectionCountObservable(meter)
	maxConns, err6 := dbconv.NewClientConnectionMaxObservable(meter)
	maxIdle, err7 := dbconv.NewClientConnectionIdleMaxObservable(meter)
	pending, err8 := dbconv.NewClientConnectionPendingRequestsObservable(meter)
	timeouts, err9 := dbconv.NewClientConnectionTimeoutsObservable(meter)
	subscriptions, err10 := meter.Int64ObservableUpDownCounter("redisalive.client.subscription.count",
		metric.WithUnit("{subscription}"), metric.WithDescription("The number of open subscriptions; each holds a connection, counted as used, except while it reconnects."))
	closed, err11 := meter.Int64ObservableCounter("redisalive.client.connection.closed",
		metric.WithUnit("{connection}"), metric.WithDescription("The number of connections the pool closed, by the reason it closed them."))
	if err := errors.Join(err1, err2, err3, err4, err5, err6, err7, err8, err9, err10, err11); err != nil {
		return nil, err
	}

	o := p.Options() // a live pool's options never change
	obs := []observation{
		{count.Inst(), func(s *redisalive.Stats) int64 { return int64(s.Idle) }, withPool(semconv.DBClientConnectionStateIdle)},
		{count.Inst(), func(s *redisalive.Stats) int64 { return int64(s.InUse) }, withPool(semconv.DBClientConnectionStateUsed)},
		{maxConns.Inst(), func(*redisalive.Stats) int64 { return int64(o.MaxActive) }, pool},
		{maxIdle.Inst(), func(*redisalive.Stats) int64 { return int64(o.MaxIdle) }, pool},
		{pending.Inst(), func(s *redisalive.Stats) int64 { return int64(s.Waiting) }, pool},
		{timeouts.Inst(), func(s *redisalive.Stats) int64 { return s.PoolTimeouts }, pool},
		{subscriptions, func(s *redisalive.Stats) int64 { return int64(s.Subscriptions) }, pool},
	}
	for _, r := range redisalive.CloseReasons() {
		obs = append(obs, observation{closed, func(s *redisalive.Stats) int64 { return s.ClosedBy(r) }, withPool(attribute.String("reason", r.String()))})
	}
	for _, c := range counters {
		inst, err := meter.Int64ObservableCounter(c.name, metric.WithUnit(c.unit), metric.WithDescription(c.description))
		if err != nil {
			return nil, err
		}
		obs = append(obs, observation{inst, c.value, pool})
	}
	insts := make([]metric.Observable, len(obs))
	for i, ob := range obs {
		insts[i] = ob.inst
	}
	reg, err := meter.RegisterCallback(func(_ context.Context, obsv metric.Observer) error {
		s := p.Stats()
		for _, ob := range obs {
			obsv.ObserveInt64(ob.inst, ob.value(&s), ob.attrs)
		}
		return nil
	}, insts...)
	if err != nil {
		return nil, err
	}

	server := append(serverAttrs(o), poolAttr)
	return &metrics{
		callback: reg,
		waitTime: waitTime.Inst(), createTime: createTime.Inst(), useTime: useTime.Inst(), opDuration: opDuration.Inst(),
		pool: []metric.RecordOption{pool},
		ops: newCache(func(k opKey) []metric.RecordOption {
			attrs := append(append([]attribute.KeyValue{semconv.DBOperationName(k.cmd)}, server...), k.attrs()...)
			return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))}
		}),
	}, nil
}

// counters are the redisalive.client.* counters read from Stats that carry
// no attribute but the pool's name.
var counters = []struct {
	name, unit, description string
	value                   func(*redisalive.Stats) int64
}{
	{"redisalive.client.connection.dial_errors", "{error}", "The number of failed attempts to open a connection.",
		func(s *redisalive.Stats) int64 { return s.DialErrors }},
	{"redisalive.client.connection.leaks", "{connection}", "The number of connections held checked out longer than LeakDetectionThreshold.",
		func(s *redisalive.Stats) int64 { return s.Leaks }},
	{"redisalive.client.connection.health_checks", "{check}", "The number of PINGs sent to check idle connections and quiet subscriptions.",
		func(s *redisalive.Stats) int64 { return s.HealthChecks }},
	{"redisalive.client.blocking.rounds", "{round}", "The number of blocking commands sent: one per round of at most BlockSlice of a blocking read.",
		func(s *redisalive.Stats) int64 { return s.BlockingRounds }},
	{"redisalive.client.blocking.redials", "{redial}", "The number of times a blocking read replaced a connection that failed during a round.",
		func(s *redisalive.Stats) int64 { return s.BlockingRedials }},
	{"redisalive.client.subscription.gaps", "{gap}", "The number of times a subscription reconnected and reported that messages may have been lost.",
		func(s *redisalive.Stats) int64 { return s.SubscriptionGaps }},
	{"redisalive.client.failovers", "{failover}", "The number of times the pool moved to a new master: Sentinel announced or named one, or the server under a fixed address answered it is no longer the master.",
		func(s *redisalive.Stats) int64 { return s.Failovers }},
	{"redisalive.client.connection.zombies_killed", "{connection}", "The number of connections abandoned after a failure and then killed on the server (CLIENT KILL ID) before anything more was sent.",
		func(s *redisalive.Stats) int64 { return s.ZombiesKilled }},
}

// commandDone records a caller's command, from before its checkout to its
// reply.
func (m *metrics) commandDone(ctx context.Context, cmd string, took time.Duration, err error) {
	m.opDuration.Record(ctx, took.Seconds(), m.ops.get(opKey{cmd, classify(err)})...)
}

// checkout records successful checkouts only: one that failed obtained no
// connection, and db.client.connection.timeouts counts those that timed
// out.
func (m *metrics) checkout(ctx context.Context, took time.Duration, err error) {
	if err == nil {
		m.waitTime.Record(ctx, took.Seconds(), m.pool...)
	}
}

// dial records successful dials only: a failed one created nothing, and
// redisalive.client.connection.dial_errors counts it.
func (m *metrics) dial(ctx context.Context, took time.Duration, err error) {
	if err == nil {
		m.createTime.Record(ctx, took.Seconds(), m.pool...)
	}
}

// unregister stops observing a closed pool, so that its last values are
// not reported for ever and the meter provider does not keep it reachable.
func (m *metrics) unregister() { m.callback.Unregister() }

func (m *metrics) use(held time.Duration) {
	m.useTime.Record(context.Background(), held.Seconds(), m.pool...)
}
