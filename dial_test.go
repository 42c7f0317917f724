package redisalive_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/pooltest"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

// dialPaths are the ways a caller meets the failure of a new connection,
// each called with a context that never ends, so that only the pool can
// make it return.
var dialPaths = []struct {
	name string
	opts redisalive.Options // added to the case's
	call func(ctx context.Context, p *redisalive.Pool) error
}{
	{"Do", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool) error {
		_, err := p.Do(ctx, "GET", "k")
		return err
	}},
	{"AutoPipeline", redisalive.Options{AutoPipeline: true}, func(ctx context.Context, p *redisalive.Pool) error {
		_, err := p.Do(ctx, "GET", "k")
		return err
	}},
	{"Get", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool) error {
		c, err := p.Get(ctx)
		if err == nil {
			c.Close()
		}
		return err
	}},
	{"BRPop", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool) error {
		_, _, err := p.BRPop(ctx, "jobs")
		return err
	}},
	{"BLMove", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool) error {
		_, err := p.BLMove(ctx, "jobs", "taken", "RIGHT", "LEFT")
		return err
	}},
	{"XREADGROUP BLOCK 0", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool) error {
		_, err := p.Do(ctx, "XREADGROUP", "GROUP", "g", "c", "BLOCK", 0, "STREAMS", "s", ">")
		return err
	}},
	{"Subscribe", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool) error {
		s, err := p.Subscribe(ctx, "news")
		if err == nil {
			s.Close()
		}
		return err
	}},
	{"Queue.Consume", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool) error {
		q, err := redisalive.NewQueue(p, "jobs", redisalive.QueueOptions{})
		if err != nil {
			return err
		}
		return q.Consume(ctx, func(context.Context, []byte) error { return nil })
	}},
	{"Queue.Push", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool) error {
		q, err := redisalive.NewQueue(p, "jobs", redisalive.QueueOptions{})
		if err != nil {
			return err
		}
		return q.Push(ctx, []byte("job"))
	}},
}

// TestAServerThatRefusesTheConfigurationReachesEveryCallerAtOnceAsADialError:
// a wrong or missing password, a database the server does not have or the
// user may not select, a port that does not speak RESP and a TLS handshake
// that cannot succeed are configuration errors. Every caller, a blocking
// read or a consumer with a context that never ends included, gets a
// *DialError naming the address and the step, matching ErrMisconfigured,
// after one dial and not a loop of them.
func TestAServerThatRefusesTheConfigurationReachesEveryCallerAtOnceAsADialError(t *testing.T) {
	withUsers := redistest.Start(t)
	withUsers.Do(t, "ACL", "SETUSER", "nosel", "on", ">pw", "~*", "&*", "+@all", "-select")
	withPassword := startWithPassword(t, "secret")
	withTLS := redistest.StartTLS(t)
	http := httpServer(t)
	cases := []struct {
		name  string
		opts  redisalive.Options
		step  string
		cause string // in the cause's message
		hint  string // in the error's message
	}{
		{"wrong password", redisalive.Options{Addr: withPassword.Addr(), Password: "wrong"},
			"AUTH", "WRONGPASS", "check Options.Username and Options.Password"},
		{"missing password", redisalive.Options{Addr: withPassword.Addr()},
			"AUTH", "NOAUTH", "the server requires a password: set Options.Password"},
		{"database out of range", redisalive.Options{Addr: withPassword.Addr(), Password: "secret", DB: 99},
			"SELECT", "DB index is out of range", "check Options.DB"},
		{"SELECT not permitted", redisalive.Options{Addr: withUsers.Addr(), Username: "nosel", Password: "pw", DB: 1},
			"SELECT", "NOPERM", "check Options.DB"},
		{"an HTTP server's port", redisalive.Options{Addr: http.Addr().String()},
			"handshake", `peer is not speaking RESP (is it a Redis server?), it sent: "HTTP/1.1 400 Bad Request"`, "check Addr"},
		{"TLS to a port that answers in plain text", redisalive.Options{Addr: http.Addr().String(), TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}},
			"TLS handshake", "tls: first record does not look like a TLS handshake", "check Options.TLSConfig"},
		{"a certificate not trusted", redisalive.Options{Addr: withTLS.Addr(), TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}},
			"TLS handshake", "certificate", "check Options.TLSConfig"},
	}
	for _, tc := range cases {
		for _, path := range dialPaths {
			t.Run(tc.name+"/"+path.name, func(t *testing.T) {
				opts := tc.opts
				opts.AutoPipeline = path.opts.AutoPipeline
				p := pooltest.New(t, opts)
				took, err := returnsWithin(t, 5*time.Second, path.name, func() error { return path.call(context.Background(), p) })
				assert.Less(t, took, 2*time.Second, "got the error after %v, want it at once", took)
				requireDialError(t, err, opts.Addr, tc.step, tc.cause)
				require.ErrorIs(t, err, redisalive.ErrMisconfigured)
				assert.Contains(t, err.Error(), "(a configuration error, not retried: "+tc.hint)
				if tc.step == "AUTH" || tc.step == "SELECT" {
					var serverErr redis.Error
					require.ErrorAs(t, err, &serverErr, "the server's own reply")
					assert.Contains(t, string(serverErr), tc.cause)
				}
				if tc.step == "handshake" {
					assert.ErrorIs(t, err, redisalive.ErrProtocol)
				}
				assert.Equal(t, int64(1), p.Stats().DialErrors, "got %d dial errors, want the one dial and no retry", p.Stats().DialErrors)
			})
		}
	}
}

