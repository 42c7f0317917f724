package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redisalive/redisalive/internal/redistest"
)

func TestRunWritesReadsAndConsumesOnARealCluster(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := run(ctx, rc.Addrs()[:1], 200, 20, logger); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, n := range rc.Nodes() {
		n.WaitConnectedClients(t, 0, 2*time.Second) // Close left nothing behind
	}
}
