package bench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/faultproxy"
)

// slowLinkCallers is how many goroutines run round trips at once.
const slowLinkCallers = 8

// slowLinks are the links BenchmarkSlowLink runs over. The in-process
// fault proxy makes the first two on every connection through it; it
// forwards each connection's bytes one chunk at a time, so both cap what
// one connection carries, as a per-flow shaper or a window-limited long
// link does, and neither caps the link as a whole. The last goes straight
// to the server, over whatever link the kernel makes (a tc qdisc in a
// network namespace of its own: BENCHMARKS.md).
var slowLinks = []struct {
	name  string
	apply func(px *faultproxy.Proxy) // nil: no proxy
}{
	// Replies in 1 KiB segments 1 ms apart: at most 1 MB/s per connection.
	{"sliced", func(px *faultproxy.Proxy) { px.SetSlice(faultproxy.ToClient, 1024, time.Millisecond) }},
	// Every chunk of reply bytes held 5 ms: a 5 ms reply path, and at most
	// 32 KiB (the proxy's read) per 5 ms per connection.
	{"latency", func(px *faultproxy.Proxy) { px.SetLatencyOneWay(faultproxy.ToClient, 5*time.Millisecond) }},
	{"direct", nil},
}

// BenchmarkSlowLink is one SET and one GET of the same key per iteration,
// from slowLinkCallers goroutines, each on keys and values of its own and
// checking that it reads back what it wrote, over each of slowLinks, with
// values of 16 bytes and of 32 KiB, through Pool.Do with and without
// AutoPipeline (defaults otherwise). Reported as round trips/s; run.sh
// skips it (it is slow by design): run it with
//
//	go test -run '^$' -bench SlowLink -benchtime 4s -count 3
func BenchmarkSlowLink(b *testing.B) {
	srv := startServer(b)
	for _, link := range slowLinks {
		for _, size := range []int{16, 32 << 10} {
			for _, auto := range []bool{false, true} {
				client := "Do"
				if auto {
					client = "auto"
				}
				b.Run(fmt.Sprintf("link=%s/value=%d/client=%s", link.name, size, client), func(b *testing.B) {
					addr := srv.Addr()
					if link.apply != nil {
						px, err := faultproxy.New(addr)
						if err != nil {
							b.Fatal(err)
						}
						defer px.Close()
						link.apply(px)
						addr = px.Addr()
					}
					p, err := redisalive.NewPool(redisalive.Options{Addr: addr, AutoPipeline: auto})
					if err != nil {
						b.Fatal(err)
					}
					defer p.Close()
					runRoundTrips(b, p, size)
					s := p.Stats()
					b.ReportMetric(float64(s.Dials), "dials")
					b.ReportMetric(float64(s.PipelineBypasses)/float64(b.N), "bypasses/op")
				})
			}
		}
	}
}

// runRoundTrips runs b.N SET+GET round trips of values of size bytes from
// slowLinkCallers goroutines, which claim iterations from a shared counter.
func runRoundTrips(b *testing.B, p *redisalive.Pool, size int) {
	var (
		next     atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	n := int64(b.N)
	ctx := context.Background()
	b.ResetTimer()
	for g := range slowLinkCallers {
		wg.Go(func() {
			key := fmt.Sprint("slowlink:", g)
			v := bytes.Repeat([]byte{'v'}, size)
			for i := next.Add(1); i <= n; i = next.Add(1) {
				copy(v, fmt.Sprintf("%d:%d:", g, i)) // each value differs per caller and round
				_, err := p.Do(ctx, "SET", key, v)
				var got []byte
				if err == nil {
					got, err = redis.Bytes(p.Do(ctx, "GET", key))
				}
				if err == nil && !bytes.Equal(got, v) {
					err = fmt.Errorf("caller %d round %d: got %.20q, want its own %.20q", g, i, got, v)
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "roundtrips/s")
}
