package redisalive_test

import (
	"context"
	"io"
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

// quickPubSub notices a dead link under a quiet subscription within
// 400 ms: a PING after 100 ms of quiet, answered within 300 ms.
var quickPubSub = redisalive.Options{PubSubPingInterval: 100 * time.Millisecond, ReadTimeout: 300 * time.Millisecond}

// receive waits for the next message, failing t after within.
func receive(t *testing.T, s *redisalive.Subscription, within time.Duration) (redisalive.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return s.Receive(ctx)
}

func TestSubscriptionReceivesMessagesOfChannelsPatternsAndShardChannels(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{})
	ctx := context.Background()
	s, err := p.Subscribe(ctx, "news")
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.PSubscribe(ctx, "sport.*"))
	require.NoError(t, s.SSubscribe(ctx, "shard"))

	srv.Do(t, "PUBLISH", "news", "a")
	srv.Do(t, "PUBLISH", "sport.golf", "b")
	srv.Do(t, "SPUBLISH", "shard", "c")
	var got []redisalive.Message
	for range 3 {
		m, err := receive(t, s, 2*time.Second)
		require.NoError(t, err)
		got = append(got, m)
	}
	assert.Equal(t, []redisalive.Message{
		{Channel: "news", Data: []byte("a")},
		{Channel: "sport.golf", Pattern: "sport.*", Data: []byte("b")},
		{Channel: "shard", Sharded: true, Data: []byte("c")},
	}, got)
	st := p.Stats()
	assert.Equal(t, 1, st.Subscriptions, "Subscriptions")
	assert.Equal(t, 1, st.InUse, "InUse: the subscription's connection")
}

func TestSubscriptionIdleForManyReadTimeoutsNeverErrsAndStaysOnOneConnection(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, quickPubSub)
	s, err := p.Subscribe(context.Background(), "quiet")
	require.NoError(t, err)
	defer s.Close()

	start := time.Now()
	_, err = receive(t, s, 2*time.Second) // nothing is published: about 7 ReadTimeouts of quiet
	require.ErrorIs(t, err, context.DeadlineExceeded, "got %v, want the ctx's own error", err)
	assert.GreaterOrEqual(t, time.Since(start), 2*time.Second)

	srv.Do(t, "PUBLISH", "quiet", "finally")
	m, err := receive(t, s, 2*time.Second)
	require.NoError(t, err, "the subscription must stay usable after Receive's ctx ended")
	assert.Equal(t, "finally", string(m.Data))
	st := p.Stats()
	assert.GreaterOrEqual(t, st.HealthChecks, int64(10), "keepalive PINGs while quiet")
	assert.Equal(t, int64(1), st.Dials, "Dials: the link was never given up")
	assert.Zero(t, st.SubscriptionGaps+st.DeadClosed+st.ErrorClosed, "stats: %+v", st)
}

func TestSubscriptionUnsubscribeStopsItsMessagesAndKeepsTheRest(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{})
	ctx := context.Background()
	s, err := p.Subscribe(ctx, "a", "b")
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Unsubscribe(ctx, "a"))
	srv.Do(t, "PUBLISH", "a", "dropped")
	srv.Do(t, "PUBLISH", "b", "kept")
	m, err := receive(t, s, 2*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "b", m.Channel)
	require.NoError(t, s.Subscribe(ctx, "a"), "subscribing again after unsubscribing")
	srv.Do(t, "PUBLISH", "a", "back")
	m, err = receive(t, s, 2*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "back", string(m.Data))
}

func TestSubscriptionReconnectsAfterTheServerDropsItAndReportsTheGap(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, quickPubSub)
	ctx := context.Background()
	s, err := p.Subscribe(ctx, "ch")
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.PSubscribe(ctx, "p.*"))

	srv.Do(t, "CLIENT", "KILL", "TYPE", "pubsub")
	_, err = receive(t, s, 5*time.Second)
	var gap *redisalive.GapError
	require.ErrorAs(t, err, &gap)
	assert.ErrorIs(t, err, redisalive.ErrMessagesLost)
	assert.ErrorIs(t, err, io.EOF, "the cause: the server closed the connection")
	assert.False(t, gap.Until.Before(gap.Since), "gap %v..%v", gap.Since, gap.Until)
	t.Logf("gap: %v", err)

	// Every channel and pattern is subscribed again once the gap is reported.
	srv.Do(t, "PUBLISH", "ch", "1")
	srv.Do(t, "PUBLISH", "p.x", "2")
	for _, want := range []string{"1", "2"} {
		m, err := receive(t, s, 2*time.Second)
		require.NoError(t, err)
		assert.Equal(t, want, string(m.Data))
	}
	assert.Equal(t, int64(1), p.Stats().SubscriptionGaps, "SubscriptionGaps")
}

