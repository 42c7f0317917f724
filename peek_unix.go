//go:build linux || darwin || dragonfly || freebsd || netbsd

// The peek traps straight into the kernel with RawSyscall6. Of the other
// Unix systems, aix, illumos and solaris have no SYS_RECVFROM for it in
// golang.org/x/sys/unix, and on openbsd RawSyscall6 answers ENOSYS (the
// kernel takes system calls from libc only), which would fail every
// checkout; they get the stub in peek_other.go.

package redisalive

import (
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peeker checks an idle socket without a round trip: a non-blocking
// MSG_PEEK read returns EOF if the server closed it, data if the protocol
// is out of step, and EAGAIN if it is healthy. The method value and buffer
// live in the struct so that a check allocates nothing.
type peeker struct {
	raw  syscall.RawConn
	fn   func(fd uintptr)
	buf  [1]byte
	err  error
	open bool
}

func (p *peeker) init(nc net.Conn) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	p.raw, p.fn, p.open = raw, p.peek, true
}

func (p *peeker) peek(fd uintptr) {
	// The raw recvfrom, without a source-address buffer: unix.Recvfrom
	// allocates one on every call, and this runs on most checkouts.
	// MSG_DONTWAIT keeps it from blocking, so RawSyscall6 is safe.
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p.buf[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == unix.EAGAIN || errno == unix.EWOULDBLOCK:
		p.err = nil
	case errno != 0:
		p.err = errno
	case n > 0:
		p.err = errUnexpectedData
	default:
		p.err = io.EOF
	}
}

// check reports why the socket cannot be used, or nil if it looks healthy.
func (p *peeker) check() error {
	if !p.open {
		return nil
	}
	// Control rather than Read: the peek never waits for readability, so it
	// needs only the descriptor, not the poller's read lock and deadline
	// check.
	if err := p.raw.Control(p.fn); err != nil {
		return err
	}
	return p.err
}
