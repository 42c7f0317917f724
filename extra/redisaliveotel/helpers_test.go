package redisaliveotel_test

import (
	"context"
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/internal/pooltest"
)

// newMiniPool starts a miniredis server and a pool on it, both closed when
// the test ends.
func newMiniPool(t *testing.T, opts redisalive.Options) *redisalive.Pool {
	p, _ := pooltest.OnMiniredis(t, opts)
	return p
}

// newMeterProvider returns an SDK meter provider whose metrics reader
// collects, shut down when the test ends.
func newMeterProvider(t *testing.T) (*sdkmetric.MeterProvider, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { require.NoError(t, mp.Shutdown(context.Background())) })
	return mp, reader
}

// newTracerProvider returns an SDK tracer provider whose spans the
// recorder keeps, shut down when the test ends.
func newTracerProvider(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	recorder := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
	return tp, recorder
}

// collect returns the metrics reader has now, by name.
func collect(t *testing.T, reader *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	byName := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			byName[m.Name] = m
		}
	}
	return byName
}

// points returns m's data points, keyed by their attributes other than
// db.client.connection.pool.name (as attrKey renders them): a sum's
// value, or a histogram's count. It fails t unless every point names
// the pool poolName.
func points(t *testing.T, m metricdata.Metrics, poolName string) map[string]float64 {
	t.Helper()
	got := map[string]float64{}
	add := func(attrs attribute.Set, v float64) {
		name, _ := attrs.Value(semconv.DBClientConnectionPoolNameKey)
		require.Equal(t, poolName, name.AsString(), "%s: db.client.connection.pool.name of a point with %s", m.Name, attrs.Encoded(attribute.DefaultEncoder()))
		rest, _ := attrs.Filter(func(kv attribute.KeyValue) bool { return kv.Key != semconv.DBClientConnectionPoolNameKey })
		got[attrKey(rest.ToSlice()...)] = v
	}
	switch data := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, dp := range data.DataPoints {
			add(dp.Attributes, float64(dp.Value))
		}
	case metricdata.Histogram[float64]:
		for _, dp := range data.DataPoints {
			add(dp.Attributes, float64(dp.Count))
		}
	default:
		t.Fatalf("%s: got data of type %T, want a Sum[int64] or a Histogram[float64]", m.Name, m.Data)
	}
	return got
}

// attrKey renders attributes in a fixed order, for comparing them.
func attrKey(kv ...attribute.KeyValue) string {
	set := attribute.NewSet(kv...)
	return set.Encoded(attribute.DefaultEncoder())
}

// commandAttrs are the attributes every span and every duration of a
// command to addr have.
func commandAttrs(t *testing.T, addr, cmd string) []attribute.KeyValue {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	n, err := strconv.Atoi(port)
	require.NoError(t, err)
	return []attribute.KeyValue{semconv.DBSystemNameRedis, semconv.DBOperationName(cmd), semconv.DBNamespace("0"),
		semconv.ServerAddress(host), semconv.ServerPort(n)}
}

// spanNamed returns the one ended span named name.
func spanNamed(t *testing.T, spans []sdktrace.ReadOnlySpan, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			found = append(found, s)
		}
	}
	require.Len(t, found, 1, "spans named %s", name)
	return found[0]
}
