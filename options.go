package redisalive

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redisalive/redisalive/internal/resp"
)

// Defaults applied to zero-valued Options fields. They are chosen so that no
// wait anywhere is unbounded and a silent peer is declared dead within about
// 20 s even by the kernel alone.
const (
	DefaultDialTimeout         = 5 * time.Second
	DefaultReadTimeout         = 3 * time.Second
	DefaultWriteTimeout        = 3 * time.Second
	DefaultIdleTimeout         = 5 * time.Minute
	DefaultHealthCheckInterval = 15 * time.Second
	DefaultBlockSlice          = time.Second
	DefaultPubSubPingInterval  = time.Second
	DefaultKeepAliveIdle       = 5 * time.Second
	DefaultKeepAliveInterval   = 5 * time.Second
	DefaultKeepAliveCount      = 3
	DefaultMaxBulkLen          = resp.DefaultMaxBulkLen
)

// Bounds on Options values. Outside them a value cannot work, however the
// network behaves.
const (
	// minIOTimeout is the least DialTimeout, ReadTimeout and WriteTimeout:
	// a garbage-collection pause or a busy scheduler alone can take a few
	// milliseconds, so a shorter timeout fails healthy commands and makes
	// every health check close healthy connections.
	minIOTimeout = 10 * time.Millisecond
	// maxAddedTimeout bounds the timeouts the pool adds to others
	// (ReadTimeout + 1 s for PoolTimeout, PoolTimeout + ReadTimeout for a
	// subscribe, DialTimeout + ReadTimeout for a cluster's slot map,
	// ReadTimeout + WriteTimeout at Close, BlockSlice + 500 ms per blocking
	// round): a time.Duration overflows past 292 years, and an overflowed
	// timeout is negative, so every such wait would end at once.
	maxAddedTimeout = 100 * 365 * 24 * time.Hour
	// minBlockSlice is the least BlockSlice: each round costs the server a
	// command, so shorter slices turn an idle consumer into a busy loop.
	minBlockSlice = 10 * time.Millisecond
	// minUserTimeout is the least TCPUserTimeout. Linux gives a lost
	// segment's retransmission only this long to be acknowledged, and also
	// drops a connection whose peer keeps its receive window closed this
	// long, so a value below a round trip plus a brief server stall turns
	// any lost packet or busy moment into a dropped healthy connection.
	minUserTimeout = 100 * time.Millisecond
	// maxUserTimeout is the largest TCPUserTimeout: the kernel takes it in
	// milliseconds as a 32-bit int, and a larger value would wrap around.
	maxUserTimeout = math.MaxInt32 * time.Millisecond
	// maxKeepAliveTime and maxKeepAliveCount bound KeepAlive.Idle,
	// KeepAlive.Interval and KeepAlive.Count: Linux refuses larger values
	// (MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT), which would
	// fail every dial.
	maxKeepAliveTime  = 32767 * time.Second
	maxKeepAliveCount = 127
)

