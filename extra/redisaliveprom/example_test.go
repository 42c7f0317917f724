package redisaliveprom_test

import (
	"context"
	"fmt"
	"log"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/redisalive/redisalive"
	"github.com/redisalive/redisalive/extra/redisaliveprom"
)

// ExampleNewCollector registers a pool's collector; a service serves the
// registry with promhttp.HandlerFor, and this example prints one sample
// of a scrape instead.
func ExampleNewCollector() {
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

	reg := prometheus.NewRegistry()
	reg.MustRegister(redisaliveprom.NewCollector(p, "cache"))
	if _, err := p.Do(context.Background(), "SET", "greeting", "hello"); err != nil {
		log.Fatal(err)
	}

	families, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "redisalive_dials_total" {
			fmt.Println(f.GetName(), f.GetMetric()[0].GetLabel()[0].GetValue(), f.GetMetric()[0].GetCounter().GetValue())
		}
	}
	// Output: redisalive_dials_total cache 1
}
