package redistest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// The defaults of SentinelOptions.
const (
	defaultMasterName      = "mymaster"
	defaultReplicas        = 2
	defaultSentinels       = 3
	defaultDownAfter       = time.Second
	defaultFailoverTimeout = 5 * time.Second
	defaultParallelSyncs   = 1
)

const (
	// settleTimeout bounds WaitSettled. A sentinel finds the replicas in
	// the master's INFO at once, the other sentinels from their hello
	// messages within 2 s, and converts a node it sees in the wrong role
	// (an old master after a failover) after 8 s, at its next INFO to it,
	// which it sends every 10 s.
	settleTimeout = 30 * time.Second
	// failedElectionRetry is how many failover timeouts a sentinel waits
	// before it tries again after losing an election: 2.
	failedElectionRetry = 2
	// failoverMargin is added to the time a failover may take by the
	// sentinels' own timers, for a loaded machine.
	failoverMargin = 10 * time.Second
	// sentinelAnnounceIP is the address the sentinels give each other.
	sentinelAnnounceIP = "127.0.0.1"
)

// SentinelOptions configures StartSentinel. The zero value gives a master
// named "mymaster" with 2 replicas, monitored by 3 sentinels with a quorum
// of 2 that consider it down after 1 s.
type SentinelOptions struct {
	// MasterName is the name the sentinels monitor the master under; ""
	// means "mymaster".
	MasterName string
	// Replicas is the number of replicas; 0 means 2.
	Replicas int
	// Sentinels is the number of sentinels; 0 means 3.
	Sentinels int
	// Quorum is how many sentinels must agree that the master is down
	// before one of them fails it over; 0 means a majority of Sentinels.
	// Whatever the quorum, the failover needs the votes of a majority.
	Quorum int
	// DownAfter is down-after-milliseconds, how long the master may fail
	// to answer before a sentinel thinks it down; 0 means 1 s.
	DownAfter time.Duration
	// FailoverTimeout is failover-timeout; 0 means 5 s. A sentinel that
	// loses an election tries again after twice this.
	FailoverTimeout time.Duration
	// ParallelSyncs is parallel-syncs, how many replicas resynchronize
	// with a new master at once; 0 means 1.
	ParallelSyncs int
	// SourceAddr is the local IP address the sentinels connect from, to
	// the servers and to each other (bind-source-addr), e.g. "127.0.0.9".
	// Clients still connect from 127.0.0.1, so a firewall rule on the
	// source address cuts the sentinels alone off from a server. "" means
	// the kernel picks: 127.0.0.1.
	SourceAddr string
	// MasterArgs are appended to the first master's command line,
	// ReplicaArgs to each replica's and SentinelArgs to each sentinel's;
	// they override the defaults. Roles change in a failover: these follow
	// the server, not the role.
	MasterArgs, ReplicaArgs, SentinelArgs []string
}

