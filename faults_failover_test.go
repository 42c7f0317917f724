//go:build linux

package redisalive_test

import (
	"net"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/faultnet"
	"github.com/redisalive/redisalive/internal/pooltest"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

// The fault cases of failover through Redis Sentinel: subtests of
// TestFaults, on its harness (faults_test.go).

// sentinelPool opens a pool that finds topo's master through its sentinels,
// with options the defaults but for o.
func sentinelPool(t *testing.T, topo *redistest.Sentinel, o redisalive.Options) *redisalive.Pool {
	t.Helper()
	o.Sentinel = &redisalive.SentinelOptions{MasterName: topo.MasterName(), Addrs: topo.SentinelAddrs()}
	return pooltest.New(t, o)
}

// faultAssertFailover checks what a failover cost against the targets of
// issue 17 (with margins for a loaded machine): at most maxLost writes
// acknowledged and then lost, at most maxFailed failed, an outage no
// longer than maxOutage, the consumer back within 1 s, and nothing left
// open on the old master.
func faultAssertFailover(t *testing.T, res failoverResult, maxLost, maxFailed int, maxOutage time.Duration, old *redistest.Server, p *redisalive.Pool) {
	t.Helper()
	assert.LessOrEqual(t, res.Lost, maxLost, "acknowledged writes lost")
	assert.LessOrEqual(t, res.Failed, maxFailed, "failed writes")
	faultAssertElapsed(t, "outage", res.Outage, 0, maxOutage)
	faultAssertElapsed(t, "consumer recovery", res.Consumer, 0, faultPlus20(time.Second))
	assert.Positive(t, p.Stats().Failovers, "Failovers")
	if old != nil {
		waitForValue(t, 2*time.Second, "the pool's connections to the old master", 0, func() int { return ourClients(t, old) })
	}
}

// 40. Sentinel: the master is killed. Writes issued while the sentinels
// fail over wait for the new master (bounded by PoolTimeout) instead of
// failing; only a write in flight at the kill fails.
func faultTestSentinelMasterKilled(t *testing.T) {
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{})
	old := topo.Master(t)
	p := sentinelPool(t, topo, redisalive.Options{})
	run := startFailoverRun(t, p)
	killed := time.Now()
	old.Stop(t)
	master := topo.WaitNewMaster(t, old)
	switched := time.Since(killed)
	t.Logf("the sentinels named a new master %v after the kill", switched.Round(time.Millisecond))
	res := run.finish(t, master)
	faultAssertFailover(t, res, 0, 1, faultPlus20(switched+500*time.Millisecond), nil, p)
}

// 41. Sentinel: the master is blackholed, for clients and sentinels alike.
// The writes on the dead link fail at ReadTimeout; the pool moves to the
// promoted replica, and after healing writes nothing to the old master,
// which is still a master until the sentinels convert it.
func faultTestSentinelMasterBlackholed(t *testing.T) {
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{})
	old := topo.Master(t)
	const readTimeout = time.Second
	p := sentinelPool(t, topo, redisalive.Options{ReadTimeout: readTimeout})
	run := startFailoverRun(t, p)
	cut := time.Now()
	heal := faultnet.Blackhole(t, old.Port(), faultnet.Both)
	master := topo.WaitNewMaster(t, old)
	switched := time.Since(cut)
	t.Logf("the sentinels named a new master %v after the blackhole", switched.Round(time.Millisecond))
	res := run.finish(t, master)
	heal()
	// What was in flight on the dead link, and the writes that met the
	// connections to it before the switch, fail at ReadTimeout.
	// The connections abandoned on the dead link are killed once it heals,
	// by a dial of the health checker's, every 2 s, each for at most 2 s.
	faultAssertFailover(t, res, 5, 3, faultPlus20(switched+readTimeout+500*time.Millisecond), nil, p)
	waitForValue(t, 6*time.Second, "the pool's connections to the old master", 0, func() int { return ourClients(t, old) })
}

// 42. Sentinel: the master is cut off from the sentinels only; clients
// still reach it, and it goes on accepting writes that it throws away when
// the sentinels convert it. The pool stops writing to it at the leader's
// first announcement.
func faultTestSentinelMasterCutOff(t *testing.T) {
	const sentinelsFrom = "127.0.0.9"
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{SourceAddr: sentinelsFrom})
	old := topo.Master(t)
	p := sentinelPool(t, topo, redisalive.Options{})
	run := startFailoverRun(t, p)
	heal := faultnet.BlackholeFrom(t, sentinelsFrom, old.Port(), faultnet.Both)
	master := topo.WaitNewMaster(t, old)
	res := run.finish(t, master)
	heal()
	faultAssertFailover(t, res, 5, 0, faultPlus20(500*time.Millisecond), old, p)
}

// 43. Sentinel: one sentinel is dead, the first the pool asks. The others
// name the master and announce the failover.
func faultTestSentinelOneDead(t *testing.T) {
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{})
	topo.Sentinels()[0].Stop(t)
	old := topo.Master(t)
	p := sentinelPool(t, topo, redisalive.Options{DialTimeout: time.Second})
	run := startFailoverRun(t, p)
	master := topo.Failover(t)
	res := run.finish(t, master)
	faultAssertFailover(t, res, 5, 0, faultPlus20(500*time.Millisecond), old, p)
}

// 44. Sentinel: the sentinel the pool asks first is blackholed during a
// failover another one leads; the pool hears of it from the others.
func faultTestSentinelWatchedOneBlackholed(t *testing.T) {
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{})
	old := topo.Master(t)
	p := sentinelPool(t, topo, redisalive.Options{})
	run := startFailoverRun(t, p)
	watched := topo.Sentinels()[0]
	heal := faultnet.Blackhole(t, watched.Port(), faultnet.Both)
	leader := topo.Sentinels()[1]
	if got, err := leader.TryDo("SENTINEL", "FAILOVER", topo.MasterName()); err != nil || got != "OK" {
		t.Fatalf("SENTINEL FAILOVER on %s: got %v, %v; want OK", leader.Addr(), got, err)
	}
	// The blackholed sentinel cannot answer WaitNewMaster's questions:
	// wait on the leader's view, and on the new master's own word.
	var newAddr string
	testkit.WaitFor(t, 30*time.Second, "the leader to name a new master", func() bool {
		reply, err := redis.Strings(leader.TryDo("SENTINEL", "GET-MASTER-ADDR-BY-NAME", topo.MasterName()))
		if err == nil && len(reply) == 2 {
			newAddr = net.JoinHostPort(reply[0], reply[1])
		}
		return newAddr != "" && newAddr != old.Addr()
	})
	heal()
	master := topo.WaitNewMaster(t, old)
	require.Equal(t, newAddr, master.Addr())
	res := run.finish(t, master)
	faultAssertFailover(t, res, 5, 0, faultPlus20(500*time.Millisecond), old, p)
}
