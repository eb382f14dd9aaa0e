package server_test

import (
	"bytes"
	"encoding/hex"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lgrun/lgrun/observe/otlptest"
)

// TestServeTelemetry runs `lgrun serve` as a child process exporting to a
// real OTLP/HTTP receiver: a run the client waits for is a child of the
// request's traceparent span; a background run is a trace of its own
// whose run span links to it; /metrics (behind the API key) serves the
// GenAI histograms and the run metrics in the Prometheus text format.
func TestServeTelemetry(t *testing.T) {
	rcv := otlptest.New(t)
	db := filepath.Join(t.TempDir(), "lgrun.db")
	_, url := startServe(t, db, []string{"LGRUN_API_KEYS=k1", "OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_BSP_SCHEDULE_DELAY=50", "OTEL_TRACES_SAMPLER=parentbased_always_on"},
		filepath.Join("..", "graphs", "weather-agent.yaml"))

	do := func(method, path, body string, h map[string]string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, url+path, bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const (
		traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		fgSpan  = "00f067aa0ba902b7"
		bgSpan  = "00f067aa0ba902b8"
	)
	key := map[string]string{"x-api-key": "k1", "traceparent": "00-" + traceID + "-" + fgSpan + "-01", "baggage": "tenant=acme"}
	run := `{"assistant_id": "weather-agent", "input": {}, "if_not_exists": "create"}`
	if code, b := do("POST", "/threads/t-wait/runs/wait", run, key); code != 200 {
		t.Fatalf("wait run: %d %s", code, b)
	}
	key["traceparent"] = "00-" + traceID + "-" + bgSpan + "-01"
	code, b := do("POST", "/threads/t-bg/runs", run, key)
	if code != 200 {
		t.Fatalf("background run: %d %s", code, b)
	}
	rid := b[strings.Index(b, `"run_id":"`)+10:]
	rid = rid[:strings.IndexByte(rid, '"')]
	if code, b := do("GET", "/threads/t-bg/runs/"+rid+"/join", "", key); code != 200 {
		t.Fatalf("join: %d %s", code, b)
	}

	// The spans arrive after the batch delay.
	var runs []*otlptest.Span
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if runs = otlptest.Named(rcv.Spans(), "invoke_workflow weather-agent"); len(runs) == 2 {
			break
		}
	}
	if len(runs) != 2 {
		t.Fatalf("want 2 run spans, got:\n%s", otlptest.Tree(rcv.Spans()))
	}
	byThread := map[string]*otlptest.Span{}
	for _, s := range runs {
		byThread[s.Attr("lgrun.thread").(string)] = s
	}
	fg, bg := byThread["t-wait"], byThread["t-bg"]
	if fg == nil || bg == nil {
		t.Fatalf("run spans of threads t-wait and t-bg, got %v", byThread)
	}
	if fg.TraceID != traceID || fg.ParentID != fgSpan {
		t.Errorf("wait run: trace %s parent %s, want the client's %s/%s", fg.TraceID, fg.ParentID, traceID, fgSpan)
	}
	if n := len(otlptest.Named(rcv.Spans(), "chat gpt-4o-mini")); n < 4 {
		t.Errorf("%d chat spans, want 2 per run", n)
	}
	if bg.TraceID == traceID || bg.ParentID != "" {
		t.Errorf("background run: trace %s parent %q, want a trace of its own", bg.TraceID, bg.ParentID)
	}
	linked := false
	for _, l := range bg.Links {
		if hex.EncodeToString(l.TraceId) == traceID && hex.EncodeToString(l.SpanId) == bgSpan {
			linked = true
		}
	}
	if !linked {
		t.Errorf("background run span does not link to the request's span: %v", bg.Links)
	}

	// /metrics: behind the key (Prometheus sends it as a bearer token).
	if code, _ := do("GET", "/metrics", "", nil); code != 401 {
		t.Errorf("/metrics without a key: %d, want 401", code)
	}
	code, text := do("GET", "/metrics", "", map[string]string{"Authorization": "Bearer k1"})
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, text)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, text)
	}
	hist := func(name string, labels map[string]string) *dto.Histogram {
		t.Helper()
		f := fams[name]
		if f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
			t.Fatalf("no histogram %s in:\n%s", name, text)
		}
	next:
		for _, m := range f.Metric {
			for k, v := range labels {
				found := false
				for _, l := range m.Label {
					found = found || (l.GetName() == k && l.GetValue() == v)
				}
				if !found {
					continue next
				}
			}
			return m.Histogram
		}
		t.Fatalf("%s has no series %v:\n%s", name, labels, text)
		return nil
	}
	// Two runs of two model calls each.
	if h := hist("gen_ai_client_operation_duration_seconds", map[string]string{"gen_ai_request_model": "gpt-4o-mini", "gen_ai_provider_name": "mock"}); h.GetSampleCount() != 4 {
		t.Errorf("operation duration: %d samples, want 4", h.GetSampleCount())
	}
	if h := hist("gen_ai_client_token_usage", map[string]string{"gen_ai_token_type": "input"}); h.GetSampleCount() != 4 || h.GetSampleSum() <= 0 {
		t.Errorf("input token usage: %d samples sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	if h := hist("lgrun_step_duration_seconds", map[string]string{"lgrun_graph": "weather-agent", "lgrun_outcome": "committed"}); h.GetSampleCount() < 8 {
		t.Errorf("step duration: %d samples, want ≥ 8", h.GetSampleCount())
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f := fams[name]
		if f == nil {
			t.Fatalf("no metric %s in:\n%s", name, text)
		}
		sum := 0.0
	next:
		for _, m := range f.Metric {
			for k, v := range labels {
				found := false
				for _, l := range m.Label {
					found = found || (l.GetName() == k && l.GetValue() == v)
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return sum
	}
	if n := value("lgrun_runs_total", map[string]string{"lgrun_graph": "weather-agent", "lgrun_status": "done"}); n != 2 {
		t.Errorf("lgrun_runs_total{status=done} = %v, want 2", n)
	}
	if n := value("lgrun_runs_active", nil); n != 0 {
		t.Errorf("lgrun_runs_active = %v after the runs, want 0", n)
	}
	if n := value("lgrun_runs_queued", nil); n != 0 {
		t.Errorf("lgrun_runs_queued = %v after the runs, want 0", n)
	}
	if _, ok := fams["lgrun_runs_queued"]; !ok {
		t.Errorf("no lgrun_runs_queued gauge")
	}
}
