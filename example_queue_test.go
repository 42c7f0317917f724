package redisalive_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/gomodule/redigo/redis"

	"github.com/redisalive/redisalive"
)

func ExampleQueue() {
	p, stop := examplePool(redisalive.Options{})
	defer stop()
	q, err := redisalive.NewQueue(p, "emails", redisalive.QueueOptions{})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := q.Push(ctx, []byte("welcome alice"), []byte("welcome bob")); err != nil {
		log.Fatal(err)
	}

	sent := 0 // one handler at a time: Concurrency defaults to 1
	err = q.Consume(ctx, func(ctx context.Context, payload []byte) error {
		fmt.Println("sending", string(payload))
		if sent++; sent == 2 {
			cancel() // a real worker stops on SIGTERM instead
		}
		return nil
	})
	fmt.Println("stopped:", errors.Is(err, context.Canceled))
	fmt.Printf("%+v\n", q.Stats())
	// Output:
	// sending welcome alice
	// sending welcome bob
	// stopped: true
	// {Handled:2 Retried:0 DeadLettered:0 Requeued:0}
}

// A payload whose handler keeps failing is retried, then moved to the
// dead-letter list for an operator.
func ExampleQueue_deadLetter() {
	p, stop := examplePool(redisalive.Options{})
	defer stop()
	q, err := redisalive.NewQueue(p, "reports", redisalive.QueueOptions{MaxAttempts: 3})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := q.Push(ctx, []byte("report 7")); err != nil {
		log.Fatal(err)
	}

	attempts := 0
	err = q.Consume(ctx, func(ctx context.Context, payload []byte) error {
		if string(payload) == "end of example" {
			cancel()
			return nil
		}
		attempts++
		fmt.Printf("attempt %d: %s\n", attempts, payload)
		if attempts == 3 {
			// Queued behind the failing item, so it ends the example
			// once that item has been dead-lettered.
			if err := q.Push(ctx, []byte("end of example")); err != nil {
				return err
			}
		}
		return errors.New("malformed report")
	})
	if !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
	dead, err := redis.Strings(p.Do(context.Background(), "LRANGE", q.DeadLetterKey(), 0, -1))
	fmt.Printf("%s: %q %v\n", q.DeadLetterKey(), dead, err)
	// Output:
	// attempt 1: report 7
	// attempt 2: report 7
	// attempt 3: report 7
	// {reports}:dead: ["report 7"] <nil>
}
