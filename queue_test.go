package redisalive_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"strconv"
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

// fastRecovery makes recovery quick enough for unit tests: beats every 50 ms,
// dead after 250 ms. Pools for it should use a short BlockSlice, which
// bounds how long an orphan waits.
var fastRecovery = redisalive.QueueOptions{HeartbeatInterval: 50 * time.Millisecond, DeadAfter: 250 * time.Millisecond}

const (
	queueSlice = 100 * time.Millisecond
	queueWait  = 5 * time.Second // bound on every wait in the unit tests
	queuePoll  = 10 * time.Millisecond
)

func newTestQueue(t *testing.T, p *redisalive.Pool, opts redisalive.QueueOptions) *redisalive.Queue {
	t.Helper()
	q, err := redisalive.NewQueue(p, "jobs", opts)
	require.NoError(t, err)
	return q
}

// startConsume runs q.Consume in the background. The returned stop cancels
// it and returns Consume's error; it also runs when the test ends.
func startConsume(t *testing.T, q *redisalive.Queue, handler func(context.Context, []byte) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Consume(ctx, handler) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Consume did not return within 10s of its context ending")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// payloadRecorder is a handler that notes every payload it is given, in order.
type payloadRecorder struct {
	mu   sync.Mutex
	seen []string
	fail func(payload string, attempt int) error // nil: always succeed
}

func (r *payloadRecorder) handle(_ context.Context, payload []byte) error {
	r.mu.Lock()
	r.seen = append(r.seen, string(payload))
	attempt := 0
	for _, s := range r.seen {
		if s == string(payload) {
			attempt++
		}
	}
	r.mu.Unlock()
	if r.fail != nil {
		return r.fail(string(payload), attempt)
	}
	return nil
}

func (r *payloadRecorder) calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

func (r *payloadRecorder) count(payload string) int {
	n := 0
	for _, s := range r.calls() {
		if s == payload {
			n++
		}
	}
	return n
}

func listLen(t *testing.T, p *redisalive.Pool, key string) int {
	t.Helper()
	n, err := redis.Int(p.Do(context.Background(), "LLEN", key))
	require.NoError(t, err)
	return n
}

func listRange(t *testing.T, p *redisalive.Pool, key string) []string {
	t.Helper()
	items, err := redis.Strings(p.Do(context.Background(), "LRANGE", key, 0, -1))
	require.NoError(t, err)
	return items
}

func pushStrings(t *testing.T, q *redisalive.Queue, payloads ...string) {
	t.Helper()
	bs := make([][]byte, len(payloads))
	for i, s := range payloads {
		bs[i] = []byte(s)
	}
	require.NoError(t, q.Push(context.Background(), bs...))
}

// registered reports whether q's consumer has beaten at least once, which
// Consume does before it takes any item.
func registered(p *redisalive.Pool, q *redisalive.Queue) bool {
	_, err := redis.Float64(p.Do(context.Background(), "ZSCORE", q.ConsumersKey(), q.ConsumerID()))
	return err == nil
}

func handled(q *redisalive.Queue) func() int64 {
	return func() int64 { return q.Stats().Handled }
}

func handlerCalls(rec *payloadRecorder) func() int {
	return func() int { return len(rec.calls()) }
}

// requireDrained fails unless q's pending and processing lists are empty.
func requireDrained(t *testing.T, p *redisalive.Pool, q *redisalive.Queue) {
	t.Helper()
	require.Zero(t, listLen(t, p, q.PendingKey()), "got items left in pending, want none")
	require.Zero(t, listLen(t, p, q.ProcessingKey()), "got items left in processing, want none")
}

func TestNewQueueNamesKeysWithOneHashTag(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{})
	q, err := redisalive.NewQueue(p, "mail", redisalive.QueueOptions{ConsumerID: "w1"})
	require.NoError(t, err)
	assert.Equal(t, "mail", q.Name())
	assert.Equal(t, "w1", q.ConsumerID())
	assert.Equal(t, "{mail}:pending", q.PendingKey())
	assert.Equal(t, "{mail}:processing:w1", q.ProcessingKey())
	assert.Equal(t, "{mail}:consumers", q.ConsumersKey())
	assert.Equal(t, "{mail}:dead", q.DeadLetterKey())

	other, err := redisalive.NewQueue(p, "mail", redisalive.QueueOptions{})
	require.NoError(t, err)
	assert.NotEqual(t, q.ConsumerID(), other.ConsumerID())
	assert.NotEmpty(t, other.ConsumerID())
}

