// Receive and Do, resp against redigo v1.9.3: go test -bench . -count 1,
// eight runs interleaved so that load on the shared machine falls on both
// alike, compared with benchstat -col /impl (AMD EPYC, 2 cores, shared).
// B/op is equal but for array10 (536 against 584) and nested (568 against
// 560). Fewer allocations only where an array's small values share a
// slab; a lone value needs its bytes and its interface box, as in redigo.
//
//	                                          │     resp     │                redigo                 │
//	                                          │    sec/op    │    sec/op      vs base                │
//	Receive/reply=status-2                      28.20n ±  9%    75.56n ±  5%  +167.96% (p=0.000 n=8)
//	Receive/reply=int-2                         45.66n ± 14%    90.95n ± 22%   +99.20% (p=0.000 n=8)
//	Receive/reply=bulk-2                        76.63n ± 17%   126.80n ± 26%   +65.46% (p=0.000 n=8)
//	Receive/reply=bulk16KiB-2                   4.756µ ± 43%    5.153µ ± 87%         ~ (p=0.574 n=8)
//	Receive/reply=array10-2                     762.3n ± 24%    841.9n ± 46%         ~ (p=0.279 n=8)
//	Receive/reply=nested-2                      972.3n ± 44%   1035.0n ± 28%         ~ (p=0.700 n=8)
//	Do/value=5/link=memory/timeout=0s-2         149.3n ± 19%    149.9n ± 37%         ~ (p=0.959 n=8)
//	Do/value=5/link=memory/timeout=1s-2         242.9n ± 27%    252.8n ± 15%         ~ (p=0.878 n=8)
//	Do/value=5/link=loopback/timeout=0s-2       14.33µ ± 10%    14.23µ ±  6%         ~ (p=0.878 n=8)
//	Do/value=5/link=loopback/timeout=1s-2       14.44µ ±  5%    14.19µ ± 15%         ~ (p=0.798 n=8)
//	Do/value=16384/link=memory/timeout=0s-2     4.443µ ± 52%    3.886µ ± 76%         ~ (p=0.442 n=8)
//	Do/value=16384/link=memory/timeout=1s-2     4.363µ ± 11%    3.991µ ± 67%         ~ (p=0.505 n=8)
//	Do/value=16384/link=loopback/timeout=0s-2   43.61µ ± 13%    45.38µ ± 10%         ~ (p=0.721 n=8)
//	Do/value=16384/link=loopback/timeout=1s-2   48.68µ ± 17%    46.47µ ± 14%         ~ (p=0.721 n=8)
//
//	                                          │     resp     │               redigo                │
//	                                          │  allocs/op   │ allocs/op   vs base                 │
//	Receive/reply=status-2                      0.000 ± 0%     0.000 ± 0%        ~ (p=1.000 n=8)
//	Receive/reply=int-2                         1.000 ± 0%     1.000 ± 0%        ~ (p=1.000 n=8)
//	Receive/reply=bulk-2                        2.000 ± 0%     2.000 ± 0%        ~ (p=1.000 n=8)
//	Receive/reply=bulk16KiB-2                   2.000 ± 0%     2.000 ± 0%        ~ (p=1.000 n=8)
//	Receive/reply=array10-2                     13.00 ± 0%     22.00 ± 0%  +69.23% (p=0.000 n=8)
//	Receive/reply=nested-2                      23.00 ± 0%     28.00 ± 0%  +21.74% (p=0.000 n=8)
//	Do/value=5/link=memory/timeout=0s-2         3.000 ± 0%     3.000 ± 0%        ~ (p=1.000 n=8)
//	Do/value=5/link=memory/timeout=1s-2         3.000 ± 0%     3.000 ± 0%        ~ (p=1.000 n=8)
//	Do/value=5/link=loopback/timeout=0s-2       8.000 ± 0%     8.000 ± 0%        ~ (p=1.000 n=8)
//	Do/value=5/link=loopback/timeout=1s-2       8.000 ± 0%     8.000 ± 0%        ~ (p=1.000 n=8)
//	Do/value=16384/link=memory/timeout=0s-2     3.000 ± 0%     3.000 ± 0%        ~ (p=1.000 n=8)
//	Do/value=16384/link=memory/timeout=1s-2     3.000 ± 0%     3.000 ± 0%        ~ (p=1.000 n=8)
//	Do/value=16384/link=loopback/timeout=0s-2   8.000 ± 0%     8.000 ± 0%        ~ (p=1.000 n=8)
//	Do/value=16384/link=loopback/timeout=1s-2   8.000 ± 0%     8.000 ± 0%        ~ (p=1.000 n=8)