// Sentinel is a Redis Sentinel deployment owned by one test: a master, its
// replicas and the sentinels that monitor them, each a Server with its own
// temp dir and cleanup, all on 127.0.0.1. Like Server, its methods are not
// safe to call concurrently with a server's Stop or Restart.
//
// Every server reads a config file of its own, which it rewrites when a
// sentinel reconfigures it (sentinels rewrite theirs too), so a server
// restarted with Restart comes back as it was last configured, as it would
// in production: a restarted replica follows the master it last followed,
// a restarted old master comes back as a master (and empty: nothing is
// persisted) until the sentinels convert it, and a restarted sentinel
// remembers what it knew.
//
// # Failover timeline
//
// Measured by TestSentinelFailoverTimeline in bench/, which prints it, on
// Redis 7.0.15 with the defaults, 3 runs each, on a 2-core machine: events as
// received from each sentinel (PSUBSCRIBE *), a sentinel's answer to
// GET-MASTER-ADDR-BY-NAME and the servers' ROLE as polled every
// millisecond, all from the trigger. A sentinel saves its config file to
// disk at most of these steps, which accounts for much of the 50-100 ms
// between them.
//
// A planned failover (SENTINEL FAILOVER) is run by the sentinel that got
// the command, the leader, without an election; the others publish
// nothing until they learn the outcome from its hello message.
//
//	        0-1 ms  leader: +new-epoch, +try-failover
//	      53-79 ms  leader: +vote-for-leader (itself), +elected-leader
//	    130-162 ms  leader: +selected-slave, +failover-state-send-slaveof-noone
//	    197-302 ms  promoted replica: ROLE master; its clients are disconnected
//	  1123-1135 ms  leader: +promoted-slave, and names the new master from now
//	  1189-1231 ms  others: +switch-master, and name the new master from now
//	  1194-1235 ms  other replica: replicates the new master, its clients disconnected
//	  2235-2259 ms  leader: +failover-end, +switch-master
//	11229-11304 ms  a sentinel (a non-leader, which switched 1 s earlier, in
//	                all runs): +convert-to-slave of the old master; until
//	                then it was a master taking writes from the clients it
//	                kept, which are now disconnected, and the writes lost
//
// A master killed with SIGKILL: the sentinel that first finds it down
// with the quorum leads; the others vote for it 7-18 ms later. The steps
// from the leader's election on are those of a planned failover.
//
//	1015-1081 ms  first sentinel: +sdown master (down-after is 1 s)
//	1091-1117 ms  last sentinel: +sdown master
//	1118-1165 ms  leader: +odown, +new-epoch, +try-failover, +vote-for-leader
//	1177-1242 ms  leader: +elected-leader
//	1261-1298 ms  leader: +selected-slave, +failover-state-send-slaveof-noone
//	1322-1374 ms  promoted replica: ROLE master
//	2139-2222 ms  leader: +promoted-slave, and names the new master from now
//	2197-2305 ms  others: +switch-master, and name the new master from now
//	2199-2322 ms  other replica: replicates the new master
//	3233-3331 ms  leader: +failover-end, +switch-master
//
// The old master restarted just after that came back as an empty master
// and stayed one, answering ROLE master, for 10.0-10.1 s, until a sentinel
// converted it (+convert-to-slave).
type Sentinel struct {
	name            string
	downAfter       time.Duration
	failoverTimeout time.Duration
	nodes           []*Server // the first master, then the replicas
	sentinels       []*Server
}

// StartSentinel starts a master, its replicas and the sentinels monitoring
// it, and waits until the topology is settled, as WaitSettled. The
// replicas sync before the sentinels start, so that the sentinels find
// them in the master's INFO at once; the sentinels find each other from
// their hello messages, sent every 2 s: StartSentinel takes about 2.5 s.
//
// A missing redis-server skips or fails the test as Start documents.
func StartSentinel(tb testing.TB, opts SentinelOptions) *Sentinel {
	tb.Helper()
	opts = opts.withDefaults(tb)
	s := &Sentinel{name: opts.MasterName, downAfter: opts.DownAfter, failoverTimeout: opts.FailoverTimeout}

	// Without a delay a master streams its data to new replicas at once,
	// instead of waiting 5 s for more of them; any node may become a
	// master.
	dataConf := []string{"repl-diskless-sync yes", "repl-diskless-sync-delay 0"}
	master := newServer(tb, opts.MasterArgs)
	master.conf = writeConf(tb, master.dir, "redis.conf", dataConf)
	master.start(tb, freePort)
	s.nodes = append(s.nodes, master)
	for range opts.Replicas {
		r := newServer(tb, opts.ReplicaArgs)
		r.conf = writeConf(tb, r.dir, "redis.conf",
			append(slices.Clone(dataConf), fmt.Sprintf("replicaof 127.0.0.1 %d", master.Port())))
		r.start(tb, freePort)
		s.nodes = append(s.nodes, r)
	}
	// A sentinel reads the replicas from the master's INFO when it first
	// connects, and again only 10 s later.
	s.waitFor(tb, "replicas to sync", settleTimeout, func() error {
		for _, r := range s.nodes[1:] {
			if err := replicates(r, master); err != nil {
				return err
			}
		}
		return nil
	})

	if opts.SourceAddr != "" {
		checkSourceAddr(tb, opts.SourceAddr, master)
	}
	sentinelConf := []string{
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", opts.MasterName, master.Port(), opts.Quorum),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", opts.MasterName, opts.DownAfter.Milliseconds()),
		fmt.Sprintf("sentinel failover-timeout %s %d", opts.MasterName, opts.FailoverTimeout.Milliseconds()),
		fmt.Sprintf("sentinel parallel-syncs %s %d", opts.MasterName, opts.ParallelSyncs),
		// Without it a sentinel announces the local address of its link
		// to the master, which is SourceAddr when that is set; the
		// sentinels listen on 127.0.0.1 only.
		"sentinel announce-ip " + sentinelAnnounceIP,
	}
	if opts.SourceAddr != "" {
		sentinelConf = append(sentinelConf, "bind-source-addr "+opts.SourceAddr)
	}
	for range opts.Sentinels {
		sen := newServer(tb, append([]string{"--sentinel"}, opts.SentinelArgs...))
		sen.conf = writeConf(tb, sen.dir, "sentinel.conf", sentinelConf)
		sen.start(tb, freePort)
		s.sentinels = append(s.sentinels, sen)
	}
	s.WaitSettled(tb)
	return s
}

