package main

import (
	"context"
	"fmt"
	"net"
	"net/http"

	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/workers"
)

// serveMetrics serves Prometheus metrics on addr at /metrics and makes every Temporal client
// the factory dials report the SDK's metrics (and replctl's own) there.
func serveMetrics(f *Factory, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics %s: %w", addr, err)
	}
	m := workers.NewMetrics()
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.HTTPHandler())
	go func() { _ = http.Serve(ln, mux) }()
	dial := f.Dial
	f.Dial = func(ctx context.Context, o client.Options) (client.Client, error) {
		o.MetricsHandler = m.Handler()
		return dial(ctx, o)
	}
	fmt.Fprintf(f.ErrOut, "metrics on http://%s/metrics\n", ln.Addr())
	return nil
}
