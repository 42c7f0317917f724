//go:build linux || darwin || dragonfly || freebsd || netbsd

package redisalive

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPeekerTellsHealthyFromClosedFromOutOfStep drives the checkout peek on
// a real loopback socket through the three states it must tell apart.
func TestPeekerTellsHealthyFromClosedFromOutOfStep(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	server, err := ln.Accept()
	require.NoError(t, err)
	defer server.Close()

	var p peeker
	p.init(client)
	require.True(t, p.open)
	assert.NoError(t, p.check(), "a quiet socket is healthy")

	_, err = server.Write([]byte("+PONG\r\n"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.check() != nil }, time.Second, time.Millisecond)
	assert.ErrorIs(t, p.check(), errUnexpectedData, "bytes nobody asked for")
	buf := make([]byte, 7)
	_, err = io.ReadFull(client, buf)
	require.NoError(t, err, "the peek must not consume what it saw")
	assert.NoError(t, p.check())

	require.NoError(t, server.Close())
	require.Eventually(t, func() bool { return p.check() != nil }, time.Second, time.Millisecond)
	assert.ErrorIs(t, p.check(), io.EOF, "the server closed the socket")
}

// TestCheckIdleTellsTLSTicketsFromCloseFromOutOfStep drives the idle check
// on a real TLS 1.3 connection to redis-server: the session tickets OpenSSL
// sends after the handshake, waiting unread, are no reason to drop it; the
// server closing it, or a reply nobody read, are.
func TestCheckIdleTellsTLSTicketsFromCloseFromOutOfStep(t *testing.T) {
	srv := redistest.StartTLS(t)
	dial := func(t *testing.T) *conn {
		nc, err := net.Dial("tcp", srv.Addr())
		require.NoError(t, err)
		tc := tls.Client(nc, srv.TLSConfig())
		require.NoError(t, tc.Handshake())
		require.Equal(t, uint16(tls.VersionTLS13), tc.ConnectionState().Version)
		c := newConn(tc, &config{readTimeout: time.Second, writeTimeout: time.Second}, time.Now())
		t.Cleanup(func() { c.close() })
		return c
	}

	t.Run("session tickets", func(t *testing.T) {
		c := dial(t)
		require.Eventually(t, func() bool { return c.check.check() == errUnexpectedData }, time.Second, time.Millisecond,
			"the raw socket never saw the session tickets")
		assert.NoError(t, c.checkIdle(time.Now()), "session tickets are no reason to drop a connection")
		assert.NoError(t, c.check.check(), "the tickets were absorbed: the raw peek is exact again")
		_, err := c.rc.Do("PING")
		assert.NoError(t, err, "the connection still works")
	})
	t.Run("closed by the server", func(t *testing.T) {
		c := dial(t)
		_, err := c.rc.Do("CLIENT", "SETNAME", "doomed")
		require.NoError(t, err)
		srv.Do(t, "CLIENT", "KILL", "TYPE", "normal")
		require.Eventually(t, func() bool { return c.checkIdle(time.Now()) != nil }, time.Second, time.Millisecond)
		assert.ErrorIs(t, c.checkIdle(time.Now()), io.EOF)
	})
	t.Run("closed by the server, the first read late", func(t *testing.T) {
		// On a busy machine the absorb read can begin after its deadline,
		// and then it reads nothing; the close must still be seen.
		c := dial(t)
		_, err := c.rc.Do("PING")
		require.NoError(t, err)
		srv.Do(t, "CLIENT", "KILL", "TYPE", "normal")
		require.Eventually(t, func() bool { return c.check.check() != nil }, time.Second, time.Millisecond,
			"the close never reached the raw socket")
		late := 0
		testHookTLSAbsorb = func() {
			if late++; late == 1 {
				time.Sleep(2 * tlsAbsorbWaits[0])
			}
		}
		defer func() { testHookTLSAbsorb = func() {} }()
		assert.ErrorIs(t, c.checkIdle(time.Now()), io.EOF, "a late first read must not make a closed connection look healthy")
		assert.Equal(t, 2, late, "the second read found the close")
	})
	t.Run("a reply nobody read", func(t *testing.T) {
		c := dial(t)
		_, err := c.rc.Do("PING") // the tickets arrive with the first reply
		require.NoError(t, err)
		require.NoError(t, c.rc.Send("PING"))
		require.NoError(t, c.rc.Flush())
		require.Eventually(t, func() bool { return c.check.check() != nil }, time.Second, time.Millisecond)
		assert.ErrorIs(t, c.checkIdle(time.Now()), errUnexpectedData)
	})
}