// Options configures a Pool. The zero value of every field selects a safe,
// bounded default; only Addr is required. NewPool copies the options, so
// changing them afterwards does not affect a live pool.
type Options struct {
	// Network is "tcp" or "unix". Zero: "unix" when Addr starts with "/",
	// else "tcp".
	Network string
	// Addr is the server's host:port, or the socket path for "unix". A
	// numeric port must be from 1 to 65535. Required, unless Sentinel is
	// set: then it must be empty.
	Addr string
	// Username and Password authenticate each new connection with AUTH.
	// Zero: no AUTH. A Username without a Password is invalid.
	Username string
	Password string
	// DB is selected on each new connection. Zero: database 0.
	DB int
	// TLSConfig, when set, wraps each TCP connection in TLS. Zero: plain TCP.
	// With Sentinel it applies to the master's connections; its ServerName,
	// if empty, is the address the sentinels give.
	TLSConfig *tls.Config

	// DialTimeout bounds connecting, TLS and the AUTH/SELECT handshake of a
	// new connection. At least 10 ms, at most 100 years. Zero:
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// ReadTimeout bounds silence while a reply is due: the wait for its
	// first byte (a blocking command's or a subscription's waits are their
	// own, see BlockSlice and PubSubPingInterval), and every pause once it
	// has begun, so a large reply arriving slowly but steadily over a slow
	// link succeeds while a link that stops fails within ReadTimeout. A
	// whole reply is capped at 10 ReadTimeouts when the caller's context
	// has no deadline (Bounds.Command). It also bounds the health check's
	// PING. At least 10 ms, at most 100 years. Zero: DefaultReadTimeout.
	ReadTimeout time.Duration
	// WriteTimeout bounds each pause while writing a command: a write that
	// makes no progress for this long fails. At least 10 ms, at most 100
	// years. Zero: DefaultWriteTimeout.
	WriteTimeout time.Duration
	// PoolTimeout is the longest a checkout waits for a free connection
	// when its context has no deadline. At most 100 years. Zero:
	// ReadTimeout + 1 s.
	PoolTimeout time.Duration

	// MaxActive limits the connections open at once, in use or idle.
	// Zero: 10 per GOMAXPROCS, or MaxIdle if that is larger.
	MaxActive int
	// MaxIdle limits the idle connections kept for reuse. Zero: MaxActive.
	MaxIdle int
	// IdleTimeout closes connections idle longer than this. Zero:
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxConnLifetime closes connections older than this when they are next
	// idle. Zero: no limit.
	MaxConnLifetime time.Duration

	// KeepAlive sets TCP keepalive on every socket. Zero: enabled with
	// DefaultKeepAliveIdle, DefaultKeepAliveInterval and
	// DefaultKeepAliveCount. NewPool warns when keepalive is off, or when
	// the kernel would take over a minute to notice a silent peer.
	KeepAlive KeepAlive
	// TCPUserTimeout (Linux only; ignored elsewhere) bounds how long written
	// data may stay unacknowledged before the kernel drops the connection;
	// keepalive cannot help while data is in flight. Linux counts it from
	// the first retransmission, so a write fails about one retransmission
	// timeout later than this (0.45 s on loopback). When set, Linux also
	// ends keepalive probing after this long instead of after KeepAlive.Count
	// probes. At least 100 ms (a lost packet or a brief server stall must
	// not drop a healthy connection) and at most math.MaxInt32 ms (about
	// 24.8 days, the kernel's limit). Zero: KeepAlive.Idle +
	// KeepAlive.Interval * KeepAlive.Count (20 s with the defaults), so both
	// paths give the same bound, capped at the kernel's limit. NewPool
	// warns above a minute.
	TCPUserTimeout time.Duration

	// HealthCheckInterval is how often an idle connection is checked: a
	// PING is sent to each connection idle at least this long, and a
	// checkout PINGs a connection idle longer than this. NewPool warns when
	// HealthCheckInterval + ReadTimeout, the time a dead idle connection
	// can stay open, exceeds a minute. Zero: DefaultHealthCheckInterval.
	HealthCheckInterval time.Duration
	// BlockSlice is the server-side timeout of each round of a blocking
	// read (BRPop, BLPop, BLMove); the client reads each round with a
	// deadline of BlockSlice plus 500 ms, so a read on a dead link returns
	// within that. At least 10 ms, at most 100 years; values below one
	// second need Redis 6 or later; NewPool warns above 59.5 s, where that
	// bound passes a minute. Zero: DefaultBlockSlice.
	BlockSlice time.Duration

	// PubSubPingInterval is how long a subscription (Pool.Subscribe, or a
	// connection from Get once it has subscribed) may go without receiving
	// anything before it sends a PING, whose reply must then arrive within
	// ReadTimeout; so a dead link under a quiet subscription is noticed
	// within PubSubPingInterval plus ReadTimeout. Zero:
	// DefaultPubSubPingInterval.
	PubSubPingInterval time.Duration

	// AutoPipeline makes Do send ordinary commands over a few connections
	// shared by all callers: commands queued meanwhile go out in one write
	// and their replies are read in one read, so throughput under
	// concurrency rises past one connection per caller: on two 2-core
	// machines 2.6–7.9× redigo at 64 callers and 1.06–2.1× at 16; at 1
	// caller, which pays two goroutine hand-offs per command, 0.92–1.04×
	// on one and 0.63–0.66× on the other, where waking a goroutine costs
	// more (BENCHMARKS.md). Commands that cannot share a connection (blocking
	// commands, MULTI/EXEC/WATCH, SUBSCRIBE, SELECT and the like) keep a
	// connection of their own, as do Get's. Every bound stays: see
	// docs/auto-pipelining.md.
	//
	// Replies on a shared connection come in order, so each waits for the
	// bytes of those before it. Once a reply has gone on arriving for 2 ms
	// (a large value, a slow link), a caller that would queue behind it
	// takes a connection of its own instead, if one is free at once
	// (Stats.PipelineBypasses). So leave AutoPipeline off where most
	// replies or commands are large (tens of KiB and up) or the link is
	// slow: it saves a write and a read per command, which is nothing next
	// to moving those bytes, while callers that queued before a slow reply
	// showed, every caller once MaxActive connections are busy, and every
	// command behind a large one being written, still wait their turn.
	// Zero: off.
	AutoPipeline bool
	// PipelineConns is how many connections AutoPipeline shares, out of
	// MaxActive; at most MaxPipelineConns. Zero: DefaultPipelineConns.
	PipelineConns int
	// PipelineDepth bounds the commands queued or awaiting their reply on
	// each shared connection; a caller past it waits for room, bounded by
	// its context or PoolTimeout. Each shared connection holds a queue of
	// this many slots, so it is at most MaxPipelineDepth. Zero:
	// DefaultPipelineDepth.
	PipelineDepth int

	// MaxBulkLen is the longest bulk string a reply may declare. A reply
	// declaring more fails with a *ProtocolError, and its connection is
	// closed: a peer that is confused (not a Redis server, a stream out of
	// step) or hostile cannot make the pool allocate what it declares.
	// Replies are read in memory proportional to the bytes received, so a
	// lie below the limit costs nothing either. At least 1. Zero:
	// DefaultMaxBulkLen, 512 MiB, Redis's own proto-max-bulk-len.
	MaxBulkLen int64

	// Sentinel, when set, makes the pool find its master through Redis
	// Sentinel, and follow it through failovers: see SentinelOptions and
	// the package doc's Failover section. Addr must then be empty. Zero:
	// the master is at Addr, and a server there that answers it is no
	// longer the master (READONLY) makes the pool reconnect.
	Sentinel *SentinelOptions

	// LeakDetectionThreshold logs, once, every connection held checked out
	// longer than this, with the stack that checked it out, and counts it
	// in Stats.Leaks. Zero: off.
	LeakDetectionThreshold time.Duration

	// Logger receives the pool's warnings: at NewPool, one for each
	// setting that lets a dead connection go unnoticed for over a minute,
	// saying how long; while it runs, warnings rate-limited to one of a
	// kind per 10 s when blocking reads, subscriptions or Queue consumers
	// cannot reach the server and retry, or a Queue's handler fails for
	// good; and a few notices (a blocking read or subscription that
	// recovered). Zero: slog.Default() as it is when NewPool runs, so that
	// a service that never set up logging still hears that its consumer
	// cannot connect. To silence the pool, set
	// slog.New(slog.DiscardHandler).
	Logger *slog.Logger
}

