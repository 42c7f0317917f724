package redisalive_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/faultproxy"
	"github.com/redisalive/redisalive/internal/pooltest"
	"github.com/redisalive/redisalive/internal/redistest"
)

// TestRandomGetDoCancelCloseKeepsPoolConsistent hammers a small pool with a
// random mix of Do, Get/Close, cancelled and timed-out calls from many
// goroutines for a bounded time, then closes the pool mid-traffic. Every
// call must end with a result or one of the documented errors, and
// afterwards no connection may be open.
func TestRandomGetDoCancelCloseKeepsPoolConsistent(t *testing.T) {
	p, mr := pooltest.OnMiniredis(t, redisalive.Options{MaxActive: 4, PoolTimeout: 50 * time.Millisecond, BlockSlice: 20 * time.Millisecond})
	stop := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	var succeeded, interrupted atomic.Int64
	unexpected := make(chan error, 100)
	for g := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; i < 100_000 && time.Now().Before(stop); i++ {
				switch err := randomCall(p, rng); {
				case err == nil:
					succeeded.Add(1)
				case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
					interrupted.Add(1)
				case !expectedStressError(err):
					select {
					case unexpected <- err:
					default:
					}
				}
			}
		})
	}
	time.Sleep(time.Second) // let traffic run, then close under it
	closeErr := p.Close()
	wg.Wait()
	close(unexpected)
	for err := range unexpected {
		t.Errorf("unexpected error: %v", err)
	}
	if closeErr != nil {
		assert.ErrorIs(t, closeErr, context.DeadlineExceeded)
	}
	s := p.Stats()
	t.Logf("%d calls succeeded, %d interrupted; stats after the run: %+v", succeeded.Load(), interrupted.Load(), s)
	assert.Positive(t, succeeded.Load(), "no call succeeded: the test proves nothing")
	assert.Positive(t, interrupted.Load(), "no call was interrupted by its context")
	assert.Positive(t, s.WaitCount, "the pool was never contended: the test proves nothing")
	assert.Equal(t, 0, s.Active, "stats after Close: %+v", s)
	assert.Equal(t, 0, s.Waiting)
	waitForValue(t, 2*time.Second, "server connections", 0, mr.CurrentConnectionCount)
}

func randomCall(p *redisalive.Pool, rng *rand.Rand) error {
	ctx := context.Background()
	var cancel context.CancelFunc = func() {}
	switch rng.IntN(4) {
	case 0:
		ctx, cancel = context.WithCancel(ctx)
		time.AfterFunc(time.Duration(rng.IntN(200))*time.Microsecond, cancel)
	case 1:
		ctx, cancel = context.WithTimeout(ctx, time.Duration(rng.IntN(2000))*time.Microsecond)
	}
	defer cancel()
	switch rng.IntN(4) {
	case 0:
		c, err := p.Get(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		if rng.IntN(2) == 0 {
			c.Send("INCR", "n")
		}
		_, err = c.Do("INCR", "n")
		return err
	case 1:
		_, _, err := p.BRPop(ctx, "stress-list")
		return err
	case 2:
		_, err := p.Do(ctx, "LPUSH", "stress-list", "x")
		return err
	default:
		_, err := p.Do(ctx, "INCR", "n")
		return err
	}
}

func expectedStressError(err error) bool {
	return errors.Is(err, redisalive.ErrPoolClosed) || errors.Is(err, redisalive.ErrPoolTimeout) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// TestRandomDoCancelCloseOnSharedConnectionsMatchesEveryReply hammers an
// auto-pipelining pool with commands from many goroutines, some cancelled
// at random points, then closes it mid-traffic. Each caller sends a value
// of its own and must get exactly it back: a reply handed to the wrong
// caller, or a cancelled caller's reply read by a later one, fails it.
func TestRandomDoCancelCloseOnSharedConnectionsMatchesEveryReply(t *testing.T) {
	p, mr := pooltest.OnMiniredis(t, redisalive.Options{AutoPipeline: true, PipelineDepth: 16, PoolTimeout: 50 * time.Millisecond})
	stop := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	var succeeded, interrupted atomic.Int64
	problems := make(chan string, 100)
	report := func(format string, args ...any) {
		select {
		case problems <- fmt.Sprintf(format, args...):
		default:
		}
	}
	for g := range 32 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			for i := 0; i < 100_000 && time.Now().Before(stop); i++ {
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				switch rng.IntN(3) {
				case 0:
					ctx, cancel = context.WithCancel(ctx)
					time.AfterFunc(time.Duration(rng.IntN(300))*time.Microsecond, cancel)
				case 1:
					ctx, cancel = context.WithTimeout(ctx, time.Duration(rng.IntN(2000))*time.Microsecond)
				}
				want := fmt.Sprint(g, "/", i)
				got, err := redis.String(p.Do(ctx, "ECHO", want))
				cancel()
				switch {
				case err == nil && got != want:
					report("caller %d got %q, want %q", g, got, want)
				case err == nil:
					succeeded.Add(1)
				case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
					interrupted.Add(1)
				case !expectedStressError(err):
					report("unexpected error: %v", err)
				}
			}
		})
	}
	time.Sleep(time.Second) // let traffic run, then close under it
	closeErr := p.Close()
	wg.Wait()
	close(problems)
	for msg := range problems {
		t.Error(msg)
	}
	if closeErr != nil {
		assert.ErrorIs(t, closeErr, context.DeadlineExceeded)
	}
	s := p.Stats()
	t.Logf("%d calls succeeded, %d interrupted; %d commands pipelined in %d writes", succeeded.Load(), interrupted.Load(), s.Pipelined, s.PipelineBatches)
	assert.Positive(t, succeeded.Load(), "no call succeeded: the test proves nothing")
	assert.Positive(t, interrupted.Load(), "no call was interrupted by its context")
	assert.Equal(t, 0, s.Active, "stats after Close: %+v", s)
	waitForValue(t, 2*time.Second, "server connections", 0, mr.CurrentConnectionCount)
}