func TestNewQueueRejectsInvalidOptions(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{MaxActive: 4})
	tests := []struct {
		name  string
		pool  *redisalive.Pool
		queue string
		opts  redisalive.QueueOptions
		want  string
	}{
		{"nil pool", nil, "q", redisalive.QueueOptions{}, "nil Pool"},
		{"empty name", p, "", redisalive.QueueOptions{}, "name is required"},
		{"negative Concurrency", p, "q", redisalive.QueueOptions{Concurrency: -1}, "Concurrency"},
		{"negative MaxAttempts", p, "q", redisalive.QueueOptions{MaxAttempts: -1}, "MaxAttempts"},
		{"negative HeartbeatInterval", p, "q", redisalive.QueueOptions{HeartbeatInterval: -time.Second}, "HeartbeatInterval"},
		{"negative DeadAfter", p, "q", redisalive.QueueOptions{DeadAfter: -time.Second}, "DeadAfter"},
		{"HeartbeatInterval whose 5 beats overflow", p, "q", redisalive.QueueOptions{HeartbeatInterval: math.MaxInt64 / 4}, "QueueOptions.HeartbeatInterval"},
		{"DeadAfter that overflows plus a minute", p, "q", redisalive.QueueOptions{DeadAfter: math.MaxInt64}, "DeadAfter"},
		{"DeadAfter equal to HeartbeatInterval", p, "q",
			redisalive.QueueOptions{HeartbeatInterval: time.Second, DeadAfter: time.Second}, "must exceed HeartbeatInterval"},
		{"DeadAfter below the default HeartbeatInterval", p, "q",
			redisalive.QueueOptions{DeadAfter: time.Second}, "must exceed HeartbeatInterval"},
		{"Concurrency using every connection", p, "q", redisalive.QueueOptions{Concurrency: 4}, "MaxActive (4)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := redisalive.NewQueue(tt.pool, tt.queue, tt.opts)
			require.ErrorIs(t, err, redisalive.ErrInvalidOptions)
			if tt.pool != nil && tt.queue != "" {
				var oe *redisalive.OptionError
				require.ErrorAs(t, err, &oe)
				assert.Contains(t, err.Error(), "QueueOptions."+oe.Field)
			}
			assert.Nil(t, q)
			assert.Contains(t, err.Error(), tt.want)
			assert.True(t, strings.HasPrefix(err.Error(), "redisalive: "), "got %q, want the library's prefix", err)
			assert.Equal(t, 1, strings.Count(err.Error(), "redisalive:"), "got %q, want the prefix once", err)
		})
	}
}

// TestNewQueueSaysOnceWhatItCannotUse: a nil backend and a bad name read
// like every other option error, with the library's prefix once.
func TestNewQueueSaysOnceWhatItCannotUse(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{})
	for _, tc := range []struct {
		backend redisalive.QueueBackend
		name    string
		want    string
	}{
		{nil, "q", "redisalive: NewQueue: nil backend"},
		{(*redisalive.Pool)(nil), "q", "redisalive: NewQueue: nil Pool"},
		{(*redisalive.Cluster)(nil), "q", "redisalive: NewQueue: nil Cluster"},
		{p, "", "redisalive: NewQueue: a queue name is required"},
		{p, "a{b", `redisalive: NewQueue: queue name "a{b" contains '{' or '}', which would break the hash tag {name} its keys share`},
	} {
		_, err := redisalive.NewQueue(tc.backend, tc.name, redisalive.QueueOptions{})
		assert.EqualError(t, err, tc.want)
		assert.ErrorIs(t, err, redisalive.ErrInvalidOptions, "%q", tc.want)
	}
}

func TestNewQueueRejectsNameWithBraceThatWouldBreakItsHashTag(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{})
	// "}x" gives keys such as "{}x}:pending" an empty hash tag, which on a
	// Cluster puts each of the queue's keys in a slot of its own.
	for _, name := range []string{"}x", "a}b", "{x", "a{b}c"} {
		q, err := redisalive.NewQueue(p, name, redisalive.QueueOptions{})
		require.ErrorIs(t, err, redisalive.ErrInvalidOptions, "name %q", name)
		assert.Contains(t, err.Error(), "'{' or '}'", "name %q", name)
		assert.Nil(t, q, "name %q", name)
	}
}

