// Package observe reports lgrun runs to OpenTelemetry: a trace per run
// with spans for its supersteps, nodes, model calls and tool calls (named
// and attributed after the GenAI semantic conventions), and metrics (the
// GenAI client metrics and lgrun's own). [Observer] implements
// runtime.Observer and builtin.Observer; hand it to lgrun.WithObserver.
// [Setup] configures the SDK from the standard OTEL_* environment
// variables; [NewPrometheus] makes the handler `lgrun serve` mounts at
// /metrics.
//
// docs/observability.md describes every span and metric.
package observe

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/lgrun/lgrun/builtin"
	"github.com/lgrun/lgrun/runtime"
)

// ScopeName is the instrumentation scope of lgrun's spans and metrics.
const ScopeName = "github.com/lgrun/lgrun/observe"

// Attribute keys. The gen_ai.* keys are those of the GenAI semantic
// conventions (semconv v1.41.0, defined here because later semconv
// packages dropped them); lgrun's own are under lgrun.*.
const (
	keyOperation     = attribute.Key("gen_ai.operation.name")
	keyProvider      = attribute.Key("gen_ai.provider.name")
	keyRequestModel  = attribute.Key("gen_ai.request.model")
	keyTemperature   = attribute.Key("gen_ai.request.temperature")
	keyMaxTokens     = attribute.Key("gen_ai.request.max_tokens")
	keyStream        = attribute.Key("gen_ai.request.stream")
	keyResponseModel = attribute.Key("gen_ai.response.model")
	keyFinish        = attribute.Key("gen_ai.response.finish_reasons")
	keyInputTokens   = attribute.Key("gen_ai.usage.input_tokens")
	keyOutputTokens  = attribute.Key("gen_ai.usage.output_tokens")
	keyConversation  = attribute.Key("gen_ai.conversation.id")
	keyAgentName     = attribute.Key("gen_ai.agent.name")
	keyWorkflowName  = attribute.Key("gen_ai.workflow.name")
	keyToolName      = attribute.Key("gen_ai.tool.name")
	keyToolCallID    = attribute.Key("gen_ai.tool.call.id")
	keyToolType      = attribute.Key("gen_ai.tool.type")
	keyToolDesc      = attribute.Key("gen_ai.tool.description")
	keyToolArgs      = attribute.Key("gen_ai.tool.call.arguments")
	keyToolResult    = attribute.Key("gen_ai.tool.call.result")
	keyInputMsgs     = attribute.Key("gen_ai.input.messages")
	keyOutputMsgs    = attribute.Key("gen_ai.output.messages")
	keyTokenType     = attribute.Key("gen_ai.token.type")
	keyErrorType     = attribute.Key("error.type")

	keyThread     = attribute.Key("lgrun.thread")
	keyGraph      = attribute.Key("lgrun.graph")
	keyOp         = attribute.Key("lgrun.op")
	keyChild      = attribute.Key("lgrun.child")
	keyStatus     = attribute.Key("lgrun.status")
	keyCheckpoint = attribute.Key("lgrun.checkpoint.id")
	keyStep       = attribute.Key("lgrun.step")
	keyNext       = attribute.Key("lgrun.next")
	keyNode       = attribute.Key("lgrun.node")
	keyNodeKind   = attribute.Key("lgrun.node.kind")
	keyModel      = attribute.Key("lgrun.model")
	keyAttempt    = attribute.Key("lgrun.attempt")
	keyCost       = attribute.Key("lgrun.cost_usd")
	keyToolKind   = attribute.Key("lgrun.tool.kind")
	keyError      = attribute.Key("lgrun.error")
)

// Options configure an [Observer].
type Options struct {
	// TracerProvider and MeterProvider receive the spans and metrics;
	// the no-op providers when nil.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// CaptureContent records prompts, replies, tool arguments and tool
	// results on the spans (redacted of secrets). Off by default: they
	// may hold personal data.
	CaptureContent bool
	// NoStepSpans leaves out the superstep spans (node spans are then
	// children of the run span); the step metrics stay. Fewer spans for
	// graphs of many cheap steps (LGRUN_OTEL_STEP_SPANS=false).
	NoStepSpans bool
}

