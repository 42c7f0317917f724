package redisalive

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
// from refreshing the slot map back to back.
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
	// background, besides after a MOVED reply or a node failure. Zero:
	// DefaultClusterRefreshInterval.
	RefreshInterval time.Duration
	// MaxRedirects bounds the MOVED and ASK replies followed for one
	// command. Zero: DefaultMaxRedirects.
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
// more than one refresh at a time.
//
// A dead node costs only the calls for its slots, each bounded as on a
// single server; the others go on. Blocking reads go to the node of their
// keys in the same rounds as on a Pool, and follow their slot if it moves
// to another node while its old one is unreachable.
type Cluster struct {
	seeds        []string
	node         Options // the template, validated
	interval     time.Duration
	maxRedirects int
	closeBound   time.Duration // of every node pool's Close
	blockSlice   time.Duration // every node pool's
	maxActive    int           // every node pool's
	logger       *slog.Logger

	closing   context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the refresh loop and refreshes
	closeOnce sync.Once
	closeDone chan struct{}

	slots atomic.Pointer[slotMap]
	cmds  atomic.Pointer[commandTable]

	mu          sync.Mutex // guards the fields below
	pools       map[string]*Pool
	refresh     *refreshRun // the refresh in flight, if any
	lastRefresh time.Time
	closed      bool
}

// slotMap is one view of the cluster: the master of each slot. A MOVED
// reply updates one slot in place; a refresh replaces the whole map.
type slotMap struct {
	owners  [slot.Count]atomic.Pointer[Pool]
	masters []*Pool // each master once, for commands without keys
	next    atomic.Uint32
}

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
	node := opts.Node
	node.Addr = opts.Addrs[0]
	cfg, err := newConfig(node)
	if err != nil {
		var oe *OptionError
		if errors.As(err, &oe) {
			oe.Field, oe.of = "Node."+oe.Field, "ClusterOptions"
		}
		return nil, err
	}
	cfg.logWarnings()
	node.Addr = ""
	c := &Cluster{
		seeds:        append([]string(nil), opts.Addrs...),
		node:         node,
		interval:     cmp.Or(opts.RefreshInterval, DefaultClusterRefreshInterval),
		maxRedirects: cmp.Or(opts.MaxRedirects, DefaultMaxRedirects),
		closeBound:   cfg.bounds().Close,
		blockSlice:   cfg.blockSlice,
		maxActive:    cfg.maxActive,
		logger:       cfg.logger,
		closeDone:    make(chan struct{}),
		pools:        make(map[string]*Pool),
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
		return nil, errNilContext
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
	return c.route(ctx, s, func(ctx context.Context, p *Pool, asking bool) (any, error) {
		if asking {
			return askingDo(ctx, p, cmd, args)
		}
		return p.Do(ctx, cmd, args...)
	})
}

// Get checks out a connection to the node serving key's slot, as
// Pool.Get does. Commands on it are not redirected: a MOVED or ASK reply
// is returned as the server's error.
func (c *Cluster) Get(ctx context.Context, key string) (redis.Conn, error) {
	if ctx == nil {
		return nil, errNilContext
	}
	p, err := c.nodeFor(ctx, slot.Of(key))
	if err != nil {
		return nil, err
	}
	return p.Get(ctx)
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
	return c.route(ctx, s, func(ctx context.Context, p *Pool, asking bool) (any, error) {
		if asking {
			return askingDo(ctx, p, b.cmd, b.args)
		}
		b.stay = func() bool {
			c.refreshSoon()
			return s < 0 || c.slots.Load().owners[s].Load() == p
		}
		return p.runBlocking(ctx, b)
	})
}

