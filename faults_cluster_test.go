//go:build linux

package redisalive_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/faultnet"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

// The fault cases of a Cluster, failovers included: subtests of
// TestFaults, on its harness (faults_test.go).

const (
	// failoverRecovery is the bound on a client's recovery after the
	// cluster promotes a replica: calls for the slots succeed again, and
	// an item pushed on the new master reaches a blocked consumer.
	failoverRecovery = time.Second
	// failoverWriteEvery paces the writer of the failover cases.
	failoverWriteEvery = 10 * time.Millisecond
	// failoverWriteTimeout is each write's deadline: a caller's, longer
	// than the library's own bounds, so that they are what ends a write.
	failoverWriteTimeout = 10 * time.Second
	// failoverWithin bounds the wait for a promotion: the node timeout
	// (1 s), the replica's delay (at most 1 s) and a lost election or two.
	failoverWithin = 15 * time.Second
	// busPortOffset is how far above its client port a cluster node
	// listens for the cluster bus.
	busPortOffset = 10000
)

// keyOn returns a key whose slot node serves.
func keyOn(t *testing.T, rc *redistest.Cluster, node *redistest.Server, prefix string) string {
	t.Helper()
	for i := range 10000 {
		if key := fmt.Sprint(prefix, i); rc.NodeForSlot(t, redistest.KeySlot(key)) == node {
			return key
		}
	}
	t.Fatalf("no key of prefix %q on %s", prefix, node.Addr())
	return ""
}