// Observer reports runs to OpenTelemetry. It is safe for concurrent use.
type Observer struct {
	tracer  trace.Tracer
	capture bool
	noSteps bool
	prop    propagation.TraceContext
	m       instruments
	sets    setCache
	runSets runSetCache
	names   nameCache
	nodes   nodeCache
	gen     genCache
}

var (
	_ runtime.Observer = (*Observer)(nil)
	_ builtin.Observer = (*Observer)(nil)
)

// New returns an observer that reports to the providers of o.
func New(o Options) (*Observer, error) {
	tp, mp := o.TracerProvider, o.MeterProvider
	if tp == nil {
		tp = trace.NewNoopTracerProvider()
	}
	if mp == nil {
		mp = noopMeterProvider()
	}
	m, err := newInstruments(mp.Meter(ScopeName))
	if err != nil {
		return nil, fmt.Errorf("observe: make instruments: %w", err)
	}
	return &Observer{tracer: tp.Tracer(ScopeName), capture: o.CaptureContent, noSteps: o.NoStepSpans, m: m}, nil
}

// QueuedRuns is the up-down counter of runs waiting for a worker
// (lgrun.runs.queued): the server adds 1 when it queues a run and -1 when
// the run starts or is dropped.
func (o *Observer) QueuedRuns() metric.Int64UpDownCounter { return o.m.queued }

// CaptureContent implements builtin.Observer.
func (o *Observer) CaptureContent() bool { return o.capture }

// runState travels in a run's context from StartRun to EndRun.
type runState struct {
	start time.Time
	span  trace.Span
}

type runKey struct{}

// StartRun implements runtime.Observer: a span "invoke_workflow <graph>".
func (o *Observer) StartRun(ctx context.Context, info runtime.RunInfo) context.Context {
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(
			keyOperation.String("invoke_workflow"), keyWorkflowName.String(info.Graph),
			keyConversation.String(info.Thread), keyThread.String(info.Thread),
			keyGraph.String(info.Graph), keyOp.String(info.Op), keyChild.Bool(info.Child),
		)}
	if l, ok := ctx.Value(linkKey{}).(trace.SpanContext); ok && !info.Child {
		// A background run: a trace of its own, linked to the request's.
		opts = append(opts, trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: l,
			Attributes: []attribute.KeyValue{attribute.String("lgrun.link", "request")}}))
	}
	ctx, span := o.tracer.Start(ctx, o.names.get("invoke_workflow", info.Graph), opts...)
	o.m.active.Add(ctx, 1, o.sets.get(setKey{keyGraph.String(info.Graph)}).add...)
	return context.WithValue(ctx, runKey{}, &runState{start: time.Now(), span: span})
}

// LinkRun implements runtime.Observer: the run's span links to the span of
// the run that last ran the thread, and the run's own span context is
// returned as a W3C traceparent.
func (o *Observer) LinkRun(ctx context.Context, prev string) string {
	span := trace.SpanFromContext(ctx)
	if prev != "" {
		pc := o.prop.Extract(context.Background(), propagation.MapCarrier{"traceparent": prev})
		if sc := trace.SpanContextFromContext(pc); sc.IsValid() && sc.SpanID() != span.SpanContext().SpanID() {
			span.AddLink(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("lgrun.link", "previous_run")}})
		}
	}
	c := propagation.MapCarrier{}
	o.prop.Inject(ctx, c)
	return c["traceparent"]
}

// EndRun implements runtime.Observer.
func (o *Observer) EndRun(ctx context.Context, info runtime.RunInfo, res *runtime.Result, err error) {
	st, _ := ctx.Value(runKey{}).(*runState)
	if st == nil {
		return
	}
	span := st.span
	status := runtime.StatusFailed
	if res != nil {
		status = res.Status
	}
	if span.IsRecording() {
		// The end attributes in one slice: one copy into the span.
		attrs := make([]attribute.KeyValue, 0, 4)
		if res != nil && res.Checkpoint != nil {
			attrs = append(attrs, keyCheckpoint.String(res.Checkpoint.ID), keyStep.Int(res.Checkpoint.Step))
		}
		if res != nil {
			for _, in := range res.Interrupts {
				span.AddEvent("lgrun.interrupt", trace.WithAttributes(keyNode.String(in.Node), attribute.String("lgrun.interrupt.when", string(in.When))))
			}
		}
		attrs = append(attrs, keyStatus.String(string(status)))
		if status == runtime.StatusBudget {
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			span.AddEvent("lgrun.budget_stop", trace.WithAttributes(keyError.String(msg)))
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			attrs = append(attrs, keyErrorType.String(errorType(err)))
		}
		span.SetAttributes(attrs...)
	}
	span.End()
	o.m.active.Add(ctx, -1, o.sets.get(setKey{keyGraph.String(info.Graph)}).add...)
	o.m.runs.Add(ctx, 1, o.runSets.get(runSetKey{info.Graph, string(status), info.Op, info.Child}).add...)
}