// withDefaults returns opts with its zero values replaced by the defaults,
// failing tb if it makes no sense.
func (opts SentinelOptions) withDefaults(tb testing.TB) SentinelOptions {
	tb.Helper()
	if opts.MasterName == "" {
		opts.MasterName = defaultMasterName
	}
	if opts.Replicas == 0 {
		opts.Replicas = defaultReplicas
	}
	if opts.Sentinels == 0 {
		opts.Sentinels = defaultSentinels
	}
	if opts.Quorum == 0 {
		opts.Quorum = opts.Sentinels/2 + 1
	}
	if opts.DownAfter == 0 {
		opts.DownAfter = defaultDownAfter
	}
	if opts.FailoverTimeout == 0 {
		opts.FailoverTimeout = defaultFailoverTimeout
	}
	if opts.ParallelSyncs == 0 {
		opts.ParallelSyncs = defaultParallelSyncs
	}
	switch {
	case strings.ContainsAny(opts.MasterName, " \t\r\n\"'"):
		tb.Fatalf("redistest: StartSentinel: master name %q has a space or quote", opts.MasterName)
	case opts.Replicas < 0 || opts.Sentinels < 0 || opts.ParallelSyncs < 0:
		tb.Fatalf("redistest: StartSentinel: got %d replicas, %d sentinels, %d parallel syncs; want none negative",
			opts.Replicas, opts.Sentinels, opts.ParallelSyncs)
	case opts.Quorum < 0 || opts.Quorum > opts.Sentinels:
		tb.Fatalf("redistest: StartSentinel: got quorum %d, want 1 to %d (the sentinels)", opts.Quorum, opts.Sentinels)
	case opts.DownAfter < time.Millisecond || opts.FailoverTimeout < time.Millisecond:
		tb.Fatalf("redistest: StartSentinel: got down-after %v, failover-timeout %v; want at least 1 ms",
			opts.DownAfter, opts.FailoverTimeout)
	case opts.SourceAddr != "" && net.ParseIP(opts.SourceAddr) == nil:
		tb.Fatalf("redistest: StartSentinel: source address %q is not an IP address", opts.SourceAddr)
	}
	return opts
}

// checkSourceAddr fails tb unless a connection from src reaches server, so
// that a source address the machine does not have fails here, not as
// sentinels that never see the master.
func checkSourceAddr(tb testing.TB, src string, server *Server) {
	tb.Helper()
	d := net.Dialer{Timeout: adminTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", server.Addr())
	if err != nil {
		tb.Fatalf("redistest: StartSentinel: cannot connect from source address %s: %v", src, err)
	}
	c.Close()
}

// writeConf writes lines as the config file name in dir and returns its
// path.
func writeConf(tb testing.TB, dir, name string, lines []string) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	return path
}