// 20. One master of a cluster unreachable (its client port blackholed,
// its cluster bus up, so no failover): the calls for its slots fail within
// ReadTimeout (on an idle connection) or DialTimeout (on a new one), here
// both 500 ms, while the other masters' keep succeeding; after healing
// everything works, and a BRPop on one of its keys resumes.
func faultTestClusterMasterBlackhole(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	const readTimeout = 500 * time.Millisecond
	c := newCluster(t, rc, redisalive.ClusterOptions{Node: redisalive.Options{ReadTimeout: readTimeout, DialTimeout: readTimeout}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dead, alive := rc.Nodes()[0], rc.Nodes()[1:]
	deadKey := keyOn(t, rc, dead, "dead:")
	var aliveKeys []string
	for i, n := range alive {
		aliveKeys = append(aliveKeys, keyOn(t, rc, n, fmt.Sprint("alive", i, ":")))
	}
	for _, k := range append(aliveKeys, deadKey) {
		_, err := c.Do(ctx, "SET", k, "v")
		require.NoError(t, err, k)
	}
	queue := "{" + deadKey + "}:q"
	popped := make(chan string, 1)
	go func() {
		_, v, err := c.BRPop(ctx, queue)
		assert.NoError(t, err, "BRPop across the outage")
		popped <- v
	}()
	faultWaitBlocked(t, dead, 1)

	heal := faultnet.Blackhole(t, dead.Port(), faultnet.Both)
	for range 3 { // on the idle connection, then on new ones
		start := time.Now()
		_, err := c.Do(context.Background(), "GET", deadKey)
		require.Error(t, err, "a call for the unreachable master's slots")
		faultAssertElapsed(t, "a call for the unreachable master failing", time.Since(start), 0, faultPlus20(readTimeout))
	}
	for range 20 {
		for _, k := range aliveKeys {
			start := time.Now()
			_, err := c.Do(ctx, "GET", k)
			require.NoError(t, err, "a call for another master's slots during the outage")
			require.Less(t, time.Since(start), 100*time.Millisecond, "a call for another master's slots must not wait")
		}
	}

	heal()
	testkit.WaitFor(t, 5*time.Second, "the unreachable master to serve again", func() bool {
		_, err := c.Do(ctx, "GET", deadKey)
		return err == nil
	})
	_, err := c.Do(ctx, "LPUSH", queue, "after")
	require.NoError(t, err)
	select {
	case v := <-popped:
		assert.Equal(t, "after", v)
	case <-time.After(10 * time.Second):
		t.Fatal("BRPop on the healed master's key did not resume")
	}
}

// 21. The incident of a cluster client whose idle reaper never ran: every
// node closes idle connections (timeout 1); each node's pool closes them
// within about a second, leaving no CLOSE_WAIT on any node.
func faultTestClusterServerClosedIdle(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	c := newCluster(t, rc, redisalive.ClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range rc.Nodes() {
		n.Do(t, "CONFIG", "SET", "timeout", "1")
		for i := range 4 { // connections on every node
			_, err := c.Do(ctx, "GET", keyOn(t, rc, n, fmt.Sprint("idle", i, ":")))
			require.NoError(t, err)
		}
	}
	for _, n := range rc.Nodes() {
		testkit.WaitFor(t, 5*time.Second, "every node to close its idle clients", func() bool { return n.ConnectedClients(t) == 0 })
	}
	closed := time.Now()
	testkit.WaitFor(t, 2*time.Second+faultSlack, "no CLOSE_WAIT on any node", func() bool {
		for _, n := range rc.Nodes() {
			if clientStates(t, n.Port())["CLOSE_WAIT"] > 0 {
				return false
			}
		}
		return true
	})
	faultAssertElapsed(t, "CLOSE_WAIT gone on every node after the servers closed them", time.Since(closed), 0, 2*time.Second)
	for addr, s := range c.Stats() {
		assert.Zero(t, s.ErrorClosed, "node %s", addr)
		assert.Zero(t, s.Active, "node %s: connections left", addr)
	}
}

// 22. A master of a cluster with replicas killed (SIGKILL, by PID): once
// the cluster promotes its replica, calls for its slots succeed again
// within 1 s; no acknowledged write is lost; the write in flight at the
// kill fails at once; blocked consumers are served by the new master.
func faultTestClusterMasterKilled(t *testing.T) {
	faultClusterFailover(t, func(t *testing.T, _ *redistest.Cluster, master *redistest.Server) bool {
		master.Stop(t)
		return false
	}, 0)
}

// 23. A master of a cluster with replicas cut off, its client port and its
// cluster bus blackholed both ways: as when it is killed, except that the
// client's connections to it and its dials hang rather than fail at once,
// and that it may hold writes it applied but could not pass on. Those
// are bounded by what was in flight at the cut, since the client cannot
// reach it after: the writes whose replies the cut lost (failed, never
// acknowledged), and any acknowledged in the instant before the cut whose
// replication the cut lost (at most 1 with one writer; 0 seen).
func faultTestClusterMasterBlackholed(t *testing.T) {
	faultClusterFailover(t, func(t *testing.T, rc *redistest.Cluster, master *redistest.Server) bool {
		// Its ports cut what it accepted: clients, its replica's link and
		// the other nodes' bus links; its source address, its own bus
		// links to them, through which they would still hear of it.
		src := rc.SourceAddr(master)
		require.NotEmpty(t, src, "the master's source address")
		faultnet.Blackhole(t, master.Port(), faultnet.Both)
		faultnet.Blackhole(t, master.Port()+busPortOffset, faultnet.Both)
		faultnet.BlackholeAddr(t, src)
		return true
	}, 1)
}

// faultClusterFailover runs a failover case: on a cluster of 3 masters
// with a replica each, a writer SETs keys of one master's slots every
// 10 ms, a BRPop loop and a Queue consumer wait on keys of those slots,
// and fault takes that master down while a write is in flight on it (the
// master held in DEBUG SLEEP), and reports whether it still runs. It measures, against the moment the
// replica reports role:master: when writes succeed again, and when items
// pushed on the new master reach the consumers; then how many writes
// failed, how many acknowledged ones the new master lacks (at most
// maxLost), and that the client keeps no connection to the old master.
func faultClusterFailover(t *testing.T, fault func(t *testing.T, rc *redistest.Cluster, master *redistest.Server) (runs bool), maxLost int) {
	rc := redistest.StartClusterWithReplicas(t, 3, 1)
	master, other := rc.Nodes()[0], rc.Nodes()[1]
	replicas := rc.Replicas(t, master)
	require.Len(t, replicas, 1, "replicas of the master to take down")
	replica := replicas[0]
	// The only seed is the master taken down (newCluster seeds with the
	// first node): the client must find the cluster without it.
	c := newCluster(t, rc, redisalive.ClusterOptions{})
	tag := keyOn(t, rc, master, "failover:")
	slot := redistest.KeySlot(tag)
	listKey := "{" + tag + "}:list"

	cons := faultStartConsumer(t, c, listKey)
	q, err := redisalive.NewQueue(c, tag, redisalive.QueueOptions{})
	require.NoError(t, err)
	qcons := faultStartQueueConsumer(t, q)
	master.Do(t, "LPUSH", listKey, "before")
	master.Do(t, "LPUSH", q.PendingKey(), "before")
	v, _ := cons.receive(t, 5*time.Second)
	require.Equal(t, "before", v, "BRPop before the fault")
	v, _ = qcons.receive(t, 5*time.Second)
	require.Equal(t, "before", v, "the queue before the fault")

	w := faultStartWriter(t, c, tag)
	testkit.WaitFor(t, 5*time.Second, "the writer's first 10 writes", func() bool { return w.acked(time.Time{}) >= 10 })

	// A write in flight at the fault: sent, and the master asleep.
	slept := make(chan struct{})
	go func() {
		defer close(slept)
		master.TryDo("DEBUG", "SLEEP", "0.5") // the fault ends it for good
	}()
	t.Cleanup(func() { <-slept })
	testkit.WaitFor(t, 2*time.Second, "a write in flight for 50ms", func() bool {
		since := w.inFlightSince()
		return !since.IsZero() && time.Since(since) > 50*time.Millisecond
	})
	faulted := time.Now()
	oldRuns := fault(t, rc, master)
	t.Logf("the fault took %v to inject", time.Since(faulted).Round(time.Millisecond))
	promoted, named := faultWatchPromotion(t, replica, other, slot)
	t.Logf("promotion: the replica says role:master %v after the fault; CLUSTER SLOTS on another master names it %v after that",
		promoted.Sub(faulted).Round(time.Millisecond), named.Sub(promoted).Round(time.Millisecond))

	// Items pushed on the new master as soon as it is one.
	pushed := time.Now()
	replica.Do(t, "LPUSH", listKey, "after")
	replica.Do(t, "LPUSH", q.PendingKey(), "after")

	testkit.WaitFor(t, failoverWithin, "a write to succeed after the promotion", func() bool { return w.acked(promoted) > 0 })
	recovered := w.firstAcked(promoted)
	faultAssertElapsed(t, "writes succeed again after the promotion", recovered.end.Sub(promoted), 0, faultPlus20(failoverRecovery))

	v, at := cons.receive(t, failoverWithin)
	assert.Equal(t, "after", v)
	faultAssertElapsed(t, "BRPop: an item pushed on the new master delivered", at.Sub(pushed), 0, faultPlus20(failoverRecovery))
	v, at = qcons.receive(t, failoverWithin)
	assert.Equal(t, "after", v)
	faultAssertElapsed(t, "Queue: an item pushed on the new master handled", at.Sub(pushed), 0, faultPlus20(failoverRecovery))

	// The writer goes on a second past its recovery, then stops.
	testkit.WaitFor(t, 5*time.Second, "the writer to go on for a second", func() bool { return w.acked(recovered.end.Add(time.Second)) > 0 })
	writes := w.halt(t)

	// What each side holds: the new master, and the old one if it runs,
	// through its unix socket, which the blackhole leaves open. A master
	// cut off from the others refuses commands on keys (CLUSTERDOWN) but
	// not KEYS.
	onNew := faultWrittenKeys(t, replica.UnixSocket(), w.pattern())
	var onOld map[string]bool
	if oldRuns {
		onOld = faultWrittenKeys(t, master.UnixSocket(), w.pattern())
	}
	var failed, failedApplied, lost, oldOnly int
	var inFlight *faultWrite
	for i, wr := range writes {
		key := w.key(wr.i)
		if wr.start.Before(faulted) && wr.end.After(faulted) {
			inFlight = &writes[i]
		}
		switch {
		case wr.err == nil && !onNew[key]:
			lost++
		case wr.err != nil:
			failed++
			if onNew[key] {
				failedApplied++
			}
			if wr.start.After(recovered.end) {
				t.Errorf("a write begun after the recovery failed: %v", wr.err)
			}
		}
		if onOld[key] && !onNew[key] {
			oldOnly++
		}
	}
	require.NotNil(t, inFlight, "the write in flight at the fault")
	t.Logf("the write in flight at the fault: %v", inFlight.err)
	assert.Error(t, inFlight.err, "the write in flight at the fault: its outcome is unknown")
	if oldRuns {
		// It fails when the node leaves the slot map, its pool closed
		// under it, or at ReadTimeout if that comes first.
		faultAssertElapsed(t, "the write in flight at the cut failing", inFlight.end.Sub(faulted),
			0, promoted.Sub(faulted)+faultPlus20(failoverRecovery))
	} else {
		faultAssertElapsed(t, "the write in flight at the kill failing", inFlight.end.Sub(faulted), 0, faultSlack)
	}
	t.Logf("writes: %d; failed %d, of them applied on the new master %d; acknowledged and lost %d; outage for the writer %v",
		len(writes), failed, failedApplied, lost, recovered.end.Sub(w.lastAcked(faulted).end).Round(time.Millisecond))
	if onOld != nil {
		// Only what was sent before the cut can be there: one write in
		// flight, and those acknowledged and lost.
		t.Logf("writes the old master applied that the new one lacks: %d", oldOnly)
		assert.LessOrEqual(t, oldOnly, 1+lost, "writes on the old master alone")
	}
	assert.LessOrEqual(t, lost, maxLost, "acknowledged writes missing from the new master")
	assert.Empty(t, cons.errors(), "BRPop must ride the failover out, not return errors")

	// The client lets go of the old master: its pool is closed when the
	// slot map no longer names it.
	testkit.WaitFor(t, 5*time.Second, "no connection open from the client to the old master", func() bool {
		s := clientStates(t, master.Port())
		return s["ESTABLISHED"]+s["CLOSE_WAIT"]+s["SYN_SENT"] == 0
	})
	assert.NotContains(t, c.Stats(), master.Addr(), "the old master's pool, closed")
}

// faultWrittenKeys returns the keys matching pattern on the server at the
// unix socket path.
func faultWrittenKeys(t *testing.T, path, pattern string) map[string]bool {
	t.Helper()
	conn, err := redis.Dial("unix", path, redis.DialReadTimeout(5*time.Second))
	require.NoError(t, err)
	defer conn.Close()
	keys, err := redis.Strings(conn.Do("KEYS", pattern))
	require.NoError(t, err, "KEYS on %s", path)
	set := make(map[string]bool, len(keys))
	for _, k := range keys {
		set[k] = true
	}
	return set
}

// faultWrite is one SET of a failover case's writer.
type faultWrite struct {
	i          int
	start, end time.Time
	err        error
}

// faultWriter SETs {tag}:w:<i> to i every failoverWriteEvery, each call
// with a deadline of failoverWriteTimeout, and records every outcome.
type faultWriter struct {
	tag      string
	cancel   context.CancelFunc
	done     chan struct{}
	inFlight atomic.Int64 // UnixNano of the start of the write in flight, 0 for none

	mu     sync.Mutex
	writes []faultWrite
}

func faultStartWriter(t *testing.T, c *redisalive.Cluster, tag string) *faultWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &faultWriter{tag: tag, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(failoverWriteEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			wr := faultWrite{i: i, start: time.Now()}
			w.inFlight.Store(wr.start.UnixNano())
			callCtx, cancel := context.WithTimeout(ctx, failoverWriteTimeout)
			_, wr.err = c.Do(callCtx, "SET", w.key(i), i)
			cancel()
			wr.end = time.Now()
			w.inFlight.Store(0)
			if ctx.Err() != nil {
				return // stopped mid-write: not an outcome of the fault
			}
			w.mu.Lock()
			w.writes = append(w.writes, wr)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { w.halt(t) })
	return w
}

func (w *faultWriter) key(i int) string { return fmt.Sprintf("{%s}:w:%d", w.tag, i) }

// pattern matches every key the writer writes.
func (w *faultWriter) pattern() string { return fmt.Sprintf("{%s}:w:*", w.tag) }

// inFlightSince returns when the write in flight began, zero if none is.
func (w *faultWriter) inFlightSince() time.Time {
	if n := w.inFlight.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// halt stops the writer, waits for it (at most 5 s) and returns its writes.
func (w *faultWriter) halt(t *testing.T) []faultWrite {
	t.Helper()
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		t.Errorf("the writer still running 5s after it was stopped")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]faultWrite(nil), w.writes...)
}

// acked counts the writes acknowledged after at.
func (w *faultWriter) acked(at time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, wr := range w.writes {
		if wr.err == nil && wr.end.After(at) {
			n++
		}
	}
	return n
}

// firstAcked returns the first write acknowledged after at.
func (w *faultWriter) firstAcked(at time.Time) faultWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, wr := range w.writes {
		if wr.err == nil && wr.end.After(at) {
			return wr
		}
	}
	return faultWrite{}
}

// lastAcked returns the last write acknowledged before at.
func (w *faultWriter) lastAcked(at time.Time) faultWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last faultWrite
	for _, wr := range w.writes {
		if wr.err == nil && wr.end.Before(at) {
			last = wr
		}
	}
	return last
}

