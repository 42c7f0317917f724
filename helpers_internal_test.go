package redisalive

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
)

// fakeServer is an in-process RESP server. It lets the pool's real
// checkout, command and return path run without a Redis server: with no
// answer func it replies +OK to everything, cheaply enough for benchmarks;
// with one, it replies what answer returns for each command, or drops the
// connection when answer says so.
type fakeServer struct {
	ln     net.Listener
	answer func(cmd []string) (reply string, ok bool)
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

// newFakeServer listens on a free loopback port and stops the server, with
// every goroutine it started, when tb ends. answer is called on one
// connection's goroutine at a time.
func newFakeServer(tb testing.TB, answer func(cmd []string) (reply string, ok bool)) *fakeServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &fakeServer{ln: ln, answer: answer, conns: make(map[net.Conn]struct{})}
	s.wg.Go(s.accept)
	tb.Cleanup(s.stop)
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) accept() {
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

// serve answers each command on nc, flushing only when no further
// pipelined command is already buffered.
func (s *fakeServer) serve(nc net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
		nc.Close()
	}()
	r, w := bufio.NewReader(nc), bufio.NewWriter(nc)
	for {
		reply := "+OK\r\n"
		if s.answer == nil {
			if err := readCommand(r, nil); err != nil {
				return
			}
		} else {
			var cmd []string
			if err := readCommand(r, &cmd); err != nil {
				return
			}
			s.mu.Lock() // one answer at a time: answer funcs keep state
			var ok bool
			reply, ok = s.answer(cmd)
			s.mu.Unlock()
			if !ok {
				return
			}
		}
		w.WriteString(reply)
		if r.Buffered() == 0 && w.Flush() != nil {
			return
		}
	}
}

// readCommand reads one RESP command, an array of bulk strings, into *cmd,
// or discards it if cmd is nil.
func readCommand(r *bufio.Reader, cmd *[]string) error {
	n, err := readHeader(r, '*')
	if err != nil {
		return err
	}
	for range n {
		size, err := readHeader(r, '$')
		if err != nil {
			return err
		}
		if cmd == nil {
			if _, err := r.Discard(size + 2); err != nil { // payload and CRLF
				return err
			}
			continue
		}
		b := make([]byte, size+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		*cmd = append(*cmd, string(b[:size]))
	}
	return nil
}

func readHeader(r *bufio.Reader, kind byte) (int, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 4 || line[0] != kind || line[len(line)-2] != '\r' {
		return 0, errors.New("fakeServer: malformed command")
	}
	return strconv.Atoi(string(line[1 : len(line)-2]))
}

// stop closes the listener and every server-side connection and waits for
// their goroutines, so goleak sees none of them.
func (s *fakeServer) stop() {
	s.ln.Close()
	s.mu.Lock()
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// openPool opens a pool on opts, closed when tb ends: before a server that
// tb started earlier stops, since cleanups run last-registered first. (The
// external tests have internal/pooltest.)
func openPool(tb testing.TB, opts Options) *Pool {
	tb.Helper()
	p, err := NewPool(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}