func TestQueueDeliversEveryItemExactlyOnceWithoutFaults(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{Concurrency: 4})
	const n = 300
	payloads := make([]string, n)
	for i := range payloads {
		payloads[i] = "job-" + strconv.Itoa(i)
	}
	pushStrings(t, q, payloads...)
	rec := &payloadRecorder{}
	startConsume(t, q, rec.handle)

	waitForValue(t, queueWait, "items handled", n, handled(q))
	calls := rec.calls()
	require.Len(t, calls, n, "got %d handler calls, want %d", len(calls), n)
	for _, s := range payloads {
		assert.Equal(t, 1, rec.count(s), "payload %s", s)
	}
	requireDrained(t, p, q)
	assert.Equal(t, redisalive.QueueStats{Handled: n}, q.Stats())
}

func TestQueueConsumesInPushOrderWithOneHandler(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{})
	pushStrings(t, q, "a", "b")
	pushStrings(t, q, "c")
	rec := &payloadRecorder{}
	startConsume(t, q, rec.handle)
	waitForValue(t, queueWait, "handler calls", 3, handlerCalls(rec))
	assert.Equal(t, []string{"a", "b", "c"}, rec.calls())
}

func TestQueueRetriesFailingItemThenDeadLettersItAfterMaxAttempts(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{MaxAttempts: 3})
	rec := &payloadRecorder{fail: func(payload string, _ int) error {
		if payload == "poison" {
			return errors.New("cannot parse")
		}
		return nil
	}}
	pushStrings(t, q, "poison", "fine")
	startConsume(t, q, rec.handle)

	waitForValue(t, queueWait, "stats", redisalive.QueueStats{Handled: 1, Retried: 2, DeadLettered: 1}, q.Stats)
	assert.Equal(t, []string{"poison"}, listRange(t, p, q.DeadLetterKey()), "the dead-letter list holds the bare payload")
	assert.Equal(t, 3, rec.count("poison"), "got %d attempts, want MaxAttempts", rec.count("poison"))
	assert.Equal(t, 1, rec.count("fine"))
	requireDrained(t, p, q)
}

func TestQueueTreatsHandlerPanicAsFailure(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{})
	rec := &payloadRecorder{fail: func(_ string, attempt int) error {
		if attempt == 1 {
			panic("nil map")
		}
		return nil
	}}
	pushStrings(t, q, "fragile")
	startConsume(t, q, rec.handle)

	waitForValue(t, queueWait, "stats", redisalive.QueueStats{Handled: 1, Retried: 1}, q.Stats)
	assert.Equal(t, []string{"fragile", "fragile"}, rec.calls())
	requireDrained(t, p, q)
}

func TestQueueTakesBarePayloadsFromOtherProducers(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{})
	// As a producer in another language would, and one that only looks
	// like an envelope.
	bare := []string{`{"to":"a@b.c"}`, "ra1:x:y"}
	_, err := p.Do(context.Background(), "LPUSH", q.PendingKey(), bare[0], bare[1])
	require.NoError(t, err)
	rec := &payloadRecorder{fail: func(_ string, attempt int) error {
		if attempt == 1 {
			return errors.New("try again")
		}
		return nil
	}}
	startConsume(t, q, rec.handle)

	waitForValue(t, queueWait, "stats", redisalive.QueueStats{Handled: 2, Retried: 2}, q.Stats)
	for _, s := range bare {
		assert.Equal(t, 2, rec.count(s), "payload %q: got %d calls, want 2 (one failure, one retry)", s, rec.count(s))
	}
}

func TestQueueDeadLettersForeignItemWhoseAttemptCountCannotBeIncremented(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{MaxAttempts: 3})
	// A count one more failure would overflow: it must neither wrap to a
	// negative count nor lose its envelope halfway through its retries.
	const raw = "ra1:9223372036854775807:abc:hello"
	_, err := p.Do(context.Background(), "LPUSH", q.PendingKey(), raw)
	require.NoError(t, err)
	rec := &payloadRecorder{fail: func(string, int) error { return errors.New("always") }}
	startConsume(t, q, rec.handle)

	waitForValue(t, queueWait, "stats", redisalive.QueueStats{Retried: 2, DeadLettered: 1}, q.Stats)
	assert.Equal(t, []string{raw, raw, raw}, rec.calls(), "got these payloads, want the item taken whole as a bare payload MaxAttempts times")
	assert.Equal(t, []string{raw}, listRange(t, p, q.DeadLetterKey()))
	requireDrained(t, p, q)
}