// MasterName returns the name the sentinels monitor the master under.
func (s *Sentinel) MasterName() string { return s.name }

// Nodes returns the master and the replicas, in the order they were
// started: the first master first. Roles change in a failover; Master
// says which is the master now.
func (s *Sentinel) Nodes() []*Server { return slices.Clone(s.nodes) }

// Sentinels returns the sentinels, in the order they were started.
func (s *Sentinel) Sentinels() []*Server { return slices.Clone(s.sentinels) }

// SentinelAddrs returns the sentinels' addresses, in the order of
// Sentinels: what a client is configured with.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, sen := range s.sentinels {
		addrs[i] = sen.Addr()
	}
	return addrs
}

// MasterAddr returns the master's address as the first sentinel that
// answers gives it (SENTINEL GET-MASTER-ADDR-BY-NAME). During a failover
// sentinels may disagree; WaitSettled and WaitNewMaster make the answer
// everyone's.
func (s *Sentinel) MasterAddr(tb testing.TB) string {
	tb.Helper()
	var errs []error
	for _, sen := range s.sentinels {
		addr, err := s.masterAddrFrom(sen)
		if err == nil {
			return addr
		}
		errs = append(errs, fmt.Errorf("%s: %w", sen.Addr(), err))
	}
	tb.Fatalf("redistest: no sentinel gave the address of %s: %v", s.name, errors.Join(errs...))
	return ""
}

// Master returns the node at MasterAddr.
func (s *Sentinel) Master(tb testing.TB) *Server {
	tb.Helper()
	addr := s.MasterAddr(tb)
	n := s.node(addr)
	if n == nil {
		tb.Fatalf("redistest: the sentinels name %s the master of %s, which is no node of this topology", addr, s.name)
	}
	return n
}

// Replicas returns the nodes other than Master, in the order of Nodes,
// whether or not they run and replicate it.
func (s *Sentinel) Replicas(tb testing.TB) []*Server {
	tb.Helper()
	master := s.Master(tb)
	var rs []*Server
	for _, n := range s.nodes {
		if n != master {
			rs = append(rs, n)
		}
	}
	return rs
}

// Failover waits until the topology is settled (WaitSettled), makes a
// sentinel fail the master over (SENTINEL FAILOVER), which it does at once
// without waiting for the master to fail, and waits for the new master as
// WaitNewMaster, which it returns. The old master is still a master then;
// WaitSettled waits until the sentinels have made it a replica.
//
// Settling first is what makes the command succeed: a sentinel refuses it
// with -INPROG while it is still finishing a failover it led, and with
// -NOGOODSLAVE until it has an answer to INFO from a replica that it can
// reach. Back to back, a second Failover therefore waits about 10 s.
func (s *Sentinel) Failover(tb testing.TB) *Server {
	tb.Helper()
	s.WaitSettled(tb)
	old := s.Master(tb)
	sentinels := s.running(s.sentinels)
	if len(sentinels) == 0 {
		tb.Fatalf("redistest: failing %s over: no sentinel runs", s.name)
	}
	sen := sentinels[0]
	if got, err := sen.TryDo("SENTINEL", "FAILOVER", s.name); err != nil || got != "OK" {
		tb.Fatalf("redistest: SENTINEL FAILOVER %s on %s: got %v, %v; want OK", s.name, sen.Addr(), got, err)
	}
	return s.WaitNewMaster(tb, old)
}

// WaitSettled polls (bounded: 30 s) until every running sentinel names the
// same master, which says it is one, every other running node says it
// replicates it with its link up, and every running sentinel sees the
// master as up, those replicas as up replicas and every other running
// sentinel as up. Stopped servers are left out. It fails tb otherwise,
// with every server's log tail. Use it before relying on the topology
// after a failover or a restart: the sentinels convert an old master to a
// replica about 10 s after they fail it over.
func (s *Sentinel) WaitSettled(tb testing.TB) {
	tb.Helper()
	s.waitFor(tb, "the topology to settle", settleTimeout, func() error {
		master, err := s.agreedMaster()
		if err != nil {
			return err
		}
		if err := s.replicated(master, nil); err != nil {
			return err
		}
		for _, sen := range s.running(s.sentinels) {
			if err := s.checkView(sen, master); err != nil {
				return fmt.Errorf("sentinel %s: %w", sen.Addr(), err)
			}
		}
		return nil
	})
}

