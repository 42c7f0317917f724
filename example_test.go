package redisalive_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive"
)

// startExampleServer stands in for a real Redis so the examples run
// anywhere.
func startExampleServer() *miniredis.Miniredis {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	return mr
}

// examplePool returns a pool on a fresh miniredis and a func that closes
// both.
func examplePool(opts redisalive.Options) (*redisalive.Pool, func()) {
	mr := startExampleServer()
	opts.Addr = mr.Addr()
	p, err := redisalive.NewPool(opts)
	if err != nil {
		log.Fatal(err)
	}
	return p, func() { p.Close(); mr.Close() }
}

func Example() {
	mr := startExampleServer()
	defer mr.Close()

	p, err := redisalive.NewPool(redisalive.Options{Addr: mr.Addr()})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close() // the server releases every connection

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := p.Do(ctx, "SET", "greeting", "hello"); err != nil {
		log.Fatal(err)
	}
	v, err := redis.String(p.Do(ctx, "GET", "greeting"))
	fmt.Println(v, err)
	// Output: hello <nil>
}

func ExamplePool_Get() {
	p, stop := examplePool(redisalive.Options{})
	defer stop()

	c, err := p.Get(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close() // back to the pool

	// Pipeline two commands in one round trip.
	c.Send("INCR", "visits")
	c.Send("INCR", "visits")
	c.Flush()
	first, _ := redis.Int(c.Receive())
	second, _ := redis.Int(c.Receive())
	fmt.Println(first, second)
	// Output: 1 2
}

func ExamplePool_RedigoPool() {
	p, stop := examplePool(redisalive.Options{MaxActive: 1, PoolTimeout: time.Second})
	defer stop()

	// For code that takes a *redis.Pool. Its connections are p's.
	rp := p.RedigoPool()
	held := rp.Get()
	held.Do("SET", "greeting", "hello")

	// At MaxActive, Get waits for a connection, at most PoolTimeout.
	time.AfterFunc(50*time.Millisecond, func() { held.Close() })
	c := rp.Get()
	defer c.Close()
	v, err := redis.String(c.Do("GET", "greeting"))
	fmt.Println(v, err, p.Stats().WaitCount)
	// Output: hello <nil> 1
}

func ExamplePool_BRPop() {
	p, stop := examplePool(redisalive.Options{})
	defer stop()

	go func() {
		time.Sleep(50 * time.Millisecond)
		p.Do(context.Background(), "LPUSH", "jobs", "job-1")
	}()
	// Blocks until an element arrives or ctx ends, however the network fails.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key, value, err := p.BRPop(ctx, "jobs")
	fmt.Println(key, value, err)
	// Output: jobs job-1 <nil>
}

func ExamplePoolTimeoutError() {
	p, stop := examplePool(redisalive.Options{MaxActive: 1})
	defer stop()

	held, _ := p.Get(context.Background())
	defer held.Close()

	// A nested checkout on a full pool fails at its deadline instead of
	// deadlocking.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := p.Do(ctx, "PING")
	var pte *redisalive.PoolTimeoutError
	if errors.As(err, &pte) {
		fmt.Printf("timeout: %d/%d in use, ErrPoolTimeout=%t\n", pte.InUse, pte.MaxActive, errors.Is(err, redisalive.ErrPoolTimeout))
	}
	// Output: timeout: 1/1 in use, ErrPoolTimeout=true
}

func ExampleParseURL() {
	opts, err := redisalive.ParseURL("redis://:secret@cache:6380/2?read_timeout=500ms")
	fmt.Println(opts.Addr, opts.DB, opts.ReadTimeout, err)
	// Output: cache:6380 2 500ms <nil>
}

func ExamplePool_Do_blockingCommand() {
	p, stop := examplePool(redisalive.Options{ReadTimeout: time.Second})
	defer stop()
	ctx := context.Background()

	// A block time longer than ReadTimeout is no failure: the command waits
	// as long as it asks, in rounds, and returns the server's own reply.
	start := time.Now()
	reply, err := p.Do(ctx, "XREAD", "BLOCK", 1500, "STREAMS", "events", "$")
	fmt.Println(reply, err, time.Since(start) >= 1500*time.Millisecond)

	// BLOCK 0 waits until an entry arrives or ctx ends, and never hangs on
	// a dead link.
	go func() {
		time.Sleep(100 * time.Millisecond)
		p.Do(ctx, "XADD", "events", "1-1", "kind", "signup")
	}()
	reply, err = p.Do(ctx, "XREAD", "BLOCK", 0, "STREAMS", "events", "$")
	fmt.Printf("%s %v\n", reply, err)
	// Output:
	// <nil> <nil> true
	// [[events [[1-1 [kind signup]]]]] <nil>
}

func ExamplePool_Subscribe() {
	p, stop := examplePool(redisalive.Options{})
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	sub, err := p.Subscribe(ctx, "invalidations")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close() // nothing of it stays on the server
	p.Do(ctx, "PUBLISH", "invalidations", "user:42")

	msg, err := sub.Receive(ctx)
	switch {
	case errors.Is(err, redisalive.ErrMessagesLost):
		// The subscription reconnected: messages published meanwhile were
		// lost. Resynchronise from the source of truth, then go on.
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println(msg.Channel, string(msg.Data))
	}
	// Output: invalidations user:42
}

func ExampleDialError() {
	mr := startExampleServer()
	defer mr.Close()
	mr.RequireAuth("secret")
	p, err := redisalive.NewPool(redisalive.Options{Addr: mr.Addr(), Password: "wrong"})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	// A server that refuses the pool's configuration fails every call at
	// once, a blocking read with a context that never ends included.
	_, _, err = p.BRPop(context.Background(), "jobs")
	var de *redisalive.DialError
	var refusal redis.Error
	if errors.As(err, &de) && errors.As(err, &refusal) {
		fmt.Printf("step %s, misconfigured=%t: %s\n", de.Step, errors.Is(err, redisalive.ErrMisconfigured), refusal)
	}
	// Output: step AUTH, misconfigured=true: WRONGPASS invalid username-password pair
}
