package observe_test

import (
	"context"
	"net"
	"sync"
	"testing"

	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/lgrun/lgrun/runtime"
)

// grpcReceiver is an OTLP/gRPC trace receiver on loopback.
type grpcReceiver struct {
	colltrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (g *grpcReceiver) Export(_ context.Context, req *colltrace.ExportTraceServiceRequest) (*colltrace.ExportTraceServiceResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			g.spans = append(g.spans, ss.Spans...)
		}
	}
	return &colltrace.ExportTraceServiceResponse{}, nil
}

// TestGRPCExport: OTEL_EXPORTER_OTLP_PROTOCOL=grpc sends the spans over
// OTLP/gRPC.
func TestGRPCExport(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	rcv := &grpcReceiver{}
	colltrace.RegisterTraceServiceServer(srv, rcv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	for k, v := range map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://" + lis.Addr().String(),
		"OTEL_EXPORTER_OTLP_PROTOCOL":        "grpc",
		"OTEL_EXPORTER_OTLP_INSECURE":        "true",
		"OTEL_METRICS_EXPORTER":              "none",
	} {
		t.Setenv(k, v)
	}
	tel := setupFromEnv(t)
	h := newHarness(t, tel, map[string]string{})
	g := h.load("../graphs/weather-agent.yaml")
	if res, err := h.eng.Run(context.Background(), g, h.saver, "t-grpc", nil); err != nil || res.Status != runtime.StatusDone {
		t.Fatalf("run: %v %v", res, err)
	}
	h.flush()
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	names := map[string]int{}
	for _, s := range rcv.spans {
		names[s.Name]++
	}
	if names["invoke_workflow weather-agent"] != 1 || names["chat gpt-4o-mini"] != 2 || names["execute_tool get_weather"] != 1 {
		t.Errorf("spans over gRPC: %v", names)
	}
}
