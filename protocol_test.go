package redisalive_test

import (
	"context"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/pooltest"
	"github.com/redisalive/redisalive/internal/redistest"
)

// hostileReplies are answers a confused or malicious peer gives, and the
// error each must end in: a *ProtocolError for what breaks the protocol or
// a limit, a timeout for a declared length whose bytes never come (silence),
// io.ErrUnexpectedEOF for a reply cut short.
var hostileReplies = []struct {
	name   string
	reply  string
	hangUp bool
	want   error
}{
	{"bulk of 2 GB", "$2000000000\r\nabc", false, redisalive.ErrProtocol},
	{"bulk of 500 MB, 3 bytes sent", "$500000000\r\nabc", false, os.ErrDeadlineExceeded},
	{"array of 2 billion", "*2000000000\r\n", false, os.ErrDeadlineExceeded},
	{"nested array of 2 billion", "*1\r\n*2000000000\r\n", false, os.ErrDeadlineExceeded},
	{"length past int64", "$99999999999999999999\r\n", false, redisalive.ErrProtocol},
	{"negative length", "$-5\r\n", false, redisalive.ErrProtocol},
	{"HTTP banner", "HTTP/1.1 400 Bad Request\r\n\r\n", false, redisalive.ErrProtocol},
	{"unknown type byte", "~1\r\n+a\r\n", false, redisalive.ErrProtocol},
	{"nested 200,000 deep", strings.Repeat("*1\r\n", 200_000), false, redisalive.ErrProtocol},
	{"cut short", "$10\r\nabc", true, io.ErrUnexpectedEOF},
}

// maxHostileAlloc bounds what a hostile reply may cost the process.
const maxHostileAlloc = 4 << 20

// TestAHostileReplyCostsAFewKilobytesAndANamedError: whatever length a
// peer declares, the pool allocates in proportion to the bytes received,
// fails the call with a named error within ReadTimeout, closes the
// connection that read it, and goes on working against the real server.
// A blocking read ends at once on a protocol error; a reply that begins
// and then stalls or breaks off is, to it, a dead link: it retries on a new
// connection, each round failing within ReadTimeout of the reply's first
// byte, until its context ends.
func TestAHostileReplyCostsAFewKilobytesAndANamedError(t *testing.T) {
	srv := redistest.Start(t)
	const readTimeout = 500 * time.Millisecond
	paths := []struct {
		name     string
		opts     redisalive.Options
		call     func(ctx context.Context, p *redisalive.Pool) error
		retrying bool // a failure other than ErrProtocol is retried until ctx ends
	}{
		{"Do", redisalive.Options{}, getHostile, false},
		{"AutoPipeline", redisalive.Options{AutoPipeline: true}, getHostile, false},
		{"Get", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool) error {
			c, err := p.Get(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = redis.DoContext(c, ctx, "GET", "hostile")
			return err
		}, false},
		{"Blocking", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool) error {
			_, _, err := p.BRPop(ctx, "hostile")
			return err
		}, true},
	}
	for _, path := range paths {
		for _, hostile := range hostileReplies {
			t.Run(path.name+"/"+hostile.name, func(t *testing.T) {
				hs := newHostileServer(t, srv.Addr(), hostile.reply, hostile.hangUp)
				opts := path.opts
				opts.Addr, opts.ReadTimeout = hs.addr(), readTimeout
				p := pooltest.New(t, opts)
				ctx := context.Background()
				_, err := p.Do(ctx, "SET", "k", "before")
				require.NoError(t, err)

				want, within, ctxTimeout := hostile.want, readTimeout+time.Second, 10*time.Second
				if path.retrying && want != redisalive.ErrProtocol {
					want, within, ctxTimeout = context.DeadlineExceeded, 3*time.Second, 2*time.Second
				}
				start := time.Now()
				var err2 error
				alloc := allocated(func() {
					ctx, cancel := context.WithTimeout(ctx, ctxTimeout)
					defer cancel()
					err2 = path.call(ctx, p)
				})
				took := time.Since(start)
				require.ErrorIs(t, err2, want)
				assert.Less(t, took, within, "got the error after %v", took)
				assert.Less(t, alloc, uint64(maxHostileAlloc), "bytes allocated while reading the reply")

				v, err := redis.String(p.Do(ctx, "GET", "k"))
				require.NoError(t, err, "the pool, afterwards")
				assert.Equal(t, "before", v)
			})
		}
	}
}

