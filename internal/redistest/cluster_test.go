package redistest_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive/internal/redistest"
)

// otherNode returns a node of c other than not.
func otherNode(t *testing.T, c *redistest.Cluster, not *redistest.Server) *redistest.Server {
	t.Helper()
	for _, n := range c.Nodes() {
		if n != not {
			return n
		}
	}
	t.Fatal("cluster has a single node")
	return nil
}

// wantRedirect checks that err is the redirection kind ("MOVED" or "ASK")
// for slot pointing at to.
func wantRedirect(t *testing.T, err error, kind string, slot int, to *redistest.Server) {
	t.Helper()
	want := fmt.Sprintf("%s %d %s", kind, slot, to.Addr())
	var rerr redis.Error
	if !errors.As(err, &rerr) || rerr.Error() != want {
		t.Fatalf("got error %v, want %q", err, want)
	}
}

func TestClusterServesKeyOnSlotOwnerAndMovesElsewhere(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	if got := len(c.Addrs()); got != 3 {
		t.Fatalf("Addrs: got %d, want 3", got)
	}
	const key = "user:42"
	slot := redistest.KeySlot(key)
	owner := c.NodeForSlot(t, slot)
	if got := owner.Do(t, "SET", key, "v"); got != "OK" {
		t.Fatalf("SET on the owner: got %v, want OK", got)
	}
	if got, err := redis.String(owner.Do(t, "GET", key), nil); err != nil || got != "v" {
		t.Fatalf("GET on the owner: got %q, %v; want v", got, err)
	}
	_, err := otherNode(t, c, owner).TryDo("SET", key, "w")
	wantRedirect(t, err, "MOVED", slot, owner)
}

func TestKeySlotMatchesClusterKeyslot(t *testing.T) {
	// The check value the CRC-16/XMODEM specification and the Redis Cluster
	// specification give for "123456789".
	if got, want := redistest.KeySlot("123456789"), 0x31C3%16384; got != want {
		t.Fatalf(`KeySlot("123456789"): got %d, want %d`, got, want)
	}
	c := redistest.StartCluster(t, 3)
	node := c.Nodes()[0]
	keys := []string{
		"", "foo", "123456789", "user:1000",
		"{", "}", "}{", "{}", "{}a", "a{}b",
		"{user1}.a", "{user1}.b", "x{user1}", "a{b}{c}", "a{b}c}", "{{a}}", "{a{b}",
		"\x00\xff binary", strings.Repeat("long", 100),
	}
	for _, key := range keys {
		want, err := redis.Int(node.Do(t, "CLUSTER", "KEYSLOT", key), nil)
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", key, err)
		}
		if got := redistest.KeySlot(key); got != want {
			t.Errorf("KeySlot(%q): got %d, want %d (CLUSTER KEYSLOT)", key, got, want)
		}
	}
	if redistest.KeySlot("{user1}.a") != redistest.KeySlot("{user1}.b") {
		t.Error("keys with hash tag {user1} map to different slots")
	}
}

func TestMigrateSlotMovesKeysAndOldOwnerAnswersMOVED(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	const key = "{migrate}"
	slot := redistest.KeySlot(key)
	from := c.NodeForSlot(t, slot)
	// More keys than one MIGRATE moves, all in the slot by their hash tag.
	mset := []any{key, "v"}
	for i := range 250 {
		mset = append(mset, fmt.Sprintf("%s:%d", key, i), i)
	}
	from.Do(t, "MSET", mset...)
	to := otherNode(t, c, from)

	c.MigrateSlot(t, slot, to)

	if got, err := redis.Int(to.Do(t, "CLUSTER", "COUNTKEYSINSLOT", slot), nil); err != nil || got != 251 {
		t.Fatalf("keys in slot %d on the new owner: got %d, %v; want 251", slot, got, err)
	}

	if got := c.NodeForSlot(t, slot); got != to {
		t.Fatalf("NodeForSlot after MigrateSlot: got %s, want %s", got.Addr(), to.Addr())
	}
	if got, err := redis.String(to.Do(t, "GET", key), nil); err != nil || got != "v" {
		t.Fatalf("GET on the new owner: got %q, %v; want v", got, err)
	}
	_, err := from.TryDo("GET", key)
	wantRedirect(t, err, "MOVED", slot, to)
}

