// Package pooltest opens Pools for the tests of the packages that import
// redisalive (its external tests and the modules under extra/): each pool
// is closed when its test ends. The root package's internal tests cannot
// import it, since it imports redisalive; they have openPool.
package pooltest

import (
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/redistest"
)

// New opens a pool on opts.Addr, a proxy's say, closed when tb ends.
func New(tb testing.TB, opts redisalive.Options) *redisalive.Pool {
	tb.Helper()
	p, err := redisalive.NewPool(opts)
	require.NoError(tb, err)
	tb.Cleanup(func() { p.Close() })
	return p
}

// OnServer opens a pool on srv, over TLS if srv serves TLS, closed when tb
// ends.
func OnServer(tb testing.TB, srv *redistest.Server, opts redisalive.Options) *redisalive.Pool {
	tb.Helper()
	opts.Addr, opts.TLSConfig = srv.Addr(), srv.TLSConfig()
	return New(tb, opts)
}

// OnMiniredis starts a miniredis server and opens a pool on it, both
// closed when tb ends.
func OnMiniredis(tb testing.TB, opts redisalive.Options) (*redisalive.Pool, *miniredis.Miniredis) {
	tb.Helper()
	mr := miniredis.RunT(tb)
	opts.Addr = mr.Addr()
	return New(tb, opts), mr
}