func TestQueueRequeuesItemsOfDeadConsumerAndSparesLiveOnes(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	ctx := context.Background()
	ghost, err := redisalive.NewQueue(p, "jobs", redisalive.QueueOptions{ConsumerID: "ghost"})
	require.NoError(t, err)
	alive, err := redisalive.NewQueue(p, "jobs", redisalive.QueueOptions{ConsumerID: "alive"})
	require.NoError(t, err)
	// The ghost took a, b, c in that order and last beat in 1970; "alive"
	// beats far in the future, so it must keep its item.
	for _, cmd := range [][]any{
		{"LPUSH", ghost.ProcessingKey(), "a", "b", "c"},
		{"ZADD", ghost.ConsumersKey(), 1, "ghost"},
		{"LPUSH", alive.ProcessingKey(), "mine"},
		{"ZADD", alive.ConsumersKey(), time.Now().Add(time.Hour).UnixMilli(), "alive"},
	} {
		_, err := p.Do(ctx, cmd[0].(string), cmd[1:]...)
		require.NoError(t, err)
	}
	q := newTestQueue(t, p, fastRecovery)
	rec := &payloadRecorder{}
	startConsume(t, q, rec.handle)

	waitForValue(t, queueWait, "handler calls", 3, handlerCalls(rec))
	assert.Equal(t, []string{"a", "b", "c"}, rec.calls(), "recovered items are taken oldest first")
	assert.Zero(t, listLen(t, p, ghost.ProcessingKey()))
	_, err = redis.Float64(p.Do(ctx, "ZSCORE", q.ConsumersKey(), "ghost"))
	assert.ErrorIs(t, err, redis.ErrNil, "a consumer dead for long is forgotten")
	assert.Equal(t, []string{"mine"}, listRange(t, p, alive.ProcessingKey()))
	// The recovery counts its items after they are back in the queue, where
	// a worker may take them first.
	waitForValue(t, queueWait, "items requeued", 3, func() int64 { return q.Stats().Requeued })
}

func TestQueueRequeuesItemOrphanedInItsOwnProcessingList(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, fastRecovery)
	rec := &payloadRecorder{}
	startConsume(t, q, rec.handle)
	// What a BLMOVE on a zombie connection does: the item lands in our
	// list and no worker ever hears of it.
	_, err := p.Do(context.Background(), "LPUSH", q.ProcessingKey(), "lost-reply")
	require.NoError(t, err)

	// Handled counts after the ack, so wait for it rather than for the
	// handler call, which comes first.
	waitForValue(t, queueWait, "stats", redisalive.QueueStats{Handled: 1, Requeued: 1}, q.Stats)
	assert.Equal(t, 1, rec.count("lost-reply"))
	waitForValue(t, queueWait, "items in processing", 0, func() int { return listLen(t, p, q.ProcessingKey()) })
}

func TestQueueDoesNotRequeueItemsItsHandlersHold(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, fastRecovery)
	started, release := make(chan struct{}), make(chan struct{})
	startConsume(t, q, func(context.Context, []byte) error {
		close(started)
		<-release
		return nil
	})
	pushStrings(t, q, "slow")
	awaitClosed(t, started)
	// Orphan scans run meanwhile, for twice the orphan age.
	assert.Never(t, func() bool { return q.Stats().Requeued > 0 || listLen(t, p, q.PendingKey()) > 0 },
		2*(queueSlice+time.Second), 50*time.Millisecond)
	close(release)
	waitForValue(t, queueWait, "items handled", 1, handled(q))
	requireDrained(t, p, q)
}

