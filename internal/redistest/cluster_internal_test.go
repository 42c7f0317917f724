package redistest

import (
	"errors"
	"net"
	"strconv"
	"testing"
)

func TestClusterNodeWithBusPortTakenFailsAsAddrInUse(t *testing.T) {
	port, err := freeNodePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+busPortOffset)))
	if err != nil {
		t.Skipf("bus port taken meanwhile: %v", err)
	}
	defer l.Close()
	s := newServer(t, []string{"--cluster-enabled", "yes"})
	err = s.launch(port)
	if !errors.Is(err, errAddrInUse) {
		t.Fatalf("launch with the bus port taken: got %v, want errAddrInUse so start picks another port", err)
	}
}