func TestBeginMigrationLeavesSourceAnsweringASK(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	const moved, stays = "{mig}.moved", "{mig}.stays"
	slot := redistest.KeySlot(moved)
	from := c.NodeForSlot(t, slot)
	from.Do(t, "SET", moved, "m")
	from.Do(t, "SET", stays, "s")
	to := otherNode(t, c, from)

	finish := c.BeginMigration(t, slot, to)
	from.Do(t, "MIGRATE", "127.0.0.1", to.Port(), moved, 0, 1000)

	_, err := from.TryDo("GET", moved)
	wantRedirect(t, err, "ASK", slot, to)
	if got, err := redis.String(from.Do(t, "GET", stays), nil); err != nil || got != "s" {
		t.Fatalf("GET of a key not yet moved on the source: got %q, %v; want s", got, err)
	}
	// Without ASKING the target still refers clients to the source.
	_, err = to.TryDo("GET", moved)
	wantRedirect(t, err, "MOVED", slot, from)
	conn, err := redis.Dial("tcp", to.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Do("ASKING"); err != nil {
		t.Fatalf("ASKING: %v", err)
	}
	if got, err := redis.String(conn.Do("GET", moved)); err != nil || got != "m" {
		t.Fatalf("GET after ASKING on the target: got %q, %v; want m", got, err)
	}

	finish()
	for key, want := range map[string]string{moved: "m", stays: "s"} {
		if got, err := redis.String(to.Do(t, "GET", key), nil); err != nil || got != want {
			t.Fatalf("GET %s on the new owner after finish: got %q, %v; want %s", key, got, err, want)
		}
	}
	_, err = from.TryDo("GET", stays)
	wantRedirect(t, err, "MOVED", slot, to)
}

func TestWaitClusterOKAfterFailedNodeRestarts(t *testing.T) {
	// Detecting the failure and clearing it both scale with the node
	// timeout; a shorter one also shows that args override the defaults.
	c := redistest.StartCluster(t, 3, "--cluster-node-timeout", "1000")
	if got, err := redis.Strings(c.Nodes()[2].Do(t, "CONFIG", "GET", "cluster-node-timeout"), nil); err != nil || len(got) != 2 || got[1] != "1000" {
		t.Fatalf("CONFIG GET cluster-node-timeout: got %q, %v; want [cluster-node-timeout 1000]", got, err)
	}
	nodes := c.Nodes()
	failed, survivor := nodes[1], nodes[0]
	key := keyServedBy(t, c, failed)

	failed.Stop(t)
	// The fault counts only once the others have declared it: then the
	// restarted node must also be cleared of FAIL, not just answer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := redis.String(survivor.Do(t, "CLUSTER", "INFO"), nil)
		if err != nil {
			t.Fatalf("CLUSTER INFO: %v", err)
		}
		if strings.Contains(info, "cluster_state:fail") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster_state after stopping a master: got ok for 10s, want fail")
		}
		time.Sleep(20 * time.Millisecond)
	}
	failed.Restart(t)
	c.WaitClusterOK(t)
	if got := failed.Do(t, "SET", key, "v"); got != "OK" {
		t.Fatalf("SET on the restarted node: got %v, want OK", got)
	}
}

// keyServedBy returns a key whose slot node serves.
func keyServedBy(t *testing.T, c *redistest.Cluster, node *redistest.Server) string {
	t.Helper()
	// Each node serves about a third of the slots, so a handful of keys do.
	for i := range 1000 {
		key := fmt.Sprintf("key:%d", i)
		if c.NodeForSlot(t, redistest.KeySlot(key)) == node {
			return key
		}
	}
	t.Fatalf("no key of 1000 served by %s", node.Addr())
	return ""
}

func TestClusterWithReplicasPromotesTheReplicaOfAKilledMaster(t *testing.T) {
	c := redistest.StartClusterWithReplicas(t, 3, 1)
	nodes := c.Nodes()
	if len(nodes) != 6 {
		t.Fatalf("Nodes: got %d, want 6: 3 masters, then their replicas", len(nodes))
	}
	for i, m := range nodes[:3] {
		if got := c.Replicas(t, m); len(got) != 1 || got[0] != nodes[3+i] {
			t.Fatalf("replicas of master %s: got %v, want only %s", m.Addr(), addrs(got), nodes[3+i].Addr())
		}
	}
	for _, n := range nodes {
		c, err := redis.Dial("unix", n.UnixSocket())
		if err != nil {
			t.Fatalf("dialing %s on its unix socket: %v", n.Addr(), err)
		}
		pong, err := redis.String(c.Do("PING"))
		c.Close()
		if err != nil || pong != "PONG" {
			t.Fatalf("PING on the unix socket of %s: got %q, %v; want PONG", n.Addr(), pong, err)
		}
	}
	master, replica := nodes[0], nodes[3]
	key := keyServedBy(t, c, master)
	master.Do(t, "SET", key, "v")
	// In sync means the write is on the replica as soon as it is
	// acknowledged there.
	if got, err := redis.Int(master.Do(t, "WAIT", 1, 2000), nil); err != nil || got != 1 {
		t.Fatalf("WAIT 1 2000 on the master: got %d, %v; want 1", got, err)
	}

	master.Stop(t)
	start := time.Now()
	c.WaitClusterOK(t) // the survivors, once they agree on a new master
	if got := c.NodeForSlot(t, redistest.KeySlot(key)); got != replica {
		t.Fatalf("the master of %s after its master was killed: got %s, want its replica %s", key, got.Addr(), replica.Addr())
	}
	t.Logf("cluster ok with %s promoted %v after the kill", replica.Addr(), time.Since(start).Round(time.Millisecond))
	if got, err := redis.String(replica.Do(t, "GET", key), nil); err != nil || got != "v" {
		t.Fatalf("GET %s on the promoted replica: got %q, %v; want v", key, got, err)
	}
}

func addrs(ss []*redistest.Server) []string {
	var as []string
	for _, s := range ss {
		as = append(as, s.Addr())
	}
	return as
}
