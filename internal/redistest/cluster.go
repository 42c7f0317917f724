package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
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

// Cluster is a Redis Cluster of masters without replicas, each node a
// Server owned by one test. Like Server, its methods are not safe to call
// concurrently with a node's Stop or Restart.
type Cluster struct {
	nodes []*Server
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
	c := &Cluster{}
	for range masters {
		s := newServer(tb, nodeArgs)
		s.start(tb, freeNodePort)
		c.nodes = append(c.nodes, s)
	}

	cmdArgs := append([]string{"--cluster", "create"}, c.Addrs()...)
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
	c.WaitClusterOK(tb)
	return c
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

// WaitClusterOK polls (bounded: 20 s) until every node reports
// cluster_state:ok and all nodes name the same master for every slot, and
// fails tb otherwise. Use it after healing a fault, e.g. restarting a
// stopped node, before relying on the cluster again.
func (c *Cluster) WaitClusterOK(tb testing.TB) {
	tb.Helper()
	c.waitAgreed(tb, func([]string) error { return nil })
}

// waitAgreed is WaitClusterOK that also waits until the agreed owners pass
// check.
func (c *Cluster) waitAgreed(tb testing.TB, check func(owners []string) error) {
	tb.Helper()
	deadline := time.Now().Add(clusterTimeout)
	for {
		owners, err := c.agreedOwners()
		if err == nil {
			err = check(owners)
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

// agreedOwners returns the owner of every slot if all nodes are ok and
// agree on them, or an error saying where they differ.
func (c *Cluster) agreedOwners() ([]string, error) {
	var first []string
	for _, n := range c.nodes {
		state, owners, err := n.clusterView()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Addr(), err)
		}
		if state != "ok" {
			return nil, fmt.Errorf("%s: cluster_state:%s", n.Addr(), state)
		}
		if slot := slices.Index(owners, ""); slot >= 0 {
			return nil, fmt.Errorf("%s: slot %d has no owner", n.Addr(), slot)
		}
		if first == nil {
			first = owners
			continue
		}
		for slot := range owners {
			if owners[slot] != first[slot] {
				return nil, fmt.Errorf("slot %d: %s says %s, %s says %s",
					slot, c.nodes[0].Addr(), first[slot], n.Addr(), owners[slot])
			}
		}
	}
	return first, nil
}

// clusterView is s's own opinion of the cluster: cluster_state from
// CLUSTER INFO, and from CLUSTER SLOTS the address of the master serving
// each slot ("" for none).
func (s *Server) clusterView() (state string, owners []string, err error) {
	c, err := s.dial()
	if err != nil {
		return "", nil, err
	}
	defer c.Close()
	info, err := redis.String(c.Do("CLUSTER", "INFO"))
	if err != nil {
		return "", nil, fmt.Errorf("CLUSTER INFO: %w", err)
	}
	ranges, err := redis.Values(c.Do("CLUSTER", "SLOTS"))
	if err != nil {
		return "", nil, fmt.Errorf("CLUSTER SLOTS: %w", err)
	}
	owners = make([]string, slotCount)
	for _, r := range ranges {
		var start, end int
		var master []any
		var host string
		var port int
		fields, err := redis.Values(r, nil)
		if err == nil {
			_, err = redis.Scan(fields, &start, &end, &master)
		}
		if err == nil {
			_, err = redis.Scan(master, &host, &port)
		}
		if err == nil && (start < 0 || end < start || end >= slotCount) {
			err = fmt.Errorf("range %d-%d out of bounds", start, end)
		}
		if err != nil {
			return "", nil, fmt.Errorf("CLUSTER SLOTS entry %v: %w", r, err)
		}
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		for slot := start; slot <= end; slot++ {
			owners[slot] = addr
		}
	}
	return infoField(info, "cluster_state"), owners, nil
}

// NodeForSlot returns the master serving slot according to CLUSTER SLOTS on
// the first node that answers. While the cluster converges nodes may
// disagree; WaitClusterOK first makes the answer everyone's.
func (c *Cluster) NodeForSlot(tb testing.TB, slot int) *Server {
	tb.Helper()
	checkSlot(tb, slot)
	var errs []error
	for _, n := range c.nodes {
		_, owners, err := n.clusterView()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.Addr(), err))
			continue
		}
		i := slices.IndexFunc(c.nodes, func(s *Server) bool { return s.Addr() == owners[slot] })
		if i < 0 {
			tb.Fatalf("redistest: slot %d: %s says %q serves it, which is no node of this cluster", slot, n.Addr(), owners[slot])
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
			if n != from && n != to {
				n.Do(tb, "CLUSTER", "SETSLOT", slot, "NODE", toID)
			}
		}
		c.waitAgreed(tb, func(owners []string) error {
			if owners[slot] != to.Addr() {
				return fmt.Errorf("slot %d: served by %s, want %s", slot, owners[slot], to.Addr())
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
