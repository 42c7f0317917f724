package redistest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

const (
	// clusterNodeTimeout is short so that a test of a failed node does not
	// wait the default 15 s for the cluster to notice.
	clusterNodeTimeout = 2 * time.Second
	// failoverNodeTimeout is a cluster with replicas' node timeout: a
	// replica is promoted about two of them after its master fails (the
	// others flag it after one, the replica waits 0.5 to 1 s more, then
	// wins its election).
	failoverNodeTimeout = time.Second
	// firstSourceHost is the last byte of the first node's source
	// address, 127.0.0.x, in a cluster with replicas.
	firstSourceHost = 10
	// busPortOffset is how far above its client port a node listens for
	// the cluster bus; Redis fixes it.
	busPortOffset = 10000
	maxNodePort   = 65535 - busPortOffset
	nodePortTries = 100
	// createTimeout bounds redis-cli --cluster create, which polls once a
	// second until the nodes agree.
	createTimeout  = 30 * time.Second
	clusterTimeout = 20 * time.Second
	// migrateBatch keys move per MIGRATE; migrateTimeout is MIGRATE's own
	// I/O timeout, below adminTimeout so its error reaches us as a reply.
	migrateBatch   = 100
	migrateTimeout = adminTimeout / 2
)

// Cluster is a Redis Cluster, each node a Server owned by one test: masters
// alone (StartCluster), or each with replicas (StartClusterWithReplicas).
// Like Server, its methods are not safe to call concurrently with a node's
// Stop or Restart.
type Cluster struct {
	nodes   []*Server // the masters first, then the replicas
	sources map[*Server]string
}

// StartCluster starts masters (at least 3, as redis-cli requires) cluster
// nodes, each a Server with its own temp dir and cleanup, joins them with
// redis-cli --cluster create, which spreads the slots evenly, and waits
// until the cluster is ok (bounded as WaitClusterOK). Extra args are
// appended to every node's command line and override the defaults, e.g.
// "--cluster-node-timeout", "5000".
//
// A missing redis-server or redis-cli skips or fails the test as Start
// documents.
func StartCluster(tb testing.TB, masters int, args ...string) *Cluster {
	tb.Helper()
	return startCluster(tb, masters, 0, args)
}

// StartClusterWithReplicas is StartCluster with replicas replicas (at
// least 1) of each master, for tests of a failover: Nodes lists the
// masters, then the replicas of the first master, of the second, and so
// on. Its nodes' cluster-node-timeout is 1 s, so a master that dies is
// replaced by its replica within about 2 to 3 s, and they stream a full
// sync at once (repl-diskless-sync-delay 0); args override both. It
// returns once every node is ok and names the same master and replicas
// for every slot, and every replica's link to its master is up with no
// sync in progress (bounded as WaitClusterOK), about 3 s for 3 masters
// with a replica each. Each node also listens on a unix socket
// (UnixSocket), through which a test can watch a node it has cut off.
func StartClusterWithReplicas(tb testing.TB, masters, replicas int, args ...string) *Cluster {
	tb.Helper()
	if replicas < 1 {
		tb.Fatalf("redistest: StartClusterWithReplicas: got %d replicas, want at least 1", replicas)
	}
	return startCluster(tb, masters, replicas, append([]string{
		"--cluster-node-timeout", strconv.FormatInt(failoverNodeTimeout.Milliseconds(), 10),
		"--repl-diskless-sync", "yes",
		"--repl-diskless-sync-delay", "0",
		// CLUSTER SLOTS names a replica only once its offset is known to
		// be nonzero; on a master that has had no writes, that is after
		// its first PING to its replicas, by default 10 s.
		"--repl-ping-replica-period", "1",
	}, args...))
}