// requireDialError checks that err is a *DialError of addr at step whose
// message names both and contains cause.
func requireDialError(t *testing.T, err error, addr, step, cause string) {
	t.Helper()
	var de *redisalive.DialError
	require.ErrorAs(t, err, &de, "got %v", err)
	assert.Equal(t, addr, de.Addr, "DialError.Addr")
	assert.Equal(t, step, de.Step, "DialError.Step")
	assert.Contains(t, err.Error(), "redisalive: new connection to "+addr+" failed at "+step+": ")
	assert.Contains(t, err.Error(), cause)
}

// TestAPeerThatSpeaksHTTPIsNamedWithWhatItSentTheAddressAndTheStep: the
// whole message, as a user pointed at the wrong port reads it.
func TestAPeerThatSpeaksHTTPIsNamedWithWhatItSentTheAddressAndTheStep(t *testing.T) {
	http := httpServer(t)
	p := pooltest.New(t, redisalive.Options{Addr: http.Addr().String()})
	_, err := p.Do(context.Background(), "PING")
	want := "redisalive: new connection to " + http.Addr().String() + ` failed at handshake: resp: peer is not speaking RESP (is it a Redis server?), it sent: "HTTP/1.1 400 Bad Request"` +
		" (a configuration error, not retried: check Addr and Network: this is not a Redis server's port)"
	require.EqualError(t, err, want)
}

