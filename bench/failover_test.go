//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/faultnet"
	"github.com/redisalive/redisalive/internal/faultproxy"
	"github.com/redisalive/redisalive/internal/redistest"
)

const (
	// failoverEnv turns TestFailover on; failoverRoundsEnv sets its rounds.
	failoverEnv       = "BENCH_FAILOVER"
	failoverRoundsEnv = "BENCH_FAILOVER_ROUNDS"
	failoverRounds    = 3

	// sentinelSource is the address the sentinels connect from, so that F3
	// can cut them alone off from the master.
	sentinelSource = "127.0.0.9"
	// splitBrain is how long F3 keeps the master cut off from the
	// sentinels, from the cut to the heal.
	splitBrain = 8 * time.Second

	writeEvery    = 10 * time.Millisecond
	failoverQueue = "failover:queue"
	// steadyWrites is how many acknowledged writes a client makes before
	// the failover: half a second in which it settles (a Sentinel client
	// subscribes to the sentinels' announcements) as a long-running one has.
	steadyWrites = 50
	// recoverWithin bounds how long the consumer and the writer are given
	// to reach the new master once it is in place.
	recoverWithin = 5 * time.Second
	// afterRecovery is how long the writer goes on on the new master before
	// it stops.
	afterRecovery = 300 * time.Millisecond
	// setupWithin bounds the steps before the failover, which every client
	// should pass at once.
	setupWithin = 10 * time.Second
	// stopWithin bounds the wait for the writer and the consumer to return
	// once stopped and their client closed.
	stopWithin = 20 * time.Second
)

// TestFailover measures what a failover costs a writer and a consumer that
// use each client as a user writes them, in the scenarios of the Failover
// section of BENCHMARKS.md, and logs one "failover-result" line per run,
// which cmd/failovertable turns into the table. It is a measurement, not a
// check, and slow (about 15 minutes): failover.sh runs it.
//
// Every run has a topology of its own, started for it and killed after it.
// The rounds are interleaved, scenario by scenario, and the client that
// goes first changes from round to round, so that drift on the machine
// falls on every client alike. The whole test runs in a private network
// namespace (faultnet.Enter), which F3 needs for its firewall rule: it
// needs root, iptables and unshare.
func TestFailover(t *testing.T) {
	if os.Getenv(failoverEnv) != "1" {
		t.Skipf("a measurement taking about 15 minutes; run it with ./failover.sh (%s=1)", failoverEnv)
	}
	if !faultnet.Enter(t) {
		return
	}
	rounds := failoverRounds
	if v := os.Getenv(failoverRoundsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", failoverRoundsEnv, v)
		}
		rounds = n
	}
	for round := 1; round <= rounds; round++ {
		t.Run(fmt.Sprintf("round=%d", round), func(t *testing.T) {
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					for i := range failoverClients {
						cl := failoverClients[(i+round-1)%len(failoverClients)]
						t.Run(cl.name, func(t *testing.T) {
							res := sc.run(t, cl, round)
							t.Logf("failover-result scenario=%s client=%s round=%d %s", sc.name, cl.name, round, res)
						})
					}
				})
			}
		})
	}
}

// failoverClient is one library's client as the writer and the consumer
// use it.
type failoverClient struct {
	set   func(ctx context.Context, key string, i int) error
	brpop func(ctx context.Context, key string) (string, error)
	close func()
}

// clientKind opens a library's client on the sentinels (F1 to F3) or on a
// fixed address (F4), with its defaults.
type clientKind struct {
	name     string
	sentinel func(master string, sentinels []string) (failoverClient, error)
	fixed    func(addr string) (failoverClient, error)
}

var failoverClients = []clientKind{
	{"redisalive", redisaliveSentinel, redisaliveFixed},
	{"go-redis", goRedisSentinel, goRedisFixed},
	{"rueidis", rueidisSentinel, rueidisFixed},
}

func redisaliveSentinel(master string, sentinels []string) (failoverClient, error) {
	return redisaliveClient(redisalive.Options{Sentinel: &redisalive.SentinelOptions{MasterName: master, Addrs: sentinels}})
}

func redisaliveFixed(addr string) (failoverClient, error) {
	return redisaliveClient(redisalive.Options{Addr: addr})
}

