package redistest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// SentinelEvent is a message a sentinel published on one of its event
// channels, as received.
type SentinelEvent struct {
	At       time.Time // when it was received
	Sentinel *Server   // the sentinel that published it
	Channel  string    // the event, e.g. "+switch-master"
	Payload  string    // e.g. "mymaster 127.0.0.1 40001 127.0.0.1 40002"
}

func (e SentinelEvent) String() string {
	return fmt.Sprintf("%s %s %s %s", e.At.Format("15:04:05.000"), e.Sentinel.Addr(), e.Channel, e.Payload)
}

// SentinelEvents records the events the sentinels publish. Its methods are
// safe for concurrent use.
type SentinelEvents struct {
	wg    sync.WaitGroup
	conns []redis.Conn

	mu     sync.Mutex
	events []SentinelEvent // guarded by mu, in the order received
}

// WatchEvents subscribes to every event channel (PSUBSCRIBE *) of every
// running sentinel and records each event received from then until the
// test ends, or until the sentinel stops: a restarted sentinel is not
// watched again.
func (s *Sentinel) WatchEvents(tb testing.TB) *SentinelEvents {
	tb.Helper()
	e := &SentinelEvents{}
	tb.Cleanup(func() {
		for _, c := range e.conns {
			c.Close()
		}
		e.wg.Wait()
	})
	for _, sen := range s.running(s.sentinels) {
		c, err := sen.dial()
		if err != nil {
			tb.Fatalf("redistest: watching sentinel %s: %v", sen.Addr(), err)
		}
		e.conns = append(e.conns, c)
		psc := redis.PubSubConn{Conn: c}
		if err := psc.PSubscribe("*"); err != nil {
			tb.Fatalf("redistest: PSUBSCRIBE * on sentinel %s: %v", sen.Addr(), err)
		}
		// Events published before the confirmation are not delivered.
		if got := psc.ReceiveWithTimeout(adminTimeout); got != (redis.Subscription{Kind: "psubscribe", Channel: "*", Count: 1}) {
			tb.Fatalf("redistest: PSUBSCRIBE * on sentinel %s: got %v, want the subscription confirmed", sen.Addr(), got)
		}
		e.wg.Go(func() { e.record(sen, psc) })
	}
	return e
}

// record appends every event psc receives from sen until it fails: the
// sentinel stopped or the test ended.
func (e *SentinelEvents) record(sen *Server, psc redis.PubSubConn) {
	for {
		switch m := psc.ReceiveWithTimeout(0).(type) {
		case redis.Message:
			ev := SentinelEvent{At: time.Now(), Sentinel: sen, Channel: m.Channel, Payload: string(m.Data)}
			e.mu.Lock()
			e.events = append(e.events, ev)
			e.mu.Unlock()
		case error:
			return
		}
	}
}

// All returns the events received so far, in the order received.
func (e *SentinelEvents) All() []SentinelEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.events)
}

// Wait polls until an event on channel has been received and returns the
// first, failing tb with the events received so far if none arrives
// within the given time.
func (e *SentinelEvents) Wait(tb testing.TB, channel string, within time.Duration) SentinelEvent {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		events := e.All()
		if i := slices.IndexFunc(events, func(ev SentinelEvent) bool { return ev.Channel == channel }); i >= 0 {
			return events[i]
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, ev := range events {
				fmt.Fprintf(&b, "\n%s", ev)
			}
			tb.Fatalf("redistest: no sentinel event %s within %v; received:%s", channel, within, b.String())
		}
		time.Sleep(pollInterval)
	}
}
