package redisalive_test

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

// newCluster returns a cluster client on rc, closed when the test ends.
func newCluster(t *testing.T, rc *redistest.Cluster, opts redisalive.ClusterOptions) *redisalive.Cluster {
	t.Helper()
	opts.Addrs = rc.Addrs()[:1] // one seed: the rest come from the slot map
	c, err := redisalive.NewCluster(opts)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// otherNode returns a node of rc that does not serve slot.
func otherNode(t *testing.T, rc *redistest.Cluster, slot int) *redistest.Server {
	t.Helper()
	owner := rc.NodeForSlot(t, slot)
	for _, n := range rc.Nodes() {
		if n != owner {
			return n
		}
	}
	t.Fatal("a cluster of one node")
	return nil
}

func TestClusterRoutesEveryCommandToTheNodeOfItsKeys(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	c := newCluster(t, rc, redisalive.ClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for i := range 300 { // keys spread over all three nodes
		key := fmt.Sprint("key:", i)
		_, err := c.Do(ctx, "SET", key, i)
		require.NoError(t, err, key)
		n, err := redis.Int(c.Do(ctx, "GET", key))
		require.NoError(t, err, key)
		assert.Equal(t, i, n, key)
	}
	_, err := c.Do(ctx, "MSET", "{user1}.name", "ada", "{user1}.lang", "go")
	require.NoError(t, err, "keys sharing a hash tag")
	vals, err := redis.Strings(c.Do(ctx, "MGET", "{user1}.name", "{user1}.lang"))
	require.NoError(t, err)
	assert.Equal(t, []string{"ada", "go"}, vals)
	n, err := redis.Int(c.Do(ctx, "EVAL", "return redis.call('STRLEN', KEYS[1])", 1, "{user1}.name"))
	require.NoError(t, err, "EVAL routed by its numkeys")
	assert.Equal(t, 3, n)
	for _, numkeys := range []any{"1e30", "NaN", "1.5", math.Inf(1)} {
		_, err = c.Do(ctx, "EVAL", "return 1", numkeys, "{user1}.name")
		assert.ErrorContains(t, err, "ERR", "EVAL with numkeys %v: the server's error, once asked for the keys", numkeys)
	}
	_, err = c.Do(ctx, "XINFO", "STREAM", "missing-stream")
	assert.ErrorContains(t, err, "no such key", "a subcommand's key routed to its node")

	_, err = c.Do(ctx, "MGET", "a", "b")
	assert.ErrorIs(t, err, redisalive.ErrCrossSlot, "keys in different slots fail before anything is sent")
	pong, err := redis.String(c.Do(ctx, "PING"))
	require.NoError(t, err, "a command without keys")
	assert.Equal(t, "PONG", pong)

	stats := c.Stats()
	assert.Len(t, stats, 3, "one pool per node")
	for addr, s := range stats {
		assert.Positive(t, s.Dials, "node %s served nothing", addr)
		assert.Zero(t, s.ErrorClosed, "node %s", addr)
	}
}

func TestClusterFollowsMovedAfterASlotMigratesAndAskDuringIt(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	c := newCluster(t, rc, redisalive.ClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	const moved = "moved-key"
	_, err := c.Do(ctx, "SET", moved, "v1")
	require.NoError(t, err)
	s := redistest.KeySlot(moved)
	to := otherNode(t, rc, s)
	rc.MigrateSlot(t, s, to)
	refreshes := clusterSlotsCalls(t, rc)
	var wg sync.WaitGroup
	for range 50 { // every one of them meets MOVED at once
		wg.Go(func() {
			v, err := redis.String(c.Do(ctx, "GET", moved))
			assert.NoError(t, err, "GET after the slot moved: MOVED must be followed")
			assert.Equal(t, "v1", v)
		})
	}
	wg.Wait()
	assert.LessOrEqual(t, clusterSlotsCalls(t, rc)-refreshes, int64(3), "slot map refreshes after 50 MOVED replies: one at a time")

	// During a migration the source sends keys it no longer has to the
	// target with ASK, which serves them only after ASKING.
	const asked = "asked-key"
	s = redistest.KeySlot(asked)
	finish := rc.BeginMigration(t, s, otherNode(t, rc, s))
	_, err = c.Do(ctx, "SET", asked, "v2")
	require.NoError(t, err, "SET of a key of a migrating slot")
	v, err := redis.String(c.Do(ctx, "GET", asked))
	require.NoError(t, err, "GET of a key of a migrating slot")
	assert.Equal(t, "v2", v)
	finish()
	v, err = redis.String(c.Do(ctx, "GET", asked))
	require.NoError(t, err, "GET after the migration")
	assert.Equal(t, "v2", v)
}

// clusterSlotsCalls counts the CLUSTER SLOTS commands rc's nodes served.
func clusterSlotsCalls(t *testing.T, rc *redistest.Cluster) int64 {
	t.Helper()
	var n int64
	for _, node := range rc.Nodes() {
		info, err := redis.String(node.Do(t, "INFO", "commandstats"), nil)
		require.NoError(t, err)
		for line := range strings.Lines(info) {
			if rest, ok := strings.CutPrefix(line, "cmdstat_cluster|slots:calls="); ok {
				calls, _, _ := strings.Cut(rest, ",")
				c, err := strconv.ParseInt(calls, 10, 64)
				require.NoError(t, err)
				n += c
			}
		}
	}
	return n
}

func TestClusterBlockingReadsWaitOnTheNodeOfTheirKeys(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	c := newCluster(t, rc, redisalive.ClusterOptions{Node: redisalive.Options{ReadTimeout: 500 * time.Millisecond, BlockSlice: 200 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	got := make(chan string, 1)
	go func() {
		_, v, err := c.BRPop(ctx, "{q}:jobs")
		assert.NoError(t, err)
		got <- v
	}()
	reply, err := c.Do(ctx, "BLPOP", "{q}:other", 1)
	require.NoError(t, err, "a block longer than ReadTimeout")
	assert.Nil(t, reply)
	_, err = c.Do(ctx, "LPUSH", "{q}:jobs", "job-1")
	require.NoError(t, err)
	select {
	case v := <-got:
		assert.Equal(t, "job-1", v)
	case <-time.After(5 * time.Second):
		t.Fatal("BRPop on the cluster did not return the element")
	}
	_, err = c.Do(ctx, "RPUSH", "{q}:a", "job-2")
	require.NoError(t, err)
	moved, err := c.BLMove(ctx, "{q}:a", "{q}:b", "LEFT", "RIGHT")
	require.NoError(t, err)
	assert.Equal(t, "job-2", moved)
	_, err = c.BLMove(ctx, "{q}:a", "other", "LEFT", "RIGHT")
	assert.ErrorIs(t, err, redisalive.ErrCrossSlot)
}

func TestClusterCloseLeavesNoConnectionOnAnyNode(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	c, err := redisalive.NewCluster(redisalive.ClusterOptions{Addrs: rc.Addrs()})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 50 {
		_, err := c.Do(ctx, "INCR", fmt.Sprint("n:", i))
		require.NoError(t, err)
	}
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "a second Close")
	for _, n := range rc.Nodes() {
		n.WaitConnectedClients(t, 0, 2*time.Second)
	}
	_, err = c.Do(ctx, "PING")
	assert.ErrorIs(t, err, redisalive.ErrPoolClosed)
}

// TestClusterCallsForADeadMasterWaitForItRatherThanDialIt: a master dies
// and nothing replaces it. The first call fails at once (refused); the
// next ones wait up to DialTimeout for the slot map to name another master
// or for the node to answer, without dialling it: one probe a tenth of a
// second does. Once the node is back, calls succeed again.
func TestClusterCallsForADeadMasterWaitForItRatherThanDialIt(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	const dialTimeout = 300 * time.Millisecond
	c := newCluster(t, rc, redisalive.ClusterOptions{Node: redisalive.Options{DialTimeout: dialTimeout}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dead := otherNode(t, rc, redistest.KeySlot("survivor"))
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprint("dead:", i); rc.NodeForSlot(t, redistest.KeySlot(k)) == dead {
			key = k
		}
	}
	_, err := c.Do(ctx, "SET", key, "v")
	require.NoError(t, err)

	dead.Stop(t)
	stopped := time.Now()
	_, err = c.Do(ctx, "GET", key)
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "the first call, on a connection the server closed, then a dial")
	dials := c.Stats()[dead.Addr()].DialErrors
	const calls = 5
	for range calls {
		start := time.Now()
		_, err := c.Do(ctx, "GET", key)
		took := time.Since(start)
		require.ErrorIs(t, err, syscall.ECONNREFUSED, "a call for the dead master's slots: its last failure")
		assert.ErrorContains(t, err, "unreachable")
		assert.InDelta(t, dialTimeout, took, float64(200*time.Millisecond), "got %v, want the %v a dial would have cost", took, dialTimeout)
	}
	_, err = c.Do(ctx, "GET", "survivor")
	require.NoError(t, err, "another master's slots")
	probes := int64(time.Since(stopped)/(100*time.Millisecond)) + 2
	assert.LessOrEqual(t, c.Stats()[dead.Addr()].DialErrors-dials, probes,
		"dials to the dead master during %d calls: one probe per 100ms, not one per call", calls)

	dead.Restart(t)
	restarted := time.Now()
	testkit.WaitFor(t, 10*time.Second, "calls for the restarted master's slots to succeed", func() bool {
		_, err := c.Do(ctx, "GET", key)
		return err == nil
	})
	t.Logf("calls succeed again %v after the restart", time.Since(restarted).Round(time.Millisecond))
}

func TestZeroClusterFailsEveryCallAsClosed(t *testing.T) {
	var c redisalive.Cluster
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Do(ctx, "GET", "k")
	assert.ErrorIs(t, err, redisalive.ErrPoolClosed)
	_, _, err = c.BRPop(ctx, "q")
	assert.ErrorIs(t, err, redisalive.ErrPoolClosed)
	assert.NoError(t, c.Close())
}

func TestNewClusterRejectsInvalidOptions(t *testing.T) {
	for _, o := range []redisalive.ClusterOptions{
		{},
		{Addrs: []string{"no-port"}},
		{Addrs: []string{"h:1"}, Node: redisalive.Options{Addr: "h:2"}},
		{Addrs: []string{"h:1"}, Node: redisalive.Options{DB: 1}},
		{Addrs: []string{"h:1"}, Node: redisalive.Options{MaxIdle: -1}},
		{Addrs: []string{"h:1"}, MaxRedirects: -1},
	} {
		_, err := redisalive.NewCluster(o)
		assert.ErrorIs(t, err, redisalive.ErrInvalidOptions, "%+v", o)
	}
}

// TestQueueOnAClusterHandlesEveryItemOnTheNodeOfItsTag: a queue's keys
// share the hash tag {name}, so its BLMOVE, acks and Lua scripts all run on
// that tag's node.
func TestQueueOnAClusterHandlesEveryItemOnTheNodeOfItsTag(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	c := newCluster(t, rc, redisalive.ClusterOptions{Node: redisalive.Options{BlockSlice: 200 * time.Millisecond}})
	q, err := redisalive.NewQueue(c, "mail", redisalive.QueueOptions{Concurrency: 4})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var payloads [][]byte
	for i := range 200 {
		payloads = append(payloads, []byte(fmt.Sprint("job-", i)))
	}
	require.NoError(t, q.Push(ctx, payloads...))
	var mu sync.Mutex
	seen := map[string]int{}
	consumeCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- q.Consume(consumeCtx, func(_ context.Context, payload []byte) error {
			mu.Lock()
			seen[string(payload)]++
			if len(seen) == len(payloads) {
				stop()
			}
			mu.Unlock()
			return nil
		})
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the queue on the cluster did not handle every item within 20s")
	}
	assert.Len(t, seen, len(payloads), "every item handled")
	owner := rc.NodeForSlot(t, redistest.KeySlot(q.PendingKey()))
	assert.Positive(t, c.Stats()[owner.Addr()].BlockingRounds, "the queue's reads ran on the node of its tag")
}
