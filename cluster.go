package redisalive

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive/internal/slot"
)

// Defaults applied to zero-valued ClusterOptions fields.
const (
	DefaultClusterRefreshInterval = 10 * time.Second
	DefaultMaxRedirects           = 3
)

// minRefreshGap keeps a storm of MOVED replies during a slot migration
// from refreshing the slot map back to back: at most one refresh begins
// per minRefreshGap.
const minRefreshGap = 100 * time.Millisecond

// ClusterOptions configures a Cluster.
type ClusterOptions struct {
	// Addrs are seed nodes, host:port, asked for the slot map until one
	// answers. Required.
	Addrs []string
	// Node is the template of every node's Pool; Addr is set per node and
	// must be empty here, DB must be 0 (a cluster has only database 0), and
	// the rest applies to every node as Options describes.
	Node Options
	// RefreshInterval is how often the slot map is refreshed in the
	// background, besides after a MOVED reply and every 100 ms while a
	// node is down. Zero: DefaultClusterRefreshInterval.
	RefreshInterval time.Duration
	// MaxRedirects bounds the MOVED and ASK replies followed for one
	// command, and its moves to a slot's new master after a failover.
	// Zero: DefaultMaxRedirects.
	MaxRedirects int
}

// Cluster is a client of a Redis Cluster: one Pool per node, each with the
// checkout checks, the health checker, keepalive and TCP_USER_TIMEOUT of a
// Pool, and a slot map that routes each command to the node serving its
// keys' slot. It is safe for concurrent use. Make one with NewCluster; a
// zero Cluster fails every call with ErrPoolClosed.
//
// The slot map comes from CLUSTER SLOTS, and where each command's keys sit
// from the server's COMMAND table; commands whose keys span slots fail
// with ErrCrossSlot before anything is sent. A MOVED reply updates the map
// and the command is retried on the right node; an ASK reply is followed
// once, after ASKING, on the node it names. The map is refreshed after a
// MOVED reply, after a node failure and every RefreshInterval, never by
// more than one refresh at a time, asking the nodes that answer first.
//
// A dead node costs only the calls for its slots; the others go on. A
// call in flight on it fails as on a single server, at once if its
// connection is reset, at ReadTimeout on a dead link; its write may or may
// not have been applied. The node is then down: the calls for its slots,
// and any whose dial to it failed (nothing was sent), wait for the slot
// map to name another master rather than dial it, at most DialTimeout
// from their start, and fail with the node's last error if none comes.
// Meanwhile the map is refreshed, and the node probed with a PING, every
// 100 ms. When the cluster promotes a replica in its place, the refresh
// finds it within about 100 ms and the waiting calls go there. The old
// master's pool is closed then: at once if the map names it nowhere (the
// cluster failed it), which fails the calls still in flight on it, or
// gracefully if it is now a replica. Redis replicates asynchronously, so
// a write the old master acknowledged in the instant before it failed may
// be lost.
//
// Blocking reads go to the node of their keys in the same rounds as on a
// Pool. One whose node fails redials it with backoff, as on a Pool, until
// the map names another master for its slot; it then goes on there.
type Cluster struct {
	seeds        []string
	nodeOpts     Options // the template, validated
	interval     time.Duration
	maxRedirects int
	closeBound   time.Duration // of every node pool's Close
	blockSlice   time.Duration // every node pool's
	maxActive    int           // every node pool's
	dialTimeout  time.Duration // every node pool's
	readTimeout  time.Duration // every node pool's
	logger       *slog.Logger

	closing   context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the refresh loop and refreshes
	closeGate closeGate      // the first Close or Shutdown closes; the others wait for it

	slots atomic.Pointer[slotMap]
	cmds  atomic.Pointer[commandTable]

	mu          sync.Mutex       // guards the fields below, and each node's err
	nodes       map[string]*node // by address: the masters of the slot map, and nodes being asked for it
	refresh     *refreshRun      // the refresh in flight, if any
	lastRefresh time.Time        // when the last refresh began
	changed     chan struct{}    // closed and replaced when the slot map or a node's health changes
	closed      bool
}

// slotMap is one view of the cluster: the master of each slot. A MOVED
// reply updates one slot in place; a refresh replaces the whole map.
type slotMap struct {
	owners   [slot.Count]atomic.Pointer[node]
	masters  []*node  // each master once, for commands without keys
	replicas []string // the replicas' addresses, asked for the map when no master answers
	next     atomic.Uint32
}

