package redistest_test

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive/internal/redistest"
)

func TestStartDo(t *testing.T) {
	srv := redistest.Start(t)
	if got := srv.Do(t, "PING"); got != "PONG" {
		t.Fatalf("PING: got %v, want PONG", got)
	}
	if got := srv.Do(t, "DEBUG", "SLEEP", 0); got != "OK" {
		t.Fatalf("DEBUG SLEEP: got %v, want OK", got)
	}
	if n := srv.ConnectedClients(t); n != 0 {
		t.Fatalf("ConnectedClients: got %d, want 0", n)
	}
}

func TestExtraArgs(t *testing.T) {
	srv := redistest.Start(t, "--timeout", "7")
	got, err := redis.Strings(srv.Do(t, "CONFIG", "GET", "timeout"), nil)
	if err != nil || len(got) != 2 || got[1] != "7" {
		t.Fatalf("CONFIG GET timeout: got %q, %v; want [timeout 7]", got, err)
	}
}

// kinds are the servers every generic helper must work on.
var kinds = []struct {
	name  string
	start func(testing.TB, ...string) *redistest.Server
}{
	{"plain", redistest.Start},
	{"tls", redistest.StartTLS},
}

// dialRaw opens a client connection to srv that no helper of redistest
// knows about, speaking TLS when srv does.
func dialRaw(t *testing.T, srv *redistest.Server) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	if cfg := srv.TLSConfig(); cfg != nil {
		c, err = tls.Dial("tcp", srv.Addr(), cfg)
	} else {
		c, err = net.Dial("tcp", srv.Addr())
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRestart(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) { testRestart(t, k.start(t)) })
	}
}

func testRestart(t *testing.T, srv *redistest.Server) {
	port, pid := srv.Port(), srv.PID()
	srv.Do(t, "SET", "k", "v")

	srv.Stop(t)
	if _, err := srv.TryDo("PING"); err == nil {
		t.Fatal("PING succeeded on a stopped server")
	}

	srv.Restart(t)
	if srv.Port() != port {
		t.Fatalf("port changed across Restart: %d -> %d", port, srv.Port())
	}
	if srv.PID() == pid {
		t.Fatalf("PID unchanged across Restart: %d", pid)
	}
	if got := srv.Do(t, "GET", "k"); got != nil {
		t.Fatalf("GET k after Restart: got %q, want nil (no persistence)", got)
	}
}

func TestClients(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) { testClients(t, k.start(t)) })
	}
}

func testClients(t *testing.T, srv *redistest.Server) {
	c := dialRaw(t, srv)
	defer c.Close()
	srv.WaitConnectedClients(t, 1, 2*time.Second)

	ids := srv.ClientIDs(t)
	if len(ids) != 1 {
		t.Fatalf("ClientIDs: got %v, want one id", ids)
	}
	waitStates(t, srv.Port(), "ESTABLISHED")

	// Killing the client server-side while we neither read nor close leaves
	// our socket waiting for the application to close: CLOSE_WAIT.
	srv.Do(t, "CLIENT", "KILL", "ID", ids[0])
	waitStates(t, srv.Port(), "CLOSE_WAIT")
	srv.WaitConnectedClients(t, 0, 2*time.Second)
}

// waitStates polls until exactly one client-side socket to port exists in
// state and none is ESTABLISHED unless that is the state wanted.
func waitStates(t *testing.T, port int, state string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := redistest.TCPStates(port)
		if err != nil {
			t.Fatal(err)
		}
		if got[state] == 1 && (state == "ESTABLISHED" || got["ESTABLISHED"] == 0) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("TCPStates(%d) = %v, want one %s", port, got, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
