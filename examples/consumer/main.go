// Command consumer is a redisalive Queue worker to copy. It handles jobs
// until SIGINT or SIGTERM, then stops taking new ones, lets running jobs
// finish, and shuts its pool down so the server releases every connection.
//
//	go run ./examples/consumer                       # demo: embedded server, -jobs jobs, exits when all are done
//	go run ./examples/consumer -addr localhost:6379  # worker on a real Redis; feed it with examples/producer
//	go run ./examples/consumer -sentinel s1:26379,s2:26379 -master mymaster  # the master Sentinel names, through failovers
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/redisalive/redisalive"
)

const (
	progressEvery   = 500             // jobs between progress lines
	shutdownTimeout = 5 * time.Second // for connections still in use at exit
)

func main() {
	addr := flag.String("addr", os.Getenv("REDIS_URL"),
		"Redis URL (redis://...) or host:port; default $REDIS_URL, else an embedded server fed -jobs jobs")
	queue := flag.String("queue", "jobs", "queue name")
	jobs := flag.Int("jobs", 3000, "jobs to produce to the embedded server")
	concurrency := flag.Int("concurrency", 4, "jobs handled at once")
	sentinels := flag.String("sentinel", "", "sentinels, host:port,...: find the master through Redis Sentinel (with -master), instead of -addr")
	master := flag.String("master", "mymaster", "the master's name, with -sentinel")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *sentinels != "" {
		if *addr != "" && *addr != os.Getenv("REDIS_URL") {
			logger.Error("-addr and -sentinel name the server twice: give one")
			os.Exit(2)
		}
		*addr = sentinelURL(*sentinels, *master)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// A second signal kills at once, should running jobs take too long.
	context.AfterFunc(ctx, stop)
	err := run(ctx, *addr, *queue, *jobs, *concurrency, logger)
	stop()
	if err != nil {
		logger.Error("consumer failed", "err", err)
		os.Exit(1)
	}
}

// run consumes until ctx ends (a signal, which is a normal stop) or, in
// the demo, until every job is handled.
func run(ctx context.Context, addr, queue string, jobs, concurrency int, logger *slog.Logger) error {
	demo := addr == ""
	var opts redisalive.Options
	if demo {
		mr, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer mr.Close()
		opts.Addr = mr.Addr()
	} else {
		var err error
		if opts, err = poolOptions(addr); err != nil {
			return err
		}
	}
	opts.Logger = logger
	// One connection per handler waiting for a job, plus two for acks and
	// heartbeats.
	opts.MaxActive = cmp.Or(opts.MaxActive, concurrency+2)
	p, err := redisalive.NewPool(opts)
	if err != nil {
		return err
	}
	q, err := redisalive.NewQueue(p, queue, redisalive.QueueOptions{Concurrency: concurrency})
	if err != nil {
		p.Close()
		return err
	}

	signalled := ctx
	ctx, finish := context.WithCancel(ctx)
	defer finish()
	w := &worker{logger: logger, seen: make(map[string]int)}
	if demo {
		if err := produce(ctx, q, jobs); err != nil {
			p.Close()
			if signalled.Err() != nil {
				logger.Info("stopped by a signal while seeding the embedded server")
				return nil // a signal is a normal stop
			}
			return err
		}
		w.target, w.done = jobs, finish
	}
	// Said only once the server has answered. A server that refuses the
	// configuration (a wrong password, say) ends the run at once; one that
	// does not answer yet may be on its way back, so Consume waits for it,
	// and the pool's Logger warns meanwhile.
	switch _, err := p.Do(ctx, "PING"); {
	case errors.Is(err, redisalive.ErrMisconfigured):
		p.Close()
		return err
	case err == nil:
		logger.Info("consuming", "key", q.PendingKey(), "addr", opts.Addr, "consumer", q.ConsumerID(), "concurrency", concurrency)
	case ctx.Err() == nil:
		logger.Warn("not connected yet: consuming once the server answers", "addr", opts.Addr, "err", err)
	}
	start := time.Now()
	consumeErr := q.Consume(ctx, w.handle)
	elapsed := time.Since(start)

	// Consume has returned every connection it used; Shutdown closes them
	// and waits for any straggler, bounded.
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	shutdownErr := p.Shutdown(sctx)

	handled, duplicates := w.counts()
	s := q.Stats()
	fmt.Printf("handled %d distinct jobs (%d duplicates), %d retried, %d dead-lettered, %d requeued in %v\n",
		handled, duplicates, s.Retried, s.DeadLettered, s.Requeued, elapsed.Round(time.Millisecond))
	fmt.Printf("pool: %+v\n", p.Stats())

	if !errors.Is(consumeErr, context.Canceled) {
		return consumeErr
	}
	if demo && handled < jobs && signalled.Err() == nil {
		return fmt.Errorf("stopped after %d of %d jobs", handled, jobs)
	}
	return shutdownErr
}

// worker handles jobs and counts them, telling duplicates apart by
// payload.
type worker struct {
	logger *slog.Logger
	target int    // jobs after which to call done; 0: run until stopped
	done   func() // ends Consume

	mu         sync.Mutex
	seen       map[string]int
	duplicates int
}

func (w *worker) handle(ctx context.Context, payload []byte) error {
	// Real work goes here. Return an error to have the job retried; honour
	// ctx for work that can be cut short at shutdown. A job can arrive
	// twice, so the work must be idempotent.
	w.mu.Lock()
	w.seen[string(payload)]++
	first := w.seen[string(payload)] == 1
	if !first {
		w.duplicates++
	}
	handled := len(w.seen)
	w.mu.Unlock()

	if !first {
		w.logger.Warn("duplicate delivery", "job", string(payload))
		return nil
	}
	if handled%progressEvery == 0 {
		w.logger.Info("progress", "handled", handled)
	}
	if handled == w.target {
		w.done()
	}
	return nil
}

func (w *worker) counts() (handled, duplicates int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen), w.duplicates
}

// produce feeds the embedded server, as examples/producer would a real one.
func produce(ctx context.Context, q *redisalive.Queue, n int) error {
	const batch = 1000
	for sent := 0; sent < n; {
		jobs := make([][]byte, 0, min(batch, n-sent))
		for range cap(jobs) {
			jobs = append(jobs, fmt.Appendf(nil, "demo/%d", sent))
			sent++
		}
		if err := q.Push(ctx, jobs...); err != nil {
			return err
		}
	}
	return nil
}

// sentinelURL is the URL of the master named master, found through the
// sentinels listed in sentinels.
func sentinelURL(sentinels, master string) string {
	return "redis+sentinel://" + sentinels + "/" + url.PathEscape(master)
}

// poolOptions reads a redis:// or redis+sentinel:// URL, or a bare
// host:port.
func poolOptions(addr string) (redisalive.Options, error) {
	if strings.Contains(addr, "://") {
		return redisalive.ParseURL(addr)
	}
	return redisalive.Options{Addr: addr}, nil
}