// TestACorrectedACLLetsTheNextCallThroughWithoutARestart: a configuration
// error is not remembered. Once the server accepts the pool's password,
// the same pool's next blocking read, subscription and consumer work.
func TestACorrectedACLLetsTheNextCallThroughWithoutARestart(t *testing.T) {
	srv := redistest.Start(t)
	srv.Do(t, "ACL", "SETUSER", "app", "on", ">old", "~*", "&*", "+@all")
	p := pooltest.New(t, redisalive.Options{Addr: srv.Addr(), Username: "app", Password: "new"})
	q, err := redisalive.NewQueue(p, "jobs", redisalive.QueueOptions{})
	require.NoError(t, err)
	ctx := context.Background()

	_, _, err = p.BRPop(ctx, "list")
	require.ErrorIs(t, err, redisalive.ErrMisconfigured, "before the fix")
	_, err = p.Subscribe(ctx, "news")
	require.ErrorIs(t, err, redisalive.ErrMisconfigured, "before the fix")
	err = q.Consume(ctx, func(context.Context, []byte) error { return nil })
	require.ErrorIs(t, err, redisalive.ErrMisconfigured, "before the fix")

	srv.Do(t, "ACL", "SETUSER", "app", ">new")
	srv.Do(t, "LPUSH", "list", "after the fix")
	_, v, err := p.BRPop(ctx, "list")
	require.NoError(t, err, "after the fix")
	assert.Equal(t, "after the fix", v)

	sub, err := p.Subscribe(ctx, "news")
	require.NoError(t, err, "after the fix")
	require.NoError(t, sub.Close())

	require.NoError(t, q.Push(ctx, []byte("job")))
	handled := make(chan string, 1)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- q.Consume(cctx, func(_ context.Context, payload []byte) error {
			handled <- string(payload)
			return nil
		})
	}()
	select {
	case got := <-handled:
		assert.Equal(t, "job", got)
	case <-time.After(5 * time.Second):
		t.Fatal("Consume handled nothing within 5s of the fix")
	}
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

// TestAUserWithoutCLIENTOrINFOStillConnects: the handshake's CLIENT ID and
// INFO only serve the fence; a user the ACL denies them is no
// configuration error, and its connections work unfenced.
func TestAUserWithoutCLIENTOrINFOStillConnects(t *testing.T) {
	srv := redistest.Start(t)
	srv.Do(t, "ACL", "SETUSER", "narrow", "on", ">pw", "~*", "&*", "+@all", "-client", "-info")
	p := pooltest.New(t, redisalive.Options{Addr: srv.Addr(), Username: "narrow", Password: "pw"})
	v, err := redis.String(p.Do(context.Background(), "PING"))
	require.NoError(t, err)
	assert.Equal(t, "PONG", v)
}

// TestADeadPortIsRetriedAndNamedWhenTheContextEnds: nothing listening is
// no configuration error (the server may be restarting), so a blocking
// read, a subscription and a consumer keep trying; the error their context
// ends them with carries the last connection error, which names the step
// and the refusal. Do, which does not retry, returns the *DialError itself.
func TestADeadPortIsRetriedAndNamedWhenTheContextEnds(t *testing.T) {
	const wait = 700 * time.Millisecond
	for _, path := range dialPaths {
		t.Run(path.name, func(t *testing.T) {
			addr := deadAddr(t)
			p := pooltest.New(t, redisalive.Options{Addr: addr, AutoPipeline: path.opts.AutoPipeline, Logger: slog.New(slog.DiscardHandler)})
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			took, err := returnsWithin(t, 5*time.Second, path.name, func() error { return path.call(ctx, p) })
			require.Error(t, err)
			assert.NotErrorIs(t, err, redisalive.ErrMisconfigured)
			assert.ErrorIs(t, err, syscall.ECONNREFUSED)
			requireDialError(t, err, addr, "connect", "connection refused")
			if retries(path.name) {
				require.ErrorIs(t, err, context.DeadlineExceeded)
				assert.GreaterOrEqual(t, took, wait-50*time.Millisecond, "got the error after %v, want retries until the deadline", took)
				assert.Contains(t, err.Error(), "(last connection error: redisalive: new connection to "+addr+" failed at connect: ")
				assert.Greater(t, p.Stats().DialErrors, int64(1), "dials retried")
			} else {
				assert.Less(t, took, wait/2, "got the error after %v, want it at once", took)
			}
		})
	}
}

// retries reports whether a dial path keeps trying a dead port until its
// context ends.
func retries(path string) bool {
	switch path {
	case "BRPop", "BLMove", "XREADGROUP BLOCK 0", "Subscribe", "Queue.Consume":
		return true
	}
	return false
}

