package redisalive_test

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/redistest"
)

// blockGrace is the library's documented read grace past each blocking
// round's server-side timeout (Options.BlockSlice).
const blockGrace = 500 * time.Millisecond

// pollEvery is how often waitFor checks its condition.
const pollEvery = 2 * time.Millisecond

// newMiniPool starts a miniredis server and a pool on it, both closed when
// the test ends.
func newMiniPool(t *testing.T, opts redisalive.Options) (*redisalive.Pool, *miniredis.Miniredis) {
	t.Helper()
	mr := miniredis.RunT(t)
	opts.Addr = mr.Addr()
	p, err := redisalive.NewPool(opts)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p, mr
}

// silentServer accepts connections and never answers, like a server
// whose replies are lost; it and every connection it accepted are closed
// when the test ends.
func silentServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln
}

// newServerPool opens a pool on srv, over TLS if srv serves TLS, closed
// when the test ends.
func newServerPool(t *testing.T, srv *redistest.Server, opts redisalive.Options) *redisalive.Pool {
	t.Helper()
	opts.Addr, opts.TLSConfig = srv.Addr(), srv.TLSConfig()
	p, err := redisalive.NewPool(opts)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// newPool opens a pool on opts.Addr, a proxy's say, closed when the test
// ends.
func newPool(t *testing.T, opts redisalive.Options) *redisalive.Pool {
	t.Helper()
	p, err := redisalive.NewPool(opts)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// waitFor checks cond every pollEvery until it holds and returns how long
// that took; it fails t if cond does not hold within the given time.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(pollEvery)
	}
	return time.Since(start)
}

// waitForValue polls got every pollEvery until it returns want; if that
// does not happen within the given time it fails t with the value got
// returned last, not with one read before the wait.
func waitForValue[T comparable](t *testing.T, within time.Duration, what string, want T, got func() T) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v := got()
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %+v, want %+v within %v", what, v, want, within)
		}
		time.Sleep(pollEvery)
	}
}

// fillIdle checks out n connections at once, proves each with a PING and
// returns them, leaving n idle connections in the pool.
func fillIdle(t *testing.T, p *redisalive.Pool, n int) {
	t.Helper()
	conns := make([]redis.Conn, n)
	for i := range conns {
		c, err := p.Get(context.Background())
		require.NoError(t, err)
		conns[i] = c
		_, err = c.Do("PING")
		require.NoError(t, err)
	}
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	require.Equal(t, n, p.Stats().Idle, "idle connections")
}

// clientStates returns the TCP states of the client sockets connected to
// port, e.g. {"ESTABLISHED": 2}.
func clientStates(t *testing.T, port int) map[string]int {
	t.Helper()
	states, err := redistest.TCPStates(port)
	require.NoError(t, err)
	return states
}

// syncBuffer is a bytes.Buffer safe for the pool's goroutine to write while
// the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// formatURL writes o as a Redis URL, the inverse of ParseURL for the
// Options ParseURL returns: a database goes in the path, every other
// non-zero setting in the query.
func formatURL(o redisalive.Options) string {
	u := &url.URL{Scheme: "redis", Host: o.Addr}
	if o.TLSConfig != nil {
		u.Scheme = "rediss"
	}
	q := url.Values{}
	if o.Network == "unix" {
		u.Scheme, u.Host, u.Path = "unix", "", o.Addr
		if o.DB != 0 {
			q.Set("db", strconv.Itoa(o.DB))
		}
	} else if o.DB != 0 {
		u.Path = "/" + strconv.Itoa(o.DB)
	}
	if o.Username != "" || o.Password != "" {
		u.User = url.UserPassword(o.Username, o.Password)
	}
	for key, d := range map[string]time.Duration{
		"dial_timeout": o.DialTimeout, "read_timeout": o.ReadTimeout, "write_timeout": o.WriteTimeout,
		"pool_timeout": o.PoolTimeout, "idle_timeout": o.IdleTimeout, "max_conn_lifetime": o.MaxConnLifetime,
		"health_check_interval": o.HealthCheckInterval, "block_slice": o.BlockSlice, "tcp_user_timeout": o.TCPUserTimeout,
	} {
		if d != 0 {
			q.Set(key, d.String())
		}
	}
	for key, n := range map[string]int{"max_active": o.MaxActive, "max_idle": o.MaxIdle} {
		if n != 0 {
			q.Set(key, strconv.Itoa(n))
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}
