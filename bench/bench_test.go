// Package bench compares redisalive with raw redigo and go-redis against a
// real redis-server. It is a separate module so that go-redis never becomes
// a dependency of the library; run it with ./run.sh (make bench).
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/redistest"
)

const (
	benchKey   = "bench:key"
	benchValue = "0123456789abcdef" // 16 bytes
	queueKey   = "bench:queue"
	warmUpTime = 300 * time.Millisecond

	// The libraries' shared defaults, set explicitly on redigo, which has
	// none, so that every client runs its commands under the same bounds.
	dialTimeout  = 5 * time.Second
	readTimeout  = 3 * time.Second
	writeTimeout = 3 * time.Second
)

// matrix is one set of GET/SET cells: the numbers of goroutines issuing
// commands at once, and the pool size each client is opened with at each
// (0: the client's default).
type matrix struct {
	concs []int
	size  func(conc int) int
}

var (
	// dedicated holds one connection per goroutine, so the cells measure
	// checkout, command and return, not queueing for a connection, and
	// every client gets the same pool.
	dedicated = matrix{[]int{1, 16, 64}, func(conc int) int { return conc }}
	// contended is how services actually run: more goroutines than
	// connections, every pool at its default size (10 per GOMAXPROCS for
	// redisalive and go-redis, the same number given to redigo, which has
	// no default), so the cells also measure waiting for a free connection.
	contended = matrix{[]int{16, 64, 256}, func(int) int { return 0 }}
)

// client is one library's way of running the benchmarked commands.
type client struct {
	get, set func() error
	close    func()
}

// clients are the contenders, in the order they appear in the table. Each
// opens a pool of size connections (0: its default size), all dialled
// before it returns, so that no dial lands inside the timed loop.
var clients = []struct {
	name string
	open func(addr string, size int) (client, error)
}{
	{"redisalive-Do", openRedisaliveDo},
	{"redisalive-auto", openRedisaliveAuto},
	{"redisalive-Get", openRedisaliveGet},
	{"redigo", openRedigo},
	{"go-redis", openGoRedis},
	{"rueidis", openRueidis},
}

func BenchmarkGET(b *testing.B)          { benchGET(b, dedicated) }
func BenchmarkSET(b *testing.B)          { benchSET(b, dedicated) }
func BenchmarkContendedGET(b *testing.B) { benchGET(b, contended) }
func BenchmarkContendedSET(b *testing.B) { benchSET(b, contended) }

func benchGET(b *testing.B, m matrix) {
	srv := startServer(b)
	srv.Do(b, "SET", benchKey, benchValue)
	benchClients(b, srv.Addr(), m, func(c client) func() error { return c.get })
}

func benchSET(b *testing.B, m matrix) {
	benchClients(b, startServer(b).Addr(), m, func(c client) func() error { return c.set })
}

// benchClients runs op of every client at every concurrency of m, each
// combination as its own sub-benchmark against the same server. The first
// client of a run meets a server and CPUs still settling, so a warm-up
// comes first, and run.sh rotates which client goes first from round to
// round (BENCH_ROUND), spreading what remains over every client alike.
func benchClients(b *testing.B, addr string, m matrix, op func(client) func() error) {
	warmUp(b, addr)
	round, _ := strconv.Atoi(os.Getenv("BENCH_ROUND"))
	for i := range clients {
		cl := clients[(i+round)%len(clients)]
		b.Run("client="+cl.name, func(b *testing.B) {
			for _, conc := range m.concs {
				b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
					c, err := cl.open(addr, m.size(conc))
					if err != nil {
						b.Fatal(err)
					}
					defer c.close()
					runConc(b, conc, op(c))
				})
			}
		})
	}
}

// warmUp runs PINGs against addr for warmUpTime, untimed.
func warmUp(b *testing.B, addr string) {
	c, err := redis.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for stop := time.Now().Add(warmUpTime); time.Now().Before(stop); {
		if _, err := c.Do("PING"); err != nil {
			b.Fatal(err)
		}
	}
}

