package redisalive_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/faultproxy"
	"github.com/redisalive/redisalive/internal/pooltest"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

func TestSentinelOptionsThatCannotWorkAreRejectedByNewPool(t *testing.T) {
	ok := redisalive.SentinelOptions{MasterName: "mymaster", Addrs: []string{"127.0.0.1:26379"}}
	cases := []struct {
		name  string
		opts  redisalive.Options
		field string
	}{
		{"with an Addr", redisalive.Options{Addr: "127.0.0.1:6379", Sentinel: &ok}, "Addr"},
		{"without a master name", redisalive.Options{Sentinel: &redisalive.SentinelOptions{Addrs: ok.Addrs}}, "Sentinel.MasterName"},
		{"without sentinels", redisalive.Options{Sentinel: &redisalive.SentinelOptions{MasterName: "m"}}, "Sentinel.Addrs"},
		{"a sentinel without a port", redisalive.Options{Sentinel: &redisalive.SentinelOptions{MasterName: "m", Addrs: []string{"localhost"}}}, "Sentinel.Addrs"},
		{"a sentinel user without a password", redisalive.Options{Sentinel: &redisalive.SentinelOptions{MasterName: "m", Addrs: ok.Addrs, Username: "u"}}, "Sentinel.Password"},
		{"over a unix socket", redisalive.Options{Network: "unix", Sentinel: &ok}, "Network"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := redisalive.NewPool(c.opts)
			var oe *redisalive.OptionError
			require.ErrorAs(t, err, &oe)
			assert.Equal(t, c.field, oe.Field)
			assert.ErrorIs(t, err, redisalive.ErrInvalidOptions)
		})
	}
	p, err := redisalive.NewPool(redisalive.Options{Sentinel: &ok})
	require.NoError(t, err, "valid sentinel options")
	got := p.Options()
	assert.Empty(t, got.Addr)
	assert.Equal(t, ok.MasterName, got.Sentinel.MasterName)
	assert.Equal(t, redisalive.DefaultSentinelRefreshInterval, got.Sentinel.RefreshInterval)
	require.NoError(t, p.Close())
}

func TestSentinelPoolWithAnUnknownMasterNameSaysWhichSentinelsSaidSo(t *testing.T) {
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 1, Sentinels: 2})
	p := pooltest.New(t, redisalive.Options{Sentinel: &redisalive.SentinelOptions{MasterName: "nosuchmaster", Addrs: topo.SentinelAddrs()}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := p.Do(ctx, "GET", "k")
	require.ErrorIs(t, err, redisalive.ErrNoMaster)
	assert.Less(t, time.Since(start), time.Second, "an unknown master name is a misconfiguration: at once, not at the deadline")
	var se *redisalive.SentinelError
	require.ErrorAs(t, err, &se)
	assert.ElementsMatch(t, topo.SentinelAddrs(), se.Addrs, "the sentinels asked")
	for _, a := range topo.SentinelAddrs() {
		assert.Contains(t, err.Error(), a)
	}
	assert.Contains(t, err.Error(), "nosuchmaster")
}

func TestSentinelPoolWithNoSentinelReachableGivesEachSentinelsError(t *testing.T) {
	dead := []string{deadAddr(t), deadAddr(t)}
	const dialTimeout = 300 * time.Millisecond
	p := pooltest.New(t, redisalive.Options{DialTimeout: dialTimeout, PoolTimeout: time.Second,
		Sentinel: &redisalive.SentinelOptions{MasterName: "mymaster", Addrs: dead}})
	start := time.Now()
	_, err := p.Do(context.Background(), "GET", "k")
	took := time.Since(start)
	require.ErrorIs(t, err, redisalive.ErrNoMaster)
	var se *redisalive.SentinelError
	require.ErrorAs(t, err, &se)
	assert.Len(t, se.Errs, len(dead))
	for _, a := range dead {
		assert.Contains(t, err.Error(), a)
	}
	assert.Contains(t, err.Error(), "connection refused")
	assert.Less(t, took, 3*time.Second, "got the error after %v, want about PoolTimeout", took)
}

// TestSentinelPoolFollowsAPlannedFailoverWithoutLosingWrites: the pool acts
// on the leader's choice of the replica to promote, a second before the
// switch the sentinels announce last: it stops writing to the old master,
// which goes on accepting writes it will throw away, and holds new ones
// until the replica is a master.
func TestSentinelPoolFollowsAPlannedFailoverWithoutLosingWrites(t *testing.T) {
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{})
	old := topo.Master(t)
	p := pooltest.New(t, redisalive.Options{Sentinel: &redisalive.SentinelOptions{MasterName: topo.MasterName(), Addrs: topo.SentinelAddrs()}})
	run := startFailoverRun(t, p)
	master := topo.Failover(t)
	res := run.finish(t, master)
	assert.LessOrEqual(t, res.Lost, 5, "acknowledged writes lost")
	assert.Zero(t, res.Failed, "failed writes")
	assert.Less(t, res.Outage, 1500*time.Millisecond, "outage (target 0.5 s; margin for a loaded machine)")
	assert.Less(t, res.Consumer, 2*time.Second, "consumer recovery (target 1 s)")
	assert.Positive(t, p.Stats().Failovers, "Failovers")
	waitForValue(t, 2*time.Second, "the pool's connections to the old master", 0, func() int { return ourClients(t, old) })
}