// KeepAlive configures TCP keepalive probing. The kernel's own defaults
// (7200 s idle, 9 probes 75 s apart) take over two hours to notice a dead
// peer, so every field is always set explicitly on each socket. The kernel
// counts Idle and Interval in whole seconds, so they are rounded up.
type KeepAlive struct {
	// Disable turns keepalive off for the pool's sockets; Idle, Interval
	// and Count must then be zero. Zero: keepalive on.
	Disable bool
	// Idle is the quiet time before the first probe. At most 32767 s, the
	// kernel's limit. Zero: DefaultKeepAliveIdle.
	Idle time.Duration
	// Interval is the time between unanswered probes. At most 32767 s, the
	// kernel's limit. Zero: DefaultKeepAliveInterval.
	Interval time.Duration
	// Count is how many unanswered probes end the connection. Linux, where
	// TCPUserTimeout is always set, ends probing when that expires instead,
	// so there Count counts through TCPUserTimeout's default. At most 127,
	// the kernel's limit. Zero: DefaultKeepAliveCount.
	Count int
}

// config is the validated, defaulted copy of Options that a pool runs on.
// It never changes after NewPool.
type config struct {
	network, addr      string
	username, password string
	db                 int
	tls                *tls.Config
	dialTimeout        time.Duration
	readTimeout        time.Duration
	writeTimeout       time.Duration
	poolTimeout        time.Duration
	maxActive, maxIdle int
	idleTimeout        time.Duration
	maxLifetime        time.Duration
	keepAlive          KeepAlive
	userTimeout        time.Duration
	healthInterval     time.Duration
	blockSlice         time.Duration
	pingInterval       time.Duration
	pipelineConns      int // 0: no auto-pipelining
	pipelineDepth      int
	leakThreshold      time.Duration
	maxBulkLen         int64
	logger             *slog.Logger
	sentinel           *sentinelConfig // nil: the master is at addr
}