func TestQueueRunsConcurrencyHandlersAtOnce(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{Concurrency: 4})
	var running, peak atomic.Int32
	release := make(chan struct{})
	startConsume(t, q, func(context.Context, []byte) error {
		n := running.Add(1)
		defer running.Add(-1)
		for old := peak.Load(); n > old && !peak.CompareAndSwap(old, n); old = peak.Load() {
		}
		<-release
		return nil
	})
	pushStrings(t, q, "1", "2", "3", "4", "5", "6", "7", "8")

	waitForValue(t, queueWait, "handlers running", 4, func() int32 { return running.Load() })
	assert.Equal(t, 4, listLen(t, p, q.PendingKey()), "items pending: want the 4 no handler is free for")
	close(release)
	waitForValue(t, queueWait, "items handled", 8, handled(q))
	assert.Equal(t, int32(4), peak.Load(), "got a peak of %d handlers at once, want Concurrency", peak.Load())
}

func TestConsumeRefusesToRunTwiceOnOneQueue(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{})
	stop := startConsume(t, q, (&payloadRecorder{}).handle)
	waitForValue(t, queueWait, "consumer registered", true, func() bool { return registered(p, q) })
	err := q.Consume(context.Background(), (&payloadRecorder{}).handle)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already running")
	require.ErrorIs(t, stop(), context.Canceled)
}

func TestQueueCallsGivenANilContextReturnTheNilContextError(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{})
	var nilCtx context.Context
	want := redisalive.ErrNilContext
	assert.ErrorIs(t, q.Consume(nilCtx, (&payloadRecorder{}).handle), want)
	assert.ErrorIs(t, q.Push(nilCtx, []byte("x")), want)
	assert.ErrorIs(t, q.Push(nilCtx), want, "even with nothing to push")
}

func TestConsumeReturnsOnlyAfterInFlightHandlerFinished(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{Concurrency: 2})
	started, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var returned atomic.Bool
	var err error
	var finishedAtReturn bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		err = q.Consume(ctx, func(context.Context, []byte) error {
			close(started)
			<-release // deliberately deaf to ctx: some work must not be cut short
			finished.Store(true)
			return nil
		})
		finishedAtReturn = finished.Load()
		returned.Store(true)
	}()
	pushStrings(t, q, "long")
	awaitClosed(t, started)

	cancel()
	assert.Never(t, returned.Load, 300*time.Millisecond, queuePoll, "Consume returned while a handler ran")
	close(release)
	awaitClosed(t, done)
	require.ErrorIs(t, err, context.Canceled)
	assert.True(t, finishedAtReturn, "Consume returned before its handler finished")
	assert.Equal(t, redisalive.QueueStats{Handled: 1}, q.Stats(), "an item handled during shutdown is acked")
	requireDrained(t, p, q)
}

func TestConsumeRequeuesItemInterruptedByShutdownWithoutCountingAttempt(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{MaxAttempts: 1})
	started := make(chan struct{})
	stop := startConsume(t, q, func(ctx context.Context, _ []byte) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	})
	pushStrings(t, q, "interrupted")
	awaitClosed(t, started)

	require.ErrorIs(t, stop(), context.Canceled)
	pending := listRange(t, p, q.PendingKey())
	require.Len(t, pending, 1)
	assert.True(t, strings.HasPrefix(pending[0], "ra1:0:") && strings.HasSuffix(pending[0], ":interrupted"),
		"got %q pending, want the item with 0 attempts", pending[0])
	assert.Zero(t, listLen(t, p, q.DeadLetterKey()), "even with MaxAttempts 1, shutdown must not dead-letter")
	assert.Equal(t, redisalive.QueueStats{Requeued: 1}, q.Stats())
}

func TestConsumeRequeuesLeftoversAndLeavesItsEntryToExpireOnReturn(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{})
	stop := startConsume(t, q, (&payloadRecorder{}).handle)
	// An item handled shows the workers are running.
	pushStrings(t, q, "first")
	waitForValue(t, queueWait, "items handled", 1, handled(q))
	_, err := p.Do(context.Background(), "LPUSH", q.ProcessingKey(), "left-behind")
	require.NoError(t, err)

	require.ErrorIs(t, stop(), context.Canceled)
	assert.Equal(t, []string{"left-behind"}, listRange(t, p, q.PendingKey()))
	assert.Equal(t, int64(1), q.Stats().Requeued)
	assert.Zero(t, listLen(t, p, q.ProcessingKey()))
	score, err := redis.Float64(p.Do(context.Background(), "ZSCORE", q.ConsumersKey(), q.ConsumerID()))
	require.NoError(t, err, "the entry stays until it goes stale")
	assert.Positive(t, score)
}

