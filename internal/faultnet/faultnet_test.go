//go:build linux

package faultnet_test

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/redisalive/redisalive/internal/faultnet"
	"github.com/redisalive/redisalive/internal/redistest"
)

func TestFaultnetSelfTest(t *testing.T) {
	if !faultnet.Enter(t) {
		return
	}

	t.Run("ServerStarts", func(t *testing.T) {
		srv := redistest.Start(t)
		if got := srv.Do(t, "PING"); got != "PONG" {
			t.Fatalf("PING: got %v, want PONG", got)
		}
	})

	t.Run("Blackhole", func(t *testing.T) {
		srv := redistest.Start(t)
		c := dialPing(t, srv.Addr())

		heal := faultnet.Blackhole(t, srv.Port(), faultnet.Both)
		write(t, c, "PING\r\n")
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read under blackhole: got %v, want a timeout", err)
		}

		// TCP retransmits the PING once the path is back.
		heal()
		readPong(t, c, 5*time.Second)
	})

	t.Run("BlackholeFrom", func(t *testing.T) {
		srv := redistest.Start(t)
		const src = "127.0.0.9"
		cut := dialPingFrom(t, src, srv.Addr())
		kept := dialPing(t, srv.Addr())

		heal := faultnet.BlackholeFrom(t, src, srv.Port(), faultnet.Both)
		write(t, cut, "PING\r\n")
		cut.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := cut.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read from %s under blackhole: got %v, want a timeout", src, err)
		}
		d := net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		if c, err := d.Dial("tcp", srv.Addr()); err == nil {
			c.Close()
			t.Fatalf("dial from %s under blackhole: got a connection, want a timeout", src)
		} else if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("dial from %s under blackhole: got %v, want a timeout", src, err)
		}
		// Clients on other addresses are not cut off.
		write(t, kept, "PING\r\n")
		readPong(t, kept, 2*time.Second)
		dialPing(t, srv.Addr())

		heal()
		readPong(t, cut, 5*time.Second)
	})

	t.Run("BlackholeAddr", func(t *testing.T) {
		srv, other := redistest.Start(t), redistest.Start(t)
		const src = "127.0.0.9"
		cut := dialPingFrom(t, src, srv.Addr())
		cutOther := dialPingFrom(t, src, other.Addr())
		kept := dialPing(t, srv.Addr())

		heal := faultnet.BlackholeAddr(t, src)
		for _, c := range []net.Conn{cut, cutOther} {
			write(t, c, "PING\r\n")
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := c.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read on a connection from %s to %s under blackhole: got %v, want a timeout", src, c.RemoteAddr(), err)
			}
		}
		// Clients on other addresses are not cut off.
		write(t, kept, "PING\r\n")
		readPong(t, kept, 2*time.Second)

		heal()
		readPong(t, cut, 5*time.Second)
		readPong(t, cutOther, 5*time.Second)
	})

	t.Run("Reset", func(t *testing.T) {
		srv := redistest.Start(t)
		c := dialPing(t, srv.Addr())

		heal := faultnet.Reset(t, srv.Port())
		start := time.Now()
		if _, err := net.DialTimeout("tcp", srv.Addr(), 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial under reset: got %v, want ECONNREFUSED", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("dial under reset took %v, want it refused at once", d)
		}
		write(t, c, "PING\r\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 16)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read under reset: got %v, want ECONNRESET", err)
		}

		heal()
		dialPing(t, srv.Addr())
	})

	t.Run("KillSocketsHalfOpen", func(t *testing.T) {
		srv := redistest.Start(t)
		c := dialPing(t, srv.Addr())

		heal := faultnet.Blackhole(t, srv.Port(), faultnet.Both)
		if n := faultnet.KillSockets(t, srv.Port()); n != 1 {
			t.Fatalf("KillSockets: got %d, want 1", n)
		}
		// The RST of the destroyed server socket was dropped, so the
		// client still believes the connection is up.
		states, err := redistest.TCPStates(srv.Port())
		if err != nil {
			t.Fatal(err)
		}
		if states["ESTABLISHED"] != 1 {
			t.Fatalf("client sockets after KillSockets: %v, want one ESTABLISHED", states)
		}

		// Once packets flow, the server kernel has no socket for them and
		// answers with RST.
		heal()
		write(t, c, "PING\r\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 16)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read on half-open connection: got %v, want ECONNRESET", err)
		}
	})
}

// dialPing opens a raw connection, closed at cleanup, that has completed a
// round trip, so the server has accepted it.
func dialPing(t *testing.T, addr string) net.Conn {
	t.Helper()
	return dialPingFrom(t, "", addr)
}

// dialPingFrom is dialPing from the local address src, or one the kernel
// picks if src is "".
func dialPingFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	write(t, c, "PING\r\n")
	readPong(t, c, 2*time.Second)
	return c
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func readPong(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, len("+PONG\r\n"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "+PONG\r\n" {
		t.Fatalf("reading PONG: got %q, %v", buf, err)
	}
}