func TestSubscriptionCloseLeavesNothingOnTheServerAndEndsItsMethods(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{})
	ctx := context.Background()
	s, err := p.Subscribe(ctx, "ch")
	require.NoError(t, err)
	srv.WaitConnectedClients(t, 1, 2*time.Second)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "a second Close")
	srv.WaitConnectedClients(t, 0, 2*time.Second)

	_, err = s.Receive(ctx)
	assert.ErrorIs(t, err, redisalive.ErrSubscriptionClosed)
	assert.ErrorIs(t, s.Subscribe(ctx, "x"), redisalive.ErrSubscriptionClosed)
	st := p.Stats()
	assert.Zero(t, st.Subscriptions+st.Active, "stats: %+v", st)
}

func TestPoolCloseEndsItsSubscriptions(t *testing.T) {
	srv := redistest.Start(t)
	p, err := redisalive.NewPool(redisalive.Options{Addr: srv.Addr()})
	require.NoError(t, err)
	s, err := p.Subscribe(context.Background(), "ch")
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Receive(context.Background())
		errc <- err
	}()
	start := time.Now()
	require.NoError(t, p.Close())
	assert.Less(t, time.Since(start), time.Second, "Close with a subscription open")
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, redisalive.ErrPoolClosed)
	case <-time.After(2 * time.Second):
		t.Fatal("Receive still blocked 2s after the pool closed")
	}
	srv.WaitConnectedClients(t, 0, 2*time.Second)
	_, err = p.Subscribe(context.Background(), "ch")
	assert.ErrorIs(t, err, redisalive.ErrPoolClosed)
}

func TestSubscribeToAnUnreachableServerFailsAtItsDeadline(t *testing.T) {
	p, err := redisalive.NewPool(redisalive.Options{Addr: deadAddr(t)})
	require.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = p.Subscribe(ctx, "ch")
	took := time.Since(start)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "connection refused", "the error says why")
	assert.Less(t, took, time.Second, "got %v, want the 300ms deadline", took)
}

// TestSubscriptionThroughADeadLinkReconnectsAfterHealing: a link that goes
// silent under a quiet subscription is noticed by the unanswered PING, and
// once it heals the subscription is back and says what it missed.
func TestSubscriptionThroughADeadLinkReconnectsAfterHealing(t *testing.T) {
	srv := redistest.Start(t)
	proxy, err := faultproxy.New(srv.Addr())
	require.NoError(t, err)
	defer proxy.Close()
	opts := quickPubSub
	opts.Addr, opts.DialTimeout = proxy.Addr(), 300*time.Millisecond
	p, err := redisalive.NewPool(opts)
	require.NoError(t, err)
	defer p.Close()
	s, err := p.Subscribe(context.Background(), "ch")
	require.NoError(t, err)
	defer s.Close()

	proxy.Blackhole()
	testkit.WaitFor(t, 2*time.Second, "the dead link to be noticed", func() bool { return p.Stats().DeadClosed == 1 })
	proxy.Heal()
	_, err = receive(t, s, 5*time.Second)
	require.ErrorIs(t, err, redisalive.ErrMessagesLost)
	srv.Do(t, "PUBLISH", "ch", "after")
	m, err := receive(t, s, 2*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "after", string(m.Data))
}

// TestPubSubConnOnAConnectionFromGetWaitsPastReadTimeout: redigo's
// PubSubConn on a connection from Get receives a message published long
// after ReadTimeout, through each of its receive methods.
func TestPubSubConnOnAConnectionFromGetWaitsPastReadTimeout(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, quickPubSub)
	c, err := p.Get(context.Background())
	require.NoError(t, err)
	psc := redis.PubSubConn{Conn: c}
	defer psc.Close()
	require.NoError(t, psc.Subscribe("ch"))
	require.IsType(t, redis.Subscription{}, psc.Receive(), "the subscribe confirmation")

	receivers := map[string]func() any{
		"Receive":               psc.Receive,
		"ReceiveWithTimeout(0)": func() any { return psc.ReceiveWithTimeout(0) },
		"ReceiveContext": func() any {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return psc.ReceiveContext(ctx)
		},
	}
	for name, recv := range receivers {
		publish := time.AfterFunc(time.Second, func() { srv.Do(t, "PUBLISH", "ch", name) })
		start := time.Now()
		got := recv()
		publish.Stop()
		msg, ok := got.(redis.Message)
		require.True(t, ok, "%s: got %v, want a message", name, got)
		assert.Equal(t, name, string(msg.Data))
		assert.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond, "%s returned before the publish", name)
	}
	assert.GreaterOrEqual(t, p.Stats().HealthChecks, int64(10), "keepalive PINGs while quiet")

	// A dead link fails the read within PubSubPingInterval + ReadTimeout.
	srv.Do(t, "CLIENT", "PAUSE", 3000, "ALL")
	start := time.Now()
	got := psc.Receive()
	took := time.Since(start)
	require.Error(t, got.(error))
	assert.Less(t, took, 1500*time.Millisecond, "a silent link noticed after %v", took)
}