func TestConsumeReturnsErrPoolClosedWhenPoolCloses(t *testing.T) {
	p, _ := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	q := newTestQueue(t, p, redisalive.QueueOptions{Concurrency: 3})
	done := make(chan error, 1)
	go func() { done <- q.Consume(context.Background(), (&payloadRecorder{}).handle) }()
	waitForValue(t, queueWait, "connections held by blocked workers", 3, func() int { return p.Stats().InUse })

	require.NoError(t, p.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, redisalive.ErrPoolClosed)
	case <-time.After(queueWait):
		t.Fatal("Consume did not return after the pool closed")
	}
}

func TestConsumeCancelsRunningHandlerWhenPoolCloses(t *testing.T) {
	p, mr := pooltest.OnMiniredis(t, redisalive.Options{BlockSlice: queueSlice})
	// One handler slot: while it runs, no worker is in BLMove to notice the
	// pool closing.
	q := newTestQueue(t, p, redisalive.QueueOptions{})
	started, cancelled, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = q.Consume(context.Background(), func(ctx context.Context, _ []byte) error {
			close(started)
			select {
			case <-ctx.Done():
				close(cancelled)
				return ctx.Err()
			case <-time.After(queueWait):
				return errors.New("never cancelled")
			}
		})
	}()
	t.Cleanup(func() { awaitClosed(t, done) })
	pushStrings(t, q, "long")
	awaitClosed(t, started)

	require.NoError(t, p.Close())
	select {
	case <-cancelled:
	case <-time.After(time.Second):
		t.Fatal("got the handler's ctx still live 1s after Close, want it cancelled")
	}
	awaitClosed(t, done)
	require.ErrorIs(t, err, redisalive.ErrPoolClosed)
	// Nothing can be requeued through a closed pool: the item waits in the
	// processing list for another consumer to recover it.
	got, err := mr.List(q.ProcessingKey())
	require.NoError(t, err)
	require.Len(t, got, 1, "got %q in processing, want the interrupted item", got)
	assert.True(t, strings.HasSuffix(got[0], ":long"), "got %q in processing, want the interrupted item", got[0])
}