// TestABlockingReadEndedByCloseCarriesTheLastConnectionError: Close ends a
// blocking read that has been retrying a dead port with ErrPoolClosed and
// why the read never got through.
func TestABlockingReadEndedByCloseCarriesTheLastConnectionError(t *testing.T) {
	addr := deadAddr(t)
	p := pooltest.New(t, redisalive.Options{Addr: addr, Logger: slog.New(slog.DiscardHandler)})
	done := make(chan error, 1)
	go func() {
		_, _, err := p.BRPop(context.Background(), "jobs")
		done <- err
	}()
	testkit.WaitFor(t, 5*time.Second, "a failed dial", func() bool { return p.Stats().DialErrors > 0 })
	require.NoError(t, p.Close())
	err := <-done
	require.ErrorIs(t, err, redisalive.ErrPoolClosed)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	assert.Contains(t, err.Error(), "redisalive: pool is closed (last connection error: redisalive: new connection to "+addr+" failed at connect: ")
}

// TestWarningsGoToTheDefaultLoggerUnlessOneIsSet: a service that never
// configured logging hears, through slog.Default, that its consumer
// cannot connect; a Logger of slog.DiscardHandler silences it.
func TestWarningsGoToTheDefaultLoggerUnlessOneIsSet(t *testing.T) {
	var logged testkit.LogBuffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })

	for _, tc := range []struct {
		name   string
		logger *slog.Logger
		want   []string
	}{
		{"default", nil, []string{
			`level=WARN msg="redisalive: blocking read failed; retrying on a new connection"`,
			`level=WARN msg="redisalive: queue: registering the consumer failed; retrying"`,
		}},
		{"discarded", slog.New(slog.DiscardHandler), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := len(logged.String())
			addr := deadAddr(t)
			p := pooltest.New(t, redisalive.Options{Addr: addr, Logger: tc.logger})
			q, err := redisalive.NewQueue(p, "jobs", redisalive.QueueOptions{})
			require.NoError(t, err)
			// Each retry loop runs until its warning is out (a Queue's
			// first one comes after up to four tries and 350 ms of
			// backoff), or, when none should come, for long enough that
			// it would have.
			for i, run := range []func(context.Context) error{
				func(ctx context.Context) error { _, _, err := p.BRPop(ctx, "jobs"); return err },
				func(ctx context.Context) error {
					return q.Consume(ctx, func(context.Context, []byte) error { return nil })
				},
			} {
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- run(ctx) }()
				if tc.want != nil {
					testkit.WaitFor(t, 10*time.Second, tc.want[i], func() bool {
						return strings.Contains(logged.String()[start:], tc.want[i])
					})
				} else {
					time.Sleep(time.Second)
				}
				cancel()
				require.ErrorIs(t, <-done, context.Canceled)
			}

			got := logged.String()[start:]
			for _, want := range tc.want {
				assert.Contains(t, got, want)
			}
			if tc.want != nil {
				assert.Contains(t, got, "connection refused", "the cause")
				assert.Contains(t, got, "addr="+addr)
			}
			if tc.want == nil {
				assert.Empty(t, got, "got a log, want none")
			}
		})
	}
}

