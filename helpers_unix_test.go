//go:build unix

package redisalive_test

import (
	"net"
	"strconv"
	"syscall"
	"testing"
)

// deadAddr returns a loopback address with nothing listening on it, held
// until the test ends: a dial there is refused at once, as while a server
// restarts. The port is bound by a socket that never listens, so no server
// another test starts meanwhile can take it, as one took a port merely
// closed and found free (a replica answered a "dead" port with READONLY).
func deadAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}