// faultPhase is one stretch of TestEveryCallerGetsItsOwnReplyUnderFaults:
// a fault the proxy applies while traffic runs.
type faultPhase struct {
	name  string
	apply func(px *faultproxy.Proxy, rng *rand.Rand)
}

// faultPhases cut connections at many byte offsets, both ways, with FIN or
// RST, while a middlebox delay lets a command written before a cut reach
// the server late; reset every connection; stall replies briefly (slower
// than usual, not dead) or for longer than ReadTimeout; and slice replies
// into small segments.
var faultPhases = []faultPhase{
	{"clean", func(*faultproxy.Proxy, *rand.Rand) {}},
	{"cut replies", func(px *faultproxy.Proxy, rng *rand.Rand) {
		px.SetLatencyOneWay(faultproxy.ToServer, time.Millisecond)
		px.SetCut(faultproxy.Cut{Dir: faultproxy.ToClient, After: 6000 + rng.Int64N(40000), Reset: rng.IntN(2) == 0, Linger: 150 * time.Millisecond})
	}},
	{"cut commands", func(px *faultproxy.Proxy, rng *rand.Rand) {
		px.SetCut(faultproxy.Cut{Dir: faultproxy.ToServer, After: 2000 + rng.Int64N(40000), Reset: rng.IntN(2) == 0})
	}},
	{"reset all", func(px *faultproxy.Proxy, rng *rand.Rand) {
		px.SetLatencyOneWay(faultproxy.ToServer, time.Millisecond)
		px.CutAll(true, 150*time.Millisecond)
	}},
	{"brief stall", func(px *faultproxy.Proxy, rng *rand.Rand) {
		px.BlackholeOneWay(faultproxy.ToClient)
		time.AfterFunc(100*time.Millisecond, px.Heal)
	}},
	{"long stall", func(px *faultproxy.Proxy, rng *rand.Rand) {
		px.BlackholeOneWay(faultproxy.Direction(rng.IntN(2)))
		time.AfterFunc(700*time.Millisecond, px.Heal)
	}},
	{"sliced replies", func(px *faultproxy.Proxy, rng *rand.Rand) {
		px.SetSlice(faultproxy.ToClient, 1+rng.IntN(100), time.Duration(rng.IntN(200))*time.Microsecond)
	}},
}

// replyPaths are the ways a caller runs a round of SET, GET and ECHO: Do,
// Do on shared connections, and Send thrice on a connection from Get, read
// with Do("").
var replyPaths = []struct {
	name  string
	opts  redisalive.Options
	round func(ctx context.Context, p *redisalive.Pool, key, v, tag string) ([]any, error)
}{
	{"Do", redisalive.Options{}, roundWithDo},
	{"AutoPipeline", redisalive.Options{AutoPipeline: true}, roundWithDo},
	{"Get", redisalive.Options{}, func(ctx context.Context, p *redisalive.Pool, key, v, tag string) ([]any, error) {
		c, err := p.Get(ctx)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		c.Send("SET", key, v)
		c.Send("GET", key)
		c.Send("ECHO", tag)
		return redis.Values(redis.DoContext(c, ctx, ""))
	}},
}

