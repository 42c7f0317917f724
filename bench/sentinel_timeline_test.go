package bench_test

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive/internal/redistest"
)

// timelineEnv turns on TestSentinelFailoverTimeline, which takes about 90 s.
const timelineEnv = "REDISALIVE_SENTINEL_TIMELINE"

// TestSentinelFailoverTimeline measures what the Sentinel doc comment
// reports: when each sentinel publishes each failover event, and when the
// servers' ROLE changes, after a planned failover (SENTINEL FAILOVER) and
// after the master is killed, three runs of each. It logs every run's
// timeline and the range of each step over the runs. It is a measurement,
// not a check, and slow, so it lives here with the other measurements and
// runs only when asked: in bench/, REDISALIVE_SENTINEL_TIMELINE=1 go test
// -v -run TestSentinelFailoverTimeline.
func TestSentinelFailoverTimeline(t *testing.T) {
	if os.Getenv(timelineEnv) != "1" {
		t.Skipf("a measurement taking about 90 s; run it with %s=1 go test -v -run %s", timelineEnv, t.Name())
	}
	const runs = 3
	for _, kind := range []string{"planned", "killed"} {
		steps := make(map[string][]time.Duration)
		var order []string
		for run := range runs {
			t.Run(fmt.Sprintf("%s/%d", kind, run+1), func(t *testing.T) {
				var tl *timeline
				if kind == "planned" {
					tl = measurePlannedFailover(t)
				} else {
					tl = measureKilledMaster(t)
				}
				t.Logf("timeline:\n%s\nevents:\n%s", tl, tl.events)
				for _, st := range tl.steps {
					if !slices.Contains(order, st.name) {
						order = append(order, st.name)
					}
					steps[st.name] = append(steps[st.name], st.at)
				}
			})
		}
		var b strings.Builder
		for _, name := range order {
			ds := steps[name]
			fmt.Fprintf(&b, "%-62s %5d-%5d ms (%d/%d runs)\n", name,
				slices.Min(ds).Milliseconds(), slices.Max(ds).Milliseconds(), len(ds), runs)
		}
		t.Logf("%s failover, %d runs, ranges:\n%s", kind, runs, b.String())
	}
}

// timeline is the steps of one failover, each at its time from the
// trigger.
type timeline struct {
	t0     time.Time
	steps  []step
	events string // every event received, by sentinel
}

type step struct {
	name string
	at   time.Duration
}

func (tl *timeline) add(name string, at time.Time) {
	tl.steps = append(tl.steps, step{name, at.Sub(tl.t0)})
}

func (tl *timeline) String() string {
	steps := slices.Clone(tl.steps)
	slices.SortStableFunc(steps, func(a, b step) int { return int(a.at - b.at) })
	var b strings.Builder
	for _, st := range steps {
		fmt.Fprintf(&b, "%7.3fs %s\n", st.at.Seconds(), st.name)
	}
	return b.String()
}

// addEvents adds, for each event channel of interest, when the first
// sentinel published it, naming it the leader or another sentinel, and
// for +switch-master and +sdown also when the last did. It returns the
// leader, the sentinel that published +elected-leader.
func (tl *timeline) addEvents(events []redistest.SentinelEvent, sentinels int) (leader *redistest.Server) {
	for _, ev := range events {
		if ev.Channel == "+elected-leader" {
			leader = ev.Sentinel
			break
		}
	}
	who := func(ev redistest.SentinelEvent) string {
		if ev.Sentinel == leader {
			return "leader"
		}
		return "other sentinel"
	}
	var b strings.Builder
	for _, ev := range events {
		fmt.Fprintf(&b, "%7.3fs %-14s %s %s\n", ev.At.Sub(tl.t0).Seconds(), who(ev)+" "+ev.Sentinel.Addr()[len("127.0.0.1:"):], ev.Channel, ev.Payload)
	}
	tl.events = b.String()
	seen := make(map[string]int)
	for _, ev := range events {
		ch := ev.Channel
		if ch == "+sdown" || ch == "-sdown" {
			// Of the master, a replica or a sentinel.
			kind, _, _ := strings.Cut(ev.Payload, " ")
			ch += " " + kind
		}
		if !slices.Contains(timelineEvents, ch) {
			continue
		}
		seen[ch]++
		if seen[ch] == 1 {
			tl.add(fmt.Sprintf("%s, first (%s)", ch, who(ev)), ev.At)
		}
		if seen[ch] == sentinels && (ch == "+switch-master" || ch == "+sdown master") {
			tl.add(fmt.Sprintf("%s, last of %d sentinels", ch, sentinels), ev.At)
		}
		if ch == "+switch-master" && ev.Sentinel == leader {
			tl.add("+switch-master, leader's", ev.At)
		}
	}
	return leader
}

