package redisalive

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
)

// okServer is an in-process RESP server that answers every command with
// +OK. It lets the pool's real checkout, command and return path run in a
// benchmark without a Redis server, so regressions show in a plain
// go test -bench.
type okServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// startOKServer listens on a free loopback port and stops the server,
// with every goroutine it started, when b ends.
func startOKServer(b *testing.B) *okServer {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &okServer{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Go(s.accept)
	b.Cleanup(s.stop)
	return s
}

func (s *okServer) addr() string { return s.ln.Addr().String() }

func (s *okServer) accept() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return // the listener was closed by stop
		}
		s.mu.Lock()
		s.conns[nc] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() { s.serve(nc) })
	}
}

// serve answers each command on nc with +OK, flushing only when no further
// pipelined command is already buffered.
func (s *okServer) serve(nc net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
		nc.Close()
	}()
	r, w := bufio.NewReader(nc), bufio.NewWriter(nc)
	for {
		if err := skipCommand(r); err != nil {
			return
		}
		w.WriteString("+OK\r\n")
		if r.Buffered() == 0 && w.Flush() != nil {
			return
		}
	}
}

// skipCommand reads one RESP command, an array of bulk strings, and
// discards it.
func skipCommand(r *bufio.Reader) error {
	n, err := readHeader(r, '*')
	if err != nil {
		return err
	}
	for range n {
		size, err := readHeader(r, '$')
		if err != nil {
			return err
		}
		if _, err := r.Discard(size + 2); err != nil { // payload and CRLF
			return err
		}
	}
	return nil
}

func readHeader(r *bufio.Reader, kind byte) (int, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 4 || line[0] != kind || line[len(line)-2] != '\r' {
		return 0, errors.New("okServer: malformed command")
	}
	return strconv.Atoi(string(line[1 : len(line)-2]))
}

// stop closes the listener and every server-side connection and waits for
// their goroutines, so goleak sees none of them.
func (s *okServer) stop() {
	s.ln.Close()
	s.mu.Lock()
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// newBenchPool returns a default-configured pool on a fresh okServer,
// closed before the server stops.
func newBenchPool(b *testing.B) *Pool {
	b.Helper()
	s := startOKServer(b)
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
