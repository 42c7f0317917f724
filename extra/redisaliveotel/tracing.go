package redisaliveotel

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/redisalive/redisalive"
)

// RedialEvent names the span event added to a blocking read's span each
// time a round failed on the network and the read went on on a new
// connection. Its attributes are error.type and exception.message, the
// failure that ended the round.
const RedialEvent = "redisalive.blocking.redial"

// InstrumentTracing traces each command a caller runs on p (Pool.Do, the
// blocking reads, and Do on a connection from Get; not the pool's own
// health checks) with a client span through the tracer provider
// (WithTracerProvider), a child of the span in the command's context. The
// span is named after the command and carries db.system.name,
// db.operation.name, server.address, server.port and db.namespace; a
// failed command's span has an error status, error.type and, for a Redis
// error reply, db.response.status_code (see the package doc). A blocking
// read gets a RedialEvent for each connection it replaced.
//
// Call it once per pool.
func InstrumentTracing(p *redisalive.Pool, opts ...Option) error {
	c, err := newConfig(p, opts)
	if err != nil {
		return err
	}
	server := serverAttrs(p.Options())
	t := &tracing{
		tracer: c.tracerProvider.Tracer(scope, trace.WithSchemaURL(semconv.SchemaURL)),
		starts: newCache(func(k opKey) []trace.SpanStartOption {
			attrs := append([]attribute.KeyValue{semconv.DBOperationName(k.cmd)}, server...)
			return []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...)}
		}),
	}
	p.AddHook(redisalive.Hook{Command: t.command, CommandDone: t.commandDone, Redial: t.redial})
	return nil
}

type tracing struct {
	tracer trace.Tracer
	// starts holds each command's span options, attributes included, so
	// that starting a span builds none of them.
	starts *cache[[]trace.SpanStartOption]
}

func (t *tracing) command(ctx context.Context, cmd string) context.Context {
	ctx, _ = t.tracer.Start(ctx, cmd, t.starts.get(opKey{cmd: cmd})...)
	return ctx
}

// commandDone ends the span command started: the hook is given the context
// its Command returned.
func (t *tracing) commandDone(ctx context.Context, _ string, _ time.Duration, err error) {
	span := trace.SpanFromContext(ctx)
	if err != nil {
		span.SetAttributes(classify(err).attrs()...)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// redial marks the blocking read's span: the hook is given the context the
// command runs with, which carries the span command started.
func (t *tracing) redial(ctx context.Context, _ string, err error) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.AddEvent(RedialEvent, trace.WithAttributes(
		semconv.ErrorTypeKey.String(classify(err).errType),
		semconv.ExceptionMessage(err.Error()),
	))
}