// WaitNewMaster polls until the sentinels have failed over from old: every
// running sentinel names the same master, which is not old and says it is
// a master, and every running node but old replicates it with its link
// up. It returns the new master. Old is left out: it may be stopped, cut
// off from the sentinels and still a master, or waiting for the sentinels
// to convert it (see WaitSettled). The sentinel that led the failover may
// not have ended it yet: it does about 1 s later, at its next INFO to the
// replicas. The wait is bounded by the time the sentinels may take with
// one lost election (down-after plus three failover timeouts) plus 10 s.
func (s *Sentinel) WaitNewMaster(tb testing.TB, old *Server) *Server {
	tb.Helper()
	within := s.downAfter + (1+failedElectionRetry)*s.failoverTimeout + failoverMargin
	var master *Server
	s.waitFor(tb, "a master other than "+old.Addr(), within, func() error {
		var err error
		master, err = s.agreedMaster()
		if err != nil {
			return err
		}
		if master == old {
			return fmt.Errorf("the sentinels still name %s", old.Addr())
		}
		return s.replicated(master, old)
	})
	return master
}

// waitFor polls cond until it returns nil, or fails tb after within with
// cond's last error and the servers' log tails.
func (s *Sentinel) waitFor(tb testing.TB, what string, within time.Duration, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: sentinel %s: waited %v for %s: %v%s", s.name, within, what, err, s.logTails())
		}
		time.Sleep(pollInterval)
	}
}

// logTails returns the tail of every server's log: the sentinels' tell
// what they saw and did.
func (s *Sentinel) logTails() string {
	var b strings.Builder
	for _, n := range s.nodes {
		fmt.Fprintf(&b, "\n--- node %s log tail ---\n%s", n.Addr(), tail(n.logSince(0)))
	}
	for _, sen := range s.sentinels {
		fmt.Fprintf(&b, "\n--- sentinel %s log tail ---\n%s", sen.Addr(), tail(sen.logSince(0)))
	}
	return b.String()
}

// running returns the servers of ss that run.
func (s *Sentinel) running(ss []*Server) []*Server {
	var up []*Server
	for _, srv := range ss {
		if srv.running() {
			up = append(up, srv)
		}
	}
	return up
}

