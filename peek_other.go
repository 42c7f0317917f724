//go:build !unix

package redisalive

import "net"

// peeker is a no-op where MSG_PEEK is unavailable; the health checker's
// PINGs still find dead connections.
type peeker struct{}

func (*peeker) init(net.Conn) {}
func (*peeker) check() error  { return nil }
