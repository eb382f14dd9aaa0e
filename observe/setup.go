package observe

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Environment variables read by [Setup] itself; the SDK and the OTLP
// exporters read the rest of the standard OTEL_* variables (endpoint,
// headers, timeouts, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_SAMPLER, OTEL_METRIC_EXPORT_INTERVAL …).
const (
	EnvSDKDisabled    = "OTEL_SDK_DISABLED"
	EnvEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvMetricEndpoint = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
	EnvProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvTracesExporter = "OTEL_TRACES_EXPORTER"
	EnvMetricExporter = "OTEL_METRICS_EXPORTER"
	// EnvCaptureContent is the GenAI conventions' opt-in to recording
	// prompts and replies ("true").
	EnvCaptureContent = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
	// EnvStepSpans "false" leaves out the superstep spans
	// (Options.NoStepSpans).
	EnvStepSpans = "LGRUN_OTEL_STEP_SPANS"
)

// SetupOptions configure [Setup].
type SetupOptions struct {
	// Getenv reads the variables Setup decides by; the OTLP exporters
	// read the process environment themselves.
	Getenv func(string) string
	// ServiceVersion is the service.version resource attribute.
	ServiceVersion string
	// Prometheus also collects the metrics for [Telemetry.Metrics], a
	// Prometheus text handler (for `lgrun serve`'s /metrics).
	Prometheus bool
	// CaptureContent records prompts and replies even without
	// OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true.
	CaptureContent bool
}

// Telemetry is a configured SDK and the observer that reports to it.
type Telemetry struct {
	Observer *Observer
	// Metrics serves the metrics in the Prometheus text format; nil
	// unless SetupOptions.Prometheus.
	Metrics http.Handler
	// Propagator reads and writes W3C traceparent headers.
	Propagator propagation.TextMapPropagator
	shutdown   []func(context.Context) error
}

// Shutdown flushes and stops the exporters; call it before the process
// exits. A nil Telemetry has nothing to shut down.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// Setup configures tracing and metrics from the standard environment
// variables. It returns nil (and no error) when there is nothing to
// report to: OTEL_SDK_DISABLED=true, or no OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT or a signal's own) and no Prometheus
// handler asked for. OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER may
// be "otlp" (the default) or "none"; OTEL_EXPORTER_OTLP_PROTOCOL
// "http/protobuf" (the default) or "grpc".
func Setup(ctx context.Context, o SetupOptions) (*Telemetry, error) {
	getenv := o.Getenv
	if getenv == nil {
		return nil, errors.New("observe: SetupOptions.Getenv is nil")
	}
	if strings.EqualFold(strings.TrimSpace(getenv(EnvSDKDisabled)), "true") {
		return nil, nil
	}
	traces, err := exporterOn(getenv, EnvTracesExporter, EnvTracesEndpoint)
	if err != nil {
		return nil, err
	}
	metrics, err := exporterOn(getenv, EnvMetricExporter, EnvMetricEndpoint)
	if err != nil {
		return nil, err
	}
	if !traces && !metrics && !o.Prometheus {
		return nil, nil
	}
	proto := strings.TrimSpace(getenv(EnvProtocol))
	switch proto {
	case "", "http/protobuf", "grpc":
	default:
		return nil, fmt.Errorf("%s=%q: lgrun exports OTLP over http/protobuf or grpc", EnvProtocol, proto)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", "lgrun")}
	if o.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", o.ServiceVersion))
	}
	// Later options win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// override the defaults.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("observe: resource: %w", err)
	}
	t := &Telemetry{Propagator: propagation.TraceContext{}}
	opts := Options{CaptureContent: o.CaptureContent || strings.EqualFold(strings.TrimSpace(getenv(EnvCaptureContent)), "true")}
	switch v := strings.TrimSpace(getenv(EnvStepSpans)); strings.ToLower(v) {
	case "", "true":
	case "false":
		opts.NoStepSpans = true
	default:
		return nil, fmt.Errorf("%s=%q: want true or false", EnvStepSpans, v)
	}
	if traces {
		var exp sdktrace.SpanExporter
		if proto == "grpc" {
			exp, err = otlptracegrpc.New(ctx)
		} else {
			exp, err = otlptracehttp.New(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("observe: OTLP trace exporter: %w", err)
		}
		// The sampler comes from OTEL_TRACES_SAMPLER (the SDK reads it).
		// A larger queue than the default 2048 (OTEL_BSP_MAX_QUEUE_SIZE
		// still wins): a burst of cheap steps makes spans faster than one
		// export drains them, and a full queue drops spans.
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithMaxQueueSize(bspQueue(getenv))), sdktrace.WithResource(res))
		t.shutdown = append(t.shutdown, tp.Shutdown)
		opts.TracerProvider = tp
	}
	var readers []sdkmetric.Option
	if metrics {
		var exp sdkmetric.Exporter
		if proto == "grpc" {
			exp, err = otlpmetricgrpc.New(ctx)
		} else {
			exp, err = otlpmetrichttp.New(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("observe: OTLP metric exporter: %w", err)
		}
		// The interval comes from OTEL_METRIC_EXPORT_INTERVAL.
		readers = append(readers, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
	}
	if o.Prometheus {
		rd, h, err := NewPrometheus()
		if err != nil {
			return nil, err
		}
		readers = append(readers, sdkmetric.WithReader(rd))
		t.Metrics = h
	}
	if len(readers) > 0 {
		mp := sdkmetric.NewMeterProvider(append(readers, sdkmetric.WithResource(res))...)
		t.shutdown = append(t.shutdown, mp.Shutdown)
		opts.MeterProvider = mp
	}
	if t.Observer, err = New(opts); err != nil {
		return nil, errors.Join(err, t.Shutdown(ctx))
	}
	return t, nil
}

// exporterOn reports whether a signal is exported by OTLP: its
// OTEL_*_EXPORTER is otlp (or unset) and an endpoint is set.
func exporterOn(getenv func(string) string, kind, endpoint string) (bool, error) {
	switch v := strings.TrimSpace(getenv(kind)); v {
	case "none":
		return false, nil
	case "", "otlp":
		return getenv(EnvEndpoint) != "" || getenv(endpoint) != "", nil
	default:
		return false, fmt.Errorf("%s=%q: lgrun exports by otlp (or none)", kind, v)
	}
}

// NewPrometheus returns a metric reader and the handler that serves what
// it collects in the Prometheus text format, on a registry of its own.
// Add the reader to a MeterProvider (Setup does) and mount the handler
// at /metrics.
func NewPrometheus() (sdkmetric.Reader, http.Handler, error) {
	reg := prometheus.NewRegistry()
	rd, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, fmt.Errorf("observe: prometheus exporter: %w", err)
	}
	return rd, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Timeout: 10 * time.Second}), nil
}

