package main

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/redisalive/redisalive"
)

// poolFindings reports the pool a service would make from the same URL:
// its options, the bounds they give each kind of failure, and the warnings
// NewPool logged about them.
func poolFindings(o redisalive.Options, b redisalive.Bounds, warnings []string) []finding {
	findings := []finding{{
		Check: "pool.options", Level: levelInfo, Value: describeOptions(o),
		Why: fmt.Sprintf("what a pool made from this URL with ParseURL and NewPool runs on, every default filled in (max_active's depends on GOMAXPROCS, %d here); "+
			"those only code can set (KeepAlive, PubSubPingInterval) are at their defaults", runtime.GOMAXPROCS(0)),
	}}
	ka := o.KeepAlive
	for _, bound := range []struct {
		check string
		d     time.Duration
		why   string
		zero  string // the value when d is 0
	}{
		{"pool.silent-peer", b.SilentPeer,
			fmt.Sprintf("the kernel ends a pool connection whose server went silent with nothing in flight: keepalive probes after %v of quiet, then every %v, and %d unanswered end it "+
				"(on Linux the first probe at least tcp_user_timeout %v after the last traffic does)", ka.Idle, ka.Interval, ka.Count, o.TCPUserTimeout), ""},
		{"pool.unacknowledged", b.Unacknowledged,
			"the kernel ends a pool connection whose written data goes unacknowledged (TCP_USER_TIMEOUT), plus one retransmission timeout: a command sent to a vanished server fails by then whatever its deadline",
			"none: TCP_USER_TIMEOUT is Linux-only, so written data waits for read_timeout or the context"},
		{"pool.dead-idle", b.DeadIdle,
			fmt.Sprintf("an idle connection on a dead link is found by the health checker's PING: health_check_interval %v + read_timeout %v", o.HealthCheckInterval, o.ReadTimeout), ""},
		{"pool.server-closed", b.ServerClosed,
			"a connection the server (or a proxy) closed is closed here by the checker's peek; a checkout never lends one", ""},
		{"pool.blocking-read", b.BlockingRead,
			fmt.Sprintf("a blocking read (BRPop, Queue, XREADGROUP BLOCK, ...) on a dead link gives up its round and redials: block_slice %v + 500ms", o.BlockSlice), ""},
		{"pool.subscription", b.Subscription,
			fmt.Sprintf("a quiet subscription on a dead link notices and reconnects: PubSubPingInterval %v + read_timeout %v", o.PubSubPingInterval, o.ReadTimeout), ""},
		{"pool.checkout", b.Checkout,
			"longest wait for a free connection when the caller's context has no deadline (pool_timeout); then a *PoolTimeoutError says how many were in use", ""},
		{"pool.command", b.Command,
			"longest a Do takes when its context has no deadline: pool_timeout + 10 × read_timeout (read_timeout bounds each silence; a reply that keeps trickling in is cut off there)", ""},
		{"pool.close", b.Close,
			"Close waits this long for connections in use, then closes them under their callers: the longest of dial_timeout, read_timeout + write_timeout and block_slice + 500ms", ""},
	} {
		f := finding{Check: bound.check, Level: levelInfo, Value: bound.d.String(), Why: bound.why}
		if bound.d == 0 && bound.zero != "" {
			f.Value, f.Why = "none", bound.zero
		}
		findings = append(findings, f)
	}
	if len(warnings) == 0 {
		return append(findings, finding{Check: "pool.warnings", Level: levelOK, Value: "none",
			Why: "NewPool warns of each setting that lets a dead connection go unnoticed for over a minute; these options draw none"})
	}
	for _, w := range warnings {
		setting, why, _ := strings.Cut(w, ": ")
		findings = append(findings, finding{Check: "pool.warnings", Level: levelWarn, Value: setting, Why: why,
			Fix: "bring the setting back towards its default in the URL or Options (docs/options.md: Why these defaults)"})
	}
	return findings
}

// describeOptions lists the options in the URL's query syntax, so an
// operator can see which to set; the password is left out.
func describeOptions(o redisalive.Options) string {
	ka := o.KeepAlive
	return fmt.Sprintf("%s %s db=%d tls=%t dial_timeout=%v read_timeout=%v write_timeout=%v pool_timeout=%v "+
		"max_active=%d max_idle=%d idle_timeout=%v max_conn_lifetime=%v health_check_interval=%v block_slice=%v tcp_user_timeout=%v "+
		"(in code: KeepAlive %v+%d×%v, PubSubPingInterval %v)",
		o.Network, o.Addr, o.DB, o.TLSConfig != nil, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout,
		o.MaxActive, o.MaxIdle, o.IdleTimeout, o.MaxConnLifetime, o.HealthCheckInterval, o.BlockSlice, o.TCPUserTimeout,
		ka.Idle, ka.Count, ka.Interval, o.PubSubPingInterval)
}

// warningLog is a slog.Handler that keeps the messages of warnings, the
// only way a pool reports the settings it warns about.
type warningLog struct {
	mu   sync.Mutex
	msgs []string
}

func (*warningLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (w *warningLog) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, strings.TrimPrefix(r.Message, "redisalive: "))
	return nil
}

func (w *warningLog) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warningLog) WithGroup(string) slog.Handler      { return w }

// messages returns the warnings logged so far, without the library's
// "redisalive: " prefix.
func (w *warningLog) messages() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}
