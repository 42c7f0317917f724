package testkit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestLogBufferKeepsEveryConcurrentWrite(t *testing.T) {
	var b LogBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { fmt.Fprintf(&b, "%d\n", i) })
	}
	wg.Wait()
	if got := len(b.String()); got != 16 {
		t.Fatalf("got %d bytes, want 16", got)
	}
}

func TestWaitForReturnsOnceTheConditionHolds(t *testing.T) {
	n := 0
	took := WaitFor(t, time.Second, "the third check", func() bool { n++; return n == 3 })
	if n != 3 || took < 2*PollEvery {
		t.Fatalf("got %d checks in %v, want 3 in at least %v", n, took, 2*PollEvery)
	}
}