// addAnswers adds when the first sentinel, the leader and the last
// sentinel answered GET-MASTER-ADDR-BY-NAME with the new master.
func (tl *timeline) addAnswers(changes []roleChange, sentinels []*redistest.Server, leader, master *redistest.Server) {
	var last time.Time
	first := true
	for _, c := range changes {
		if !slices.Contains(sentinels, c.srv) || c.role != "names "+master.Addr() || c.at.Before(tl.t0) {
			continue
		}
		who := "other sentinel"
		if c.srv == leader {
			who = "leader"
			tl.add("sentinel names the new master: leader", c.at)
		}
		if first {
			tl.add("sentinel names the new master: first ("+who+")", c.at)
			first = false
		}
		last = c.at
	}
	if !last.IsZero() {
		tl.add(fmt.Sprintf("sentinel names the new master: last of %d", len(sentinels)), last)
	}
}

// timelineEvents are the events measured, in the order they happen.
var timelineEvents = []string{
	"+sdown master", "+odown", "+new-epoch", "+try-failover", "+vote-for-leader", "+elected-leader",
	"+selected-slave", "+failover-state-send-slaveof-noone", "+promoted-slave",
	"+switch-master", "+convert-to-slave",
}

// measurePlannedFailover starts a topology, calls SENTINEL FAILOVER and
// records the events and ROLE changes until the old master replicates the
// new one.
func measurePlannedFailover(t *testing.T) *timeline {
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{})
	old := topo.Master(t)
	events := topo.WatchEvents(t)
	roles := watchRoles(t, topo)

	tl := &timeline{t0: time.Now()}
	topo.Sentinels()[0].Do(t, "SENTINEL", "FAILOVER", topo.MasterName())
	promoted := topo.WaitNewMaster(t, old)
	topo.WaitSettled(t)

	leader := tl.addEvents(events.All(), len(topo.Sentinels()))
	changes := roles.stop()
	tl.addAnswers(changes, topo.Sentinels(), leader, promoted)
	tl.addRole(changes, promoted, "promoted replica", "master", "")
	tl.addRole(changes, old, "old master", "slave", "")
	tl.addRole(changes, old, "old master", "slave", "connected")
	for _, r := range topo.Replicas(t) {
		if r != old {
			tl.addRole(changes, r, "other replica", "slave", "connected", promoted.Port())
		}
	}
	return tl
}

// measureKilledMaster starts a topology, kills the master and records the
// events and ROLE changes until the other nodes replicate the new master;
// then it restarts the old master and records how long it claims to be a
// master.
func measureKilledMaster(t *testing.T) *timeline {
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{})
	old := topo.Master(t)
	events := topo.WatchEvents(t)
	roles := watchRoles(t, topo)

	tl := &timeline{t0: time.Now()}
	old.Stop(t)
	promoted := topo.WaitNewMaster(t, old)
	// Every sentinel must know of the failover, or one could still
	// name the restarted old master.
	waitSwitched(t, events, len(topo.Sentinels()))
	restarted := time.Now()
	old.Restart(t)
	tl.add("old master restarted", restarted)
	topo.WaitSettled(t)

	leader := tl.addEvents(events.All(), len(topo.Sentinels()))
	changes := roles.stop()
	tl.addAnswers(changes, topo.Sentinels(), leader, promoted)
	tl.addRole(changes, promoted, "promoted replica", "master", "")
	for _, r := range topo.Replicas(t) {
		if r != old {
			tl.addRole(changes, r, "other replica", "slave", "connected", promoted.Port())
		}
	}
	tl.addRoleAfter(changes, old, restarted, "restarted old master", "master", "")
	tl.addRoleAfter(changes, old, restarted, "restarted old master", "slave", "")
	tl.addRoleAfter(changes, old, restarted, "restarted old master", "slave", "connected")
	return tl
}