package resp

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// benchReplies are the replies the reading benchmarks read, over and over.
var benchReplies = []struct{ name, reply string }{
	{"status", "+OK\r\n"},
	{"int", ":1234567\r\n"},
	{"bulk", "$5\r\nhello\r\n"},
	{"bulk16KiB", "$16384\r\n" + strings.Repeat("b", 16384) + "\r\n"},
	{"array10", "*10\r\n" + strings.Repeat("$10\r\n0123456789\r\n", 10)},
	{"nested", "*1\r\n*2\r\n$6\r\nstream\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"},
}

// repeatConn is a net.Conn that reads as the same bytes, endlessly.
type repeatConn struct {
	scriptConn
	data []byte
	off  int
}

func (r *repeatConn) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m := copy(p[n:], r.data[r.off:])
		n += m
		r.off = (r.off + m) % len(r.data)
	}
	return n, nil
}

// Both connections' Receive, so that each pays its own per-reply overhead
// around the reading itself.
func BenchmarkReceive(b *testing.B) {
	for _, r := range benchReplies {
		for _, impl := range []struct {
			name string
			conn func(net.Conn) redis.Conn
		}{
			{"resp", func(nc net.Conn) redis.Conn { return NewConn(nc, time.Second, time.Second) }},
			{"redigo", func(nc net.Conn) redis.Conn { return redis.NewConn(nc, time.Second, time.Second) }},
		} {
			b.Run(fmt.Sprintf("reply=%s/impl=%s", r.name, impl.name), func(b *testing.B) {
				c := impl.conn(&repeatConn{data: []byte(r.reply)})
				b.SetBytes(int64(len(r.reply)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := c.Receive(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// answerConn is an in-memory server: every write, a command flushed by Do,
// queues one reply to read.
type answerConn struct {
	scriptConn
	reply   []byte
	pending []byte
}

func (a *answerConn) Write(p []byte) (int, error) {
	a.pending = append(a.pending, a.reply...)
	return len(p), nil
}

func (a *answerConn) Read(p []byte) (int, error) {
	n := copy(p, a.pending)
	a.pending = a.pending[:copy(a.pending, a.pending[n:])]
	return n, nil
}

// loopbackServer answers every command on a loopback TCP connection with
// reply, until the client closes it.
func loopbackServer(b *testing.B, reply string) net.Conn {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		server, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		defer server.Close()
		rd := NewReader(server)
		w := bufio.NewWriter(server)
		for {
			if _, err := rd.ReadReply(); err != nil {
				return
			}
			w.WriteString(reply)
			if rd.br.Buffered() == 0 && w.Flush() != nil {
				return
			}
		}
	})
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		nc.Close()
		wg.Wait()
	})
	return nc
}

// Do round trips, GET of a small and a 16 KiB value, against an in-memory
// server (the CPU cost alone) and one over loopback TCP (with the
// deadlines' cost: timeout 1s sets one per socket read, 0 clears it).
func BenchmarkDo(b *testing.B) {
	for _, value := range []string{"hello", strings.Repeat("v", 16384)} {
		reply := fmt.Sprintf("$%d\r\n%s\r\n", len(value), value)
		for _, link := range []string{"memory", "loopback"} {
			for _, timeout := range []time.Duration{0, time.Second} {
				for _, impl := range []struct {
					name string
					conn func(net.Conn, time.Duration) redis.Conn
				}{
					{"resp", func(nc net.Conn, t time.Duration) redis.Conn { return NewConn(nc, t, t) }},
					{"redigo", func(nc net.Conn, t time.Duration) redis.Conn { return redis.NewConn(nc, t, t) }},
				} {
					name := fmt.Sprintf("value=%d/link=%s/timeout=%v/impl=%s", len(value), link, timeout, impl.name)
					b.Run(name, func(b *testing.B) {
						var nc net.Conn = &answerConn{reply: []byte(reply)}
						if link == "loopback" {
							nc = loopbackServer(b, reply)
						}
						c := impl.conn(nc, timeout)
						b.ReportAllocs()
						for b.Loop() {
							if _, err := c.Do("GET", "key"); err != nil {
								b.Fatal(err)
							}
						}
					})
				}
			}
		}
	}
}
