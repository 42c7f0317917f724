package redisaliveprom_test

import (
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
)

// newMiniPool starts a miniredis server and a pool on it, both closed when
// the test ends.
func newMiniPool(t *testing.T, opts redisalive.Options) *redisalive.Pool {
	t.Helper()
	mr := miniredis.RunT(t)
	opts.Addr = mr.Addr()
	p, err := redisalive.NewPool(opts)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// waitFor checks cond every 2 ms until it holds; it fails t if cond does
// not hold within the given time.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