func (m *slotMap) isMaster(n *node) bool { return slices.Contains(m.masters, n) }

func (m *slotMap) hasReplica(addr string) bool { return slices.Contains(m.replicas, addr) }

// refreshRun is one refresh of the slot map; done is closed when it ends.
type refreshRun struct {
	done chan struct{}
	err  error
}

// NewCluster validates opts and returns a cluster client. It starts
// loading the slot map from the seeds in the background; the first
// command waits for it, bounded by its context.
func NewCluster(opts ClusterOptions) (*Cluster, error) {
	bad := func(field string, v any, reason string) (*Cluster, error) {
		return nil, &OptionError{Field: field, Value: v, Reason: reason, of: "ClusterOptions"}
	}
	if len(opts.Addrs) == 0 {
		return bad("Addrs", "[]", "at least one seed node is required")
	}
	for _, a := range opts.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return bad("Addrs", strconv.Quote(a), "want host:port")
		}
	}
	if opts.Node.Addr != "" {
		return bad("Node.Addr", strconv.Quote(opts.Node.Addr), "must be empty: each node's address comes from the slot map")
	}
	if opts.Node.DB != 0 {
		return bad("Node.DB", opts.Node.DB, "must be 0: a cluster has only database 0")
	}
	if opts.RefreshInterval < 0 {
		return bad("RefreshInterval", opts.RefreshInterval, "must not be negative (zero selects the default)")
	}
	if opts.MaxRedirects < 0 {
		return bad("MaxRedirects", opts.MaxRedirects, "must not be negative (zero selects the default)")
	}
	tmpl := opts.Node
	tmpl.Addr = opts.Addrs[0]
	cfg, err := newConfig(tmpl)
	if err != nil {
		var oe *OptionError
		if errors.As(err, &oe) {
			oe.Field, oe.of = "Node."+oe.Field, "ClusterOptions"
		}
		return nil, err
	}
	cfg.logWarnings()
	tmpl.Addr = ""
	c := &Cluster{
		seeds:        append([]string(nil), opts.Addrs...),
		nodeOpts:     tmpl,
		interval:     cmp.Or(opts.RefreshInterval, DefaultClusterRefreshInterval),
		maxRedirects: cmp.Or(opts.MaxRedirects, DefaultMaxRedirects),
		closeBound:   cfg.bounds().Close,
		blockSlice:   cfg.blockSlice,
		maxActive:    cfg.maxActive,
		dialTimeout:  cfg.dialTimeout,
		readTimeout:  cfg.readTimeout,
		logger:       cfg.logger,
		nodes:        make(map[string]*node),
		changed:      make(chan struct{}),
	}
	c.closing, c.cancel = context.WithCancel(context.Background())
	c.refreshSoon()
	c.wg.Go(c.refreshLoop)
	return c, nil
}

// Do runs one command on the node serving its keys' slot, bounded as
// Pool.Do is, following MOVED and ASK replies. Blocking commands run in
// rounds as Pool.Do describes.
func (c *Cluster) Do(ctx context.Context, cmd string, args ...any) (any, error) {
	if ctx == nil {
		return nil, ErrNilContext
	}
	s, err := c.slotOf(ctx, cmd, args)
	if err != nil {
		return nil, err
	}
	info := lookupCommand(cmd, args)
	if info.block.kind != notBlocking {
		if total, ok := info.block.blockTime(args); ok {
			return c.block(ctx, s, newBlockingCall(cmd, args, info.block, total, time.Now()))
		}
	}
	return c.route(ctx, s, false, func(ctx context.Context, n *node, asking bool) (any, error) {
		if asking {
			return askingDo(ctx, n.pool, cmd, args)
		}
		return n.pool.Do(ctx, cmd, args...)
	})
}

// Get checks out a connection to the node serving key's slot, as
// Pool.Get does, waiting as Do does while that node is down. Commands on
// it are not redirected: a MOVED or ASK reply is returned as the server's
// error.
func (c *Cluster) Get(ctx context.Context, key string) (redis.Conn, error) {
	if ctx == nil {
		return nil, ErrNilContext
	}
	conn, err := c.route(ctx, slot.Of(key), false, func(ctx context.Context, n *node, _ bool) (any, error) {
		return n.pool.Get(ctx)
	})
	if err != nil {
		return nil, err
	}
	return conn.(redis.Conn), nil
}

