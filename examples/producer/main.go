// Command producer pushes jobs onto a redisalive Queue for
// examples/consumer to handle.
//
//	go run ./examples/producer -addr localhost:6379 -n 10000
//	go run ./examples/producer -sentinel s1:26379,s2:26379 -master mymaster
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redisalive/redisalive"
)

// batch is how many jobs go into one LPUSH: large enough to amortise the
// round trip, small enough not to stall the server.
const batch = 1000

func main() {
	addr := flag.String("addr", os.Getenv("REDIS_URL"), "Redis URL (redis://...) or host:port; default $REDIS_URL, else localhost:6379")
	queue := flag.String("queue", "jobs", "queue name")
	n := flag.Int("n", 3000, "jobs to push")
	sentinels := flag.String("sentinel", "", "sentinels, host:port,...: find the master through Redis Sentinel (with -master), instead of -addr")
	master := flag.String("master", "mymaster", "the master's name, with -sentinel")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *sentinels != "" {
		if *addr != "" && *addr != os.Getenv("REDIS_URL") {
			logger.Error("-addr and -sentinel name the server twice: give one")
			os.Exit(2)
		}
		*addr = "redis+sentinel://" + *sentinels + "/" + url.PathEscape(*master)
	}
	if err := run(*addr, *queue, *n, logger); err != nil {
		logger.Error("producer failed", "err", err)
		os.Exit(1)
	}
}

func run(addr, queue string, n int, logger *slog.Logger) error {
	opts, err := poolOptions(addr)
	if err != nil {
		return err
	}
	opts.Logger = logger
	p, err := redisalive.NewPool(opts)
	if err != nil {
		return err
	}
	defer p.Close()
	q, err := redisalive.NewQueue(p, queue, redisalive.QueueOptions{})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// The prefix keeps jobs of separate runs apart, so a consumer can
	// tell a duplicate delivery from a second job with the same number.
	prefix := time.Now().Format("150405.000")
	for sent := 0; sent < n; {
		jobs := make([][]byte, 0, min(batch, n-sent))
		for range cap(jobs) {
			jobs = append(jobs, fmt.Appendf(nil, "%s/%d", prefix, sent))
			sent++
		}
		if err := q.Push(ctx, jobs...); err != nil {
			return fmt.Errorf("after %d jobs: %w", sent-len(jobs), err)
		}
	}
	logger.Info("pushed", "jobs", n, "key", q.PendingKey(), "addr", opts.Addr)
	return nil
}

// poolOptions reads a redis:// or redis+sentinel:// URL, or a bare
// host:port.
func poolOptions(addr string) (redisalive.Options, error) {
	switch {
	case addr == "":
		return redisalive.Options{Addr: "localhost:6379"}, nil
	case strings.Contains(addr, "://"):
		return redisalive.ParseURL(addr)
	default:
		return redisalive.Options{Addr: addr}, nil
	}
}
