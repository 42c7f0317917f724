// Package redisaliveprom exposes a redisalive.Pool's Stats as Prometheus
// metrics. It is a module of its own so that the library's module does not
// depend on the Prometheus client.
//
// The metrics, each with the label pool:
//
//	redisalive_connections{state="idle"|"in_use"}   gauge: open connections
//	redisalive_max_connections                       gauge: Options.MaxActive
//	redisalive_max_idle_connections                  gauge: Options.MaxIdle
//	redisalive_waiting_requests                      gauge: callers waiting for a free connection
//	redisalive_subscriptions                         gauge: open Subscriptions
//	redisalive_dials_total                           connections opened
//	redisalive_dial_errors_total                     failed attempts to open one
//	redisalive_waits_total                           checkouts that waited for a free connection
//	redisalive_wait_seconds_total                    time spent in those waits
//	redisalive_pool_timeouts_total                   waits that ended without a connection
//	redisalive_health_checks_total                   PINGs to idle connections and quiet subscriptions
//	redisalive_leaks_total                           connections held past LeakDetectionThreshold
//	redisalive_connections_closed_total{reason}      connections the pool closed: dead, idle,
//	                                                 lifetime, error, canceled, state, max_idle or stale
//	redisalive_blocking_rounds_total                 rounds of blocking reads sent
//	redisalive_blocking_redials_total                blocking reads moved to a new connection
//	redisalive_subscription_gaps_total               reconnects of a Subscription that lost messages
//	redisalive_failovers_total                       moves to a new master
//	redisalive_zombies_killed_total                  connections abandoned after a failure, killed on the server
package redisaliveprom

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/redisalive/redisalive"
)

// NewCollector returns a collector of p's metrics, labelled pool=poolName,
// which must tell p from the other pools registered in the same registry.
// It reads p.Stats() once per scrape, so it runs no goroutine and costs
// nothing between scrapes; its counters count from NewPool.
func NewCollector(p *redisalive.Pool, poolName string) prometheus.Collector {
	if p == nil {
		panic("redisaliveprom: NewCollector with a nil *redisalive.Pool")
	}
	labels := prometheus.Labels{"pool": poolName}
	c := &collector{p: p}
	desc := func(name, help string, variableLabels ...string) *prometheus.Desc {
		d := prometheus.NewDesc("redisalive_"+name, help, variableLabels, labels)
		c.descs = append(c.descs, d)
		return d
	}
	gauge := func(d *prometheus.Desc, value func(*redisalive.Stats) float64, labelValues ...string) stat {
		return stat{d, prometheus.GaugeValue, value, labelValues}
	}
	counter := func(name, help string, value func(*redisalive.Stats) int64) stat {
		return stat{desc(name, help), prometheus.CounterValue, func(s *redisalive.Stats) float64 { return float64(value(s)) }, nil}
	}
	constant := func(n int) func(*redisalive.Stats) float64 {
		return func(*redisalive.Stats) float64 { return float64(n) }
	}

	o := p.Options() // a live pool's options never change
	conns := desc("connections", "Open connections, by state: idle, or in_use (checked out, being dialled or being health-checked).", "state")
	c.stats = []stat{
		gauge(conns, func(s *redisalive.Stats) float64 { return float64(s.Idle) }, "idle"),
		gauge(conns, func(s *redisalive.Stats) float64 { return float64(s.InUse) }, "in_use"),
		gauge(desc("max_connections", "The most connections the pool opens at once (Options.MaxActive)."), constant(o.MaxActive)),
		gauge(desc("max_idle_connections", "The most idle connections the pool keeps (Options.MaxIdle)."), constant(o.MaxIdle)),
		gauge(desc("waiting_requests", "Callers waiting for a free connection."),
			func(s *redisalive.Stats) float64 { return float64(s.Waiting) }),
		gauge(desc("subscriptions", "Open Subscriptions; each holds a connection, counted as in_use, except while it reconnects."),
			func(s *redisalive.Stats) float64 { return float64(s.Subscriptions) }),
		counter("dials_total", "Connections opened.", func(s *redisalive.Stats) int64 { return s.Dials }),
		counter("dial_errors_total", "Failed attempts to open a connection.", func(s *redisalive.Stats) int64 { return s.DialErrors }),
		counter("waits_total", "Checkouts that had to wait for a free connection.", func(s *redisalive.Stats) int64 { return s.WaitCount }),
		{desc("wait_seconds_total", "Time checkouts spent waiting for a free connection."), prometheus.CounterValue,
			func(s *redisalive.Stats) float64 { return s.WaitDuration.Seconds() }, nil},
		counter("pool_timeouts_total", "Waits for a free connection that ended without one.", func(s *redisalive.Stats) int64 { return s.PoolTimeouts }),
		counter("health_checks_total", "PINGs sent to check idle connections and quiet subscriptions.", func(s *redisalive.Stats) int64 { return s.HealthChecks }),
		counter("leaks_total", "Connections held checked out longer than LeakDetectionThreshold.", func(s *redisalive.Stats) int64 { return s.Leaks }),
		counter("blocking_rounds_total", "Blocking commands sent: one per round of at most BlockSlice of a blocking read.",
			func(s *redisalive.Stats) int64 { return s.BlockingRounds }),
		counter("blocking_redials_total", "Times a blocking read replaced a connection that failed during a round.",
			func(s *redisalive.Stats) int64 { return s.BlockingRedials }),
		counter("subscription_gaps_total", "Times a Subscription reconnected and reported that messages may have been lost.",
			func(s *redisalive.Stats) int64 { return s.SubscriptionGaps }),
		counter("failovers_total", "Times the pool moved to a new master: Sentinel announced or named one, or the server under a fixed address answered it is no longer the master.",
			func(s *redisalive.Stats) int64 { return s.Failovers }),
		counter("zombies_killed_total", "Connections abandoned after a failure and then killed on the server (CLIENT KILL ID) before anything more was sent.",
			func(s *redisalive.Stats) int64 { return s.ZombiesKilled }),
	}
	closed := desc("connections_closed_total", "Connections the pool closed, by reason: dead, idle, lifetime, error, canceled, state, max_idle or stale.", "reason")
	for _, r := range redisalive.CloseReasons() {
		c.stats = append(c.stats, stat{closed, prometheus.CounterValue,
			func(s *redisalive.Stats) float64 { return float64(s.ClosedBy(r)) }, []string{r.String()}})
	}
	return c
}

type collector struct {
	p     *redisalive.Pool
	descs []*prometheus.Desc // each once, for Describe
	stats []stat
}

// stat is one sample read from Stats at each scrape.
type stat struct {
	desc        *prometheus.Desc
	valueType   prometheus.ValueType
	value       func(*redisalive.Stats) float64
	labelValues []string
}

// Describe sends the descriptions of every metric, so that a registry can
// refuse a second collector of the same pool name.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect reads Stats once per scrape: one brief hold of the pool's lock.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.Stats()
	for _, st := range c.stats {
		ch <- prometheus.MustNewConstMetric(st.desc, st.valueType, st.value(&s), st.labelValues...)
	}
}