// BRPop is Pool.BRPop on the node serving the keys, which must share a
// slot (a hash tag gives them one).
func (c *Cluster) BRPop(ctx context.Context, keys ...string) (key, value string, err error) {
	return c.blockingPop(ctx, "BRPOP", keys)
}

// BLPop is Pool.BLPop on the node serving the keys, which must share a
// slot.
func (c *Cluster) BLPop(ctx context.Context, keys ...string) (key, value string, err error) {
	return c.blockingPop(ctx, "BLPOP", keys)
}

// BLMove is Pool.BLMove on the node serving src and dst, which must share a
// slot.
func (c *Cluster) BLMove(ctx context.Context, src, dst, srcSide, dstSide string) (string, error) {
	if err := checkSides(srcSide, dstSide); err != nil {
		return "", err
	}
	reply, err := c.Do(ctx, "BLMOVE", src, dst, srcSide, dstSide, 0)
	if err != nil {
		return "", err
	}
	return redis.String(reply, nil)
}

func (c *Cluster) blockingPop(ctx context.Context, cmd string, keys []string) (string, string, error) {
	if len(keys) == 0 {
		return "", "", fmt.Errorf("redisalive: %s needs at least one key", cmd)
	}
	reply, err := c.Do(ctx, cmd, append(redis.Args{}.AddFlat(keys), 0)...)
	if err != nil {
		return "", "", err
	}
	return popReply(cmd, reply)
}

// queueSeam routes a Queue's calls: its keys share the hash tag {name}, so
// its Lua scripts' connections go to that tag's node.
func (c *Cluster) queueSeam(name string) queuePool {
	tag := "{" + name + "}"
	return queuePool{
		do:         c.Do,
		get:        func(ctx context.Context) (redis.Conn, error) { return c.Get(ctx, tag) },
		blMove:     c.BLMove,
		backoff:    func(ctx context.Context, failures int) error { return backoffWait(ctx, c.closing, failures) },
		logger:     c.logger,
		blockSlice: c.blockSlice,
		maxActive:  c.maxActive,
		closing:    c.closing,
	}
}

// block runs a blocking call on the node of slot s, moving it with the
// slot when a round fails on an unreachable node whose slot has moved.
func (c *Cluster) block(ctx context.Context, s int, b *blockingCall) (any, error) {
	return c.route(ctx, s, true, func(ctx context.Context, n *node, asking bool) (any, error) {
		if asking {
			return askingDo(ctx, n.pool, b.cmd, b.args)
		}
		moved := false
		b.retryHere = func(err error) bool {
			c.nodeDown(n, err)
			c.refreshSoon()
			moved = s >= 0 && c.slots.Load().owners[s].Load() != n
			return !moved
		}
		reply, err := n.pool.runBlocking(ctx, b)
		if moved {
			return reply, &movedOnError{err: err}
		}
		return reply, err
	})
}

// movedOnError ends a blocking read on one node whose pool gave up
// retrying there: the round failed, and the key's slot has moved, so the
// read goes on at the slot's new master.
type movedOnError struct{ err error }

func (e *movedOnError) Error() string { return e.err.Error() }
func (e *movedOnError) Unwrap() error { return e.err }

// route runs a command on the node of slot s (any master for -1), then
// wherever MOVED and ASK replies send it. While that node is down, it
// waits for the slot map to name another (or for the node to answer
// again), until DialTimeout after the call began: what a dial to it would
// have cost. A call that failed to connect, or found the node's pool
// closed as the node left the map, goes on to the slot's new master, since
// nothing was sent. Redirects and such moves together are at most
// MaxRedirects. A blocking call does not wait: its pool redials the node
// with backoff, as long as the call may wait, unless the map names
// another (Cluster.block).
func (c *Cluster) route(ctx context.Context, s int, blocking bool, run func(ctx context.Context, n *node, asking bool) (any, error)) (any, error) {
	start := time.Now()
	n, err := c.nodeFor(ctx, s)
	if err != nil {
		return nil, err
	}
	asking := false
	for redirects := 0; ; {
		if n.isDown() && !asking && !blocking {
			if n, err = c.awaitNode(ctx, s, n, start.Add(c.dialTimeout)); err != nil {
				return nil, err
			}
		}
		reply, err := run(ctx, n, asking)
		var moved *movedOnError
		switch {
		case err == nil || isServerReply(err):
			c.nodeUp(n)
			if to, ok := redirectOf(err, n.addr); ok {
				if redirects++; redirects > c.maxRedirects {
					return nil, fmt.Errorf("redisalive: cluster: more than %d redirects for slot %d: %w", c.maxRedirects, s, err)
				}
				if n, err = c.node(to.addr); err != nil {
					return nil, err
				}
				asking = to.ask
				if !asking && to.slot >= 0 && to.slot < slot.Count {
					if m := c.slots.Load(); m != nil {
						m.owners[to.slot].Store(n)
					}
					c.refreshSoon()
				}
				continue
			}
			return reply, err
		case errors.As(err, &moved):
			// A blocking read goes on where its slot went.
		case errors.Is(err, ErrPoolClosed) && n.isRetired() && !c.isClosed(),
			!blocking && notSent(err) && isNodeFailure(ctx, err): // a blocking call's pool has redialled
			if !n.isRetired() {
				c.nodeDown(n, err)
			}
			if redirects++; redirects > c.maxRedirects {
				return nil, err
			}
		default:
			if isNodeFailure(ctx, err) {
				c.nodeDown(n, err)
				c.refreshSoon() // the map may be stale: a failover, say
				if n.isRetired() {
					err = fmt.Errorf("redisalive: cluster: %s left the slot map during the call: %w", n.addr, err)
				}
			}
			return reply, err
		}
		if n, err = c.nodeFor(ctx, s); err != nil {
			return nil, err
		}
		asking = false
	}
}

