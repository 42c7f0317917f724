//go:build linux

package redisalive_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/faultnet"
	"github.com/redisalive/redisalive/internal/pooltest"
	"github.com/redisalive/redisalive/internal/redistest"
)

// The fault cases of Pub/Sub (Subscription): subtests of TestFaults, on
// its harness (faults_test.go).

// faultPublisher publishes a numbered message on ch every 200 ms through
// admin until the test ends, and records when each was published.
type faultPublisher struct {
	mu   sync.Mutex
	sent map[string]time.Time
	stop chan struct{}
	done chan struct{}
}

func faultStartPublisher(t *testing.T, admin redis.Conn, ch string) *faultPublisher {
	pub := &faultPublisher{sent: make(map[string]time.Time), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(pub.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			msg := strconv.Itoa(i)
			pub.mu.Lock()
			pub.sent[msg] = time.Now()
			pub.mu.Unlock()
			if _, err := admin.Do("PUBLISH", ch, msg); err != nil {
				t.Errorf("publisher on the unix socket: %v", err)
				return
			}
			select {
			case <-pub.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { close(pub.stop); <-pub.done })
	return pub
}

func (pub *faultPublisher) publishedAt(msg string) time.Time {
	pub.mu.Lock()
	defer pub.mu.Unlock()
	return pub.sent[msg]
}

// faultRecovery is what a subscription received after a fault healed.
type faultRecovery struct {
	before []redisalive.Message // messages published before the heal, received after it
	gap    error                // the gap Receive reported, if any
	took   time.Duration        // from the heal to the first message published after it
}

// faultSubscriptionFault subscribes with default options, publishes every
// 200 ms from outside the fault, injects fault (which returns its heal
// func), holds it for hold, heals, and reports what Receive returned after
// healing, up to the first message published after the heal.
func faultSubscriptionFault(t *testing.T, hold time.Duration, fault func(srv *redistest.Server) func()) faultRecovery {
	srv, admin := faultStartWithSocket(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{})
	s, err := p.Subscribe(context.Background(), "ch")
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	pub := faultStartPublisher(t, admin, "ch")
	_, err = receiveWithin(s, 2*time.Second)
	require.NoError(t, err, "first message")

	heal := fault(srv)
	time.Sleep(hold) // holds the fault; not synchronisation
	heal()
	healed := time.Now()
	var r faultRecovery
	for deadline := healed.Add(10 * time.Second); time.Now().Before(deadline); {
		m, err := receiveWithin(s, time.Until(deadline))
		if errors.Is(err, redisalive.ErrMessagesLost) {
			r.gap = err
			continue
		}
		require.NoError(t, err, "Receive after healing")
		if pub.publishedAt(string(m.Data)).After(healed) {
			r.took = time.Since(healed)
			return r
		}
		r.before = append(r.before, m)
	}
	t.Fatal("no message published after healing arrived within 10s")
	return r
}

func receiveWithin(s *redisalive.Subscription, d time.Duration) (redisalive.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return s.Receive(ctx)
}

// 14. A blackhole shorter than PubSubPingInterval + ReadTimeout (1 s + 3 s
// by default) is no failure: TCP retransmits what the server sent meanwhile,
// so nothing is lost and no gap is reported, and messages flow again as
// soon as a retransmission gets through (target: 1 s after healing).
func faultTestSubscriptionShortBlackhole(t *testing.T) {
	r := faultSubscriptionFault(t, 3*time.Second, func(srv *redistest.Server) func() {
		return faultnet.Blackhole(t, srv.Port(), faultnet.Both)
	})
	assert.NoError(t, r.gap, "a blackhole shorter than the ping timeout loses nothing")
	assert.GreaterOrEqual(t, len(r.before), 10, "messages published during the 3s blackhole, delivered by TCP after it")
	faultAssertElapsed(t, "first message published after healing, after healing", r.took, 0, faultPlus20(time.Second))
}

// 15. A blackhole longer than the ping timeout ends the connection; the
// subscription reconnects once the link heals (the SYN is retransmitted
// every second), subscribes again and reports the gap.
func faultTestSubscriptionLongBlackhole(t *testing.T) {
	r := faultSubscriptionFault(t, 5*time.Second, func(srv *redistest.Server) func() {
		return faultnet.Blackhole(t, srv.Port(), faultnet.Both)
	})
	require.ErrorIs(t, r.gap, redisalive.ErrMessagesLost, "the gap must be reported")
	t.Logf("gap: %v", r.gap)
	faultAssertElapsed(t, "first message published after healing, after healing", r.took, 0, 2*time.Second)
}

// 16. The server forgot the subscription's connection while the link was
// down (its RST lost): after healing, the PING the subscription sent while
// quiet is retransmitted, answered with a RST, and the subscription
// reconnects and reports the gap (target: 1.5 s after healing).
func faultTestSubscriptionServerForgot(t *testing.T) {
	r := faultSubscriptionFault(t, 2*time.Second, func(srv *redistest.Server) func() {
		heal := faultnet.Blackhole(t, srv.Port(), faultnet.Both)
		require.Equal(t, 1, faultnet.KillSockets(t, srv.Port()), "server sockets destroyed")
		return heal
	})
	require.ErrorIs(t, r.gap, redisalive.ErrMessagesLost, "the gap must be reported")
	t.Logf("gap: %v", r.gap)
	faultAssertElapsed(t, "first message published after healing, after healing", r.took, 0, faultPlus20(1500*time.Millisecond))
}

// 17. A subscription that receives nothing for several ReadTimeouts stays
// on its connection and returns only its ctx's error.
func faultTestSubscriptionIdle(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{ReadTimeout: 500 * time.Millisecond})
	s, err := p.Subscribe(context.Background(), "quiet")
	require.NoError(t, err)
	defer s.Close()
	_, err = receiveWithin(s, 4*time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	st := p.Stats()
	assert.Equal(t, int64(1), st.Dials, "Dials")
	assert.GreaterOrEqual(t, st.HealthChecks, int64(3), "keepalive PINGs")
	assert.Zero(t, st.SubscriptionGaps+st.DeadClosed+st.ErrorClosed, "stats: %+v", st)
}