func startCluster(tb testing.TB, masters, replicas int, args []string) *Cluster {
	tb.Helper()
	if masters < 3 {
		tb.Fatalf("redistest: StartCluster: got %d masters, want at least 3", masters)
	}
	cli := lookPath(tb, "redis-cli", "redis-tools")
	nodeArgs := append([]string{
		"--cluster-enabled", "yes",
		// Relative to --dir, so each node keeps its own; it survives
		// Restart, which is how a restarted node rejoins.
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
	}, args...)
	c := &Cluster{sources: make(map[*Server]string)}
	for i := range masters * (1 + replicas) {
		args, src := nodeArgs, ""
		if replicas > 0 && runtime.GOOS == "linux" {
			src = fmt.Sprintf("127.0.0.%d", firstSourceHost+i)
			// Announced, or the others would take the source address
			// of its links for its own and dial it there.
			args = append(slices.Clip(nodeArgs), "--bind-source-addr", src, "--cluster-announce-ip", "127.0.0.1")
		}
		s := newServer(tb, args)
		if replicas > 0 {
			s.socket = filepath.Join(s.dir, "redis.sock")
		}
		s.start(tb, freeNodePort)
		c.nodes = append(c.nodes, s)
		if src != "" {
			c.sources[s] = src
		}
	}

	// The masters alone: redis-cli would pair replicas with masters as it
	// likes; joining them ourselves says which replicates which.
	cmdArgs := append([]string{"--cluster", "create"}, c.Addrs()[:masters]...)
	cmdArgs = append(cmdArgs, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(tb.Context(), createTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, cmdArgs...)
	cmd.SysProcAttr = dieWithParent()
	// Output goes through a pipe; if a child of redis-cli held it open, Wait
	// would block after the kill.
	cmd.WaitDelay = stopTimeout
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli %s: %v (timeout %v)\n--- output ---\n%s",
			strings.Join(cmdArgs, " "), err, createTimeout, out)
	}
	if replicas == 0 {
		c.WaitClusterOK(tb)
		return c
	}
	for i, r := range c.nodes[masters:] {
		replicate(tb, r, c.nodes[i/replicas])
	}
	c.waitAgreed(tb, func(v clusterView) error {
		for _, m := range c.nodes[:masters] {
			if got := len(v.replicas[m.Addr()]); got != replicas {
				return fmt.Errorf("master %s: %d replicas named, want %d", m.Addr(), got, replicas)
			}
		}
		for i, r := range c.nodes[masters:] {
			if err := inSync(r, c.nodes[i/replicas]); err != nil {
				return err
			}
		}
		return nil
	})
	return c
}

// replicate makes r, a node of no cluster yet, a replica of master: it
// meets master, then asks to replicate it, which it refuses ("Unknown
// node") until the handshake of the meeting is done, a beat of the cluster
// cron later.
func replicate(tb testing.TB, r, master *Server) {
	tb.Helper()
	id := master.nodeID(tb)
	r.Do(tb, "CLUSTER", "MEET", "127.0.0.1", master.Port())
	deadline := time.Now().Add(clusterTimeout)
	for {
		_, err := r.TryDo("CLUSTER", "REPLICATE", id)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: CLUSTER REPLICATE %s (%s) on %s: still %v after %v", id, master.Addr(), r.Addr(), err, clusterTimeout)
		}
		time.Sleep(pollInterval)
	}
}

// inSync checks that r says it replicates master with its link up and no
// sync in progress.
func inSync(r, master *Server) error {
	info, err := redis.String(r.TryDo("INFO", "replication"))
	if err != nil {
		return fmt.Errorf("replica %s: INFO replication: %w", r.Addr(), err)
	}
	got := fmt.Sprintf("role:%s master:%s link:%s syncing:%s", infoField(info, "role"),
		net.JoinHostPort(infoField(info, "master_host"), infoField(info, "master_port")),
		infoField(info, "master_link_status"), infoField(info, "master_sync_in_progress"))
	if want := fmt.Sprintf("role:slave master:%s link:up syncing:0", master.Addr()); got != want {
		return fmt.Errorf("replica %s: got %s, want %s", r.Addr(), got, want)
	}
	return nil
}

// freeNodePort finds a port whose cluster bus port is free too. Either may
// be taken before the node binds them, which launch reports as
// errAddrInUse.
func freeNodePort() (int, error) {
	for range nodePortTries {
		port, err := freePort()
		if err != nil {
			return 0, err
		}
		if port > maxNodePort {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+busPortOffset)))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port p <= %d with p+%d free in %d tries", maxNodePort, busPortOffset, nodePortTries)
}