func TestQueueDoesNotHandleItemAgainWhenItsAckOutlastsAWritePause(t *testing.T) {
	srv := redistest.Start(t)
	p := pooltest.OnServer(t, srv, redisalive.Options{
		BlockSlice: queueSlice, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond,
	})
	// Beats are writes too, and fail during the pause; no one is there to
	// declare this consumer dead, so only its own orphan scan could requeue.
	q := newTestQueue(t, p, redisalive.QueueOptions{HeartbeatInterval: 50 * time.Millisecond})
	finish := make(chan struct{})
	var calls atomic.Int32
	startConsume(t, q, func(ctx context.Context, _ []byte) error {
		if calls.Add(1) > 1 {
			return nil
		}
		select {
		case <-finish:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	pushStrings(t, q, "once")
	waitForValue(t, queueWait, "handler calls", 1, calls.Load)

	// As in a failover: writes wait on the server, so every try of the
	// ack times out, for far longer than a few retries last.
	srv.Do(t, "CLIENT", "PAUSE", 2000, "WRITE")
	close(finish)
	waitForValue(t, 2*queueWait, "items in processing", 0, func() int { return listLen(t, p, q.ProcessingKey()) })
	// Long enough for two orphan scans, should the item be back in the list.
	assert.Never(t, func() bool { return calls.Load() > 1 }, 2*(queueSlice+time.Second), queuePoll,
		"the handler ran again: the item was requeued after it was handled")
	assert.Equal(t, redisalive.QueueStats{Handled: 1}, q.Stats())
	requireDrained(t, p, q)
}

func TestQueueConsumerBackFromAnOutageSparesOneStillComingBackButRecoversADeadOne(t *testing.T) {
	// b, back 400 ms after a, beats again only after its retry backoff
	// (up to backoffCap, 1 s, of jitter) and a failed try (ReadTimeout):
	// DeadAfter leaves it well over that. At 1.5 s it left about 1 s, and
	// a CI run saw a take b for dead.
	const deadAfter = 3 * time.Second
	srv := redistest.Start(t)
	opts := redisalive.QueueOptions{HeartbeatInterval: 100 * time.Millisecond, DeadAfter: deadAfter}
	// Each consumer has a link of its own, so that they can come back from
	// one outage at different times.
	consumerVia := func(id string) (*redisalive.Pool, *redisalive.Queue, *faultproxy.Proxy) {
		proxy, err := faultproxy.New(srv.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { proxy.Close() })
		p := pooltest.New(t, redisalive.Options{Addr: proxy.Addr(), BlockSlice: queueSlice, ReadTimeout: 200 * time.Millisecond})
		opts.ConsumerID = id
		return p, newTestQueue(t, p, opts), proxy
	}
	bPool, b, bLink := consumerVia("b")
	_, a, aLink := consumerVia("a")
	direct := pooltest.OnServer(t, srv, redisalive.Options{})

	started, release := make(chan struct{}), make(chan struct{})
	startConsume(t, b, func(ctx context.Context, _ []byte) error {
		close(started)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	pushStrings(t, b, "in flight")
	awaitClosed(t, started)
	rec := &payloadRecorder{}
	startConsume(t, a, rec.handle)
	waitForValue(t, queueWait, "consumer a registered", true, func() bool { return registered(direct, a) })

	// Both links go down for longer than DeadAfter; a's comes back first.
	aLink.Blackhole()
	bLink.Blackhole()
	time.Sleep(deadAfter + 500*time.Millisecond) // holds the outage
	aLink.Heal()
	time.Sleep(400 * time.Millisecond) // holds b's link down while a's is up
	bLink.Heal()
	close(release)
	waitForValue(t, queueWait, "items b handled", 1, handled(b))
	// Long enough for a, beating every 100 ms, to act on what it saw.
	require.Never(t, func() bool { return a.Stats().Requeued > 0 }, deadAfter, queuePoll,
		"a requeued b's item while b was still coming back from the outage a had too")
	assert.Empty(t, rec.calls(), "a handled b's item")

	// Now b dies with an item in its list: a must still recover it, its
	// own outage notwithstanding.
	_, err := direct.Do(context.Background(), "LPUSH", b.ProcessingKey(), "left by b")
	require.NoError(t, err)
	require.NoError(t, bPool.Close())
	waitForValue(t, deadAfter+queueWait, "a's handler calls", 1, handlerCalls(rec))
	assert.Equal(t, []string{"left by b"}, rec.calls())
}

func awaitClosed(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(queueWait):
		t.Fatalf("still waiting after %v", queueWait)
	}
}

// TestQueueLosesNoItemAndDuplicatesFewUnderNetworkFaults is a bounded soak:
// three consumers behind a fault proxy take the items a producer pushes at
// 200 a second, while every 2-3 s their connections are killed by the
// server or the link drops packets for 1.5 s, both ways or one way. Every
// item must be handled, and almost every item once: a consumer that
// survives a fault knows which items its handlers finished, so only one
// dying between a handler's success and its ack has to cause a duplicate.
//
// DeadAfter is barely longer than a fault, and the pools keep the default
// timeouts, under which a consumer can take a second or more after the
// link heals to beat again: the first consumer back must not take the
// others for dead.
func TestQueueLosesNoItemAndDuplicatesFewUnderNetworkFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test")
	}
	const (
		soakFor   = 30 * time.Second
		pushEvery = 50 * time.Millisecond
		pushBatch = 10 // 200 items a second
		faultLen  = 1500 * time.Millisecond
	)
	// Direct clients (producer, checks) connect to 127.0.0.2 and the proxy to
	// 127.0.0.1, so CLIENT KILL LADDR can kill the consumers' connections
	// alone: a killed Push could not tell whether it had added its items.
	srv := redistest.Start(t, "--bind", "127.0.0.1", "127.0.0.2")
	directAddr := net.JoinHostPort("127.0.0.2", strconv.Itoa(srv.Port()))
	proxy, err := faultproxy.New(srv.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { proxy.Close() })
	// As on Linux, where the first resend comes 200 ms after a send: what
	// the link held back trickles in after it heals, not all at once.
	proxy.SetRetransmission(200 * time.Millisecond)
	direct := pooltest.New(t, redisalive.Options{Addr: directAddr})
	producer, err := redisalive.NewQueue(direct, "soak", redisalive.QueueOptions{})
	require.NoError(t, err)

	// handled[i] counts the successful handler calls of item i.
	var mu sync.Mutex
	handled := map[int]int{}
	handler := func(ctx context.Context, payload []byte) error {
		i, err := strconv.Atoi(string(payload))
		if err != nil {
			return err
		}
		// Work long enough that every fault finds a dozen items in hand.
		select {
		case <-time.After(time.Duration(20+rand.IntN(80)) * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		mu.Lock()
		handled[i]++
		mu.Unlock()
		return nil
	}
	var queues []*redisalive.Queue
	for _, id := range []string{"soak-a", "soak-b", "soak-c"} {
		p := pooltest.New(t, redisalive.Options{Addr: proxy.Addr()})
		q, err := redisalive.NewQueue(p, "soak", redisalive.QueueOptions{
			Concurrency: 8, ConsumerID: id, HeartbeatInterval: 250 * time.Millisecond, DeadAfter: 2 * time.Second,
		})
		require.NoError(t, err)
		queues = append(queues, q)
		stop := startConsume(t, q, handler)
		t.Cleanup(func() { require.ErrorIs(t, stop(), context.Canceled) })
	}

	pushed := 0
	producing := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), soakFor)
	t.Cleanup(func() { cancel(); <-producing })
	go func() {
		defer close(producing)
		tick := time.NewTicker(pushEvery)
		defer tick.Stop()
		for ; ctx.Err() == nil; <-tick.C {
			batch := make([][]byte, pushBatch)
			for j := range batch {
				batch[j] = []byte(strconv.Itoa(pushed + j))
			}
			// Not ctx: a Push cut short may or may not have added its items.
			if err := producer.Push(context.Background(), batch...); err != nil {
				t.Errorf("push: %v", err)
				return
			}
			pushed += pushBatch
		}
	}()
	faults := chaos(t, srv, proxy, soakFor, faultLen)
	awaitClosed(t, producing)

	// Handled, pending and in processing: what is left once the faults stop.
	progress := func() [3]int {
		mu.Lock()
		n := len(handled)
		mu.Unlock()
		inProcessing := 0
		for _, q := range queues {
			inProcessing += listLen(t, direct, q.ProcessingKey())
		}
		return [3]int{n, listLen(t, direct, producer.PendingKey()), inProcessing}
	}
	// An item lost shows as one never handled, and so never leaving this.
	waitForValue(t, time.Minute, "[items handled, pending, in processing]", [3]int{pushed, 0, 0}, progress)

	mu.Lock()
	duplicates := 0
	for i := range pushed {
		duplicates += handled[i] - 1
	}
	mu.Unlock()
	ratio := float64(duplicates) / float64(pushed)
	t.Logf("%d items, faults %v: %d duplicates (%.2f%%)", pushed, faults, duplicates, 100*ratio)
	for _, q := range queues {
		t.Logf("%s: %+v", q.ConsumerID(), q.Stats())
	}
	assert.Zero(t, listLen(t, direct, producer.DeadLetterKey()), "items dead-lettered")
	assert.LessOrEqual(t, ratio, 0.005, "duplicate ratio: got %d duplicates of %d items", duplicates, pushed)
}

// chaos injects a fault every 2-3 s for the given time, rotating through
// killing every connection that came through proxy, and blackholing proxy
// for d both ways, toward the server and toward the client. It counts the
// faults by kind.
func chaos(t *testing.T, srv *redistest.Server, proxy *faultproxy.Proxy, soak, d time.Duration) map[string]int {
	t.Helper()
	defer proxy.Heal()
	faults := map[string]int{}
	kinds := []string{"kill", "blackhole", "drop-to-server", "drop-to-client"}
	for i, end := 0, time.Now().Add(soak); time.Now().Before(end); i++ {
		kind := kinds[i%len(kinds)]
		faults[kind]++
		switch kind {
		case "kill":
			_, err := srv.TryDo("CLIENT", "KILL", "LADDR", srv.Addr())
			require.NoError(t, err)
		case "blackhole":
			proxy.Blackhole()
		case "drop-to-server":
			proxy.BlackholeOneWay(faultproxy.ToServer)
		case "drop-to-client":
			proxy.BlackholeOneWay(faultproxy.ToClient)
		}
		calm := time.Duration(2000+rand.IntN(1000)) * time.Millisecond
		if kind != "kill" {
			time.Sleep(d) // holds the fault
			proxy.Heal()
			calm -= d
		}
		time.Sleep(calm) // spaces the faults
	}
	return faults
}