func redisaliveClient(opts redisalive.Options) (failoverClient, error) {
	p, err := redisalive.NewPool(opts)
	if err != nil {
		return failoverClient{}, err
	}
	return failoverClient{
		set: func(ctx context.Context, key string, i int) error {
			_, err := p.Do(ctx, "SET", key, i)
			return err
		},
		brpop: func(ctx context.Context, key string) (string, error) {
			_, v, err := p.BRPop(ctx, key)
			return v, err
		},
		close: func() { p.Close() },
	}, nil
}

func goRedisSentinel(master string, sentinels []string) (failoverClient, error) {
	return goRedisClient(goredis.NewFailoverClient(&goredis.FailoverOptions{MasterName: master, SentinelAddrs: sentinels})), nil
}

func goRedisFixed(addr string) (failoverClient, error) {
	return goRedisClient(goredis.NewClient(&goredis.Options{Addr: addr})), nil
}

func goRedisClient(c *goredis.Client) failoverClient {
	return failoverClient{
		set: func(ctx context.Context, key string, i int) error { return c.Set(ctx, key, i, 0).Err() },
		brpop: func(ctx context.Context, key string) (string, error) {
			kv, err := c.BRPop(ctx, 0, key).Result()
			if err != nil {
				return "", err
			}
			return kv[1], nil
		},
		close: func() { c.Close() },
	}
}

func rueidisSentinel(master string, sentinels []string) (failoverClient, error) {
	return rueidisClient(rueidis.ClientOption{InitAddress: sentinels, Sentinel: rueidis.SentinelOption{MasterSet: master}})
}

func rueidisFixed(addr string) (failoverClient, error) {
	return rueidisClient(rueidis.ClientOption{InitAddress: []string{addr}})
}

func rueidisClient(opts rueidis.ClientOption) (failoverClient, error) {
	c, err := rueidis.NewClient(opts)
	if err != nil {
		return failoverClient{}, err
	}
	return failoverClient{
		set: func(ctx context.Context, key string, i int) error {
			return c.Do(ctx, c.B().Set().Key(key).Value(strconv.Itoa(i)).Build()).Error()
		},
		brpop: func(ctx context.Context, key string) (string, error) {
			kv, err := c.Do(ctx, c.B().Brpop().Key(key).Timeout(0).Build()).AsStrSlice()
			if err != nil {
				return "", err
			}
			return kv[1], nil
		},
		close: c.Close,
	}, nil
}

// scenario is one way the master moves.
type scenario struct {
	name string
	run  func(t *testing.T, cl clientKind, round int) failoverResult
}

var scenarios = []scenario{
	{"F1", sentinelScenario(plannedFailover)},
	{"F2", sentinelScenario(killMaster)},
	{"F3", sentinelScenario(cutOffFromSentinels)},
	{"F4", movedFixedAddress},
}

// A trigger fails over the master old of topo in the given round and
// returns the new master once the failover is complete enough for the run
// to be measured.
type trigger func(t *testing.T, topo *redistest.Sentinel, old *redistest.Server, round int) *redistest.Server

// sentinelScenario runs a client through Sentinel: a master, 2 replicas and
// 3 sentinels (quorum 2, down-after-milliseconds 1000, failover-timeout
// 5000), failed over by fail.
func sentinelScenario(fail trigger) func(t *testing.T, cl clientKind, round int) failoverResult {
	return func(t *testing.T, cl clientKind, round int) failoverResult {
		topo := redistest.StartSentinel(t, redistest.SentinelOptions{SourceAddr: sentinelSource})
		old := topo.Master(t)
		events := topo.WatchEvents(t)
		c, err := cl.sentinel(topo.MasterName(), topo.SentinelAddrs())
		if err != nil {
			t.Fatalf("opening %s on the sentinels: %v", cl.name, err)
		}
		r := startFailoverRun(t, c, old)
		start := time.Now()
		master := fail(t, topo, old, round)
		res := r.finish(t, master, start, time.Now())
		res.Selected, res.Switch = -1, -1
		for _, ev := range events.All() {
			at := ev.At.Sub(start)
			switch {
			case at < 0:
			case ev.Channel == "+selected-slave" && res.Selected < 0:
				res.Selected = at
			case ev.Channel == "+switch-master" && res.Switch < 0:
				res.Switch = at
			}
		}
		return res
	}
}

