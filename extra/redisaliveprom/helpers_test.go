package redisaliveprom_test

import (
	"testing"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/pooltest"
)

// newMiniPool starts a miniredis server and a pool on it, both closed when
// the test ends.
func newMiniPool(t *testing.T, opts redisalive.Options) *redisalive.Pool {
	p, _ := pooltest.OnMiniredis(t, opts)
	return p
}