// newConfig validates o and fills in its defaults. It reports the first
// invalid field as an *OptionError.
func newConfig(o Options) (config, error) {
	bad := func(field string, v any, reason string) (config, error) {
		return config{}, &OptionError{Field: field, Value: v, Reason: reason}
	}
	var sentinel *sentinelConfig
	if o.Sentinel != nil {
		var err error
		if sentinel, err = o.Sentinel.validate(o.Addr); err != nil {
			return config{}, err
		}
	} else if o.Addr == "" {
		return bad("Addr", `""`, "an address is required (or Sentinel, to find the master through Redis Sentinel)")
	}
	network := o.Network
	if network == "" {
		network = "tcp"
		if strings.HasPrefix(o.Addr, "/") {
			network = "unix"
		}
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
		if sentinel == nil {
			if err := checkHostPort(o.Addr, network); err != nil {
				return bad("Addr", strconv.Quote(o.Addr), err.Error())
			}
		}
	case "unix":
		if sentinel != nil {
			return bad("Network", strconv.Quote(o.Network), "Sentinel names masters by host and port: the network must be TCP")
		}
		if o.TLSConfig != nil {
			return bad("TLSConfig", "non-nil", `TLS is not supported on network "unix"`)
		}
	default:
		return bad("Network", strconv.Quote(o.Network), `want "tcp", "tcp4", "tcp6" or "unix"`)
	}
	if o.Username != "" && o.Password == "" {
		return bad("Password", `""`, "a Username needs a Password")
	}
	if o.DB < 0 {
		return bad("DB", o.DB, "must not be negative")
	}
	durations := []struct {
		name     string
		d        time.Duration
		min, max time.Duration // bounds of a non-zero value; zero: none
	}{
		{"DialTimeout", o.DialTimeout, minIOTimeout, maxAddedTimeout},
		{"ReadTimeout", o.ReadTimeout, minIOTimeout, maxAddedTimeout},
		{"WriteTimeout", o.WriteTimeout, minIOTimeout, maxAddedTimeout},
		{"PoolTimeout", o.PoolTimeout, 0, maxAddedTimeout},
		{"IdleTimeout", o.IdleTimeout, 0, 0},
		{"MaxConnLifetime", o.MaxConnLifetime, 0, 0},
		{"KeepAlive.Idle", o.KeepAlive.Idle, 0, maxKeepAliveTime},
		{"KeepAlive.Interval", o.KeepAlive.Interval, 0, maxKeepAliveTime},
		{"TCPUserTimeout", o.TCPUserTimeout, minUserTimeout, maxUserTimeout},
		{"HealthCheckInterval", o.HealthCheckInterval, 0, 0}, // bounds() saturates its sum
		{"BlockSlice", o.BlockSlice, minBlockSlice, maxAddedTimeout},
		{"LeakDetectionThreshold", o.LeakDetectionThreshold, 0, 0},
		{"PubSubPingInterval", o.PubSubPingInterval, minIOTimeout, maxAddedTimeout},
	}
	for _, f := range durations {
		switch {
		case f.d < 0:
			return bad(f.name, f.d, "must not be negative (zero selects the default)")
		case f.d > 0 && f.d < f.min:
			return bad(f.name, f.d, fmt.Sprintf("must be at least %v", f.min))
		case f.max > 0 && f.d > f.max:
			return bad(f.name, f.d, fmt.Sprintf("must be at most %v", f.max))
		}
	}
	if o.KeepAlive.Count < 0 {
		return bad("KeepAlive.Count", o.KeepAlive.Count, "must not be negative (zero selects the default)")
	}
	if o.KeepAlive.Count > maxKeepAliveCount {
		return bad("KeepAlive.Count", o.KeepAlive.Count, fmt.Sprintf("must be at most %d", maxKeepAliveCount))
	}
	if ka := o.KeepAlive; ka.Disable && (ka.Idle != 0 || ka.Interval != 0 || ka.Count != 0) {
		return bad("KeepAlive", fmt.Sprintf("%+v", ka), "Disable contradicts the Idle, Interval or Count also set")
	}
	if o.MaxActive < 0 {
		return bad("MaxActive", o.MaxActive, "must not be negative")
	}
	if o.MaxIdle < 0 {
		return bad("MaxIdle", o.MaxIdle, "must not be negative")
	}
	if o.MaxActive > 0 && o.MaxIdle > o.MaxActive {
		return bad("MaxIdle", o.MaxIdle, fmt.Sprintf("must not exceed MaxActive (%d)", o.MaxActive))
	}
	if o.MaxBulkLen < 0 {
		return bad("MaxBulkLen", o.MaxBulkLen, "must not be negative (zero selects the default)")
	}
	if o.PipelineConns < 0 || o.PipelineConns > MaxPipelineConns {
		return bad("PipelineConns", o.PipelineConns, fmt.Sprintf("must be from 0 (the default) to %d", MaxPipelineConns))
	}
	if o.PipelineDepth < 0 || o.PipelineDepth > MaxPipelineDepth {
		return bad("PipelineDepth", o.PipelineDepth, fmt.Sprintf("must be from 0 (the default) to %d", MaxPipelineDepth))
	}
	if !o.AutoPipeline && (o.PipelineConns != 0 || o.PipelineDepth != 0) {
		return bad("AutoPipeline", false, "PipelineConns and PipelineDepth apply only with AutoPipeline")
	}

	addr := o.Addr
	if sentinel != nil {
		// What errors and logs call the pool's server: its address moves.
		addr = "master " + sentinel.masterName
	}
	c := config{
		network: network, addr: addr, sentinel: sentinel,
		username: o.Username, password: o.Password, db: o.DB, tls: o.TLSConfig,
		dialTimeout:    cmp.Or(o.DialTimeout, DefaultDialTimeout),
		readTimeout:    cmp.Or(o.ReadTimeout, DefaultReadTimeout),
		writeTimeout:   cmp.Or(o.WriteTimeout, DefaultWriteTimeout),
		maxActive:      o.MaxActive,
		maxIdle:        o.MaxIdle,
		idleTimeout:    cmp.Or(o.IdleTimeout, DefaultIdleTimeout),
		maxLifetime:    o.MaxConnLifetime,
		healthInterval: cmp.Or(o.HealthCheckInterval, DefaultHealthCheckInterval),
		blockSlice:     cmp.Or(o.BlockSlice, DefaultBlockSlice),
		pingInterval:   cmp.Or(o.PubSubPingInterval, DefaultPubSubPingInterval),
		leakThreshold:  o.LeakDetectionThreshold,
		maxBulkLen:     cmp.Or(o.MaxBulkLen, DefaultMaxBulkLen),
		logger:         o.Logger,
		keepAlive: KeepAlive{
			Disable:  o.KeepAlive.Disable,
			Idle:     cmp.Or(o.KeepAlive.Idle, DefaultKeepAliveIdle),
			Interval: cmp.Or(o.KeepAlive.Interval, DefaultKeepAliveInterval),
			Count:    cmp.Or(o.KeepAlive.Count, DefaultKeepAliveCount),
		},
	}
	c.poolTimeout = cmp.Or(o.PoolTimeout, c.readTimeout+time.Second)
	c.userTimeout = cmp.Or(o.TCPUserTimeout, min(c.keepAlive.Idle+c.keepAlive.Interval*time.Duration(c.keepAlive.Count), maxUserTimeout))
	if c.maxActive == 0 {
		c.maxActive = max(10*runtime.GOMAXPROCS(0), c.maxIdle)
	}
	if c.maxIdle == 0 {
		c.maxIdle = c.maxActive
	}
	if o.AutoPipeline {
		c.pipelineConns = cmp.Or(o.PipelineConns, DefaultPipelineConns)
		c.pipelineDepth = cmp.Or(o.PipelineDepth, DefaultPipelineDepth)
		if c.pipelineConns >= c.maxActive {
			return bad("PipelineConns", c.pipelineConns, fmt.Sprintf("must be less than MaxActive (%d): blocking reads, transactions and Get need connections of their own", c.maxActive))
		}
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return c, nil
}

// warnAfter is how far a detection bound may stretch before NewPool warns:
// twice the 30 s this library aims for, so that only settings well off the
// defaults draw a warning.
const warnAfter = time.Minute

// warnings says, for each setting that lets a dead connection go unnoticed
// longer than warnAfter, what the bound becomes. Such settings are valid,
// just far from what the pool promises, so NewPool logs them rather than
// rejecting them.
func (c *config) warnings() []string {
	var w []string
	b := c.bounds()
	if b.BlockingRead > warnAfter {
		w = append(w, fmt.Sprintf("BlockSlice %v: a blocking read on a dead link is noticed only after %v", c.blockSlice, b.BlockingRead))
	}
	if b.DeadIdle > warnAfter {
		w = append(w, fmt.Sprintf("HealthCheckInterval %v, ReadTimeout %v: an idle connection on a dead link is found and closed only after %v",
			c.healthInterval, c.readTimeout, b.DeadIdle))
	}
	ka := c.keepAlive
	if ka.Disable {
		w = append(w, fmt.Sprintf("KeepAlive.Disable: a silent peer of an idle connection is never noticed by the kernel; the health check finds it in the pool after %v, never while a caller holds it", b.DeadIdle))
	} else if b.SilentPeer > warnAfter {
		settings := fmt.Sprintf("KeepAlive {Idle:%v Interval:%v Count:%d}", ka.Idle, ka.Interval, ka.Count)
		if b.Unacknowledged > 0 {
			settings += fmt.Sprintf(", TCPUserTimeout %v", b.Unacknowledged)
		}
		w = append(w, settings+": the kernel notices a silent peer of an idle connection only after "+b.SilentPeer.String())
	}
	if b.Unacknowledged > warnAfter {
		w = append(w, fmt.Sprintf("TCPUserTimeout %v: data written to a dead link fails only after %v plus one retransmission timeout", b.Unacknowledged, b.Unacknowledged))
	}
	if b.Subscription > warnAfter {
		w = append(w, fmt.Sprintf("PubSubPingInterval %v, ReadTimeout %v: a quiet subscription on a dead link is noticed only after %v",
			c.pingInterval, c.readTimeout, b.Subscription))
	}
	return w
}

// keepAliveBound is how long after the last traffic the kernel declares a
// silent peer dead. Probes go out at Idle, then every Interval. Without
// TCP_USER_TIMEOUT the connection ends when Count of them are unanswered;
// with it, Linux ignores Count and ends it at the first probe timer at
// least userTimeout after the last traffic, but never before the second.
func keepAliveBound(ka KeepAlive, userTimeout time.Duration) time.Duration {
	if userTimeout == 0 {
		return ka.Idle + ka.Interval*time.Duration(ka.Count)
	}
	probes := max(1, (userTimeout-ka.Idle+ka.Interval-1)/ka.Interval)
	return ka.Idle + ka.Interval*probes
}

// Bounds are the longest a pool takes to notice or end each kind of
// failure, as its options make them: the Bound column of the fault model
// (docs/fault-model.md). Tests assert each of them on real sockets.
type Bounds struct {
	// DeadIdle: an idle connection on a dead link is found by the
	// checker's PING: HealthCheckInterval + ReadTimeout.
	DeadIdle time.Duration
	// ServerClosed: a connection the server closed is closed here by the
	// checker's peek, about a second; a checkout never lends one.
	ServerClosed time.Duration
	// SilentPeer: the kernel ends a connection whose peer went silent,
	// with nothing in flight, by keepalive; 0 when KeepAlive is disabled.
	SilentPeer time.Duration
	// Unacknowledged: the kernel ends a connection whose written data goes
	// unacknowledged (TCP_USER_TIMEOUT, plus one retransmission timeout);
	// 0 where TCP_USER_TIMEOUT is not supported.
	Unacknowledged time.Duration
	// BlockingRead: a round of a blocking read on a dead link gives up:
	// BlockSlice + 500 ms.
	BlockingRead time.Duration
	// Subscription: a quiet subscription on a dead link gives up:
	// PubSubPingInterval + ReadTimeout.
	Subscription time.Duration
	// Checkout: a checkout whose context has no deadline waits at most
	// PoolTimeout for a free connection.
	Checkout time.Duration
	// Command: Do with a context that has no deadline takes at most
	// PoolTimeout + 10 × ReadTimeout: ReadTimeout bounds each silence, and
	// a reply that keeps trickling in is cut off at 10 of them.
	Command time.Duration
	// Close: Close returns within this, closing the sockets of callers
	// still holding connections then.
	Close time.Duration
}

func (c *config) bounds() Bounds {
	b := Bounds{
		DeadIdle:     c.healthInterval + c.readTimeout,
		ServerClosed: peekEvery,
		BlockingRead: c.blockSlice + blockGrace,
		Subscription: c.pingInterval + c.readTimeout,
		Checkout:     c.poolTimeout,
		Command:      c.poolTimeout + replyCap(c.readTimeout),
		Close:        max(c.dialTimeout, c.readTimeout+c.writeTimeout, c.blockSlice+blockGrace),
	}
	if b.DeadIdle < c.healthInterval { // overflowed: a HealthCheckInterval meant as "never"
		b.DeadIdle = math.MaxInt64
	}
	userTimeout := c.userTimeout
	if !userTimeoutApplies {
		userTimeout = 0
	}
	b.Unacknowledged = userTimeout
	if !c.keepAlive.Disable {
		b.SilentPeer = keepAliveBound(c.keepAlive, userTimeout)
	}
	return b
}

// checkHostPort checks a TCP address: host:port, the port a number from 1
// to 65535 or a service name, which is left to the resolver.
func checkHostPort(addr, network string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return errors.New("want host:port for network " + network)
	}
	if n, err := strconv.Atoi(port); err == nil && (n < 1 || n > 65535) {
		return fmt.Errorf("port %s is not from 1 to 65535", port)
	}
	return nil
}