// spanCtx is the context of an observed span: the span's context with
// what its End hook needs, in one allocation.
type spanCtx struct {
	context.Context
	start time.Time
	span  trace.Span
	graph string
	// end is room for the attribute the step span gets at its end.
	end []attribute.KeyValue
}

// recordedCtx is a spanCtx with a recorded span, and room for the span's
// attributes: the SDK copies them, so they need no allocation of their
// own.
type recordedCtx struct {
	spanCtx
	buf [nodeAttrs]attribute.KeyValue
}

// nodeAttrs is the most attributes a step or node span starts with.
const nodeAttrs = 6

type spanKey struct{}

func (c *spanCtx) Value(key any) any {
	if key == (spanKey{}) {
		return c
	}
	return c.Context.Value(key)
}

func spanOf(ctx context.Context) *spanCtx {
	c, _ := ctx.Value(spanKey{}).(*spanCtx)
	return c
}

// StartStep implements runtime.Observer: a span "superstep <graph>".
// Thread and graph are the run span's attributes.
// No span when step spans are off or the run is not recorded (the sampler
// dropped it: lgrun decides per run, as the default parent-based sampler
// does).
//
// The step and node spans get their attributes after they start, from
// cached parts, rather than by trace.WithAttributes: that saves three
// allocations a span, and no sampler the SDK configures from OTEL_*
// looks at attributes (a custom one given to [New] does not see them).
func (o *Observer) StartStep(ctx context.Context, info runtime.RunInfo, step int, next []string) context.Context {
	if o.noSteps || !trace.SpanFromContext(ctx).IsRecording() {
		return &spanCtx{Context: ctx, start: time.Now(), graph: info.Graph}
	}
	rc := &recordedCtx{}
	rc.Context, rc.span = o.tracer.Start(ctx, o.names.get("superstep", info.Graph))
	rc.buf[0], rc.buf[1] = keyStep.Int(step), o.nodes.nextAttr(next)
	rc.span.SetAttributes(rc.buf[:2]...)
	rc.start, rc.graph, rc.end = time.Now(), info.Graph, rc.buf[2:3:3]
	return &rc.spanCtx
}

// EndStep implements runtime.Observer.
func (o *Observer) EndStep(ctx context.Context, cp *runtime.Checkpoint, err error) {
	st := spanOf(ctx)
	if st == nil {
		return
	}
	outcome := "committed"
	switch {
	case err != nil:
		outcome = "failed"
	case cp == nil:
		outcome = "paused"
	}
	if st.span != nil {
		if cp != nil {
			st.end[0] = keyCheckpoint.String(cp.ID)
			st.span.SetAttributes(st.end...)
		}
		if err != nil {
			st.span.RecordError(err)
			st.span.SetStatus(codes.Error, err.Error())
		}
		st.span.End()
	}
	o.m.step.Record(ctx, time.Since(st.start).Seconds(), o.sets.get(setKey{keyGraph.String(st.graph), attribute.String("lgrun.outcome", outcome)}).rec...)
}

// agentKinds are the node kinds whose spans are "invoke_agent <node>".
var agentKinds = map[string]bool{"llm": true, "agent": true, "react": true}

