package redisalive_test

import (
	"context"
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

// writePaths are the ways a caller sends a write: Do on a connection of
// its own, Do on a shared connection, and a connection from Get.
var writePaths = []struct {
	name string
	opts redisalive.Options
	set  func(ctx context.Context, p *redisalive.Pool, key, v string) error
}{
	{"Do", redisalive.Options{}, setWithDo},
	{"AutoPipeline", redisalive.Options{AutoPipeline: true}, setWithDo},
	{"Get", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool, key, v string) error {
		c, err := p.Get(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = redis.DoContext(c, ctx, "SET", key, v)
		return err
	}},
}

func setWithDo(ctx context.Context, p *redisalive.Pool, key, v string) error {
	_, err := p.Do(ctx, "SET", key, v)
	return err
}

// TestAFailedWriteHeldByAMiddleboxNeverLandsAfterALaterAcknowledgedOne: a
// SET written into a link that then fails reaches the caller as an error,
// but a middlebox may still hold it and deliver it late. The caller's next
// SET succeeds; the late copy must not overwrite it. The pool kills the
// abandoned connection on the server before it sends the next SET, so
// the late copy finds that connection gone.
func TestAFailedWriteHeldByAMiddleboxNeverLandsAfterALaterAcknowledgedOne(t *testing.T) {
	srv := redistest.Start(t)
	for _, path := range writePaths {
		t.Run(path.name, func(t *testing.T) {
			px, err := faultproxy.New(srv.Addr())
			require.NoError(t, err)
			defer px.Close()
			opts := path.opts
			opts.Addr = px.Addr()
			p := pooltest.New(t, opts)
			ctx := context.Background()
			key := "fence:" + path.name
			require.NoError(t, path.set(ctx, p, key, "v0"))

			px.BlackholeOneWay(faultproxy.ToServer)
			before := px.Received(faultproxy.ToServer)
			failed := make(chan error, 1)
			go func() { failed <- path.set(ctx, p, key, "v1") }()
			testkit.WaitFor(t, 2*time.Second, "the proxy to hold the SET", func() bool { return px.Received(faultproxy.ToServer) > before })
			// The client is reset; the SET reaches the server linger later,
			// unless its connection is gone there by then: the fence closes
			// it at once, so linger only needs to outlast a loaded machine.
			const linger = 5 * time.Second
			px.CutAll(true, linger)
			require.Error(t, <-failed, "SET v1 through a cut link")
			px.Heal()

			require.NoError(t, path.set(ctx, p, key, "v2"))
			testkit.WaitFor(t, linger+2*time.Second, "the held SET to be delivered or dropped", func() bool { return px.Held() == 0 })
			got, err := redis.String(p.Do(ctx, "GET", key))
			require.NoError(t, err)
			assert.Equal(t, "v2", got, "the failed SET ran after the acknowledged one")
			assert.Positive(t, p.Stats().ZombiesKilled, "ZombiesKilled")
		})
	}
}