// SourceAddr returns the local address n dials the other nodes from
// (bind-source-addr), or "" if it has none of its own. On Linux each node
// of a cluster with replicas has one, 127.0.0.10 and up, so that
// faultnet.BlackholeAddr can cut the links it opened; Blackhole of its
// ports cuts those it accepted.
func (c *Cluster) SourceAddr(n *Server) string { return c.sources[n] }

// Nodes returns the cluster's nodes in the order they were started.
func (c *Cluster) Nodes() []*Server { return slices.Clone(c.nodes) }

// Addrs returns the nodes' addresses, in the order of Nodes.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// WaitClusterOK polls (bounded: 20 s) until every running node reports
// cluster_state:ok and all of them name the same master and replicas for
// every slot, none of them a stopped node, and fails tb otherwise. A node
// stopped (killed) is left out, so after a failover it waits until the
// survivors agree on the replica promoted in its place. Use it after
// healing a fault, e.g. restarting a stopped node, before relying on the
// cluster again.
func (c *Cluster) WaitClusterOK(tb testing.TB) {
	tb.Helper()
	c.waitAgreed(tb, func(clusterView) error { return nil })
}

// waitAgreed is WaitClusterOK that also waits until the agreed view
// passes check.
func (c *Cluster) waitAgreed(tb testing.TB, check func(clusterView) error) {
	tb.Helper()
	deadline := time.Now().Add(clusterTimeout)
	for {
		v, err := c.agreedView()
		if err == nil {
			err = check(v)
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: cluster %v not ok within %v: %v", c.Addrs(), clusterTimeout, err)
		}
		time.Sleep(pollInterval)
	}
}

// clusterView is one node's opinion of the cluster.
type clusterView struct {
	state    string              // cluster_state from CLUSTER INFO
	owners   []string            // from CLUSTER SLOTS: the master serving each slot, "" for none
	replicas map[string][]string // from CLUSTER SLOTS: each master's replicas, sorted
}

// agreedView returns the view of the cluster if every running node is ok
// and they all agree on it, or an error saying where they differ.
func (c *Cluster) agreedView() (clusterView, error) {
	var first clusterView
	var firstNode *Server
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		v, err := n.view()
		if err != nil {
			return clusterView{}, fmt.Errorf("%s: %w", n.Addr(), err)
		}
		if v.state != "ok" {
			return clusterView{}, fmt.Errorf("%s: cluster_state:%s", n.Addr(), v.state)
		}
		if slot := slices.Index(v.owners, ""); slot >= 0 {
			return clusterView{}, fmt.Errorf("%s: slot %d has no owner", n.Addr(), slot)
		}
		for _, stopped := range c.nodes {
			if slot := slices.Index(v.owners, stopped.Addr()); slot >= 0 && !stopped.running() {
				return clusterView{}, fmt.Errorf("%s: slot %d is served by %s, which is stopped", n.Addr(), slot, stopped.Addr())
			}
		}
		if firstNode == nil {
			first, firstNode = v, n
			continue
		}
		for slot := range v.owners {
			if v.owners[slot] != first.owners[slot] {
				return clusterView{}, fmt.Errorf("slot %d: %s says %s, %s says %s",
					slot, firstNode.Addr(), first.owners[slot], n.Addr(), v.owners[slot])
			}
		}
		if !maps.EqualFunc(v.replicas, first.replicas, slices.Equal) {
			return clusterView{}, fmt.Errorf("replicas: %s says %v, %s says %v",
				firstNode.Addr(), first.replicas, n.Addr(), v.replicas)
		}
	}
	if firstNode == nil {
		return clusterView{}, errors.New("no node runs")
	}
	return first, nil
}

