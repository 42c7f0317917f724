package redistest

import (
	"errors"
	"net"
	"strconv"
	"testing"
)

func TestClusterNodeWithBusPortTakenFailsAsAddrInUse(t *testing.T) {
	// Another process may take the bus port between freeNodePort and
	// Listen: try again with another port, a few times.
	var (
		port int
		l    net.Listener
		err  error
	)
	for range 5 {
		if port, err = freeNodePort(); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+busPortOffset))); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no node port whose bus port this test could take: %v", err)
	}
	defer l.Close()
	s := newServer(t, []string{"--cluster-enabled", "yes"})
	err = s.launch(port)
	if !errors.Is(err, errAddrInUse) {
		t.Fatalf("launch with the bus port taken: got %v, want errAddrInUse so start picks another port", err)
	}
}