// w3c reads and writes the W3C traceparent and baggage headers.
var w3c = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// TraceHeaders returns a request's W3C trace context, normalised: its
// traceparent ("" when absent or invalid) and baggage ("" when none), to
// store with a run the request starts and hand to [RunContext] when the
// run executes.
func TraceHeaders(h http.Header) (traceparent, baggage string) {
	c := propagation.MapCarrier{}
	w3c.Inject(w3c.Extract(context.Background(), propagation.HeaderCarrier(h)), c)
	return c["traceparent"], c["baggage"]
}

type linkKey struct{}

// RunContext returns ctx carrying the trace context [TraceHeaders]
// returned, for the run that the request started. With link false the
// run's span is a child of the request's span (a run the client waits
// for: /runs/wait, /runs/stream); with link true (a background run, which
// a worker executes later, maybe after a restart) the run starts a trace
// of its own whose span links to the request's span, as the OpenTelemetry
// messaging conventions do for a message processed apart from its
// sender. The baggage goes into ctx either way.
func RunContext(ctx context.Context, traceparent, baggage string, link bool) context.Context {
	if traceparent == "" && baggage == "" {
		return ctx
	}
	rc := w3c.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent, "baggage": baggage})
	if !link {
		return rc
	}
	ctx = withBaggageOf(ctx, rc)
	if sc := trace.SpanContextFromContext(rc); sc.IsValid() {
		ctx = context.WithValue(ctx, linkKey{}, sc)
	}
	return ctx
}

// withBaggageOf copies the baggage of from into ctx.
func withBaggageOf(ctx, from context.Context) context.Context {
	return baggage.ContextWithBaggage(ctx, baggage.FromContext(from))
}

// Extract returns ctx carrying the remote span context of a request's
// W3C traceparent header, so a run started for the request joins its
// trace (for `lgrun serve`).
func Extract(ctx context.Context, h http.Header) context.Context {
	return propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(h))
}

// bspQueue is the batch span processor's queue size: OTEL_BSP_MAX_QUEUE_SIZE,
// or 8192.
func bspQueue(getenv func(string) string) int {
	if n, err := strconv.Atoi(strings.TrimSpace(getenv("OTEL_BSP_MAX_QUEUE_SIZE"))); err == nil && n > 0 {
		return n
	}
	return 8192
}