// view is s's own opinion of the cluster.
func (s *Server) view() (clusterView, error) {
	c, err := s.dial()
	if err != nil {
		return clusterView{}, err
	}
	defer c.Close()
	info, err := redis.String(c.Do("CLUSTER", "INFO"))
	if err != nil {
		return clusterView{}, fmt.Errorf("CLUSTER INFO: %w", err)
	}
	ranges, err := redis.Values(c.Do("CLUSTER", "SLOTS"))
	if err != nil {
		return clusterView{}, fmt.Errorf("CLUSTER SLOTS: %w", err)
	}
	v := clusterView{
		state:    infoField(info, "cluster_state"),
		owners:   make([]string, slotCount),
		replicas: make(map[string][]string),
	}
	for _, r := range ranges {
		var start, end int
		var nodes []string
		fields, err := redis.Values(r, nil)
		if err == nil && len(fields) < 3 {
			err = errors.New("want start, end and master")
		}
		if err == nil {
			_, err = redis.Scan(fields, &start, &end)
		}
		for i := 2; err == nil && i < len(fields); i++ {
			var node []any
			var host string
			var port int
			if _, err = redis.Scan([]any{fields[i]}, &node); err == nil {
				_, err = redis.Scan(node, &host, &port)
			}
			nodes = append(nodes, net.JoinHostPort(host, strconv.Itoa(port)))
		}
		if err == nil && (start < 0 || end < start || end >= slotCount) {
			err = fmt.Errorf("range %d-%d out of bounds", start, end)
		}
		if err != nil {
			return clusterView{}, fmt.Errorf("CLUSTER SLOTS entry %v: %w", r, err)
		}
		master := nodes[0]
		for slot := start; slot <= end; slot++ {
			v.owners[slot] = master
		}
		v.replicas[master] = slices.Sorted(slices.Values(nodes[1:]))
	}
	return v, nil
}

// role is the role s reports in INFO replication: "master" or "slave".
func (s *Server) role(tb testing.TB) string {
	tb.Helper()
	info, err := redis.String(s.TryDo("INFO", "replication"))
	if err != nil {
		tb.Fatalf("redistest: INFO replication on %s: %v", s.Addr(), err)
	}
	return infoField(info, "role")
}

// Replicas returns the running nodes that say they replicate master now
// (INFO replication), in the order of Nodes. In a failover roles change:
// the replica promoted is a master, and the old master, once back, one of
// its replicas.
func (c *Cluster) Replicas(tb testing.TB, master *Server) []*Server {
	tb.Helper()
	var rs []*Server
	for _, n := range c.nodes {
		if n == master || !n.running() {
			continue
		}
		info, err := redis.String(n.TryDo("INFO", "replication"))
		if err != nil {
			tb.Fatalf("redistest: INFO replication on %s: %v", n.Addr(), err)
		}
		if infoField(info, "role") == "slave" && infoField(info, "master_port") == strconv.Itoa(master.Port()) {
			rs = append(rs, n)
		}
	}
	return rs
}

// NodeForSlot returns the master serving slot according to CLUSTER SLOTS on
// the first node that answers. While the cluster converges nodes may
// disagree; WaitClusterOK first makes the answer everyone's.
func (c *Cluster) NodeForSlot(tb testing.TB, slot int) *Server {
	tb.Helper()
	checkSlot(tb, slot)
	var errs []error
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		v, err := n.view()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.Addr(), err))
			continue
		}
		i := slices.IndexFunc(c.nodes, func(s *Server) bool { return s.Addr() == v.owners[slot] })
		if i < 0 {
			tb.Fatalf("redistest: slot %d: %s says %q serves it, which is no node of this cluster", slot, n.Addr(), v.owners[slot])
		}
		return c.nodes[i]
	}
	tb.Fatalf("redistest: slot %d: no node answered CLUSTER SLOTS: %v", slot, errors.Join(errs...))
	return nil
}

func checkSlot(tb testing.TB, slot int) {
	tb.Helper()
	if slot < 0 || slot >= slotCount {
		tb.Fatalf("redistest: slot %d out of range [0, %d)", slot, slotCount)
	}
}

