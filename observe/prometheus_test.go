package observe_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/observe"
	"github.com/lgrun/lgrun/runtime"
)

// TestPrometheusHandler scrapes the /metrics handler after a run of the
// offline weather agent and parses it with the Prometheus text parser.
func TestPrometheusHandler(t *testing.T) {
	rd, handler, err := observe.NewPrometheus()
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	defer mp.Shutdown(context.Background())
	obs, err := observe.New(observe.Options{MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := lgrun.New(lgrun.WithGetenv(func(string) string { return "" }), lgrun.WithObserver(obs))
	if err != nil {
		t.Fatal(err)
	}
	db, err := checkpoint.OpenSQLite(filepath.Join(t.TempDir(), "lgrun.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	g, diags := eng.Load("../graphs/weather-agent.yaml")
	if g == nil {
		t.Fatal(diags)
	}
	for _, th := range []string{"p1", "p2"} {
		if res, err := eng.Run(context.Background(), g, db, th, nil); err != nil || res.Status != runtime.StatusDone {
			t.Fatalf("run %s: %v %v", th, res, err)
		}
	}
	// The server feeds the queue gauge.
	obs.QueuedRuns().Add(context.Background(), 3)

	srv := httptest.NewServer(handler)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.Label {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	fam := func(name string, typ dto.MetricType) *dto.MetricFamily {
		t.Helper()
		f := fams[name]
		if f == nil {
			var names []string
			for n := range fams {
				names = append(names, n)
			}
			t.Fatalf("no metric family %q; have %v", name, names)
		}
		if f.GetType() != typ {
			t.Fatalf("%s is a %v, want %v", name, f.GetType(), typ)
		}
		return f
	}
	tokens := map[string]float64{}
	for _, m := range fam("gen_ai_client_token_usage", dto.MetricType_HISTOGRAM).Metric {
		if label(m, "gen_ai_request_model") != "gpt-4o-mini" || label(m, "gen_ai_provider_name") != "mock" {
			t.Errorf("token usage labels %v", m.Label)
		}
		tokens[label(m, "gen_ai_token_type")] += m.GetHistogram().GetSampleSum()
	}
	// Two runs of two calls: 85+121 input and 17+9 output tokens each.
	if tokens["input"] != 2*(85+121) || tokens["output"] != 2*(17+9) {
		t.Errorf("token sums %v", tokens)
	}
	var calls uint64
	for _, m := range fam("gen_ai_client_operation_duration_seconds", dto.MetricType_HISTOGRAM).Metric {
		calls += m.GetHistogram().GetSampleCount()
	}
	if calls != 4 {
		t.Errorf("operation duration count %d, want 4", calls)
	}
	var done float64
	for _, m := range fam("lgrun_runs_total", dto.MetricType_COUNTER).Metric {
		if label(m, "lgrun_status") == "done" && label(m, "lgrun_graph") == "weather-agent" {
			done += m.GetCounter().GetValue()
		}
	}
	if done != 2 {
		t.Errorf("runs done = %v, want 2", done)
	}
	kinds := map[string]uint64{}
	for _, m := range fam("lgrun_node_duration_seconds", dto.MetricType_HISTOGRAM).Metric {
		kinds[label(m, "lgrun_node_kind")] += m.GetHistogram().GetSampleCount()
	}
	if kinds["llm"] != 4 || kinds["tools"] != 2 || kinds["set"] != 2 {
		t.Errorf("node durations by kind %v", kinds)
	}
	var steps uint64
	for _, m := range fam("lgrun_step_duration_seconds", dto.MetricType_HISTOGRAM).Metric {
		steps += m.GetHistogram().GetSampleCount()
	}
	if steps != 8 {
		t.Errorf("steps %d, want 8", steps)
	}
	var cost float64
	for _, m := range fam("lgrun_cost_USD_total", dto.MetricType_COUNTER).Metric {
		cost += m.GetCounter().GetValue()
	}
	if want := 2 * ((85+121)*0.15 + (17+9)*0.60) / 1e6; cost < want*0.999 || cost > want*1.001 {
		t.Errorf("cost %v, want %v", cost, want)
	}
	if f := fam("lgrun_checkpoint_commit_duration_seconds", dto.MetricType_HISTOGRAM); f.Metric[0].GetHistogram().GetSampleCount() == 0 {
		t.Errorf("no commits measured")
	}
	if v := fam("lgrun_runs_active", dto.MetricType_GAUGE).Metric[0].GetGauge().GetValue(); v != 0 {
		t.Errorf("active runs %v after the runs ended", v)
	}
	if v := fam("lgrun_runs_queued", dto.MetricType_GAUGE).Metric[0].GetGauge().GetValue(); v != 3 {
		t.Errorf("queued runs %v, want 3", v)
	}
}

// TestSetupOff: with no endpoint Setup configures nothing; asking for the
// Prometheus handler alone gives metrics without exporters.
func TestSetupOff(t *testing.T) {
	none := func(string) string { return "" }
	tel, err := observe.Setup(context.Background(), observe.SetupOptions{Getenv: none})
	if err != nil || tel != nil {
		t.Fatalf("Setup without an endpoint: %v, %v", tel, err)
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	tel, err = observe.Setup(context.Background(), observe.SetupOptions{Getenv: none, Prometheus: true})
	if err != nil || tel == nil || tel.Metrics == nil {
		t.Fatalf("Setup with Prometheus: %v, %v", tel, err)
	}
	defer tel.Shutdown(context.Background())
	tel.Observer.QueuedRuns().Add(context.Background(), 2)
	srv := httptest.NewServer(tel.Metrics)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if f := fams["lgrun_runs_queued"]; f == nil || f.Metric[0].GetGauge().GetValue() != 2 {
		t.Errorf("lgrun_runs_queued = %v", f)
	}
	for _, bad := range []map[string]string{
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
		{"OTEL_TRACES_EXPORTER": "zipkin"},
	} {
		if _, err := observe.Setup(context.Background(), observe.SetupOptions{Getenv: func(k string) string { return bad[k] }}); err == nil {
			t.Errorf("Setup accepted %v", bad)
		}
	}
	disabled := map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
	if tel, err := observe.Setup(context.Background(), observe.SetupOptions{Getenv: func(k string) string { return disabled[k] }, Prometheus: true}); tel != nil || err != nil {
		t.Errorf("OTEL_SDK_DISABLED: %v, %v", tel, err)
	}
}
