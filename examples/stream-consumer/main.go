// Command stream-consumer is a Redis Streams consumer-group worker to copy.
// It reads new entries with XREADGROUP, acks each only after its handler
// succeeded, takes over the entries of consumers that died (XAUTOCLAIM), and
// moves an entry delivered too often to a dead-letter stream, so that no
// entry loops forever. On SIGINT or SIGTERM it stops reading, lets running
// handlers finish, and shuts its pool down so the server releases every
// connection.
//
//	go run ./examples/stream-consumer                       # demo: embedded server, -entries entries, exits when all are settled
//	go run ./examples/stream-consumer -addr localhost:6379  # worker on a real Redis, until signalled
//	redis-cli XADD jobs MAXLEN '~' 1000000 '*' job hello    # feed it; MAXLEN keeps the stream bounded
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive"
)

const (
	// maxDeliveries is how often an entry is handed out before it goes to
	// the dead-letter stream instead. It counts deliveries, not handler
	// failures, so an entry that crashes its worker, which then reports
	// nothing, is caught too.
	maxDeliveries = 5
	// reclaimPages bounds one reclaim pass, so a huge backlog of pending
	// entries is worked through over several passes.
	reclaimPages    = 100
	retryPause      = time.Second     // after a server error, before reading again
	progressEvery   = 500             // entries between progress lines
	seedBatch       = 1000            // XADDs per pipelined round trip
	shutdownTimeout = 5 * time.Second // for connections still in use at exit

	demoPoison  = 1  // demo entries whose handler always fails
	demoCrashed = 10 // demo entries taken by a consumer that "crashes" at once
)

func main() {
	host, _ := os.Hostname()
	cfg := config{poison: demoPoison, crashed: demoCrashed}
	flag.StringVar(&cfg.addr, "addr", os.Getenv("REDIS_URL"),
		"Redis URL (redis://...) or host:port; default $REDIS_URL, else an embedded server fed -entries entries")
	flag.StringVar(&cfg.stream, "stream", "jobs", "stream name; dead letters go to <stream>:dead")
	flag.StringVar(&cfg.group, "group", "workers", "consumer group")
	flag.StringVar(&cfg.consumer, "consumer", fmt.Sprintf("%s-%d", host, os.Getpid()),
		"consumer name, unique per process")
	flag.IntVar(&cfg.entries, "entries", 1000, "entries to add to the embedded server")
	flag.IntVar(&cfg.concurrency, "concurrency", 4,
		"entries read and handled at once; as many reclaimed entries may run beside them")
	flag.DurationVar(&cfg.handlerTimeout, "handler-timeout", 0,
		"longest a handler may run (default 10s, 100ms in the demo)")
	flag.DurationVar(&cfg.minIdle, "min-idle", 0,
		"how long an entry stays unacknowledged before another consumer takes it over (default 3 × handler-timeout)")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, release := stopOnSignal(logger)
	_, err := run(ctx, cfg, logger)
	release()
	if err != nil {
		logger.Error("stream consumer failed", "err", err)
		os.Exit(1)
	}
}

// stopOnSignal returns a context that SIGINT or SIGTERM ends, saying so,
// after which a second signal kills at once. release stops listening: it
// says nothing, so a run that ended on its own exits quietly.
func stopOnSignal(logger *slog.Logger) (ctx context.Context, release func()) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	quiet := context.AfterFunc(ctx, func() {
		logger.Info("stopping: running handlers will finish; a second signal kills at once")
		stop() // restores the default action, should handlers take too long
	})
	return ctx, func() {
		quiet()
		stop()
	}
}

// config is what run needs; main fills it from flags.
type config struct {
	addr            string // "": the demo, on an embedded server
	stream, group   string
	consumer        string
	concurrency     int
	handlerTimeout  time.Duration
	minIdle         time.Duration
	stopAfter       int // stop once this many entries are settled; 0: when ctx ends
	entries, poison int // the demo's entries, and how many more always fail
	crashed         int // the demo's entries left pending by a dead consumer
}

