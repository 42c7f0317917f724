package redisalive

import (
	"context"
	"testing"
)

// newBenchPool returns a pool on a fresh fakeServer that answers +OK,
// closed before the server stops; opts.Addr is the server's.
func newBenchPool(b *testing.B, opts Options) *Pool {
	b.Helper()
	s := newFakeServer(b, nil)
	opts.Addr = s.addr()
	// Cleanups run last-registered first: the pool closes its sockets
	// before the server waits for its connections to end.
	return openPool(b, opts)
}

// BenchmarkPoolDo is Pool.Do's whole path: checkout, one round trip and
// return, from GOMAXPROCS goroutines.
func BenchmarkPoolDo(b *testing.B) { benchDo(b, Options{}, 1) }

// BenchmarkPoolDoAutoPipeline is Pool.Do with AutoPipeline from 32
// goroutines per GOMAXPROCS: many callers sharing the pipelined
// connections, the case auto-pipelining is for.
func BenchmarkPoolDoAutoPipeline(b *testing.B) { benchDo(b, Options{AutoPipeline: true}, 32) }

// BenchmarkPoolDoContended is BenchmarkPoolDo from 32 goroutines per
// GOMAXPROCS on the default pool size (10 per GOMAXPROCS): most callers
// wait for a connection, so this times the hand-off from a returning caller
// to a waiting one.
func BenchmarkPoolDoContended(b *testing.B) { benchDo(b, Options{}, 32) }

// BenchmarkPoolGetClose is checkout and return alone, with no command in
// between: the pool's own overhead, including the liveness peek.
func BenchmarkPoolGetClose(b *testing.B) { benchGetClose(b, 1) }

// BenchmarkPoolGetCloseContended is BenchmarkPoolGetClose with as many
// goroutines as BenchmarkPoolDoContended: the waiting path with nothing
// else in it.
func BenchmarkPoolGetCloseContended(b *testing.B) { benchGetClose(b, 32) }

// benchDo runs SET through Pool.Do from parallelism goroutines per
// GOMAXPROCS.
func benchDo(b *testing.B, opts Options, parallelism int) {
	p := newBenchPool(b, opts)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Do(ctx, "SET", "k", "v"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// benchGetClose checks a connection out and back from parallelism
// goroutines per GOMAXPROCS.
func benchGetClose(b *testing.B, parallelism int) {
	p := newBenchPool(b, Options{})
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(parallelism)
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
	p := newBenchPool(b, Options{})
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
