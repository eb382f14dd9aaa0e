package main

import (
	"context"
	"fmt"
	"time"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/observe"
)

// engine returns the engine the commands load and run graphs with: the
// built-in kinds, reading API keys and LGRUN_PROVIDER through io.Getenv.
// All engine wiring of the CLI goes through package lgrun; opts add to it.
func (io *IO) engine(opts ...lgrun.Option) *lgrun.Engine {
	getenv := io.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	eng, err := lgrun.New(append([]lgrun.Option{lgrun.WithGetenv(getenv), lgrun.WithVersion(Version)}, opts...)...)
	if err != nil {
		// The options register no kinds, so nothing can clash.
		panic("lgrun: default engine: " + err.Error())
	}
	return eng
}

// telemetry configures OpenTelemetry from the standard OTEL_* environment
// variables (see docs/observability.md): the engine option that reports
// runs, and the function that flushes the exporters before the command
// returns. Without an OTLP endpoint both do nothing.
func (io *IO) telemetry(ctx context.Context) ([]lgrun.Option, func(), error) {
	opts, flush, _, err := io.telemetryWith(ctx, false)
	return opts, flush, err
}

// telemetryWith is telemetry that, with prometheus, also collects the
// metrics for a /metrics handler (lgrun serve), from the same meter
// provider as the OTLP export; the Telemetry is nil when OTEL_SDK_DISABLED.
func (io *IO) telemetryWith(ctx context.Context, prometheus bool) ([]lgrun.Option, func(), *observe.Telemetry, error) {
	getenv := io.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	tel, err := observe.Setup(ctx, observe.SetupOptions{Getenv: getenv, ServiceVersion: Version, Prometheus: prometheus})
	if err != nil || tel == nil {
		return nil, func() {}, nil, err
	}
	flush := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			fmt.Fprintf(io.Err, "warning: telemetry: %v\n", err)
		}
	}
	return []lgrun.Option{lgrun.WithObserver(tel.Observer)}, flush, tel, nil
}