// summary counts what a run did.
type summary struct {
	Handled      int64 // handlers that succeeded and were acked, duplicates included
	Duplicates   int64 // entries handled again (counted only with stopAfter)
	Retried      int64 // handler failures, each leaving its entry pending for a retry
	DeadLettered int64
	Reclaimed    int64 // entries taken over with XAUTOCLAIM
}

// run consumes until ctx ends (a signal, which is a normal stop) or, in
// the demo, until every seeded entry is settled.
func run(ctx context.Context, cfg config, logger *slog.Logger) (summary, error) {
	demo := cfg.addr == ""
	if demo {
		// The demo's handlers take microseconds, so it can afford timings
		// that show retries and reclaims within seconds.
		cfg.handlerTimeout = cmp.Or(cfg.handlerTimeout, 100*time.Millisecond)
		cfg.stopAfter = cfg.entries + cfg.poison
	}
	cfg.handlerTimeout = cmp.Or(cfg.handlerTimeout, 10*time.Second)
	// Another consumer may take an entry once it has been pending for
	// min-idle. A batch's handlers start as it arrives, so an entry is acked
	// within handler-timeout plus one XACK; min-idle must exceed that with
	// room to spare, or a slow handler's entry is handled twice at once.
	cfg.minIdle = cmp.Or(cfg.minIdle, 3*cfg.handlerTimeout)
	if cfg.concurrency < 1 || cfg.handlerTimeout <= 0 || cfg.minIdle < 2*cfg.handlerTimeout {
		return summary{}, fmt.Errorf("need concurrency >= 1 (got %d) and min-idle (%v) >= 2 × handler-timeout (%v) > 0",
			cfg.concurrency, cfg.minIdle, cfg.handlerTimeout)
	}

	var opts redisalive.Options
	if demo {
		mr, err := miniredis.Run()
		if err != nil {
			return summary{}, err
		}
		defer mr.Close()
		opts.Addr = mr.Addr()
	} else {
		var err error
		if opts, err = poolOptions(cfg.addr); err != nil {
			return summary{}, err
		}
	}
	opts.Logger = logger
	// One connection per handler's XACK, for new and reclaimed entries,
	// plus the blocked read and the reclaimer's commands.
	opts.MaxActive = cmp.Or(opts.MaxActive, 2*cfg.concurrency+2)
	p, err := redisalive.NewPool(opts)
	if err != nil {
		return summary{}, err
	}

	ctx, finish := context.WithCancel(ctx)
	defer finish()
	w := &worker{p: p, cfg: cfg, logger: logger, deadKey: cfg.stream + ":dead"}
	if cfg.stopAfter > 0 {
		w.seen, w.done = make(map[string]int), finish
	}
	err = createGroup(ctx, p, cfg.stream, cfg.group)
	if err == nil && demo {
		err = seed(ctx, p, cfg.stream, cfg.group, cfg.entries, cfg.poison, cfg.crashed)
	}
	start := time.Now()
	if err == nil {
		logger.Info("consuming", "stream", cfg.stream, "group", cfg.group, "consumer", cfg.consumer,
			"addr", opts.Addr, "concurrency", cfg.concurrency, "min_idle", cfg.minIdle)
		w.consume(ctx)
	}
	elapsed := time.Since(start)

	// consume has returned every connection it used; Shutdown closes them
	// and waits for any straggler, bounded.
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	shutdownErr := p.Shutdown(sctx)

	s := w.summary()
	fmt.Printf("handled %d entries (%d duplicates), %d retried, %d dead-lettered, %d reclaimed in %v\n",
		s.Handled, s.Duplicates, s.Retried, s.DeadLettered, s.Reclaimed, elapsed.Round(time.Millisecond))
	fmt.Printf("pool: %+v\n", p.Stats())
	if err != nil && ctx.Err() == nil {
		return s, err
	}
	return s, shutdownErr
}

// createGroup creates the group, and the stream if need be. "$" gives a
// new group only entries added from now on; use "0" to have it work
// through the stream's history too.
func createGroup(ctx context.Context, p *redisalive.Pool, stream, group string) error {
	_, err := p.Do(ctx, "XGROUP", "CREATE", stream, group, "$", "MKSTREAM")
	if err != nil && strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return nil // another worker, or our last run, created it
	}
	return err
}