// plannedFailover is F1: SENTINEL FAILOVER, sent to each sentinel in turn
// from round to round. The sentinel that gets it leads the failover and
// announces the switch a second after the others (see redistest.Sentinel),
// and a client that listens to one sentinel only follows that one's
// announcement: rueidis listens to the first of its addresses, go-redis to
// a random one.
func plannedFailover(t *testing.T, topo *redistest.Sentinel, old *redistest.Server, round int) *redistest.Server {
	sentinels := topo.Sentinels()
	sen := sentinels[(round-1)%len(sentinels)]
	if got := sen.Do(t, "SENTINEL", "FAILOVER", topo.MasterName()); got != "OK" {
		t.Fatalf("SENTINEL FAILOVER on %s: got %v, want OK", sen.Addr(), got)
	}
	return topo.WaitNewMaster(t, old)
}

// killMaster is F2: the master killed with SIGKILL.
func killMaster(t *testing.T, topo *redistest.Sentinel, old *redistest.Server, _ int) *redistest.Server {
	old.Stop(t)
	return topo.WaitNewMaster(t, old)
}

// cutOffFromSentinels is F3: the sentinels lose the master for splitBrain
// while the clients still reach it; they fail it over, and once they reach
// it again they make it a replica of the new master, which discards what
// it took meanwhile. The run is measured once they have.
func cutOffFromSentinels(t *testing.T, topo *redistest.Sentinel, old *redistest.Server, _ int) *redistest.Server {
	cut := time.Now()
	heal := faultnet.BlackholeFrom(t, sentinelSource, old.Port(), faultnet.Both)
	master := topo.WaitNewMaster(t, old)
	time.Sleep(time.Until(cut.Add(splitBrain)))
	heal()
	topo.WaitSettled(t)
	return master
}

// movedFixedAddress is F4: the client has a fixed address, a forwarder's,
// as a managed endpoint; the forwarder moves to a replica, which is
// promoted, and the old primary is demoted to a replica of it.
func movedFixedAddress(t *testing.T, cl clientKind, _ int) failoverResult {
	primary := redistest.Start(t)
	var replicas []*redistest.Server
	for range 2 {
		replicas = append(replicas, redistest.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port())))
	}
	for _, r := range replicas {
		waitReplicates(t, r)
	}
	px, err := faultproxy.New(primary.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the client, which startFailoverRun's cleanup closes.
	t.Cleanup(func() { px.Close() })
	c, err := cl.fixed(px.Addr())
	if err != nil {
		t.Fatalf("opening %s on %s: %v", cl.name, px.Addr(), err)
	}
	r := startFailoverRun(t, c, primary)
	promoted, port := replicas[0], strconv.Itoa(replicas[0].Port())
	start := time.Now()
	// The order of TestAPrimaryDemotedUnderAFixedAddressIsLeftForTheNewOne:
	// the endpoint moves, then the replica is promoted and the others
	// follow it.
	px.SetTarget(promoted.Addr())
	promoted.Do(t, "REPLICAOF", "NO", "ONE")
	primary.Do(t, "REPLICAOF", "127.0.0.1", port)
	replicas[1].Do(t, "REPLICAOF", "127.0.0.1", port)
	res := r.finish(t, promoted, start, time.Now())
	res.Selected, res.Switch = -1, -1
	return res
}