// route runs a command on the node of slot s (any master for -1), then
// wherever MOVED and ASK replies send it, at most MaxRedirects times.
func (c *Cluster) route(ctx context.Context, s int, run func(ctx context.Context, p *Pool, asking bool) (any, error)) (any, error) {
	p, err := c.nodeFor(ctx, s)
	if err != nil {
		return nil, err
	}
	asking := false
	for redirects := 0; ; {
		reply, err := run(ctx, p, asking)
		var moved *movedOnError
		if errors.As(err, &moved) {
			if p, err = c.nodeFor(ctx, s); err != nil {
				return nil, err
			}
			continue // a blocking read goes on where its slot went
		}
		to, ok := redirectOf(err, p.cfg.addr)
		if !ok {
			if err != nil && isNodeFailure(ctx, err) {
				c.refreshSoon() // the map may be stale: a failover, say
			}
			return reply, err
		}
		if redirects++; redirects > c.maxRedirects {
			return nil, fmt.Errorf("redisalive: cluster: more than %d redirects for slot %d: %w", c.maxRedirects, s, err)
		}
		if p, err = c.pool(to.addr); err != nil {
			return nil, err
		}
		asking = to.ask
		if !asking && to.slot >= 0 && to.slot < slot.Count {
			if m := c.slots.Load(); m != nil {
				m.owners[to.slot].Store(p)
			}
			c.refreshSoon()
		}
	}
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

// nodeFor returns the pool of the master serving slot s, or any master for
// -1, waiting for the first slot map if need be.
func (c *Cluster) nodeFor(ctx context.Context, s int) (*Pool, error) {
	m, err := c.slotMap(ctx)
	if err != nil {
		return nil, err
	}
	if s < 0 {
		if len(m.masters) == 0 {
			return nil, errors.New("redisalive: cluster: no master serves any slot")
		}
		return m.masters[int(m.next.Add(1))%len(m.masters)], nil
	}
	if p := m.owners[s].Load(); p != nil {
		return p, nil
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
// one ended less than minRefreshGap ago, and returns the run to wait for;
// nil once the cluster is closed.
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
	c.refresh = r
	c.wg.Go(func() {
		r.err = c.loadSlots(c.closing)
		c.mu.Lock()
		c.refresh, c.lastRefresh = nil, time.Now()
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

// loadSlots asks the known masters, then the seeds, for CLUSTER SLOTS
// until one answers, and installs the map it gives; the first time, it
// also loads the command table.
func (c *Cluster) loadSlots(ctx context.Context) error {
	var candidates []string
	if m := c.slots.Load(); m != nil {
		for _, p := range m.masters {
			candidates = append(candidates, p.cfg.addr)
		}
	}
	candidates = append(candidates, c.seeds...)
	var errs []error
	tried := make(map[string]bool)
	for _, addr := range candidates {
		if tried[addr] {
			continue
		}
		tried[addr] = true
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

func (c *Cluster) loadSlotsFrom(ctx context.Context, addr string) error {
	p, err := c.pool(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.dialTimeout+p.cfg.readTimeout)
	defer cancel()
	if c.cmds.Load() == nil {
		reply, err := p.Do(ctx, "COMMAND")
		if err != nil {
			return fmt.Errorf("%s: COMMAND: %w", addr, err)
		}
		t, err := parseCommandTable(reply)
		if err != nil {
			return fmt.Errorf("%s: COMMAND: %w", addr, err)
		}
		c.cmds.Store(&t)
	}
	reply, err := p.Do(ctx, "CLUSTER", "SLOTS")
	if err != nil {
		return fmt.Errorf("%s: CLUSTER SLOTS: %w", addr, err)
	}
	m, err := c.parseSlots(reply, addr)
	if err != nil {
		return fmt.Errorf("%s: CLUSTER SLOTS: %w", addr, err)
	}
	c.slots.Store(m)
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
	seen := make(map[*Pool]bool)
	fromHost, _, _ := net.SplitHostPort(from)
	for _, r := range ranges {
		fields, err := redis.Values(r, nil)
		if err != nil || len(fields) < 3 {
			return nil, fmt.Errorf("slot range %v: want start, end and master", r)
		}
		start, err1 := redis.Int(fields[0], nil)
		end, err2 := redis.Int(fields[1], nil)
		master, err3 := redis.Values(fields[2], nil)
		if err := cmpErr(err1, err2, err3); err != nil || len(master) < 2 || start < 0 || end >= slot.Count || start > end {
			return nil, fmt.Errorf("slot range %v: malformed", r)
		}
		host, _ := redis.String(master[0], nil)
		port, err := redis.Int(master[1], nil)
		if err != nil {
			return nil, fmt.Errorf("slot range %v: port: %w", r, err)
		}
		p, err := c.pool(net.JoinHostPort(cmp.Or(host, fromHost), strconv.Itoa(port)))
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			m.masters = append(m.masters, p)
		}
		for s := start; s <= end; s++ {
			m.owners[s].Store(p)
		}
	}
	return m, nil
}

// pool returns the node pool for addr, making it on first use.
func (c *Cluster) pool(addr string) (*Pool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrPoolClosed
	}
	if p, ok := c.pools[addr]; ok {
		return p, nil
	}
	opts := c.node
	opts.Addr = addr
	p, err := NewPool(opts)
	if err != nil {
		return nil, err
	}
	c.pools[addr] = p
	return p, nil
}

// Stats returns each node pool's Stats, by address.
func (c *Cluster) Stats() map[string]Stats {
	c.mu.Lock()
	pools := make(map[string]*Pool, len(c.pools))
	for addr, p := range c.pools {
		pools[addr] = p
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
		return errNilContext
	}
	if c.closing == nil {
		return nil // a zero Cluster has nothing to close
	}
	first := false
	c.closeOnce.Do(func() { first = true })
	if !first {
		select {
		case <-c.closeDone:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer close(c.closeDone)
	c.mu.Lock()
	c.closed = true
	pools := make([]*Pool, 0, len(c.pools))
	for _, p := range c.pools {
		pools = append(pools, p)
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