// worker runs handlers on the group's entries and settles each: XACK after
// success, or XADD to the dead-letter stream with XACK after too many
// deliveries.
type worker struct {
	p       *redisalive.Pool
	cfg     config
	logger  *slog.Logger
	deadKey string

	retried, reclaimed atomic.Int64

	mu           sync.Mutex // guards the fields below
	handled      int64
	deadLettered int64
	seen         map[string]int // by entry ID, with stopAfter only: it grows without bound
	duplicates   int64
	done         func() // called once stopAfter entries are settled
}

// consume reads and reclaims until ctx ends, and returns once every
// handler it started has finished.
func (w *worker) consume(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { w.reclaimLoop(ctx) })
	w.read(ctx)
	wg.Wait()
}

// read hands new entries to handlers, a batch at a time, until ctx ends.
func (w *worker) read(ctx context.Context) {
	for {
		// On one socket BLOCK 0 would wait forever for a server that is
		// gone. p.Do sends it in rounds of BlockSlice, each read with a
		// deadline just past it, and redials when a round fails: a dead
		// link costs one round, and an idle stream never fails at
		// ReadTimeout.
		reply, err := w.p.Do(ctx, "XREADGROUP", "GROUP", w.cfg.group, w.cfg.consumer,
			"COUNT", w.cfg.concurrency, "BLOCK", 0, "STREAMS", w.cfg.stream, ">")
		var entries []entry
		if err == nil {
			entries, err = parseRead(reply)
		}
		if err != nil {
			if ctx.Err() != nil {
				// Entries the server delivered for a round we abandoned
				// are pending under our name; a reclaim takes them over
				// after min-idle.
				return
			}
			// Do retries network failures itself: this is a server error
			// such as LOADING, or NOGROUP once someone deleted the stream.
			w.logger.Warn("reading failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retryPause):
			}
			if err := createGroup(ctx, w.p, w.cfg.stream, w.cfg.group); err != nil && ctx.Err() == nil {
				w.logger.Warn("creating the group failed", "err", err)
			}
			continue
		}
		w.handleAll(ctx, entries)
	}
}

// reclaimLoop reclaims every min-idle/2, so an entry of a dead consumer
// waits at most 1.5 × min-idle, until ctx ends.
func (w *worker) reclaimLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.minIdle / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.reclaim(ctx); err != nil && ctx.Err() == nil {
			w.logger.Warn("reclaiming failed; retrying at the next tick", "err", err)
		}
	}
}

// reclaim takes over the entries pending for min-idle or longer, whoever
// held them: consumers that died, reads of ours whose reply was lost, and
// entries whose handler failed. It claims one page at a time and settles
// it before claiming the next: an entry claimed and left waiting would
// go idle again, and another consumer would take it too.
func (w *worker) reclaim(ctx context.Context) error {
	cursor := "0-0"
	for range reclaimPages {
		// [next cursor, entries], and on Redis 7 the IDs of entries deleted
		// from the stream, which it has dropped from the pending list.
		reply, err := redis.Values(w.p.Do(ctx, "XAUTOCLAIM", w.cfg.stream, w.cfg.group, w.cfg.consumer,
			w.cfg.minIdle.Milliseconds(), cursor, "COUNT", w.cfg.concurrency))
		var next string
		var claimed any
		if err == nil {
			_, err = redis.Scan(reply, &next, &claimed)
		}
		if err != nil {
			return err
		}
		entries, err := parseEntries(claimed)
		if err != nil {
			return err
		}
		w.reclaimed.Add(int64(len(entries)))
		// Claimed entries are ours now: settle them even after a signal.
		if err := w.settleClaimed(context.WithoutCancel(ctx), entries); err != nil {
			return err
		}
		if next == "0-0" { // the whole pending list has been scanned
			return nil
		}
		cursor = next
	}
	return nil
}