// TestADialCancelledByItsCallerIsNoDialError: a dial cut short by the
// caller's cancel (a shutdown) is not counted in DialErrors; one that
// timed out on its own is.
func TestADialCancelledByItsCallerIsNoDialError(t *testing.T) {
	ln := silentServer(t)
	p := pooltest.New(t, redisalive.Options{Addr: ln.Addr().String(), DialTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := p.Do(ctx, "PING")
	require.ErrorIs(t, err, context.Canceled)
	var de *redisalive.DialError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "handshake", de.Step, "the server accepts, then never answers")
	assert.Zero(t, p.Stats().DialErrors, "got %d dial errors for a cancelled dial, want 0", p.Stats().DialErrors)

	_, err = p.Do(context.Background(), "PING")
	require.Error(t, err)
	assert.Equal(t, int64(1), p.Stats().DialErrors, "got %d dial errors for a dial that timed out, want 1", p.Stats().DialErrors)
}

// TestARedigoPoolNamesAMisconfigurationToo: a RedigoPool's dials fail
// with the same *DialError.
func TestARedigoPoolNamesAMisconfigurationToo(t *testing.T) {
	srv := startWithPassword(t, "secret")
	rp := pooltest.New(t, redisalive.Options{Addr: srv.Addr(), Password: "wrong"}).RedigoPool()
	defer rp.Close()
	c := rp.Get()
	defer c.Close()
	_, err := c.Do("PING")
	requireDialError(t, err, srv.Addr(), "AUTH", "WRONGPASS")
	require.ErrorIs(t, err, redisalive.ErrMisconfigured)
	assert.True(t, strings.HasSuffix(err.Error(), "(a configuration error, not retried: check Options.Username and Options.Password against the server's users)"), "got %q", err)
	assert.False(t, errors.Is(err, context.Canceled))
}

// TestARunningSubscriptionAndConsumerEndWhenTheirReconnectIsRefused: a
// password changed on the server while a subscription and a consumer run
// is met when their connections are lost; their reconnect's configuration
// error ends them, with that error, instead of a loop of refused dials.
func TestARunningSubscriptionAndConsumerEndWhenTheirReconnectIsRefused(t *testing.T) {
	srv := redistest.Start(t)
	srv.Do(t, "ACL", "SETUSER", "app", "on", ">old", "~*", "&*", "+@all")
	p := pooltest.New(t, redisalive.Options{Addr: srv.Addr(), Username: "app", Password: "old", Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	sub, err := p.Subscribe(ctx, "news")
	require.NoError(t, err)
	defer sub.Close()
	q, err := redisalive.NewQueue(p, "jobs", redisalive.QueueOptions{})
	require.NoError(t, err)
	consumed := make(chan error, 1)
	go func() { consumed <- q.Consume(ctx, func(context.Context, []byte) error { return nil }) }()
	testkit.WaitFor(t, 5*time.Second, "the consumer's blocking read", func() bool { return p.Stats().BlockingRounds > 0 })

	srv.Do(t, "ACL", "SETUSER", "app", "resetpass", ">new")
	srv.Do(t, "CLIENT", "KILL", "USER", "app")

	_, err = sub.Receive(ctx)
	requireDialError(t, err, srv.Addr(), "AUTH", "WRONGPASS")
	require.ErrorIs(t, err, redisalive.ErrMisconfigured, "Receive")
	_, err = sub.Receive(ctx)
	require.ErrorIs(t, err, redisalive.ErrMisconfigured, "Receive again: the subscription has ended")

	_, err = returnsWithin(t, 10*time.Second, "Consume", func() error { return <-consumed })
	requireDialError(t, err, srv.Addr(), "AUTH", "WRONGPASS")
	require.ErrorIs(t, err, redisalive.ErrMisconfigured, "Consume")
	assert.Contains(t, err.Error(), "redisalive: queue jobs: consume: ")
}

// TestASilentServerIsRetriedAndNamedWhenTheContextEnds: a server that
// accepts and never answers fails each dial at DialTimeout, an error that
// looks like a deadline; it is still the last connection error that the
// blocking read's own deadline reports.
func TestASilentServerIsRetriedAndNamedWhenTheContextEnds(t *testing.T) {
	ln := silentServer(t)
	addr := ln.Addr().String()
	p := pooltest.New(t, redisalive.Options{Addr: addr, DialTimeout: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	_, _, err := p.BRPop(ctx, "jobs")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, redisalive.ErrMisconfigured)
	assert.Contains(t, err.Error(), "(last connection error: redisalive: new connection to "+addr+" failed at handshake: ")
	assert.Contains(t, err.Error(), "i/o timeout")
}
