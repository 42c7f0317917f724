package redistest_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive/internal/redistest"
)

// The sentinel tests run in parallel: each waits on the sentinels' timers
// far more than it works.

func TestStartSentinelSettlesWithTheDefaults(t *testing.T) {
	t.Parallel()
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{})
	nodes, sentinels := topo.Nodes(), topo.Sentinels()
	if len(nodes) != 3 || len(sentinels) != 3 {
		t.Fatalf("got %d nodes and %d sentinels, want 3 (a master and 2 replicas) and 3", len(nodes), len(sentinels))
	}
	for i, sen := range sentinels {
		if got := topo.SentinelAddrs()[i]; got != sen.Addr() {
			t.Fatalf("SentinelAddrs()[%d]: got %s, want %s", i, got, sen.Addr())
		}
	}
	if got := topo.Master(t); got != nodes[0] {
		t.Fatalf("Master: got %s, want the first node %s", got.Addr(), nodes[0].Addr())
	}
	if got := topo.MasterAddr(t); got != nodes[0].Addr() {
		t.Fatalf("MasterAddr: got %s, want %s", got, nodes[0].Addr())
	}
	if got := topo.Replicas(t); !slices.Equal(got, nodes[1:]) {
		t.Fatalf("Replicas: got %v, want the other nodes %v", got, nodes[1:])
	}
	wantMaster(t, topo, map[string]string{
		"name": "mymaster", "quorum": "2", "down-after-milliseconds": "1000",
		"failover-timeout": "5000", "parallel-syncs": "1",
		"num-slaves": "2", "num-other-sentinels": "2",
	})

	nodes[0].Do(t, "SET", "k", "v")
	for _, r := range nodes[1:] {
		waitValue(t, r, "k", "v")
	}
}

func TestStartSentinelHonoursOptionsAndConnectsFromSourceAddr(t *testing.T) {
	t.Parallel()
	const src = "127.0.0.9"
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{
		MasterName:      "cache",
		Replicas:        1,
		Sentinels:       2,
		Quorum:          1,
		DownAfter:       1500 * time.Millisecond,
		FailoverTimeout: 4 * time.Second,
		ParallelSyncs:   2,
		SourceAddr:      src,
		MasterArgs:      []string{"--maxmemory", "1000000"},
		ReplicaArgs:     []string{"--replica-priority", "50"},
		SentinelArgs:    []string{"--maxclients", "77"},
	})
	nodes, sentinels := topo.Nodes(), topo.Sentinels()
	if len(nodes) != 2 || len(sentinels) != 2 {
		t.Fatalf("got %d nodes and %d sentinels, want 2 and 2", len(nodes), len(sentinels))
	}
	if got := topo.MasterName(); got != "cache" {
		t.Fatalf("MasterName: got %q, want cache", got)
	}
	wantMaster(t, topo, map[string]string{
		"name": "cache", "quorum": "1", "down-after-milliseconds": "1500",
		"failover-timeout": "4000", "parallel-syncs": "2",
		"num-slaves": "1", "num-other-sentinels": "1",
	})
	wantConfig(t, nodes[0], "maxmemory", "1000000")
	wantConfig(t, nodes[1], "replica-priority", "50")
	for _, sen := range sentinels {
		info, err := redis.String(sen.Do(t, "INFO", "clients"), nil)
		if err != nil || !strings.Contains(info, "maxclients:77\r\n") {
			t.Fatalf("INFO clients of sentinel %s: got %q, %v; want maxclients:77", sen.Addr(), info, err)
		}
	}

	// Each sentinel has a command and a pub/sub link to each node and a
	// command link to each other sentinel, all from src.
	for _, n := range nodes {
		wantSentinelLinksFrom(t, n, src, 2*len(sentinels))
	}
	for _, sen := range sentinels {
		wantSentinelLinksFrom(t, sen, src, len(sentinels)-1)
	}
}