// waitReplicates waits until r's link to its master is up.
func waitReplicates(t *testing.T, r *redistest.Server) {
	t.Helper()
	deadline := time.Now().Add(setupWithin)
	for {
		info, err := redis.String(r.TryDo("INFO", "replication"))
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not in sync within %v: %v", r.Addr(), setupWithin, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// failoverRun is a writer that SETs w:<i> every 10 ms and a consumer that
// loops on BRPOP 0, both on one client, written as a user writes them:
// the writer with a background context, the consumer trying again 10 ms
// after an error. It is the client-agnostic twin of the root package's
// test harness (startFailoverRun in helpers_test.go), which drives a Pool.
type failoverRun struct {
	c       failoverClient
	stop    chan struct{} // stops the writer
	wrote   chan struct{} // closed when the writer has returned
	cancel  func()        // ends the consumer
	popped  chan struct{} // closed when the consumer has returned
	got     chan string   // what the consumer popped
	stopped time.Time     // when the writer was stopped

	mu      sync.Mutex // guards the fields below
	acked   []ackedWrite
	failed  []error
	popErrs []error
}

type ackedWrite struct {
	i  int
	at time.Time
}

// failoverResult is what a failover cost one client in one run.
type failoverResult struct {
	// Outage is the longest gap between two acknowledged writes that
	// survive on the new master; with Open, the writer had not reached the
	// new master within recoverWithin and the gap is from the last one to
	// the writer's stop: a lower bound.
	Outage time.Duration
	Open   bool
	// Resumed is when the write that ended the outage was acknowledged,
	// from the trigger (negative: the longest gap came before it); not
	// set with Open.
	Resumed time.Duration
	Lost    int // acknowledged writes absent from the new master
	Failed  int // writes that returned an error
	Acked   int
	// Consumer is the time from an LPUSH on the new master to the
	// consumer having the item; -1: not within recoverWithin.
	Consumer time.Duration
	PopErrs  int // errors the consumer's BRPOP returned
	// Selected is when the sentinels' leader announced the replica it
	// promotes (+selected-slave), and Switch when a sentinel first
	// announced the new master (+switch-master), from the trigger; -1
	// without Sentinel.
	Selected, Switch time.Duration
}

// String is the result's part of a failover-result line, in seconds.
func (r failoverResult) String() string {
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }
	// none stands for a negative duration: a step that did not happen.
	orNone := func(d time.Duration) string {
		if d < 0 {
			return "none"
		}
		return secs(d)
	}
	open, resumed := 0, secs(r.Resumed)
	if r.Open {
		open, resumed = 1, "none"
	}
	return fmt.Sprintf("outage=%s open=%d resumed=%s lost=%d failed=%d acked=%d consumer=%s within=%s pop_errors=%d selected=%s switch=%s",
		secs(r.Outage), open, resumed, r.Lost, r.Failed, r.Acked, orNone(r.Consumer), secs(recoverWithin), r.PopErrs,
		orNone(r.Selected), orNone(r.Switch))
}

// startFailoverRun starts the writer and the consumer on c and returns once
// both work on master: the consumer has popped an item pushed there, and
// the writer has made steadyWrites acknowledged writes. Its cleanup stops
// both and closes c.
func startFailoverRun(t *testing.T, c failoverClient, master *redistest.Server) *failoverRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &failoverRun{c: c, stop: make(chan struct{}), wrote: make(chan struct{}), cancel: cancel,
		popped: make(chan struct{}), got: make(chan string, 16)}
	go r.write()
	go r.consume(ctx)
	t.Cleanup(func() { r.end(t) })

	master.Do(t, "LPUSH", failoverQueue, "before")
	select {
	case v := <-r.got:
		if v != "before" {
			t.Fatalf("the consumer's first item: got %q, want \"before\"", v)
		}
	case <-time.After(setupWithin):
		t.Fatalf("the consumer did not pop an item within %v: %v", setupWithin, r.popErrors())
	}
	deadline := time.Now().Add(setupWithin)
	for r.ackedCount() < steadyWrites {
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged writes within %v, want %d: %v", r.ackedCount(), setupWithin, steadyWrites, r.failures())
		}
		time.Sleep(writeEvery)
	}
	return r
}

func (r *failoverRun) write() {
	defer close(r.wrote)
	tick := time.NewTicker(writeEvery)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		err := r.c.set(context.Background(), fmt.Sprintf("w:%d", i), i)
		now := time.Now()
		r.mu.Lock()
		if err == nil {
			r.acked = append(r.acked, ackedWrite{i, now})
		} else {
			r.failed = append(r.failed, err)
		}
		r.mu.Unlock()
	}
}

func (r *failoverRun) consume(ctx context.Context) {
	defer close(r.popped)
	for ctx.Err() == nil {
		v, err := r.c.brpop(ctx, failoverQueue)
		if err != nil {
			if ctx.Err() == nil {
				r.mu.Lock()
				r.popErrs = append(r.popErrs, err)
				r.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(writeEvery):
			}
			continue
		}
		select {
		case r.got <- v:
		case <-ctx.Done():
		}
	}
}

func (r *failoverRun) ackedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.acked)
}