// runConc runs op b.N times in total from exactly conc goroutines, which
// claim iterations from a shared counter. b.RunParallel cannot express
// this: it starts a multiple of GOMAXPROCS goroutines, so on 2 cores it has
// no way to run exactly one. The counter costs one atomic add per
// operation, the same for every client.
//
// It also reports cpu-ns/op, the CPU time (user + system) the whole
// process spent in the timed loop per operation: the client's own cost,
// runtime and GC included. On a 2-core machine where the client and
// redis-server share the CPUs, a client that burns less CPU leaves more to
// the server, which is what throughput there comes down to. redis-server
// is another process, so its CPU time is not counted.
func runConc(b *testing.B, conc int, op func() error) {
	b.ReportAllocs()
	var (
		next     atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	n := int64(b.N)
	b.ResetTimer()
	cpu0, cpuOK := processCPU()
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= n {
				if err := op(); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	cpu1, _ := processCPU()
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	if cpuOK {
		b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
	}
}

// openRedisalive opens a pool of size connections (0: the library's
// default) and dials all of them.
func openRedisalive(addr string, size int, opts redisalive.Options) (*redisalive.Pool, error) {
	opts.Addr, opts.MaxActive, opts.MaxIdle = addr, size, size
	p, err := redisalive.NewPool(opts)
	if err != nil {
		return nil, err
	}
	if err := warm(p.Options().MaxActive, pingCheckout(func() (redis.Conn, error) { return p.Get(context.Background()) })); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// pingCheckout is a warm-up step for a pool whose checkout yields a
// redis.Conn: check one out, PING it, and return it on release.
func pingCheckout(get func() (redis.Conn, error)) func() (func() error, error) {
	return func() (func() error, error) {
		c, err := get()
		if err != nil {
			return nil, err
		}
		if _, err := c.Do("PING"); err != nil {
			c.Close()
			return nil, err
		}
		return c.Close, nil
	}
}

// checkoutDo runs one command per checkout: the Get+Do+Close pattern.
func checkoutDo(get func() (redis.Conn, error)) func(cmd string, args ...any) error {
	return func(cmd string, args ...any) error {
		c, err := get()
		if err != nil {
			return err
		}
		_, err = c.Do(cmd, args...)
		return errors.Join(err, c.Close())
	}
}

func openRedisaliveDo(addr string, size int) (client, error) {
	return openRedisaliveOpts(addr, size, redisalive.Options{})
}

// openRedisaliveAuto is Pool.Do with AutoPipeline: the callers share the
// pipelines' connections, so the pool's size does not matter to it beyond
// holding them: an explicit size is raised to leave one connection beside
// them (PipelineConns must stay under MaxActive); the default size does.
func openRedisaliveAuto(addr string, size int) (client, error) {
	if size > 0 {
		size = max(size, redisalive.DefaultPipelineConns+1)
	}
	return openRedisaliveOpts(addr, size, redisalive.Options{AutoPipeline: true, PipelineConns: pipeConns()})
}

func openRedisaliveOpts(addr string, size int, opts redisalive.Options) (client, error) {
	p, err := openRedisalive(addr, size, opts)
	if err != nil {
		return client{}, err
	}
	ctx := context.Background()
	return client{
		get: func() error {
			_, err := p.Do(ctx, "GET", benchKey)
			return err
		},
		set: func() error {
			_, err := p.Do(ctx, "SET", benchKey, benchValue)
			return err
		},
		close: func() { p.Close() },
	}, nil
}

func openRedisaliveGet(addr string, size int) (client, error) {
	p, err := openRedisalive(addr, size, redisalive.Options{})
	if err != nil {
		return client{}, err
	}
	do := checkoutDo(func() (redis.Conn, error) { return p.Get(context.Background()) })
	return client{
		get:   func() error { return do("GET", benchKey) },
		set:   func() error { return do("SET", benchKey, benchValue) },
		close: func() { p.Close() },
	}, nil
}

// newRedigoPool opens a redigo pool of size connections and dials all of
// them. redigo has no default size (0 is unlimited), so size 0 gives it
// redisalive's default, which is also go-redis's.
func newRedigoPool(addr string, size int) (*redis.Pool, error) {
	if size == 0 {
		var err error
		if size, err = defaultPoolSize(addr); err != nil {
			return nil, err
		}
	}
	p := &redis.Pool{
		MaxActive: size,
		MaxIdle:   size,
		Wait:      true,
		Dial: func() (redis.Conn, error) {
			return redis.Dial("tcp", addr,
				redis.DialConnectTimeout(dialTimeout),
				redis.DialReadTimeout(readTimeout),
				redis.DialWriteTimeout(writeTimeout))
		},
	}
	if err := warm(size, pingCheckout(func() (redis.Conn, error) { return p.Get(), nil })); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// defaultPoolSize is redisalive's default MaxActive. The library exposes
// the number only in a pool's resolved Options, so this opens a pool that
// never dials and asks it, rather than repeating the formula here.
func defaultPoolSize(addr string) (int, error) {
	p, err := redisalive.NewPool(redisalive.Options{Addr: addr})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	return p.Options().MaxActive, nil
}

func openRedigo(addr string, size int) (client, error) {
	p, err := newRedigoPool(addr, size)
	if err != nil {
		return client{}, err
	}
	do := checkoutDo(func() (redis.Conn, error) { return p.Get(), nil })
	return client{
		get:   func() error { return do("GET", benchKey) },
		set:   func() error { return do("SET", benchKey, benchValue) },
		close: func() { p.Close() },
	}, nil
}

// openGoRedis opens go-redis with PoolSize size; 0 keeps its default.
func openGoRedis(addr string, size int) (client, error) {
	rdb := goredis.NewClient(&goredis.Options{Addr: addr, PoolSize: size})
	ctx := context.Background()
	if err := warm(rdb.Options().PoolSize, func() (func() error, error) {
		c := rdb.Conn()
		if err := c.Ping(ctx).Err(); err != nil {
			c.Close()
			return nil, err
		}
		return c.Close, nil
	}); err != nil {
		rdb.Close()
		return client{}, err
	}
	return client{
		get:   func() error { return rdb.Get(ctx, benchKey).Err() },
		set:   func() error { return rdb.Set(ctx, benchKey, benchValue, 0).Err() },
		close: func() { rdb.Close() },
	}, nil
}

// openRueidis is rueidis with its defaults, client-side caching off: it
// auto-pipelines over its own connections, whatever size is.
func openRueidis(addr string, _ int) (client, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		return client{}, err
	}
	ctx := context.Background()
	return client{
		get:   func() error { return c.Do(ctx, c.B().Get().Key(benchKey).Build()).Error() },
		set:   func() error { return c.Do(ctx, c.B().Set().Key(benchKey).Value(benchValue).Build()).Error() },
		close: c.Close,
	}, nil
}

// warm makes a pool open n connections by holding n checkouts at once;
// checkout uses one and returns the function that gives it back.
func warm(n int, checkout func() (func() error, error)) error {
	var release []func() error
	var err error
	for range n {
		var put func() error
		if put, err = checkout(); err != nil {
			break
		}
		release = append(release, put)
	}
	for _, put := range release {
		err = errors.Join(err, put())
	}
	return err
}

// BenchmarkBRPop is one push-then-pop round trip per iteration, each
// command on its own checkout, so both clients do the same work.
func BenchmarkBRPop(b *testing.B) {
	addr := startServer(b).Addr()
	ctx := context.Background()

	b.Run("client=redisalive", func(b *testing.B) {
		p, err := openRedisalive(addr, 1, redisalive.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		runConc(b, 1, func() error {
			if _, err := p.Do(ctx, "LPUSH", queueKey, benchValue); err != nil {
				return err
			}
			_, v, err := p.BRPop(ctx, queueKey)
			return checkPopped(v, err)
		})
	})

	b.Run("client=redigo", func(b *testing.B) {
		p, err := newRedigoPool(addr, 1)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		runConc(b, 1, func() error {
			c := p.Get()
			_, err := c.Do("LPUSH", queueKey, benchValue)
			if err = errors.Join(err, c.Close()); err != nil {
				return err
			}
			c = p.Get()
			kv, err := redis.Strings(c.Do("BRPOP", queueKey, 1))
			if err = errors.Join(err, c.Close()); err != nil {
				return err
			}
			if len(kv) != 2 {
				return fmt.Errorf("BRPOP: got %q, want key and value", kv)
			}
			return checkPopped(kv[1], nil)
		})
	})
}

func checkPopped(v string, err error) error {
	if err == nil && v != benchValue {
		err = fmt.Errorf("popped %q, want %q", v, benchValue)
	}
	return err
}

const (
	healthConns    = 64
	healthInterval = time.Second
	healthWindow   = 3 * time.Second
	// busyEvery is well under healthInterval, so a health checker that
	// tracks activity has no reason to PING any connection.
	busyEvery = 50 * time.Millisecond
)

// BenchmarkHealthCheck measures the health checker's traffic with
// HealthCheckInterval=1s on 64 connections over a 3 s window: left idle
// (expect one PING per connection per second, 3840/min) and kept busy
// (expect none). The result is the pings/min metric; ns/op is the window.
func BenchmarkHealthCheck(b *testing.B) {
	addr := startServer(b).Addr()
	ctx := context.Background()

	measure := func(b *testing.B, during func(*redisalive.Pool) error) {
		p, err := openRedisalive(addr, healthConns, redisalive.Options{HealthCheckInterval: healthInterval})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		// Starting the window half an interval after the connections went
		// idle puts exactly three checker passes in it, not two or three
		// depending on a few milliseconds of timer jitter.
		time.Sleep(healthInterval / 2)
		b.ResetTimer()
		start := p.Stats().HealthChecks
		for range b.N {
			if err := during(p); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		pings := p.Stats().HealthChecks - start
		b.ReportMetric(float64(pings)/b.Elapsed().Minutes(), "pings/min")
	}

	b.Run("load=idle", func(b *testing.B) {
		measure(b, func(*redisalive.Pool) error {
			time.Sleep(healthWindow)
			return nil
		})
	})

	// Every round checks out all 64 connections at once, which forces the
	// pool to hand out each of them, so each one is used every busyEvery
	// whatever order the pool keeps its idle list in.
	b.Run("load=busy", func(b *testing.B) {
		measure(b, func(p *redisalive.Pool) error {
			tick := time.NewTicker(busyEvery)
			defer tick.Stop()
			end := time.Now().Add(healthWindow)
			for time.Now().Before(end) {
				err := warm(healthConns, func() (func() error, error) {
					c, err := p.Get(ctx)
					if err != nil {
						return nil, err
					}
					if _, err := c.Do("GET", benchKey); err != nil {
						c.Close()
						return nil, err
					}
					return c.Close, nil
				})
				if err != nil {
					return err
				}
				<-tick.C
			}
			return nil
		})
	})
}

// BenchmarkStats is the cost of one Stats snapshot on a pool with idle
// connections.
func BenchmarkStats(b *testing.B) {
	addr := startServer(b).Addr()
	p, err := openRedisalive(addr, 16, redisalive.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	b.ReportAllocs()
	var s redisalive.Stats
	for b.Loop() {
		s = p.Stats()
	}
	if s.Idle != 16 {
		b.Fatalf("Stats().Idle = %d, want 16", s.Idle)
	}
}

// serverCPUEnv names a CPU to pin redis-server to. run.sh sets it, with
// the benchmark process pinned to the other CPUs, when BENCH_PIN=1: the
// client and the server then never compete for a core, the client's own
// CPU cost decides throughput, and the run-to-run spread from where the
// scheduler happens to place the two processes goes away.
const serverCPUEnv = "REDISALIVE_BENCH_SERVER_CPU"

// startServer starts a redis-server for one top-level benchmark; every
// client and concurrency under it talks to that same process, and
// redistest stops it when the benchmark ends.
func startServer(b *testing.B) *redistest.Server {
	srv := redistest.Start(b)
	if v := os.Getenv(serverCPUEnv); v != "" {
		cpu, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("%s=%q: %v", serverCPUEnv, v, err)
		}
		if err := pinToCPU(srv.PID(), cpu); err != nil {
			b.Fatalf("pinning redis-server to CPU %d: %v", cpu, err)
		}
	}
	return srv
}

// pipeConns is BENCH_PIPELINE_CONNS, to compare numbers of shared
// connections; 0 selects the library's default.
func pipeConns() int {
	n, _ := strconv.Atoi(os.Getenv("BENCH_PIPELINE_CONNS"))
	return n
}
