//go:build !linux

package redisalive

import (
	"net"
	"time"
)

// userTimeoutApplies says TCP_USER_TIMEOUT takes no effect here.
const userTimeoutApplies = false

// setUserTimeout does nothing: TCP_USER_TIMEOUT is Linux-only.
func setUserTimeout(*net.TCPConn, time.Duration) error { return nil }
