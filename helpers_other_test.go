//go:build !unix

package redisalive_test

import (
	"net"
	"testing"
)

// deadAddr returns a loopback address with nothing listening on it: a
// dial there is refused at once, as while a server restarts. Elsewhere than
// on Unix the port is only closed, and another test could take it.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