func TestSentinelFailoverPromotesAReplicaAndTheOldMasterFollowsIt(t *testing.T) {
	t.Parallel()
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{})
	old := topo.Master(t)
	old.Do(t, "SET", "k", "v")
	if got, err := redis.Int(old.Do(t, "WAIT", 2, 2000), nil); err != nil || got != 2 {
		t.Fatalf("WAIT 2 2000: got %d, %v; want both replicas to have the write", got, err)
	}
	events := topo.WatchEvents(t)

	promoted := topo.Failover(t)
	if promoted == old || !slices.Contains(topo.Nodes(), promoted) {
		t.Fatalf("Failover: got %s, want one of the replicas %v", promoted.Addr(), topo.Replicas(t))
	}
	if got := topo.Master(t); got != promoted {
		t.Fatalf("Master after Failover: got %s, want %s", got.Addr(), promoted.Addr())
	}
	wantRole(t, promoted, "master")
	if got, err := redis.String(promoted.Do(t, "GET", "k"), nil); err != nil || got != "v" {
		t.Fatalf("GET k on the new master: got %q, %v; want v", got, err)
	}
	ev := events.Wait(t, "+switch-master", 5*time.Second)
	if want := fmt.Sprintf("mymaster 127.0.0.1 %d 127.0.0.1 %d", old.Port(), promoted.Port()); ev.Payload != want {
		t.Fatalf("+switch-master: got %q, want %q", ev.Payload, want)
	}

	// The sentinels convert the old master about 10 s later.
	topo.WaitSettled(t)
	wantRole(t, old, "slave")
	if got := topo.Replicas(t); !slices.Contains(got, old) {
		t.Fatalf("Replicas after the old master was converted: got %v, want it among them", got)
	}

	// Sentinels rewrote the other replica's config file: restarted, it
	// follows the new master, not the one it was started with.
	var other *redistest.Server
	for _, n := range topo.Nodes() {
		if n != old && n != promoted {
			other = n
		}
	}
	other.Restart(t)
	topo.WaitSettled(t)
	waitValue(t, other, "k", "v")
}

// wantMaster checks that every sentinel's SENTINEL MASTER has the fields
// want.
func wantMaster(t *testing.T, topo *redistest.Sentinel, want map[string]string) {
	t.Helper()
	for _, sen := range topo.Sentinels() {
		got, err := redis.StringMap(sen.Do(t, "SENTINEL", "MASTER", topo.MasterName()), nil)
		if err != nil {
			t.Fatalf("SENTINEL MASTER on %s: %v", sen.Addr(), err)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("SENTINEL MASTER on %s: got %s %q, want %q", sen.Addr(), k, got[k], v)
			}
		}
	}
}

func wantConfig(t *testing.T, srv *redistest.Server, key, want string) {
	t.Helper()
	got, err := redis.Strings(srv.Do(t, "CONFIG", "GET", key), nil)
	if err != nil || len(got) != 2 || got[1] != want {
		t.Fatalf("CONFIG GET %s on %s: got %q, %v; want %s", key, srv.Addr(), got, err, want)
	}
}

func wantRole(t *testing.T, srv *redistest.Server, want string) {
	t.Helper()
	reply, err := redis.Values(srv.Do(t, "ROLE"), nil)
	if err != nil || len(reply) == 0 {
		t.Fatalf("ROLE on %s: got %v, %v", srv.Addr(), reply, err)
	}
	if got, _ := redis.String(reply[0], nil); got != want {
		t.Fatalf("ROLE on %s: got %s, want %s", srv.Addr(), got, want)
	}
}

// waitValue polls (bounded: 5 s) until GET key on srv, a replica, gives
// want.
func waitValue(t *testing.T, srv *redistest.Server, key, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := redis.String(srv.Do(t, "GET", key), nil)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s on %s: got %q, %v for 5 s; want %q", key, srv.Addr(), got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantSentinelLinksFrom checks that srv has n connections from sentinels,
// which name them sentinel-<id>-cmd or -pubsub, all from address src.
func wantSentinelLinksFrom(t *testing.T, srv *redistest.Server, src string, n int) {
	t.Helper()
	list, err := redis.String(srv.Do(t, "CLIENT", "LIST"), nil)
	if err != nil {
		t.Fatalf("CLIENT LIST on %s: %v", srv.Addr(), err)
	}
	var links []string
	for line := range strings.Lines(list) {
		var addr, name string
		for field := range strings.FieldsSeq(line) {
			if v, ok := strings.CutPrefix(field, "addr="); ok {
				addr = v
			} else if v, ok := strings.CutPrefix(field, "name="); ok {
				name = v
			}
		}
		if !strings.HasPrefix(name, "sentinel-") {
			continue
		}
		links = append(links, name+" "+addr)
		if !strings.HasPrefix(addr, src+":") {
			t.Errorf("%s: sentinel link %s from %s, want from %s", srv.Addr(), name, addr, src)
		}
	}
	if len(links) != n {
		t.Errorf("%s: got %d sentinel links %q, want %d", srv.Addr(), len(links), links, n)
	}
}
