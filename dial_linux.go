package redisalive

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// userTimeoutApplies says TCP_USER_TIMEOUT takes effect: it bounds written
// data left unacknowledged and ends keepalive probing.
const userTimeoutApplies = true

// setUserTimeout sets TCP_USER_TIMEOUT, in milliseconds, on tc.
func setUserTimeout(tc *net.TCPConn, d time.Duration) error {
	raw, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
	if err != nil {
		return err
	}
	return serr
}
