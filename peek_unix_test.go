//go:build unix

package redisalive

import (
	"io"
	"net"
	"testing"
	"time"

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