// faultQueueConsumer runs q.Consume and hands over each payload handled.
type faultQueueConsumer struct {
	got    chan faultPop
	cancel context.CancelFunc
	done   chan error
}

// faultStartQueueConsumer starts a consumer of q that runs until the test
// ends.
func faultStartQueueConsumer(t *testing.T, q *redisalive.Queue) *faultQueueConsumer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &faultQueueConsumer{got: make(chan faultPop, 100), cancel: cancel, done: make(chan error, 1)}
	go func() {
		c.done <- q.Consume(ctx, func(_ context.Context, payload []byte) error {
			c.got <- faultPop{string(payload), time.Now()}
			return nil
		})
	}()
	t.Cleanup(func() {
		c.cancel()
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			t.Errorf("Consume still running 5s after its context was cancelled")
		}
	})
	return c
}

// receive waits for the consumer to handle an item and returns it with
// the time its handler ran.
func (c *faultQueueConsumer) receive(t *testing.T, within time.Duration) (string, time.Time) {
	t.Helper()
	select {
	case e := <-c.got:
		return e.v, e.at
	case err := <-c.done:
		t.Fatalf("Consume returned: %v", err)
	case <-time.After(within):
		t.Fatalf("the queue handled nothing within %v", within)
	}
	return "", time.Time{}
}