// failures returns the first few write errors.
func (r *failoverRun) failures() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.failed[:min(3, len(r.failed))])
}

// popErrors returns the first few consumer errors.
func (r *failoverRun) popErrors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.popErrs[:min(3, len(r.popErrs))])
}

// haltWriter stops the writer and waits for it, bounded by stopWithin.
func (r *failoverRun) haltWriter(t *testing.T) {
	select {
	case <-r.stop:
		return
	default:
	}
	r.stopped = time.Now()
	close(r.stop)
	select {
	case <-r.wrote:
	case <-time.After(stopWithin):
		t.Errorf("the writer did not return within %v of being stopped", stopWithin)
	}
}

// end stops the writer and the consumer and closes the client, before the
// servers are killed.
func (r *failoverRun) end(t *testing.T) {
	r.haltWriter(t)
	r.cancel()
	r.c.close()
	select {
	case <-r.popped:
	case <-time.After(stopWithin):
		t.Errorf("the consumer did not return within %v of its context's end and its client's Close", stopWithin)
	}
}

// finish measures the run on master, the new master, in place since ready
// after a failover triggered at start: how soon the consumer gets an item
// pushed there, whether the writer reaches it, and which acknowledged
// writes it has.
func (r *failoverRun) finish(t *testing.T, master *redistest.Server, start, ready time.Time) failoverResult {
	t.Helper()
	res := failoverResult{Consumer: -1}
	pushed := time.Now()
	master.Do(t, "LPUSH", failoverQueue, "after")
	select {
	case v := <-r.got:
		res.Consumer = time.Since(pushed)
		if v != "after" {
			t.Errorf("the consumer's item after the failover: got %q, want \"after\"", v)
		}
	case <-time.After(recoverWithin):
	}

	recovered := r.waitWriter(master, ready, ready.Add(recoverWithin))
	if recovered {
		time.Sleep(afterRecovery)
	}
	r.haltWriter(t)
	r.mu.Lock()
	acked := slices.Clone(r.acked)
	res.Failed, res.PopErrs = len(r.failed), len(r.popErrs)
	r.mu.Unlock()
	res.Acked = len(acked)
	if errs := r.failures(); len(errs) > 0 {
		t.Logf("first failed writes: %v", errs)
	}
	if errs := r.popErrors(); len(errs) > 0 {
		t.Logf("first consumer errors: %v", errs)
	}

	survived := r.survivors(t, master, acked)
	var last time.Time // of the last surviving write so far
	for i, w := range acked {
		if !survived[i] {
			res.Lost++
			continue
		}
		if !last.IsZero() && w.at.Sub(last) > res.Outage {
			res.Outage, res.Resumed = w.at.Sub(last), w.at.Sub(start)
		}
		last = w.at
	}
	if !recovered {
		res.Open = true
		if last.IsZero() {
			last = start // nothing survived: the writer lost everything
		}
		res.Outage = max(res.Outage, r.stopped.Sub(last))
	}
	return res
}

// waitWriter polls until a write acknowledged after ready is on master,
// and reports whether one was by deadline.
func (r *failoverRun) waitWriter(master *redistest.Server, ready, deadline time.Time) bool {
	for {
		r.mu.Lock()
		last := ackedWrite{i: -1}
		if n := len(r.acked); n > 0 && r.acked[n-1].at.After(ready) {
			last = r.acked[n-1]
		}
		r.mu.Unlock()
		if last.i >= 0 {
			if n, err := redis.Int(master.TryDo("EXISTS", fmt.Sprintf("w:%d", last.i))); err == nil && n == 1 {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// survivors reports, for each of acked, whether master has it.
func (r *failoverRun) survivors(t *testing.T, master *redistest.Server, acked []ackedWrite) []bool {
	t.Helper()
	survived := make([]bool, len(acked))
	const batch = 500
	for start := 0; start < len(acked); start += batch {
		part := acked[start:min(start+batch, len(acked))]
		keys := make([]any, len(part))
		for i, w := range part {
			keys[i] = fmt.Sprintf("w:%d", w.i)
		}
		vals, err := redis.Values(master.Do(t, "MGET", keys...), nil)
		if err != nil {
			t.Fatalf("MGET on the new master: %v", err)
		}
		for i, v := range vals {
			survived[start+i] = v != nil
		}
	}
	return survived
}