func roundWithDo(ctx context.Context, p *redisalive.Pool, key, v, tag string) ([]any, error) {
	set, err := p.Do(ctx, "SET", key, v)
	if err != nil {
		return nil, err
	}
	get, err := p.Do(ctx, "GET", key)
	if err != nil {
		return nil, err
	}
	echo, err := p.Do(ctx, "ECHO", tag)
	return []any{set, get, echo}, err
}

// TestEveryCallerGetsItsOwnReplyUnderFaults runs rounds of SET, GET and
// ECHO from many goroutines through a fault proxy that cuts, resets,
// stalls and slices the links (faultPhases), some calls cancelled at random,
// and closes the pool under the traffic. Every value differs per caller and
// per round, and every reply must be the caller's own: a GET after an
// acknowledged SET returns that SET's value, never an older one that a
// failed SET left held in the link, nor another caller's.
func TestEveryCallerGetsItsOwnReplyUnderFaults(t *testing.T) {
	servers := map[string]*redistest.Server{"TCP": redistest.Start(t), "TLS": redistest.StartTLS(t)}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	for _, transport := range []string{"TCP", "TLS"} {
		for _, path := range replyPaths {
			t.Run(transport+"/"+path.name, func(t *testing.T) {
				srv := servers[transport]
				px, err := faultproxy.New(srv.Addr())
				require.NoError(t, err)
				defer px.Close()
				opts := path.opts
				opts.Addr, opts.TLSConfig = px.Addr(), srv.TLSConfig()
				opts.ReadTimeout, opts.DialTimeout = 500*time.Millisecond, time.Second
				p, err := redisalive.NewPool(opts)
				require.NoError(t, err)
				defer p.Close()

				var ok, failed atomic.Int64
				problems := make(chan string, 20)
				report := func(format string, args ...any) {
					select {
					case problems <- fmt.Sprintf(format, args...):
					default:
					}
				}
				stop := make(chan struct{})
				var wg sync.WaitGroup
				pad := strings.Repeat("x", 3000)
				for g := range 16 {
					wg.Go(func() {
						rng := rand.New(rand.NewPCG(seed, uint64(g)))
						key := fmt.Sprintf("faults:%s:%d", path.name, g)
						for i := 0; i < 1_000_000; i++ {
							select {
							case <-stop:
								return
							default:
							}
							ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
							if rng.IntN(20) == 0 {
								time.AfterFunc(time.Duration(rng.IntN(2000))*time.Microsecond, cancel)
							}
							v, tag := fmt.Sprintf("g%d-i%d-%s", g, i, pad), fmt.Sprintf("g%d-i%d", g, i)
							replies, err := path.round(ctx, p, key, v, tag)
							cancel()
							if err != nil {
								failed.Add(1)
								if errors.Is(err, redisalive.ErrPoolClosed) {
									return
								}
								continue
							}
							want := []any{"OK", []byte(v), []byte(tag)}
							if len(replies) != 3 || replies[0] != want[0] || !bytes.Equal(asBytes(replies[1]), asBytes(want[1])) || !bytes.Equal(asBytes(replies[2]), asBytes(want[2])) {
								report("caller %d round %d got %.40q, want its own %.40q", g, i, replies, want)
								continue
							}
							ok.Add(1)
						}
					})
				}
				rng := rand.New(rand.NewPCG(seed, 99))
				for _, phase := range append(faultPhases, faultPhases...) {
					phase.apply(px, rng)
					time.Sleep(200 * time.Millisecond) // the phase's traffic
					px.Heal()
					px.SetCut(faultproxy.Cut{})
					px.SetSlice(faultproxy.ToClient, 0, 0)
					px.SetLatency(0)
				}
				time.Sleep(200 * time.Millisecond) // clean traffic, then Close under it
				p.Close()
				close(stop)
				wg.Wait()
				close(problems)
				for msg := range problems {
					t.Error(msg)
				}
				s := p.Stats()
				t.Logf("%d rounds matched, %d failed; zombies killed %d; %+v", ok.Load(), failed.Load(), s.ZombiesKilled, s)
				assert.Positive(t, ok.Load(), "no round succeeded: the test proves nothing")
				assert.Positive(t, failed.Load(), "no round failed: the faults did nothing")
				assert.Equal(t, 0, s.Active, "connections open after Close")
			})
		}
	}
}

// asBytes returns a reply's bytes, or nil for a reply that is not a bulk
// string.
func asBytes(reply any) []byte {
	b, _ := reply.([]byte)
	return b
}