// isServerReply reports whether err is the server's own answer: the node
// is up.
func isServerReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

func (c *Cluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// askingDo runs a command after ASKING on one connection of p, as an ASK
// redirect requires.
func askingDo(ctx context.Context, p *Pool, cmd string, args []any) (any, error) {
	conn, err := p.Get(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.Send("ASKING"); err != nil {
		return nil, err
	}
	return redis.DoContext(conn, ctx, cmd, args...)
}

// redirect is a MOVED or ASK reply: the slot and the node to ask.
type redirect struct {
	ask  bool
	slot int
	addr string
}

// redirectOf parses "MOVED 3999 127.0.0.1:6381" and "ASK 3999 ...". An
// address with an empty host means the host of the node that replied.
// Redis writes an IPv6 host without brackets ("MOVED 3999 ::1:6381"), so
// the port is what follows the last ':'; the address is returned in
// net.JoinHostPort's form, the one the cluster's pools are keyed by.
func redirectOf(err error, from string) (redirect, bool) {
	var re redis.Error
	if !errors.As(err, &re) {
		return redirect{}, false
	}
	f := strings.Fields(string(re))
	if len(f) != 3 || f[0] != "MOVED" && f[0] != "ASK" {
		return redirect{}, false
	}
	s, err := strconv.Atoi(f[1])
	if err != nil {
		return redirect{}, false
	}
	addr := f[2]
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		host, port := addr[:i], addr[i+1:]
		if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
			host = host[1 : len(host)-1]
		}
		if host == "" {
			host, _, _ = net.SplitHostPort(from)
		}
		addr = net.JoinHostPort(host, port)
	}
	return redirect{ask: f[0] == "ASK", slot: s, addr: addr}, true
}

// isNodeFailure reports whether err is a node's failure, which may mean
// the slot map is stale, rather than the caller's context or the server's
// answer.
func isNodeFailure(ctx context.Context, err error) bool {
	var re redis.Error
	return !errors.As(err, &re) && ctxErr(ctx) == nil && !errors.Is(err, ErrPoolTimeout) && !errors.Is(err, ErrPoolClosed)
}

// nodeFor returns the master serving slot s, or any master for -1,
// waiting for the first slot map if need be.
func (c *Cluster) nodeFor(ctx context.Context, s int) (*node, error) {
	if _, err := c.slotMap(ctx); err != nil {
		return nil, err
	}
	return c.current(s)
}

// current returns the master the slot map names for slot s, or for -1 any
// master, one that is up if there is one, in turn.
func (c *Cluster) current(s int) (*node, error) {
	m := c.slots.Load()
	if s < 0 {
		if len(m.masters) == 0 {
			return nil, errors.New("redisalive: cluster: no master serves any slot")
		}
		var n *node
		for range m.masters {
			if n = m.masters[int(m.next.Add(1))%len(m.masters)]; !n.isDown() {
				break
			}
		}
		return n, nil
	}
	if n := m.owners[s].Load(); n != nil {
		return n, nil
	}
	c.refreshSoon()
	return nil, fmt.Errorf("redisalive: cluster: no node serves slot %d", s)
}

