package redisaliveotel_test

import (
	"context"
	"fmt"
	"log"

	"github.com/alicebob/miniredis/v2"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/extra/redisaliveotel"
)

// ExampleInstrumentMetrics reports a pool's metrics. A service gives its
// meter provider a reader that exports (OTLP, Prometheus), or leaves out
// WithMeterProvider to use the global one; the manual reader here lets
// the example print what was collected.
func ExampleInstrumentMetrics() {
	srv, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	p, err := redisalive.NewPool(redisalive.Options{Addr: srv.Addr()})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	if err := redisaliveotel.InstrumentMetrics(p, redisaliveotel.WithMeterProvider(mp), redisaliveotel.WithPoolName("cache")); err != nil {
		log.Fatal(err)
	}
	if _, err := p.Do(context.Background(), "SET", "greeting", "hello"); err != nil {
		log.Fatal(err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		log.Fatal(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == "db.client.operation.duration" {
			fmt.Printf("%s: %d command(s), in %s\n", m.Name, h.DataPoints[0].Count, m.Unit)
		}
	}
	// Output: db.client.operation.duration: 1 command(s), in s
}

// ExampleInstrumentTracing traces a pool's commands; the recorder stands
// in for an exporter.
func ExampleInstrumentTracing() {
	srv, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	p, err := redisalive.NewPool(redisalive.Options{Addr: srv.Addr()})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	recorder := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	if err := redisaliveotel.InstrumentTracing(p, redisaliveotel.WithTracerProvider(tp)); err != nil {
		log.Fatal(err)
	}
	if _, err := p.Do(context.Background(), "SET", "greeting", "hello"); err != nil {
		log.Fatal(err)
	}

	for _, s := range recorder.Ended() {
		fmt.Println(s.Name(), s.SpanKind())
	}
	// Output: SET client
}
