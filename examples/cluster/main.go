// Command cluster is a redisalive Cluster client to copy: it writes and
// reads keys spread over every node, runs a queue consumer on one hash
// tag, prints what each node's pool saw, and closes every pool on exit so
// that no node keeps a connection of it.
//
//	go run ./examples/cluster -addrs 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002
//
// Without -addrs it reads $REDIS_CLUSTER_ADDRS. It runs -keys writes and
// reads, then waits for the jobs it pushed, and exits; SIGINT or SIGTERM
// stops it early, which is a normal stop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive"
)

func main() {
	addrs := flag.String("addrs", os.Getenv("REDIS_CLUSTER_ADDRS"), "comma-separated seed nodes, host:port; default $REDIS_CLUSTER_ADDRS")
	keys := flag.Int("keys", 1000, "keys to write and read back")
	jobs := flag.Int("jobs", 100, "jobs to push and consume")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *addrs == "" {
		fmt.Fprintln(os.Stderr, "cluster: no seed nodes: pass -addrs host:port,... or set REDIS_CLUSTER_ADDRS")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, strings.Split(*addrs, ","), *keys, *jobs, logger); err != nil {
		logger.Error("cluster example failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addrs []string, keys, jobs int, logger *slog.Logger) error {
	c, err := redisalive.NewCluster(redisalive.ClusterOptions{
		Addrs: addrs,
		Node:  redisalive.Options{Logger: logger}, // every node's Pool: defaults
	})
	if err != nil {
		return err
	}
	// Close shuts every node's pool down: no node keeps a connection of
	// this process, and no goroutine of the cluster outlives it.
	defer c.Close()

	// Each key goes to the node serving its slot; a MOVED reply after a
	// reshard is followed transparently.
	for i := range keys {
		key := fmt.Sprint("example:", i)
		if _, err := c.Do(ctx, "SET", key, i); err != nil {
			return stopped(ctx, err)
		}
		if n, err := redis.Int(c.Do(ctx, "GET", key)); err != nil || n != i {
			return stopped(ctx, fmt.Errorf("GET %s: got %d, %w", key, n, err))
		}
	}
	logger.Info("wrote and read back", "keys", keys)

	// A queue lives on one node: its keys share the hash tag {jobs}. The
	// consumer's BRPop waits in rounds, so a dead node costs it one round
	// and a reconnect, never a hang.
	for i := range jobs {
		if _, err := c.Do(ctx, "LPUSH", "{jobs}:pending", fmt.Sprint("job-", i)); err != nil {
			return stopped(ctx, err)
		}
	}
	for range jobs {
		if _, _, err := c.BRPop(ctx, "{jobs}:pending"); err != nil {
			return stopped(ctx, err)
		}
	}
	logger.Info("consumed", "jobs", jobs)

	stats := c.Stats()
	nodes := make([]string, 0, len(stats))
	for addr := range stats {
		nodes = append(nodes, addr)
	}
	sort.Strings(nodes)
	for _, addr := range nodes {
		s := stats[addr]
		fmt.Printf("%s: %d dials, %d idle, %d blocking rounds, %d closed dead\n", addr, s.Dials, s.Idle, s.BlockingRounds, s.DeadClosed)
	}
	return nil
}

// stopped turns an error caused by a signal into a normal stop.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
