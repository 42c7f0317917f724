package redisaliveotel_test

import (
	"context"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/extra/redisaliveotel"
	"github.com/redisalive/redisalive/internal/faultproxy"
	"github.com/redisalive/redisalive/internal/redistest"
	"github.com/redisalive/redisalive/internal/testkit"
)

// TestInstrumentTracingStartsOneClientSpanPerCommand: Do and Do on a
// connection from Get each get a client span named after the command, a
// child of the caller's span, with the database and server attributes;
// the connection's context-free Do starts a trace of its own.
func TestInstrumentTracingStartsOneClientSpanPerCommand(t *testing.T) {
	p := newMiniPool(t, redisalive.Options{})
	tp, recorder := newTracerProvider(t)
	require.NoError(t, redisaliveotel.InstrumentTracing(p, redisaliveotel.WithTracerProvider(tp)))

	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	_, err := p.Do(ctx, "SET", "k", "v")
	require.NoError(t, err)
	c, err := p.Get(ctx)
	require.NoError(t, err)
	_, err = c.(redis.ConnWithContext).DoContext(ctx, "GET", "k")
	require.NoError(t, err)
	_, err = c.Do("PING")
	require.NoError(t, err)
	require.NoError(t, c.Close())
	parent.End()

	spans := recorder.Ended()
	require.Len(t, spans, 4, "spans: SET, GET, PING and the caller's")
	for _, cmd := range []string{"SET", "GET", "PING"} {
		s := spanNamed(t, spans, cmd)
		assert.Equal(t, trace.SpanKindClient, s.SpanKind(), "%s: span kind", cmd)
		assert.ElementsMatch(t, commandAttrs(t, p.Options().Addr, cmd), s.Attributes(), "%s: attributes", cmd)
		assert.Equal(t, codes.Unset, s.Status().Code, "%s: status", cmd)
		assert.Empty(t, s.Events(), "%s: events", cmd)
		if cmd == "PING" {
			assert.False(t, s.Parent().IsValid(), "PING without a context: got parent %v, want none", s.Parent().SpanID())
		} else {
			assert.Equal(t, parent.SpanContext().SpanID(), s.Parent().SpanID(), "%s: parent", cmd)
		}
	}
}

// TestInstrumentTracingMarksFailedCommandsWithTheirErrorType: a Redis
// error reply and a pool timeout each end their span with an error status
// and error.type; the reply's prefix is db.response.status_code too.
func TestInstrumentTracingMarksFailedCommandsWithTheirErrorType(t *testing.T) {
	p := newMiniPool(t, redisalive.Options{MaxActive: 1})
	tp, recorder := newTracerProvider(t)
	require.NoError(t, redisaliveotel.InstrumentTracing(p, redisaliveotel.WithTracerProvider(tp)))
	ctx := context.Background()

	_, err := p.Do(ctx, "SET", "k", "v")
	require.NoError(t, err)
	_, err = p.Do(ctx, "LPUSH", "k", "x")
	var reply redis.Error
	require.ErrorAs(t, err, &reply)
	held, err := p.Get(ctx)
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err = p.Do(short, "PING")
	cancel()
	require.ErrorIs(t, err, redisalive.ErrPoolTimeout)
	require.NoError(t, held.Close())

	spans := recorder.Ended()
	for cmd, failure := range map[string][]attribute.KeyValue{
		"LPUSH": {semconv.ErrorTypeKey.String("WRONGTYPE"), semconv.DBResponseStatusCode("WRONGTYPE")},
		"PING":  {semconv.ErrorTypeKey.String("pool_timeout")},
	} {
		s := spanNamed(t, spans, cmd)
		assert.Equal(t, codes.Error, s.Status().Code, "%s: status", cmd)
		assert.NotEmpty(t, s.Status().Description, "%s: status description", cmd)
		assert.ElementsMatch(t, append(commandAttrs(t, p.Options().Addr, cmd), failure...), s.Attributes(), "%s: attributes", cmd)
	}
	assert.Equal(t, codes.Unset, spanNamed(t, spans, "SET").Status().Code, "SET: status")
}

// TestInstrumentTracingAddsARedialEventWhenBRPopRidesOutADeadLink: a
// BRPop whose link goes silent redials, and its span, which ends well once
// the link heals and an element arrives, has a RedialEvent for each
// connection it replaced, saying why.
func TestInstrumentTracingAddsARedialEventWhenBRPopRidesOutADeadLink(t *testing.T) {
	srv := redistest.Start(t)
	proxy, err := faultproxy.New(srv.Addr())
	require.NoError(t, err)
	defer proxy.Close()
	p, err := redisalive.NewPool(redisalive.Options{Addr: proxy.Addr(), BlockSlice: 200 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, DialTimeout: 300 * time.Millisecond})
	require.NoError(t, err)
	defer p.Close()
	tp, recorder := newTracerProvider(t)
	require.NoError(t, redisaliveotel.InstrumentTracing(p, redisaliveotel.WithTracerProvider(tp)))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	popped := make(chan error, 1)
	go func() {
		_, _, err := p.BRPop(ctx, "jobs")
		popped <- err
	}()
	testkit.WaitFor(t, 2*time.Second, "first round", func() bool { return p.Stats().BlockingRounds >= 1 })
	proxy.Blackhole()
	testkit.WaitFor(t, 5*time.Second, "a redial", func() bool { return p.Stats().BlockingRedials >= 1 })
	proxy.Heal()
	srv.Do(t, "LPUSH", "jobs", "after-heal")
	select {
	case err := <-popped:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("BRPop: no element within 5s of healing")
	}

	s := spanNamed(t, recorder.Ended(), "BRPOP")
	assert.Equal(t, codes.Unset, s.Status().Code, "status")
	assert.ElementsMatch(t, commandAttrs(t, proxy.Addr(), "BRPOP"), s.Attributes())
	redials := p.Stats().BlockingRedials
	require.Len(t, s.Events(), int(redials), "one event per redial")
	for i, e := range s.Events() {
		assert.Equal(t, redisaliveotel.RedialEvent, e.Name)
		set := attribute.NewSet(e.Attributes...)
		errType, _ := set.Value(semconv.ErrorTypeKey)
		msg, _ := set.Value(semconv.ExceptionMessageKey)
		if i == 0 {
			assert.Equal(t, "timeout", errType.AsString(), "error.type of the first redial: the round failed at its read deadline")
		}
		assert.NotEmpty(t, errType.AsString(), "error.type of %v", e.Attributes)
		assert.NotEmpty(t, msg.AsString(), "exception.message of %v", e.Attributes)
	}
}