// replyCapReads is how many ReadTimeouts a reply may take in all while
// its bytes keep coming, when the caller's context sets no deadline: the
// last bound on a peer that trickles.
const replyCapReads = 10

// replyCap is the longest a reply whose silences are each bounded by t may
// take, when the caller's context sets no deadline.
func replyCap(t time.Duration) time.Duration {
	if t >= maxAddedTimeout/replyCapReads {
		return maxAddedTimeout // no overflow when added to another bounded timeout
	}
	return replyCapReads * t
}

// options is the Options a config was made from, with every default
// filled in.
func (c *config) options() Options {
	o := Options{
		Network: c.network, Addr: c.addr,
		Username: c.username, Password: c.password, DB: c.db, TLSConfig: c.tls,
		DialTimeout: c.dialTimeout, ReadTimeout: c.readTimeout, WriteTimeout: c.writeTimeout,
		PoolTimeout: c.poolTimeout, MaxActive: c.maxActive, MaxIdle: c.maxIdle,
		IdleTimeout: c.idleTimeout, MaxConnLifetime: c.maxLifetime,
		KeepAlive: c.keepAlive, TCPUserTimeout: c.userTimeout,
		HealthCheckInterval: c.healthInterval, BlockSlice: c.blockSlice,
		PubSubPingInterval: c.pingInterval, LeakDetectionThreshold: c.leakThreshold,
		AutoPipeline: c.pipelineConns > 0, PipelineConns: c.pipelineConns, PipelineDepth: c.pipelineDepth,
		MaxBulkLen: c.maxBulkLen, Logger: c.logger,
	}
	if c.sentinel != nil {
		o.Addr, o.Sentinel = "", c.sentinel.options()
	}
	return o
}

// logWarnings logs each of c's warnings once, at NewPool.
func (c *config) logWarnings() {
	for _, w := range c.warnings() {
		c.logger.Warn("redisalive: "+w, "addr", c.addr)
	}
}