// nodeID returns the cluster node id of s, which nodes.conf keeps across
// Restart.
func (s *Server) nodeID(tb testing.TB) string {
	tb.Helper()
	id, err := redis.String(s.Do(tb, "CLUSTER", "MYID"), nil)
	if err != nil {
		tb.Fatalf("redistest: CLUSTER MYID on %s: %v", s.Addr(), err)
	}
	return id
}

// MigrateSlot moves slot, with every key in it, from its current master to
// to, the way redis-cli --cluster reshard does it live, and waits until all
// nodes agree that to serves it.
func (c *Cluster) MigrateSlot(tb testing.TB, slot int, to *Server) {
	tb.Helper()
	c.BeginMigration(tb, slot, to)()
}

// BeginMigration is the first half of MigrateSlot: it marks slot IMPORTING
// on to and MIGRATING on its current master and returns. Until finish is
// called the source still serves the slot's keys it has and answers ASK
// for any other key of the slot, and to serves the slot only to clients
// that send ASKING first; move single keys with MIGRATE on the source to
// set up a test. finish moves the remaining keys, assigns the slot to to on
// every node and waits as MigrateSlot does; call it at most once.
func (c *Cluster) BeginMigration(tb testing.TB, slot int, to *Server) (finish func()) {
	tb.Helper()
	checkSlot(tb, slot)
	if !slices.Contains(c.nodes, to) {
		tb.Fatalf("redistest: migrating slot %d to %s, which is no node of this cluster", slot, to.Addr())
	}
	from := c.NodeForSlot(tb, slot)
	if from == to {
		tb.Fatalf("redistest: migrating slot %d to %s, which already serves it", slot, to.Addr())
	}
	fromID, toID := from.nodeID(tb), to.nodeID(tb)
	// The target first: once the source is MIGRATING it sends clients
	// there with ASK, which only an IMPORTING target honours.
	to.Do(tb, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID)
	from.Do(tb, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID)
	return func() {
		tb.Helper()
		moveKeys(tb, slot, from, to)
		// The target first, so that no node sends clients with MOVED to a
		// target that does not yet know it owns the slot; setting it on the
		// target also bumps its config epoch, so its claim wins in gossip.
		to.Do(tb, "CLUSTER", "SETSLOT", slot, "NODE", toID)
		from.Do(tb, "CLUSTER", "SETSLOT", slot, "NODE", toID)
		for _, n := range c.nodes {
			// Replicas refuse SETSLOT; they follow their masters.
			if n != from && n != to && n.running() && n.role(tb) == "master" {
				n.Do(tb, "CLUSTER", "SETSLOT", slot, "NODE", toID)
			}
		}
		c.waitAgreed(tb, func(v clusterView) error {
			if v.owners[slot] != to.Addr() {
				return fmt.Errorf("slot %d: served by %s, want %s", slot, v.owners[slot], to.Addr())
			}
			return nil
		})
	}
}

// moveKeys migrates every key of slot from from to to. A MIGRATING source
// sends new keys of the slot elsewhere with ASK, so its key count can only
// fall and bounds the rounds.
func moveKeys(tb testing.TB, slot int, from, to *Server) {
	tb.Helper()
	n, err := redis.Int(from.Do(tb, "CLUSTER", "COUNTKEYSINSLOT", slot), nil)
	if err != nil {
		tb.Fatalf("redistest: CLUSTER COUNTKEYSINSLOT %d on %s: %v", slot, from.Addr(), err)
	}
	for round := 0; ; round++ {
		keys, err := redis.Values(from.Do(tb, "CLUSTER", "GETKEYSINSLOT", slot, migrateBatch), nil)
		if err != nil {
			tb.Fatalf("redistest: CLUSTER GETKEYSINSLOT %d on %s: %v", slot, from.Addr(), err)
		}
		if len(keys) == 0 {
			return
		}
		if round > n/migrateBatch {
			tb.Fatalf("redistest: slot %d on %s: %d keys left after %d MIGRATE rounds for %d keys",
				slot, from.Addr(), len(keys), round, n)
		}
		args := append([]any{"127.0.0.1", to.Port(), "", 0, migrateTimeout.Milliseconds(), "KEYS"}, keys...)
		from.Do(tb, "MIGRATE", args...)
	}
}
