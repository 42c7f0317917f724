// Package redisaliveotel reports a redisalive.Pool's metrics and traces its
// commands with OpenTelemetry.
//
// InstrumentMetrics follows the database semantic conventions
// (db.client.connection.* and db.client.operation.duration) and adds
// redisalive.client.* instruments for what they do not name: why
// connections were closed, rounds and redials of blocking reads,
// subscriptions and health checks. InstrumentTracing starts one client span
// per command, with an event for each redial of a blocking read, so a trace
// shows a consumer riding out a dead link.
//
// It is a module of its own so that the library's module does not depend on
// OpenTelemetry.
//
// # Attributes
//
// db.client.connection.pool.name is WithPoolName's name, or else the pool's
// Options.Addr. server.address and server.port come from Options.Addr (the
// socket path alone for a unix socket); db.namespace is Options.DB, the
// database index each connection is opened with, as the conventions advise
// when the current one (after a SELECT) is not known.
// db.operation.name is the command as the caller wrote it.
//
// error.type, set only when a command failed, is the error prefix of a
// Redis error reply (ERR, WRONGTYPE, ...; db.response.status_code then
// carries it too; _OTHER for a reply without one), pool_timeout (no free
// connection in time), pool_closed, canceled (the caller's context),
// timeout (its deadline, or a read or write deadline), eof (the server
// closed the connection), or else the Go type of the innermost error,
// such as *net.OpError.
package redisaliveotel

import (
	"errors"
	"net"
	"strconv"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/redisalive/redisalive"
)

// scope names this instrumentation to the meter and tracer providers.
const scope = "github.com/redisalive/redisalive/extra/redisaliveotel"

// Option configures InstrumentMetrics and InstrumentTracing.
type Option func(*config)

type config struct {
	meterProvider  metric.MeterProvider
	tracerProvider trace.TracerProvider
	poolName       string
}

// WithMeterProvider sets the meter provider InstrumentMetrics creates its
// instruments with. Default: otel.GetMeterProvider(), which forwards to
// the provider set by otel.SetMeterProvider, even one set later.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.meterProvider = mp }
}

// WithTracerProvider sets the tracer provider InstrumentTracing starts
// spans with. Default: otel.GetTracerProvider(), which forwards to the
// provider set by otel.SetTracerProvider, even one set later.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tracerProvider = tp }
}

// WithPoolName sets db.client.connection.pool.name, which tells the
// metrics of one pool from another's and so must be unique within the
// process. Default: the pool's Options.Addr.
func WithPoolName(name string) Option {
	return func(c *config) { c.poolName = name }
}

func newConfig(p *redisalive.Pool, opts []Option) (config, error) {
	if p == nil {
		return config{}, errors.New("redisaliveotel: nil *redisalive.Pool")
	}
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.meterProvider == nil {
		c.meterProvider = otel.GetMeterProvider()
	}
	if c.tracerProvider == nil {
		c.tracerProvider = otel.GetTracerProvider()
	}
	if c.poolName == "" {
		c.poolName = p.Options().Addr
	}
	return c, nil
}

// serverAttrs are the attributes every command's span and duration carry:
// the database system and where the pool sends its commands.
func serverAttrs(o redisalive.Options) []attribute.KeyValue {
	attrs := []attribute.KeyValue{semconv.DBSystemNameRedis, semconv.DBNamespace(strconv.Itoa(o.DB))}
	if o.Network == "unix" {
		return append(attrs, semconv.ServerAddress(o.Addr))
	}
	host, port, _ := net.SplitHostPort(o.Addr) // NewPool made sure a TCP address splits
	attrs = append(attrs, semconv.ServerAddress(host))
	if n, err := strconv.Atoi(port); err == nil { // not a service name such as "redis"
		attrs = append(attrs, semconv.ServerPort(n))
	}
	return attrs
}
