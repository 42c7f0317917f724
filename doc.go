// Package redisalive is a Redis connection pool for redigo on which no call
// can hang on a dead or half-open connection.
//
// Production Redis clients die quietly: a consumer blocked in BRPOP on a
// socket whose peer vanished waits forever; a full pool blocks Get forever
// and a nested checkout deadlocks the service; connections the server closed
// pile up in CLOSE_WAIT; a process exits without closing its pool. A Pool
// makes each of these impossible by bounding every wait and finding dead
// sockets before a caller does.
//
//	p, err := redisalive.NewPool(redisalive.Options{Addr: "localhost:6379"})
//	if err != nil { ... }
//	defer p.Close()
//	v, err := redis.String(p.Do(ctx, "GET", "key"))
//
// # Checkout
//
// Pool.Do checks out a connection, runs one command and returns the
// connection, all under one deadline: the context's, or PoolTimeout plus
// ReadTimeout. Pool.Get returns a redigo redis.Conn for pipelines and
// transactions; its Close returns it to the pool. A checkout waits at most
// until its context's deadline, or PoolTimeout, and then fails with a
// *PoolTimeoutError (matching ErrPoolTimeout) that reports how long it
// waited and how many connections were in use: the signature of a caller
// that holds a connection while asking for another. LeakDetectionThreshold
// logs the stack of code holding a connection too long.
//
// A connection that saw a network error, or whose command was cancelled
// mid-flight, is closed rather than reused: its reply may still arrive.
// Its command may still arrive too: a middlebox, or a server too busy to
// read it yet, can hold it and run it after a later one. So before sending
// anything more, the pool kills such a connection on the server (CLIENT
// KILL ID, learned with the server's run_id in the connection's handshake):
// a write that failed can never overwrite a later one that succeeded, and
// the server does not keep the abandoned connection open.
//
// # Errors and logging
//
// Every failed dial returns a *DialError naming the address and the step
// that failed (connect, TLS handshake, AUTH, SELECT, handshake). One the
// server refused for the pool's configuration (a wrong or missing
// password, a database it lacks, a port that does not speak RESP, a TLS
// handshake that cannot succeed) matches ErrMisconfigured and reaches
// every caller at once, blocking reads, Subscribe and Queue.Consume
// included; nothing is remembered, so the next call dials again. Any
// other failure a blocking read, a subscription or a consumer retries, and
// the error that ends it at its context or Close carries the last
// connection error. While they retry they warn, at most once a kind per
// 10 s, through Options.Logger: slog.Default() unless set.
//
// # Health checks
//
// Before handing out an idle connection the pool checks it cheaply: its age,
// then a non-blocking MSG_PEEK read that sees a server's close without a
// round trip (on Linux, macOS, FreeBSD, NetBSD and DragonFly), then a PING
// if the connection has been idle longer than HealthCheckInterval. A dead
// connection is replaced with a new one invisibly, because the failure is
// certain to have happened before the caller's command was sent. In the
// background a checker PINGs every connection idle for a full
// HealthCheckInterval, all in one pipelined pass, and closes the dead and
// expired ones; connections in regular use are never pinged.
//
// # Keepalive
//
// Every socket gets TCP keepalive with explicit idle, interval and count
// (the kernel's defaults take over two hours to notice a dead peer) and, on
// Linux, TCP_USER_TIMEOUT, which bounds how long written data may go
// unacknowledged, the one case keepalive cannot cover. With the defaults the
// kernel declares a silent peer dead within 20 seconds.
//
// # Blocking reads
//
// Pool.BRPop, Pool.BLPop and Pool.BLMove block until an element arrives or
// the context ends, and every other blocking command (BZPOPMIN, BLMPOP,
// XREAD and XREADGROUP with BLOCK, WAIT, ...) does the same through Do or
// a connection from Get: a wait longer than BlockSlice, or one without
// limit, is sent in rounds of at most BlockSlice, each read with a
// deadline just past its timeout, so a read on a dead link returns within
// one slice and a healthy one waits exactly as long as it asked. A failed
// round redials with capped, jittered exponential backoff, and the
// abandoned connection is killed on the server so it cannot take the next
// element. Cancellation returns at once; a deadline keeps the connection.
//
// # Pub/Sub
//
// Pool.Subscribe returns a Subscription that PINGs while quiet, notices a
// dead link within PubSubPingInterval plus ReadTimeout, reconnects,
// subscribes again, and reports the messages it may have lost as a
// *GapError, so that the application can resynchronise.
//
// # Queue
//
// BRPop is at most once: an element popped for a reply lost on a dying
// connection is gone. Queue is at least once: Consume moves each element
// atomically into a per-consumer processing list (BLMOVE) and removes it
// only after the handler succeeded, retries failed items up to a limit and
// then dead-letters them, and recovers the items of consumers that died.
//
// # Auto-pipelining
//
// With Options.AutoPipeline, Do sends ordinary commands over a few
// connections shared by all callers, many in one write and their replies
// in one read, keeping every bound: a cancelled caller returns at once
// and costs no connection, and a shared connection whose replies stop
// coming for ReadTimeout fails its callers at once. Replies on a shared
// connection wait for the bytes of those before them, so a caller that
// would queue behind a slow or large reply takes a connection of its own
// when one is free; Options.AutoPipeline says when to leave it off.
//
// # Existing redigo code
//
// Pool.RedigoPool returns a redigo *redis.Pool over the Pool, for code and
// libraries that take one. It keeps no connection of its own: its Get
// checks one out of the Pool, waiting at most PoolTimeout, and closing it
// returns it, so its connections are checked, counted and closed as the
// Pool's own.
//
// # Failover
//
// With Options.Sentinel the pool finds its master through Redis Sentinel
// and follows it: it listens on every sentinel and moves at the leader's
// first announcement of the replica it promotes (+selected-slave), a
// second before the switch, while the old master still accepts writes it
// will throw away. Where new connections go is a target with a generation;
// a move closes the idle connections of older ones at once and those in
// use when returned, cuts blocking rounds and subscriptions on them so
// that they go on at the new master, and holds new connections, bounded by
// PoolTimeout and the context, until the promoted replica reports ROLE
// master. Without Sentinel, a READONLY reply (or a blocked read ended as
// the instance changed state) from a server dialled as a master means it
// was demoted under its address: the pool reconnects and sends the
// command once more, since the server did not run it.
//
// # Redis Cluster
//
// NewCluster returns a Cluster: one Pool per node and a slot map that
// routes each command to the node of its keys, following MOVED and ASK.
// A dead node costs only the calls for its slots; when the cluster
// promotes a replica in its place, they go there within about 100 ms.
//
// # Metrics and shutdown
//
// Pool.Stats returns gauges (Active, Idle, InUse, Waiting) and counters,
// with one counter per reason a connection was closed. Pool.Close closes
// idle connections at once and in-use ones as they return, within a bound;
// Pool.Shutdown drains gracefully until its context ends. Connections
// still checked out then are closed under their holders (the error says
// how many and matches ErrInUseAtClose; the holders' next use fails with
// ErrPoolClosed). After either returns, none of the pool's goroutines runs
// and none of its sockets is open.
//
// The README and docs/ hold the reference: every option with its default
// (docs/options.md, checked against the code by a test), the fault model
// with its bounds, Cluster, auto-pipelining, metrics and the doctor.
package redisalive