// settleClaimed dead-letters the claimed entries delivered more than
// maxDeliveries times and hands the others to handlers.
func (w *worker) settleClaimed(ctx context.Context, entries []entry) error {
	if len(entries) == 0 {
		return nil
	}
	counts, err := w.deliveries(ctx, entries)
	if err != nil {
		return err
	}
	var retry []entry
	for i, e := range entries {
		switch {
		case counts[i] == 0:
			continue // acked since it was claimed, by a late handler of its last owner
		case counts[i] <= maxDeliveries:
			retry = append(retry, e)
			continue
		}
		if err := w.deadLetter(ctx, e, counts[i]); err != nil {
			return err // still pending: the next pass tries again
		}
		w.logger.Warn("dead-lettered", "id", e.id, "deliveries", counts[i], "to", w.deadKey)
		w.settle(e.id, true)
	}
	w.handleAll(ctx, retry)
	return nil
}

// deliveries reads each entry's delivery count, which XAUTOCLAIM has just
// raised, from the pending entries list: XAUTOCLAIM's reply does not carry
// it. One pipelined round trip.
func (w *worker) deliveries(ctx context.Context, entries []entry) ([]int64, error) {
	c, err := w.p.Get(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for _, e := range entries {
		c.Send("XPENDING", w.cfg.stream, w.cfg.group, e.id, e.id, 1)
	}
	replies, err := redis.Values(redis.DoContext(c, ctx, ""))
	if err != nil {
		return nil, err
	}
	counts := make([]int64, len(entries))
	for i, r := range replies {
		// [[id, consumer, ms idle, deliveries]], or [] once acked: 0.
		rows, err := redis.Values(r, nil)
		if err == nil && len(rows) > 0 {
			var row []any
			if row, err = redis.Values(rows[0], nil); err == nil {
				_, err = redis.Scan(row, nil, nil, nil, &counts[i])
			}
		}
		if err != nil {
			return nil, fmt.Errorf("XPENDING %s: %v", entries[i].id, err)
		}
	}
	return counts, nil
}

// deadLetter copies an entry to the dead-letter stream with its ID and
// delivery count, and acks it, in one transaction: it is moved exactly
// once, even if this process dies halfway.
func (w *worker) deadLetter(ctx context.Context, e entry, deliveries int64) error {
	c, err := w.p.Get(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	args := []any{w.deadKey, "*", "source-id", e.id, "deliveries", deliveries}
	for _, f := range e.fields {
		args = append(args, f)
	}
	c.Send("MULTI")
	c.Send("XADD", args...)
	c.Send("XACK", w.cfg.stream, w.cfg.group, e.id)
	replies, err := redis.Values(redis.DoContext(c, ctx, "EXEC"))
	for _, r := range replies {
		if rerr, ok := r.(redis.Error); ok && err == nil {
			err = rerr // XADD or XACK failed: EXEC ran the other one alone
		}
	}
	return err
}

// handleAll runs a handler on every entry at once and returns when all
// have finished, so that each starts as soon as it is delivered: that is
// what keeps the time from delivery to XACK under min-idle. The cost is
// that the next batch waits for the slowest handler of this one.
func (w *worker) handleAll(ctx context.Context, entries []entry) {
	var wg sync.WaitGroup
	for _, e := range entries {
		wg.Go(func() { w.handleOne(ctx, e) })
	}
	wg.Wait()
}

func (w *worker) handleOne(ctx context.Context, e entry) {
	// A signal does not cut a running handler short: shutdown waits for
	// it, and its timeout bounds the wait.
	bg := context.WithoutCancel(ctx)
	hctx, cancel := context.WithTimeout(bg, w.cfg.handlerTimeout)
	err := func() (err error) {
		// A panic fails this entry alone instead of taking every running
		// handler down with the process.
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("handler panicked: %v", r)
			}
		}()
		return handle(hctx, e)
	}()
	cancel()
	if err != nil {
		// No XACK: the entry stays pending, and a reclaim hands it out
		// again after min-idle, up to maxDeliveries times.
		w.retried.Add(1)
		w.logger.Warn("handler failed; the entry stays pending for a retry", "id", e.id, "err", err)
		return
	}
	// bg has no deadline, so Do bounds the XACK by Pool.Bounds().Command.
	if _, err := w.p.Do(bg, "XACK", w.cfg.stream, w.cfg.group, e.id); err != nil {
		w.logger.Warn("ack failed; the entry will be handled again", "id", e.id, "err", err)
		return
	}
	w.settle(e.id, false)
}

