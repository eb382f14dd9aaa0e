// Package otlptest is an OTLP/HTTP receiver for tests: an httptest server
// that decodes the protobuf ExportTraceServiceRequest and
// ExportMetricsServiceRequest payloads the OTLP exporters send and keeps
// the spans and metrics for the test to check.
package otlptest

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	collmetric "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Receiver collects what OTLP/HTTP exporters send to its URL.
type Receiver struct {
	URL string // the base URL: set OTEL_EXPORTER_OTLP_ENDPOINT to it

	srv      *httptest.Server
	mu       sync.Mutex
	spans    []*Span
	metrics  []*metricpb.Metric
	resource map[string]any
	requests int
}

// Span is a received span with its attributes decoded.
type Span struct {
	*tracepb.Span
	TraceID, SpanID, ParentID string
	Attrs                     map[string]any
	Resource                  map[string]any
}

// Attr returns the span's attribute key ("" or nil when absent).
func (s *Span) Attr(key string) any { return s.Attrs[key] }

// New starts a receiver, stopped when the test ends.
func New(t testing.TB) *Receiver {
	r := &Receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	r.URL = r.srv.URL
	t.Cleanup(r.srv.Close)
	return r
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "content type "+ct, http.StatusUnsupportedMediaType)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	switch req.URL.Path {
	case "/v1/traces":
		var m colltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, rs := range m.ResourceSpans {
			res := attrMap(rs.GetResource().GetAttributes())
			r.resource = res
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					r.spans = append(r.spans, &Span{
						Span: s, TraceID: hex.EncodeToString(s.TraceId), SpanID: hex.EncodeToString(s.SpanId),
						ParentID: hex.EncodeToString(s.ParentSpanId), Attrs: attrMap(s.Attributes), Resource: res,
					})
				}
			}
		}
		writeProto(w, &colltrace.ExportTraceServiceResponse{})
	case "/v1/metrics":
		var m collmetric.ExportMetricsServiceRequest
		if err := proto.Unmarshal(b, &m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, rm := range m.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				r.metrics = append(r.metrics, sm.Metrics...)
			}
		}
		writeProto(w, &collmetric.ExportMetricsServiceResponse{})
	default:
		http.NotFound(w, req)
	}
}

func writeProto(w http.ResponseWriter, m proto.Message) {
	b, _ := proto.Marshal(m)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = io.Copy(w, bytes.NewReader(b))
}

// Spans returns the spans received so far, in start order.
func (r *Receiver) Spans() []*Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]*Span(nil), r.spans...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartTimeUnixNano < out[j].StartTimeUnixNano })
	return out
}

// Metrics returns the metrics received so far, by name (the last export
// of each wins: cumulative temporality).
func (r *Receiver) Metrics() map[string]*metricpb.Metric {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]*metricpb.Metric{}
	for _, m := range r.metrics {
		out[m.Name] = m
	}
	return out
}

// Named returns the spans named name.
func Named(spans []*Span, name string) []*Span {
	var out []*Span
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// Children returns the direct children of parent.
func Children(spans []*Span, parent *Span) []*Span {
	var out []*Span
	for _, s := range spans {
		if s.ParentID == parent.SpanID && s.TraceID == parent.TraceID {
			out = append(out, s)
		}
	}
	return out
}

// Tree renders the span tree under the roots, one span a line indented
// by depth: "name" for a quick look at a test failure, or golden checks.
func Tree(spans []*Span) string {
	var b strings.Builder
	byParent := map[string][]*Span{}
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanID] = true
	}
	var roots []*Span
	for _, s := range spans {
		if s.ParentID == "" || !ids[s.ParentID] {
			roots = append(roots, s)
			continue
		}
		byParent[s.ParentID] = append(byParent[s.ParentID], s)
	}
	var walk func(s *Span, depth int)
	walk = func(s *Span, depth int) {
		fmt.Fprintf(&b, "%s%s\n", strings.Repeat("  ", depth), s.Name)
		for _, c := range byParent[s.SpanID] {
			walk(c, depth+1)
		}
	}
	for _, s := range roots {
		walk(s, 0)
	}
	return b.String()
}

func attrMap(kvs []*commonpb.KeyValue) map[string]any {
	out := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		out[kv.Key] = value(kv.Value)
	}
	return out
}

func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range x.ArrayValue.Values {
			out = append(out, value(e))
		}
		return out
	}
	return nil
}