// TestAPrimaryDemotedUnderAFixedAddressIsLeftForTheNewOne: a managed
// endpoint moves its address to the promoted replica and demotes the old
// primary. Connections made before then still reach the old one, which
// answers writes with READONLY and ends blocked reads with -UNBLOCKED: the
// pool takes either as the sign, closes every connection made before it,
// and sends the command again, once, on a new connection.
func TestAPrimaryDemotedUnderAFixedAddressIsLeftForTheNewOne(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.Start(t, "--replicaof", "127.0.0.1", primaryPort(primary))
	waitReplicated(t, replica)
	px, err := faultproxy.New(primary.Addr())
	require.NoError(t, err)
	defer px.Close()
	p := pooltest.New(t, redisalive.Options{Addr: px.Addr(), MaxActive: 6})
	run := startFailoverRun(t, p)
	// Idle connections to the old primary too; the writer's own may be
	// idle or in use at this moment.
	returnFresh(t, p, 3)

	// The endpoint moves, the replica is promoted, then the old primary is
	// demoted. Replication is asynchronous and, between the last two
	// steps, two masters take writes with nothing to tell a client which
	// is the real one: a write the old one acknowledges that has not
	// reached the replica when it is promoted is lost when the old one
	// resyncs from it. That is one write at most when the steps follow at
	// once on a replica that keeps up, as in the measurement. On
	// a loaded machine the replica can lag and this goroutine can be held
	// between steps, so the test first waits for the replica to have
	// every write so far (WAIT) and allows one write plus one per writer
	// tick (10 ms) of the window from then to the demotion.
	px.SetTarget(replica.Addr())
	exposed := time.Now()
	primary.Do(t, "WAIT", 1, 2000)
	replica.Do(t, "REPLICAOF", "NO", "ONE")
	primary.Do(t, "REPLICAOF", "127.0.0.1", primaryPort(replica))
	window := time.Since(exposed)
	t.Logf("from WAIT at %s to the demotion: %v", exposed.Format("15:04:05.000000"), window)
	res := run.finish(t, replica)
	assert.LessOrEqual(t, res.Lost, 1+int(window/(10*time.Millisecond)),
		"acknowledged writes lost, in a window of %v from WAIT to the demotion", window)
	assert.Zero(t, res.Failed, "failed writes")
	assert.Less(t, res.Outage, time.Second, "outage (target 0.5 s)")
	assert.Positive(t, p.Stats().Failovers, "Failovers")
	assert.Positive(t, p.Stats().StaleClosed, "StaleClosed")
	waitForValue(t, 2*time.Second, "the pool's connections to the old primary", 0, func() int { return ourClients(t, primary) })

	// A pool pointed at a replica on purpose gets READONLY, once, as is.
	r := pooltest.OnServer(t, primary, redisalive.Options{})
	_, err = r.Do(context.Background(), "SET", "k", "v")
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "READONLY"), "got %v, want READONLY", err)
	assert.Zero(t, r.Stats().Failovers, "a replica's pool moves nowhere")
}

func primaryPort(s *redistest.Server) string {
	_, port, _ := net.SplitHostPort(s.Addr())
	return port
}

// waitReplicated waits until replica's link to its master is up.
func waitReplicated(t *testing.T, replica *redistest.Server) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, "the replica to sync", func() bool {
		info, err := redis.String(replica.Do(t, "INFO", "replication"), nil)
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
}