// faultWatchPromotion polls, each on a connection of its own, replica's
// ROLE and other's CLUSTER SLOTS until the first says master and the
// second names replica the master of slot, and returns when each was
// first seen; it fails t after failoverWithin.
func faultWatchPromotion(t *testing.T, replica, other *redistest.Server, slot int) (promoted, named time.Time) {
	t.Helper()
	dial := func(s *redistest.Server) redis.Conn {
		c, err := redis.Dial("tcp", s.Addr(), redis.DialConnectTimeout(time.Second),
			redis.DialReadTimeout(time.Second), redis.DialWriteTimeout(time.Second))
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	rconn, oconn := dial(replica), dial(other)
	deadline := time.Now().Add(failoverWithin)
	for promoted.IsZero() || named.IsZero() {
		if time.Now().After(deadline) {
			t.Fatalf("the replica %s not promoted within %v (role seen at %v, named at %v)", replica.Addr(), failoverWithin, promoted, named)
		}
		if promoted.IsZero() {
			role, err := redis.Values(rconn.Do("ROLE"))
			require.NoError(t, err)
			if r, _ := redis.String(role[0], nil); r == "master" {
				promoted = time.Now()
			}
		}
		if named.IsZero() {
			owner, err := slotOwner(oconn, slot)
			require.NoError(t, err)
			if owner == replica.Addr() {
				named = time.Now()
			}
		}
		time.Sleep(faultPoll)
	}
	return promoted, named
}

// slotOwner returns the address of the master of slot in c's CLUSTER
// SLOTS.
func slotOwner(c redis.Conn, slot int) (string, error) {
	ranges, err := redis.Values(c.Do("CLUSTER", "SLOTS"))
	if err != nil {
		return "", err
	}
	for _, r := range ranges {
		var start, end int
		var master []any
		fields, err := redis.Values(r, nil)
		if err == nil {
			_, err = redis.Scan(fields, &start, &end, &master)
		}
		if err != nil {
			return "", fmt.Errorf("CLUSTER SLOTS entry %v: %w", r, err)
		}
		if start <= slot && slot <= end {
			var host string
			var port int
			if _, err := redis.Scan(master, &host, &port); err != nil {
				return "", fmt.Errorf("CLUSTER SLOTS entry %v: %w", r, err)
			}
			return net.JoinHostPort(host, strconv.Itoa(port)), nil
		}
	}
	return "", nil
}