// slotOf returns the slot of a command's keys, with the command table
// loaded by the first refresh.
func (c *Cluster) slotOf(ctx context.Context, cmd string, args []any) (int, error) {
	if _, err := c.slotMap(ctx); err != nil {
		return 0, err
	}
	t := c.cmds.Load()
	return t.slotOf(cmd, args, func() ([]any, error) {
		return redis.Values(c.Do(ctx, "COMMAND", append([]any{"GETKEYS", cmd}, args...)...))
	})
}

// slotMap returns the current map, waiting for the first one.
func (c *Cluster) slotMap(ctx context.Context) (*slotMap, error) {
	if m := c.slots.Load(); m != nil {
		return m, nil
	}
	r := c.refreshSoon()
	if r == nil {
		return nil, ErrPoolClosed
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("redisalive: cluster: waiting for the slot map: %w", ctx.Err())
	}
	if m := c.slots.Load(); m != nil {
		return m, nil
	}
	return nil, r.err
}

// refreshSoon starts a refresh of the slot map unless one is running or
// the last one began less than minRefreshGap ago, and returns the run to
// wait for; nil once the cluster is closed.
func (c *Cluster) refreshSoon() *refreshRun {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.closing == nil { // closed, or not made by NewCluster
		return nil
	}
	if c.refresh != nil {
		return c.refresh
	}
	if c.slots.Load() != nil && time.Since(c.lastRefresh) < minRefreshGap {
		return &refreshRun{done: closedChan}
	}
	r := &refreshRun{done: make(chan struct{})}
	c.refresh, c.lastRefresh = r, time.Now()
	c.wg.Go(func() {
		r.err = c.loadSlots(c.closing)
		c.mu.Lock()
		c.refresh = nil
		c.mu.Unlock()
		close(r.done)
	})
	return r
}

var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

func (c *Cluster) refreshLoop() {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-c.closing.Done():
			return
		case <-t.C:
			c.refreshSoon()
		}
	}
}

