//go:build linux

package redistest_test

import (
	"testing"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive/internal/faultnet"
	"github.com/redisalive/redisalive/internal/redistest"
)

func TestSentinelsCutOffFromTheMasterFailItOverWhileClientsStillReachIt(t *testing.T) {
	t.Parallel()
	if !faultnet.Enter(t) {
		return
	}
	const src = "127.0.0.9"
	topo := redistest.StartSentinel(t, redistest.SentinelOptions{SourceAddr: src})
	old := topo.Master(t)
	faultnet.BlackholeFrom(t, src, old.Port(), faultnet.Both)

	promoted := topo.WaitNewMaster(t, old)
	// A split brain: no sentinel can reach the old master to convert it,
	// so it is still a master, and a client on 127.0.0.1 still writes to
	// it.
	wantRole(t, old, "master")
	for srv, v := range map[*redistest.Server]string{old: "old", promoted: "new"} {
		if got := srv.Do(t, "SET", "k", v); got != "OK" {
			t.Fatalf("SET k %s on %s: got %v, want OK", v, srv.Addr(), got)
		}
	}
	for srv, want := range map[*redistest.Server]string{old: "old", promoted: "new"} {
		if got, err := redis.String(srv.Do(t, "GET", "k"), nil); err != nil || got != want {
			t.Fatalf("GET k on %s: got %q, %v; want %q", srv.Addr(), got, err, want)
		}
	}
}
