package main

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

// sysctlDir holds, below the root, the TCP settings Linux gives a socket
// whose program does not set its own.
const sysctlDir = "proc/sys/net/ipv4"

// Linux's least and greatest retransmission timeouts (TCP_RTO_MIN,
// TCP_RTO_MAX), which turn tcp_retries2 into time.
const (
	rtoMin = 200 * time.Millisecond
	rtoMax = 120 * time.Second
)

// kernelFindings reports this machine's TCP defaults for what they mean to
// a client that does not set its own: INFO only, since pools of this
// library set keepalive and TCP_USER_TIMEOUT on every socket.
func kernelFindings(root fs.FS) []finding {
	idle, idleErr := readSysctl(root, "tcp_keepalive_time")
	intvl, intvlErr := readSysctl(root, "tcp_keepalive_intvl")
	probes, probesErr := readSysctl(root, "tcp_keepalive_probes")
	retries, retriesErr := readSysctl(root, "tcp_retries2")
	total := ""
	if errors.Join(idleErr, intvlErr, probesErr) == nil {
		total = fmt.Sprintf("; with the interval and probe count below, such a client notices a vanished server %v after the last traffic",
			time.Duration(idle+intvl*probes)*time.Second)
	}
	return []finding{
		sysctlFinding("tcp_keepalive_time", "s", idle, idleErr,
			"quiet time before the first keepalive probe of a socket that switches keepalive on (SO_KEEPALIVE) without its own idle time; "+
				"a socket that never turns it on is never probed"+total,
			"60"),
		sysctlFinding("tcp_keepalive_intvl", "s", intvl, intvlErr,
			"time between unanswered keepalive probes of such a socket", "10"),
		sysctlFinding("tcp_keepalive_probes", "", probes, probesErr,
			"unanswered keepalive probes after which the kernel ends such a socket", "3"),
		sysctlFinding("tcp_retries2", "", retries, retriesErr,
			fmt.Sprintf("retransmissions of unacknowledged data before the kernel ends a connection, %v or more (from the least timeout, %v, doubling up to %v): "+
				"a client that wrote a command to a vanished server and has no read timeout and no TCP_USER_TIMEOUT waits that long "+
				"(redisalive pools set TCP_USER_TIMEOUT: see pool.unacknowledged)", retransmitTimeout(retries), rtoMin, rtoMax),
			"8"),
	}
}

// sysctlFinding describes one kernel setting; suggested is a value for a
// client that does not set its own.
func sysctlFinding(name, unit string, n int64, err error, why, suggested string) finding {
	f := finding{Check: "kernel." + name, Level: levelInfo}
	if err != nil {
		f.Value = "unknown"
		f.Why = fmt.Sprintf("cannot be read (%v): not Linux, or /proc is not mounted", err)
		return f
	}
	f.Value = strconv.FormatInt(n, 10) + unit
	f.Why = why
	f.Fix = fmt.Sprintf("for clients that do not set their own: sysctl -w net.ipv4.%s=%s, and the same in /etc/sysctl.d/", name, suggested)
	return f
}

// readSysctl reads one whole-number setting under root's sysctlDir.
func readSysctl(root fs.FS, name string) (int64, error) {
	b, err := fs.ReadFile(root, path.Join(sysctlDir, name))
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: %q is not a count", name, b)
	}
	return n, nil
}

// retransmitTimeout is how long Linux retransmits before it gives up after
// retries retransmissions, from the least retransmission timeout: it
// doubles up to rtoMax, then stays there (tcp_model_timeout in the
// kernel's tcp_timer.c). A connection with a longer round trip waits
// longer.
func retransmitTimeout(retries int64) time.Duration {
	const linearFrom = 9 // log2(rtoMax / rtoMin), where doubling stops
	if retries <= linearFrom {
		return time.Duration(2<<retries-1) * rtoMin
	}
	return time.Duration(2<<linearFrom-1)*rtoMin + time.Duration(retries-linearFrom)*rtoMax
}