// TestAHostileMessageOnASubscriptionCostsAGapNotTheProcess: garbage
// where a message should be ends the subscription's connection, which
// reconnects and reports the gap; the subscription goes on.
func TestAHostileMessageOnASubscriptionCostsAGapNotTheProcess(t *testing.T) {
	srv := redistest.Start(t)
	admin := pooltest.OnServer(t, srv, redisalive.Options{})
	for _, hostile := range hostileReplies {
		t.Run(hostile.name, func(t *testing.T) {
			hs := newHostileServer(t, srv.Addr(), hostile.reply, hostile.hangUp)
			p := pooltest.New(t, redisalive.Options{Addr: hs.addr(), ReadTimeout: 500 * time.Millisecond, PubSubPingInterval: 200 * time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sub, err := p.Subscribe(ctx, "news")
			require.NoError(t, err)
			defer sub.Close()

			var gap error
			alloc := allocated(func() {
				hs.Inject()
				_, gap = sub.Receive(ctx)
			})
			require.ErrorIs(t, gap, redisalive.ErrMessagesLost)
			assert.Less(t, alloc, uint64(maxHostileAlloc), "bytes allocated while reading the message")
			_, err = admin.Do(ctx, "PUBLISH", "news", "after")
			require.NoError(t, err)
			m, err := sub.Receive(ctx)
			require.NoError(t, err)
			assert.Equal(t, "after", string(m.Data))
		})
	}
}

func getHostile(ctx context.Context, p *redisalive.Pool) error {
	_, err := p.Do(ctx, "GET", "hostile")
	return err
}

// allocated returns how many bytes the process allocated while f ran.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestHostileRepliesAreNamedErrors: each hostile reply's error is one a
// caller can tell apart with errors.Is, and a ProtocolError says what the
// peer sent.
func TestHostileRepliesAreNamedErrors(t *testing.T) {
	var pe *redisalive.ProtocolError
	err := error(&redisalive.ProtocolError{Reason: "peer is not speaking RESP", Line: "HTTP/1.1 400 Bad Request"})
	require.True(t, errors.As(err, &pe))
	assert.ErrorIs(t, err, redisalive.ErrProtocol)
	assert.Contains(t, err.Error(), "HTTP/1.1 400")
}

// TestAReplyNobodyAskedForReachesNoCaller: a peer that answers a command
// with its reply and, in the same write, a second one nobody asked for
// leaves those bytes in the connection's buffer. The caller gets its own
// reply; the connection is closed rather than reused, so the next caller
// gets its own too, never the extra one.
func TestAReplyNobodyAskedForReachesNoCaller(t *testing.T) {
	srv := redistest.Start(t)
	for _, path := range getPaths {
		t.Run(path.name, func(t *testing.T) {
			hs := newHostileServer(t, srv.Addr(), "$4\r\nmine\r\n+EXTRA\r\n", false)
			opts := path.opts
			opts.Addr = hs.addr()
			p := pooltest.New(t, opts)
			ctx := context.Background()
			_, err := p.Do(ctx, "SET", "k", "before")
			require.NoError(t, err)
			got, err := path.get(ctx, p, "hostile")
			require.NoError(t, err)
			assert.Equal(t, "mine", got)
			for range 3 {
				got, err = path.get(ctx, p, "k")
				require.NoError(t, err)
				require.Equal(t, "before", got, "a later caller's reply")
			}
		})
	}
}
