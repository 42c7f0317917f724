package redistest_test

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive/internal/redistest"
)

func TestTLSServerAnswersPINGOverTLSOnly(t *testing.T) {
	srv := redistest.StartTLS(t)
	if got := srv.Do(t, "PING"); got != "PONG" {
		t.Fatalf("PING over TLS: got %v, want PONG", got)
	}
	if got, err := redis.Strings(srv.Do(t, "CONFIG", "GET", "port"), nil); err != nil || len(got) != 2 || got[1] != "0" {
		t.Fatalf("CONFIG GET port: got %q, %v; want [port 0]", got, err)
	}

	// A client that dials a plain redis URL to a TLS port must fail, not
	// hang or read garbage as a reply.
	c, err := redis.Dial("tcp", srv.Addr(),
		redis.DialConnectTimeout(time.Second),
		redis.DialReadTimeout(time.Second),
		redis.DialWriteTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := c.Do("PING"); err == nil {
		t.Fatalf("plain-TCP PING to a TLS port: got %v, want an error", got)
	}
}

func TestTLSConfigTrustsBothNamesAndIsFresh(t *testing.T) {
	srv := redistest.StartTLS(t)
	for _, name := range []string{"127.0.0.1", "localhost"} {
		cfg := srv.TLSConfig()
		if cfg.MinVersion != tls.VersionTLS12 {
			t.Fatalf("MinVersion: got %#x, want %#x", cfg.MinVersion, tls.VersionTLS12)
		}
		cfg.ServerName = name
		c, err := tls.Dial("tcp", srv.Addr(), cfg)
		if err != nil {
			t.Fatalf("TLS handshake with ServerName %q: %v", name, err)
		}
		c.Close()
	}
	if a, b := srv.TLSConfig(), srv.TLSConfig(); a == b || a.RootCAs == b.RootCAs {
		t.Fatal("TLSConfig returned a shared config or pool, want a fresh one each call")
	}
	if cfg := redistest.Start(t).TLSConfig(); cfg != nil {
		t.Fatalf("TLSConfig of a plain server: got %v, want nil", cfg)
	}
}