// node returns the node listening on addr, or nil.
func (s *Sentinel) node(addr string) *Server {
	for _, n := range s.nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// masterAddrFrom asks sen for the master's address.
func (s *Sentinel) masterAddrFrom(sen *Server) (string, error) {
	reply, err := redis.Strings(sen.TryDo("SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.name))
	if err != nil {
		return "", err
	}
	if len(reply) != 2 {
		return "", fmt.Errorf("SENTINEL GET-MASTER-ADDR-BY-NAME %s: got %q, want [ip port]", s.name, reply)
	}
	return net.JoinHostPort(reply[0], reply[1]), nil
}

// agreedMaster returns the node every running sentinel names the master if
// they agree and it says it is a master.
func (s *Sentinel) agreedMaster() (*Server, error) {
	sentinels := s.running(s.sentinels)
	if len(sentinels) == 0 {
		return nil, errors.New("no sentinel runs")
	}
	var agreed string
	for _, sen := range sentinels {
		addr, err := s.masterAddrFrom(sen)
		if err != nil {
			return nil, fmt.Errorf("sentinel %s: %w", sen.Addr(), err)
		}
		if agreed == "" {
			agreed = addr
		} else if addr != agreed {
			return nil, fmt.Errorf("sentinel %s names master %s, sentinel %s names %s",
				sentinels[0].Addr(), agreed, sen.Addr(), addr)
		}
	}
	master := s.node(agreed)
	if master == nil {
		return nil, fmt.Errorf("the sentinels name master %s, which is no node of this topology", agreed)
	}
	info, err := redis.String(master.TryDo("INFO", "replication"))
	if err != nil {
		return nil, fmt.Errorf("master %s: INFO replication: %w", agreed, err)
	}
	if role := infoField(info, "role"); role != "master" {
		return nil, fmt.Errorf("master %s: got role:%s, want role:master", agreed, role)
	}
	return master, nil
}

// replicated checks that every running node other than master and except
// replicates master with its link up.
func (s *Sentinel) replicated(master, except *Server) error {
	for _, n := range s.running(s.nodes) {
		if n == master || n == except {
			continue
		}
		if err := replicates(n, master); err != nil {
			return err
		}
	}
	return nil
}

// replicates checks that r says it replicates master with its link up.
func replicates(r, master *Server) error {
	info, err := redis.String(r.TryDo("INFO", "replication"))
	if err != nil {
		return fmt.Errorf("replica %s: INFO replication: %w", r.Addr(), err)
	}
	got := fmt.Sprintf("role:%s master:%s link:%s", infoField(info, "role"),
		net.JoinHostPort(infoField(info, "master_host"), infoField(info, "master_port")),
		infoField(info, "master_link_status"))
	if want := fmt.Sprintf("role:slave master:%s link:up", master.Addr()); got != want {
		return fmt.Errorf("replica %s: got %s, want %s", r.Addr(), got, want)
	}
	return nil
}

// checkView checks that sen sees master as an up master, every other
// running node as an up replica of it, and every other running sentinel
// as up. What a sentinel says of a replica's own link comes from the
// replica's INFO, which it asks only every 10 s, so that is not checked:
// replicated asks the replicas themselves.
func (s *Sentinel) checkView(sen, master *Server) error {
	c, err := sen.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	m, err := redis.StringMap(c.Do("SENTINEL", "MASTER", s.name))
	if err != nil {
		return fmt.Errorf("SENTINEL MASTER: %w", err)
	}
	if m["flags"] != "master" {
		return fmt.Errorf("master %s: got flags %q, want \"master\"", master.Addr(), m["flags"])
	}
	replicas, err := peers(c, "REPLICAS", s.name)
	if err != nil {
		return err
	}
	for _, n := range s.running(s.nodes) {
		if n == master {
			continue
		}
		r, ok := replicas[n.Addr()]
		if !ok {
			return fmt.Errorf("no replica %s in SENTINEL REPLICAS", n.Addr())
		}
		if r["flags"] != "slave" {
			return fmt.Errorf("replica %s: got flags %q, want \"slave\"", n.Addr(), r["flags"])
		}
	}
	sentinels, err := peers(c, "SENTINELS", s.name)
	if err != nil {
		return err
	}
	for _, other := range s.running(s.sentinels) {
		if other == sen {
			continue
		}
		o, ok := sentinels[other.Addr()]
		if !ok {
			return fmt.Errorf("no sentinel %s in SENTINEL SENTINELS", other.Addr())
		}
		if o["flags"] != "sentinel" {
			return fmt.Errorf("sentinel %s: got flags %q, want \"sentinel\"", other.Addr(), o["flags"])
		}
	}
	return nil
}

// peers runs SENTINEL REPLICAS or SENTINELS for master on c and returns
// the fields of each instance listed, by address.
func peers(c redis.Conn, kind, master string) (map[string]map[string]string, error) {
	list, err := redis.Values(c.Do("SENTINEL", kind, master))
	if err != nil {
		return nil, fmt.Errorf("SENTINEL %s: %w", kind, err)
	}
	byAddr := make(map[string]map[string]string, len(list))
	for _, item := range list {
		fields, err := redis.StringMap(item, nil)
		if err != nil {
			return nil, fmt.Errorf("SENTINEL %s entry: %w", kind, err)
		}
		byAddr[net.JoinHostPort(fields["ip"], fields["port"])] = fields
	}
	return byAddr, nil
}
