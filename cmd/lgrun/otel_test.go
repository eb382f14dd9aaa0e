package main

import (
	"encoding/hex"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lgrun/lgrun/observe/otlptest"
)

// TestOTelFromEnvironment runs the real binary as a child process with the
// standard OTEL_* variables pointing at a local OTLP/HTTP receiver: the
// run's trace and metrics arrive, named by OTEL_SERVICE_NAME; the sampler
// of OTEL_TRACES_SAMPLER and OTEL_SDK_DISABLED are honoured.
func TestOTelFromEnvironment(t *testing.T) {
	bin := buildLgrun(t)
	db := filepath.Join(t.TempDir(), "lgrun.db")
	graph := filepath.Join("..", "..", "graphs", "weather-agent.yaml")
	lgrun := func(rcv *otlptest.Receiver, args []string, env ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(cmd.Environ(), "LGRUN_DB="+db, "NO_COLOR=1",
			"OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == exitPaused) {
			t.Fatalf("lgrun %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run := func(rcv *otlptest.Receiver, thread string, env ...string) {
		t.Helper()
		lgrun(rcv, []string{"run", graph, "--thread", thread}, env...)
	}

	rcv := otlptest.New(t)
	run(rcv, "cli-1", "OTEL_SERVICE_NAME=lgrun-cli", "OTEL_TRACES_SAMPLER=always_on")
	spans := rcv.Spans()
	roots := otlptest.Named(spans, "invoke_workflow weather-agent")
	if len(roots) != 1 {
		t.Fatalf("want one run span, got tree:\n%s", otlptest.Tree(spans))
	}
	if got := roots[0].Resource["service.name"]; got != "lgrun-cli" {
		t.Errorf("service.name = %v", got)
	}
	if got := roots[0].Attr("gen_ai.conversation.id"); got != "cli-1" {
		t.Errorf("conversation id = %v", got)
	}
	if n := len(otlptest.Named(spans, "chat gpt-4o-mini")); n != 2 {
		t.Errorf("%d chat spans, want 2:\n%s", n, otlptest.Tree(spans))
	}
	if rcv.Metrics()["gen_ai.client.token.usage"] == nil {
		t.Errorf("no token metrics exported")
	}

	off := otlptest.New(t)
	run(off, "cli-2", "OTEL_TRACES_SAMPLER=always_off")
	if n := len(off.Spans()); n != 0 {
		t.Errorf("always_off sampler: %d spans exported", n)
	}
	if off.Metrics()["lgrun.runs"] == nil {
		t.Errorf("always_off sampler: metrics still expected")
	}

	disabled := otlptest.New(t)
	run(disabled, "cli-3", "OTEL_SDK_DISABLED=true")
	if n, m := len(disabled.Spans()), len(disabled.Metrics()); n+m != 0 {
		t.Errorf("OTEL_SDK_DISABLED: %d spans, %d metrics exported", n, m)
	}

	// A run that pauses, resumed by another process: the resume's trace
	// links to the run's.
	paused := otlptest.New(t)
	lgrun(paused, []string{"run", filepath.Join("..", "..", "graphs", "approval.yaml"), "--thread", "cli-5"})
	lgrun(paused, []string{"resume", "--thread", "cli-5", "--value", `{"approved": true}`})
	runs := otlptest.Named(paused.Spans(), "invoke_workflow approval")
	if len(runs) != 2 {
		t.Fatalf("want the run and the resume, got:\n%s", otlptest.Tree(paused.Spans()))
	}
	first, resumed := runs[0], runs[1]
	if first.Attr("lgrun.status") != "interrupted" || resumed.Attr("lgrun.op") != "resume" || resumed.Attr("lgrun.status") != "done" {
		t.Errorf("runs: %v / %v", first.Attrs, resumed.Attrs)
	}
	if len(resumed.Links) != 1 || hex.EncodeToString(resumed.Links[0].SpanId) != first.SpanID || hex.EncodeToString(resumed.Links[0].TraceId) != first.TraceID {
		t.Errorf("the resume links to %v, want span %s of trace %s", resumed.Links, first.SpanID, first.TraceID)
	}

	bad := exec.Command(bin, "run", graph, "--thread", "cli-4")
	bad.Env = append(bad.Environ(), "LGRUN_DB="+db, "OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/json")
	out, err := bad.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Errorf("an unsupported protocol: %v\n%s", err, out)
	}
}