// waitSwitched polls until n sentinels have published +switch-master.
func waitSwitched(t *testing.T, events *redistest.SentinelEvents, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := 0
		for _, ev := range events.All() {
			if ev.Channel == "+switch-master" {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("+switch-master from %d sentinels, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// roleChange is a server's ROLE reply changing: its role, its replication
// state if a replica, and the port of its master; or for a sentinel, the
// master it names.
type roleChange struct {
	srv        *redistest.Server
	at         time.Time
	role       string // "master", "slave", "names ADDR", or "down" while it does not answer
	state      string // a replica's link: "connect", "connecting", "sync", "connected"
	masterPort int
}

// roleWatcher polls ROLE on servers until stop.
type roleWatcher struct {
	done    chan struct{}
	wg      sync.WaitGroup
	changes []roleChange
}

// watchRoles polls ROLE on every node and SENTINEL GET-MASTER-ADDR-BY-NAME
// on every sentinel of topo as fast as they answer, recording every
// change, until stop.
func watchRoles(t *testing.T, topo *redistest.Sentinel) *roleWatcher {
	servers := append(topo.Nodes(), topo.Sentinels()...)
	sentinels := topo.Sentinels()
	w := &roleWatcher{done: make(chan struct{})}
	t.Cleanup(func() { w.stop() })
	last := make(map[*redistest.Server]roleChange)
	w.wg.Go(func() {
		for {
			select {
			case <-w.done:
				return
			default:
			}
			for _, srv := range servers {
				var c roleChange
				if slices.Contains(sentinels, srv) {
					c = namedBy(srv, topo.MasterName())
				} else {
					c = roleOf(srv)
				}
				if prev, ok := last[srv]; !ok || prev.role != c.role || prev.state != c.state || prev.masterPort != c.masterPort {
					last[srv] = c
					w.changes = append(w.changes, c)
				}
			}
			time.Sleep(time.Millisecond)
		}
	})
	return w
}

// stop stops the polling and returns the changes seen; it may be called
// again.
func (w *roleWatcher) stop() []roleChange {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.wg.Wait()
	return w.changes
}

func namedBy(sen *redistest.Server, name string) roleChange {
	c := roleChange{srv: sen, role: "down"}
	reply, err := redis.Strings(sen.TryDo("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name))
	c.at = time.Now()
	if err == nil && len(reply) == 2 {
		c.role = "names " + net.JoinHostPort(reply[0], reply[1])
	}
	return c
}

func roleOf(srv *redistest.Server) roleChange {
	c := roleChange{srv: srv, role: "down"}
	reply, err := redis.Values(srv.TryDo("ROLE"))
	c.at = time.Now()
	if err != nil || len(reply) == 0 {
		return c
	}
	c.role, _ = redis.String(reply[0], nil)
	if c.role == "slave" && len(reply) >= 4 {
		c.masterPort, _ = redis.Int(reply[2], nil)
		c.state, _ = redis.String(reply[3], nil)
	}
	return c
}

// addRole adds when srv first reported role (and state, if not "", and
// master port, if given).
func (tl *timeline) addRole(changes []roleChange, srv *redistest.Server, name, role, state string, masterPort ...int) {
	tl.addRoleAfter(changes, srv, tl.t0, name, role, state, masterPort...)
}

// addRoleAfter is addRole counting only changes after from.
func (tl *timeline) addRoleAfter(changes []roleChange, srv *redistest.Server, from time.Time, name, role, state string, masterPort ...int) {
	for _, c := range changes {
		if c.srv != srv || c.at.Before(from) || c.role != role ||
			(state != "" && c.state != state) || (len(masterPort) > 0 && c.masterPort != masterPort[0]) {
			continue
		}
		what := "ROLE " + role
		if state != "" {
			what += " " + state
		}
		tl.add(name+": "+what, c.at)
		return
	}
}