// handle is the work to do for one entry. Return an error to have the
// entry retried, and return by ctx's deadline (-handler-timeout): an entry
// still being handled after min-idle may be taken over and handled twice.
// An entry can arrive twice anyway (an XACK lost with its connection), so
// the work must be idempotent.
func handle(ctx context.Context, e entry) error {
	// Real work goes here, such as send(ctx, e.field("job")).
	if strings.HasPrefix(e.field("job"), "poison/") {
		return errors.New("demo: a poison entry, whose handler always fails")
	}
	return nil
}

// settle counts an entry handled or dead-lettered and, with stopAfter,
// ends the run once that many distinct entries are settled.
func (w *worker) settle(id string, dead bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if dead {
		w.deadLettered++
	} else if w.handled++; w.handled%progressEvery == 0 {
		w.logger.Info("progress", "handled", w.handled)
	}
	if w.seen == nil {
		return
	}
	if w.seen[id]++; w.seen[id] > 1 {
		w.duplicates++
		w.logger.Warn("duplicate delivery", "id", id)
	}
	if len(w.seen) >= w.cfg.stopAfter {
		w.done()
	}
}

func (w *worker) summary() summary {
	w.mu.Lock()
	defer w.mu.Unlock()
	return summary{Handled: w.handled, Duplicates: w.duplicates, Retried: w.retried.Load(),
		DeadLettered: w.deadLettered, Reclaimed: w.reclaimed.Load()}
}

// entry is one stream entry: its ID and its field-value pairs.
type entry struct {
	id     string
	fields []string
}

func (e entry) field(name string) string {
	for i := 0; i+1 < len(e.fields); i += 2 {
		if e.fields[i] == name {
			return e.fields[i+1]
		}
	}
	return ""
}

// parseRead reads XREADGROUP's reply for one stream: [[stream, entries]].
func parseRead(reply any) ([]entry, error) {
	streams, err := redis.Values(reply, nil)
	if err != nil || len(streams) != 1 {
		return nil, fmt.Errorf("unexpected XREADGROUP reply %v", reply)
	}
	kv, err := redis.Values(streams[0], nil)
	if err != nil || len(kv) != 2 {
		return nil, fmt.Errorf("unexpected XREADGROUP reply %v", reply)
	}
	return parseEntries(kv[1])
}

// parseEntries reads a list of [id, [field, value, ...]].
func parseEntries(reply any) ([]entry, error) {
	items, err := redis.Values(reply, nil)
	entries := make([]entry, 0, len(items))
	for _, it := range items {
		if it == nil {
			continue // Redis 6.2's XAUTOCLAIM: an entry deleted from the stream
		}
		var e entry
		if pair, ok := it.([]any); !ok || len(pair) != 2 {
			return nil, fmt.Errorf("unexpected stream entry %v", it)
		} else if _, err := redis.Scan(pair, &e.id, &e.fields); err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return entries, err
}

// seed feeds the embedded server as a producer would, then lets a consumer
// take the first crashed entries and never ack them, as one that died
// would: they stay pending under its name until a reclaim takes them over.
func seed(ctx context.Context, p *redisalive.Pool, stream, group string, entries, poison, crashed int) error {
	c, err := p.Get(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	for sent := 0; sent < entries+poison; {
		for n := min(seedBatch, entries+poison-sent); n > 0; n-- {
			job := fmt.Sprintf("demo/%d", sent)
			if sent >= entries {
				job = fmt.Sprintf("poison/%d", sent-entries)
			}
			c.Send("XADD", stream, "*", "job", job)
			sent++
		}
		if _, err := redis.DoContext(c, ctx, ""); err != nil {
			return err
		}
	}
	if crashed > 0 {
		_, err = redis.DoContext(c, ctx, "XREADGROUP", "GROUP", group, "crashed-demo",
			"COUNT", crashed, "STREAMS", stream, ">")
	}
	return err
}

// poolOptions reads a redis:// URL or a bare host:port.
func poolOptions(addr string) (redisalive.Options, error) {
	if strings.Contains(addr, "://") {
		return redisalive.ParseURL(addr)
	}
	return redisalive.Options{Addr: addr}, nil
}