// loadSlots asks the known masters, then their replicas, then the seeds,
// for CLUSTER SLOTS until one answers, and installs the map it gives; the
// first time, it also loads the command table. The nodes that are down
// are asked last: each may cost a DialTimeout.
func (c *Cluster) loadSlots(ctx context.Context) error {
	var known []string
	if m := c.slots.Load(); m != nil {
		for _, n := range m.masters {
			known = append(known, n.addr)
		}
		known = append(known, m.replicas...)
	}
	known = append(known, c.seeds...)
	var candidates, down []string
	tried := make(map[string]bool)
	c.mu.Lock()
	for _, addr := range known {
		if tried[addr] {
			continue
		}
		tried[addr] = true
		if n := c.nodes[addr]; n != nil && n.isDown() {
			down = append(down, addr)
		} else {
			candidates = append(candidates, addr)
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, addr := range append(candidates, down...) {
		err := c.loadSlotsFrom(ctx, addr)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ErrPoolClosed
		}
		errs = append(errs, err)
	}
	err := fmt.Errorf("redisalive: cluster: no node gave the slot map: %w", errors.Join(errs...))
	c.logger.Warn(err.Error())
	return err
}

// loadSlotsFrom asks addr for the slot map, bounded by DialTimeout plus
// ReadTimeout, and installs it. A node that fails on the network is
// recorded down.
func (c *Cluster) loadSlotsFrom(ctx context.Context, addr string) error {
	n, err := c.node(addr)
	if err != nil {
		return err
	}
	askCtx, cancel := context.WithTimeout(ctx, c.dialTimeout+c.readTimeout)
	defer cancel()
	do := func(cmd string, args ...any) (any, error) {
		reply, err := n.pool.Do(askCtx, cmd, args...)
		if err != nil && isNodeFailure(ctx, err) {
			c.nodeDown(n, err)
		}
		return reply, err
	}
	if c.cmds.Load() == nil {
		reply, err := do("COMMAND")
		if err != nil {
			return fmt.Errorf("%s: COMMAND: %w", addr, err)
		}
		t, err := parseCommandTable(reply)
		if err != nil {
			return fmt.Errorf("%s: COMMAND: %w", addr, err)
		}
		c.cmds.Store(&t)
	}
	reply, err := do("CLUSTER", "SLOTS")
	if err != nil {
		return fmt.Errorf("%s: CLUSTER SLOTS: %w", addr, err)
	}
	c.nodeUp(n)
	m, err := c.parseSlots(reply, addr)
	if err != nil {
		return fmt.Errorf("%s: CLUSTER SLOTS: %w", addr, err)
	}
	c.slots.Store(m)
	c.installed(m)
	return nil
}

// parseSlots reads a CLUSTER SLOTS reply: one entry per range of slots,
// [start, end, [host, port, id, ...], replicas...]. An empty host means
// the host of the node asked.
func (c *Cluster) parseSlots(reply any, from string) (*slotMap, error) {
	ranges, err := redis.Values(reply, nil)
	if err != nil {
		return nil, err
	}
	m := &slotMap{}
	seen := make(map[*node]bool)
	seenReplica := make(map[string]bool)
	fromHost, _, _ := net.SplitHostPort(from)
	addrOf := func(entry any) (string, error) {
		fields, err := redis.Values(entry, nil)
		if err != nil || len(fields) < 2 {
			return "", fmt.Errorf("node %v: want host and port", entry)
		}
		host, _ := redis.String(fields[0], nil)
		port, err := redis.Int(fields[1], nil)
		if err != nil {
			return "", fmt.Errorf("node %v: port: %w", entry, err)
		}
		return net.JoinHostPort(cmp.Or(host, fromHost), strconv.Itoa(port)), nil
	}
	for _, r := range ranges {
		fields, err := redis.Values(r, nil)
		if err != nil || len(fields) < 3 {
			return nil, fmt.Errorf("slot range %v: want start, end and master", r)
		}
		start, err1 := redis.Int(fields[0], nil)
		end, err2 := redis.Int(fields[1], nil)
		if err := cmpErr(err1, err2); err != nil || start < 0 || end >= slot.Count || start > end {
			return nil, fmt.Errorf("slot range %v: malformed", r)
		}
		addr, err := addrOf(fields[2])
		if err != nil {
			return nil, fmt.Errorf("slot range %v: master: %w", r, err)
		}
		n, err := c.node(addr)
		if err != nil {
			return nil, err
		}
		if !seen[n] {
			seen[n] = true
			m.masters = append(m.masters, n)
		}
		for s := start; s <= end; s++ {
			m.owners[s].Store(n)
		}
		for _, replica := range fields[3:] {
			if addr, err := addrOf(replica); err == nil && !seenReplica[addr] {
				seenReplica[addr] = true
				m.replicas = append(m.replicas, addr)
			}
		}
	}
	return m, nil
}

// node returns the node at addr, making it and its pool on first use.
func (c *Cluster) node(addr string) (*node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrPoolClosed
	}
	if n, ok := c.nodes[addr]; ok {
		return n, nil
	}
	opts := c.nodeOpts
	opts.Addr = addr
	p, err := NewPool(opts)
	if err != nil {
		return nil, err
	}
	n := &node{addr: addr, pool: p, retired: make(chan struct{})}
	c.nodes[addr] = n
	return n, nil
}

// Stats returns the Stats of each node's pool, by address: the masters of
// the slot map. A node's pool closes, and its Stats go, when the map no
// longer names it.
func (c *Cluster) Stats() map[string]Stats {
	c.mu.Lock()
	pools := make(map[string]*Pool, len(c.nodes))
	for addr, n := range c.nodes {
		pools[addr] = n.pool
	}
	c.mu.Unlock()
	stats := make(map[string]Stats, len(pools))
	for addr, p := range pools {
		stats[addr] = p.Stats()
	}
	return stats
}

// Close closes every node pool as Pool.Close does, all at once, and stops
// refreshing the slot map. When it returns, nothing of the cluster runs
// and none of its sockets is open. Calling it again is safe.
func (c *Cluster) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.closeBound)
	defer cancel()
	return c.Shutdown(ctx)
}

// Shutdown closes every node pool as Pool.Shutdown does, all at once,
// letting calls in flight finish until ctx is done.
func (c *Cluster) Shutdown(ctx context.Context) error {
	if ctx == nil {
		return ErrNilContext
	}
	if c.closing == nil {
		return nil // a zero Cluster has nothing to close
	}
	if first, err := c.closeGate.enter(ctx); !first {
		return err
	}
	defer c.closeGate.leave()
	c.mu.Lock()
	c.closed = true
	pools := make([]*Pool, 0, len(c.nodes))
	for _, n := range c.nodes {
		pools = append(pools, n.pool)
	}
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()

	errs := make([]error, len(pools))
	var wg sync.WaitGroup
	for i, p := range pools {
		wg.Go(func() { errs[i] = p.Shutdown(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
