package redisalive

import (
	"context"
	"testing"
)

// newBenchPool returns a default-configured pool on a fresh fakeServer
// that answers +OK, closed before the server stops.
func newBenchPool(b *testing.B) *Pool {
	b.Helper()
	s := newFakeServer(b, nil)
	p, err := NewPool(Options{Addr: s.addr()})
	if err != nil {
		b.Fatal(err)
	}
	// Cleanups run last-registered first: the pool closes its sockets
	// before the server waits for its connections to end.
	b.Cleanup(func() { p.Close() })
	return p
}

// BenchmarkPoolDo is Pool.Do's whole path: checkout, one round trip and
// return, from GOMAXPROCS goroutines.
func BenchmarkPoolDo(b *testing.B) {
	p := newBenchPool(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Do(ctx, "SET", "k", "v"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPoolGetClose is checkout and return alone, with no command in
// between: the pool's own overhead, including the liveness peek.
func BenchmarkPoolGetClose(b *testing.B) {
	p := newBenchPool(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := p.Get(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			c.Close()
		}
	})
}

// BenchmarkStats is one Stats snapshot of a pool holding idle connections.
func BenchmarkStats(b *testing.B) {
	p := newBenchPool(b)
	ctx := context.Background()
	// Two connections held at once leave two idle, so the snapshot has
	// something to count.
	c1, err := p.Get(ctx)
	if err != nil {
		b.Fatal(err)
	}
	c2, err := p.Get(ctx)
	if err != nil {
		b.Fatal(err)
	}
	c1.Close()
	c2.Close()
	b.ReportAllocs()
	var s Stats
	for b.Loop() {
		s = p.Stats()
	}
	if s.Idle != 2 {
		b.Fatalf("Stats().Idle = %d, want 2", s.Idle)
	}
}