// StartNode implements runtime.Observer: a span "invoke_agent <node>" for
// llm nodes, "<kind> <node>" for the others.
func (o *Observer) StartNode(ctx context.Context, call *runtime.NodeCall) context.Context {
	if !trace.SpanFromContext(ctx).IsRecording() {
		// The run is not recorded: no span, only the metrics.
		return &spanCtx{Context: ctx, start: time.Now(), graph: call.Graph.Name}
	}
	ns := o.nodes.node(call.Node.Kind, call.Node.Name)
	rc := &recordedCtx{}
	rc.Context, rc.span = o.tracer.Start(ctx, ns.name)
	// The step, the node's cached attributes, and an agent's thread.
	attrs := append(rc.buf[:0], keyStep.Int(call.Step))
	attrs = append(attrs, ns.attrs...)
	if ns.agent {
		attrs = append(attrs, keyConversation.String(call.Thread))
	}
	rc.span.SetAttributes(attrs...)
	rc.start, rc.graph = time.Now(), call.Graph.Name
	return &rc.spanCtx
}

// NodeRetry implements runtime.Observer: an event "lgrun.retry".
func (o *Observer) NodeRetry(ctx context.Context, attempt, of int, err error) {
	trace.SpanFromContext(ctx).AddEvent("lgrun.retry", trace.WithAttributes(
		keyAttempt.Int(attempt), attribute.Int("lgrun.max_attempts", of), keyError.String(err.Error()),
	))
}

// EndNode implements runtime.Observer.
func (o *Observer) EndNode(ctx context.Context, call *runtime.NodeCall, res *runtime.NodeResult, err error) {
	st := spanOf(ctx)
	if st == nil {
		return
	}
	k := setKey{keyNodeKind.String(call.Node.Kind), keyGraph.String(st.graph)}
	if st.span == nil {
		if err != nil {
			k[2] = keyErrorType.String(errorType(err))
		}
		o.m.node.Record(ctx, time.Since(st.start).Seconds(), o.sets.get(k).rec...)
		return
	}
	if res != nil && res.Interrupt != nil {
		st.span.AddEvent("lgrun.interrupt", trace.WithAttributes(attribute.String("lgrun.interrupt.when", string(res.Interrupt.When))))
	}
	if err != nil {
		var be *runtime.BudgetError
		if errors.As(err, &be) {
			st.span.AddEvent("lgrun.budget_stop", trace.WithAttributes(keyError.String(err.Error())))
		}
		st.span.RecordError(err)
		st.span.SetStatus(codes.Error, err.Error())
		et := errorType(err)
		st.span.SetAttributes(keyErrorType.String(et))
		k[2] = keyErrorType.String(et)
	}
	st.span.End()
	o.m.node.Record(ctx, time.Since(st.start).Seconds(), o.sets.get(k).rec...)
}

// Committed implements runtime.Observer.
func (o *Observer) Committed(ctx context.Context, d time.Duration, err error) {
	var k setKey
	if err != nil {
		k[0] = keyErrorType.String(errorType(err))
	}
	o.m.commit.Record(ctx, d.Seconds(), o.sets.get(k).rec...)
}

type callState struct {
	start time.Time
	span  trace.Span
}

type callKey struct{}

func requestModel(c *builtin.ModelCallInfo) string {
	if c.Model.Model != "" {
		return c.Model.Model
	}
	return c.Model.Name
}

// StartModelCall implements builtin.Observer: a CLIENT span
// "chat <model>".
func (o *Observer) StartModelCall(ctx context.Context, c *builtin.ModelCallInfo) context.Context {
	m := c.Model
	model := requestModel(c)
	attrs := []attribute.KeyValue{
		keyOperation.String("chat"), keyProvider.String(c.Provider), keyRequestModel.String(model),
		keyConversation.String(c.Thread), keyThread.String(c.Thread), keyNode.String(c.Node), keyStep.Int(c.Step),
		keyModel.String(m.Name), keyAttempt.Int(c.Attempt), keyStream.Bool(m.Stream == nil || *m.Stream),
	}
	if m.Temperature != nil {
		attrs = append(attrs, keyTemperature.Float64(*m.Temperature))
	}
	if m.MaxTokens > 0 {
		attrs = append(attrs, keyMaxTokens.Int(m.MaxTokens))
	}
	if c.Input != "" {
		attrs = append(attrs, keyInputMsgs.String(c.Input))
	}
	ctx, span := o.tracer.Start(ctx, o.names.get("chat", model), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return context.WithValue(ctx, callKey{}, &callState{start: time.Now(), span: span})
}

// EndModelCall implements builtin.Observer.
func (o *Observer) EndModelCall(ctx context.Context, c *builtin.ModelCallInfo, err error) {
	st, _ := ctx.Value(callKey{}).(*callState)
	if st == nil {
		return
	}
	span := st.span
	model := requestModel(c)
	resp := c.ResponseModel
	if resp == "" && err == nil {
		resp = model
	}
	// The end attributes in one slice: one copy into the span.
	attrs := make([]attribute.KeyValue, 0, 7)
	if resp != "" {
		attrs = append(attrs, keyResponseModel.String(resp))
	}
	if c.FinishReason != "" {
		attrs = append(attrs, keyFinish.StringSlice([]string{c.FinishReason}))
	}
	attrs = append(attrs, keyInputTokens.Int(c.InputTokens), keyOutputTokens.Int(c.OutputTokens), keyCost.Float64(c.CostUSD))
	if c.Output != "" {
		attrs = append(attrs, keyOutputMsgs.String(c.Output))
	}
	et := ""
	if err != nil {
		et = errorType(err)
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		attrs = append(attrs, keyErrorType.String(et))
		if c.Retry {
			span.AddEvent("lgrun.retry", trace.WithAttributes(keyAttempt.Int(c.Attempt), keyError.String(err.Error())))
		}
		var be *runtime.BudgetError
		if errors.As(err, &be) {
			span.AddEvent("lgrun.budget_stop", trace.WithAttributes(keyError.String(err.Error())))
		}
	}
	span.SetAttributes(attrs...)
	span.End()
	m := o.gen.get(genKey{c.Provider, model, resp, et})
	o.m.opDuration.Record(ctx, time.Since(st.start).Seconds(), m.dur...)
	if c.InputTokens > 0 || c.OutputTokens > 0 {
		o.m.tokens.Record(ctx, int64(c.InputTokens), m.in...)
		o.m.tokens.Record(ctx, int64(c.OutputTokens), m.out...)
	}
	if c.CostUSD > 0 {
		o.m.cost.Add(ctx, c.CostUSD, m.cost...)
	}
}

// StartToolCall implements builtin.Observer: a span "execute_tool <tool>".
func (o *Observer) StartToolCall(ctx context.Context, c *builtin.ToolCallInfo) context.Context {
	attrs := []attribute.KeyValue{
		keyOperation.String("execute_tool"), keyToolName.String(c.Name), keyToolCallID.String(c.ID),
		keyToolType.String("function"), keyConversation.String(c.Thread), keyThread.String(c.Thread),
		keyNode.String(c.Node), keyStep.Int(c.Step),
	}
	if c.Tool != nil {
		attrs = append(attrs, keyToolKind.String(c.Tool.Kind))
		if c.Tool.Description != "" {
			attrs = append(attrs, keyToolDesc.String(c.Tool.Description))
		}
	}
	if c.Input != "" {
		attrs = append(attrs, keyToolArgs.String(c.Input))
	}
	ctx, span := o.tracer.Start(ctx, o.names.get("execute_tool", c.Name), trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(attrs...))
	return context.WithValue(ctx, callKey{}, &callState{start: time.Now(), span: span})
}

// EndToolCall implements builtin.Observer.
func (o *Observer) EndToolCall(ctx context.Context, c *builtin.ToolCallInfo, err error) {
	st, _ := ctx.Value(callKey{}).(*callState)
	if st == nil {
		return
	}
	if c.Output != "" {
		st.span.SetAttributes(keyToolResult.String(c.Output))
	}
	switch {
	case err != nil:
		st.span.RecordError(err)
		st.span.SetStatus(codes.Error, err.Error())
		st.span.SetAttributes(keyErrorType.String(errorType(err)))
	case c.IsError:
		st.span.SetStatus(codes.Error, "the tool reported an error to the model")
		st.span.SetAttributes(keyErrorType.String("tool_error"))
	}
	st.span.End()
}

// errorType classifies an error for error.type: the name of the first
// lgrun error type in its chain, else "error".
func errorType(err error) string {
	var (
		be *runtime.BudgetError
		sl *runtime.StepLimitError
		ne *runtime.NodeError
	)
	switch {
	case errors.As(err, &be):
		return "budget_exceeded"
	case errors.As(err, &sl):
		return "step_limit"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &ne):
		return "node_error"
	}
	return "error"
}
