package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/lgrun/lgrun/observe"
	"github.com/lgrun/lgrun/runtime"
)

// RunRequest is the body of a run-create request. Unknown fields are
// ignored.
type RunRequest struct {
	AssistantID       string          `json:"assistant_id"`
	Input             json.RawMessage `json:"input,omitempty"`
	Command           *Command        `json:"command,omitempty"`
	Config            *RunConfig      `json:"config,omitempty"`
	Metadata          map[string]any  `json:"metadata,omitempty"`
	InterruptBefore   json.RawMessage `json:"interrupt_before,omitempty"`
	InterruptAfter    json.RawMessage `json:"interrupt_after,omitempty"`
	CheckpointID      string          `json:"checkpoint_id,omitempty"`
	Checkpoint        *checkpointArg  `json:"checkpoint,omitempty"`
	MultitaskStrategy string          `json:"multitask_strategy,omitempty"`
	OnDisconnect      string          `json:"on_disconnect,omitempty"`
	IfNotExists       string          `json:"if_not_exists,omitempty"`
	OnCompletion      string          `json:"on_completion,omitempty"`
	StreamMode        json.RawMessage `json:"stream_mode,omitempty"`
	StreamSubgraphs   bool            `json:"stream_subgraphs,omitempty"`
	StreamResumable   bool            `json:"stream_resumable,omitempty"`
}

// Command resumes or steers a thread.
type Command struct {
	Resume json.RawMessage `json:"resume,omitempty"`
	Update json.RawMessage `json:"update,omitempty"`
	Goto   json.RawMessage `json:"goto,omitempty"`
}

// RunConfig is the config of a run: recursion_limit is the superstep
// limit, configurable holds lgrun's other limits.
type RunConfig struct {
	RecursionLimit int            `json:"recursion_limit,omitempty"`
	Configurable   map[string]any `json:"configurable,omitempty"`
}

// Run statuses.
const (
	runPending     = "pending"
	runRunning     = "running"
	runSuccess     = "success"
	runError       = "error"
	runTimeout     = "timeout"
	runInterrupted = "interrupted"
)

// plan is a validated run request.
type plan struct {
	modes     map[string]bool
	subgraphs bool
	input     map[string]any // nil: no input
	resume    any
	hasResume bool
	update    []runtime.Write
	gotoNodes []string
	cfg       runtime.Config
	cid       string
}

var streamModes = map[string]bool{"values": true, "updates": true, "messages-tuple": true, "debug": true, "custom": true,
	"tasks": true, "checkpoints": true}

func decodeValue(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func nodeList(a *assistant, what string, raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return []string{runtime.ClearList}, nil
	}
	var star string
	if json.Unmarshal(raw, &star) == nil {
		if star != "*" {
			return nil, errorf(422, "%s: want \"*\" or a list of node names, got %q", what, star)
		}
		return append([]string(nil), a.Graph.NodeOrder...), nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, errorf(422, "%s: want \"*\" or a list of node names", what)
	}
	for _, n := range list {
		if a.Graph.Nodes[n] == nil {
			return nil, errorf(422, "%s: graph %q has no node %q", what, a.Graph.Name, n)
		}
	}
	if len(list) == 0 {
		return []string{runtime.ClearList}, nil
	}
	return list, nil
}

func intOf(v any) (int, bool) {
	switch x := v.(type) {
	case float64:
		return int(x), x == float64(int(x)) && x >= 0
	case json.Number:
		n, err := x.Int64()
		return int(n), err == nil && n >= 0
	}
	return 0, false
}

// planRun checks a run request against the graph.
func planRun(a *assistant, req *RunRequest) (*plan, error) {
	p := &plan{modes: map[string]bool{}, subgraphs: req.StreamSubgraphs}
	modes := []string{"values"}
	if len(req.StreamMode) > 0 && string(req.StreamMode) != "null" {
		var one string
		if json.Unmarshal(req.StreamMode, &one) == nil {
			modes = []string{one}
		} else if err := json.Unmarshal(req.StreamMode, &modes); err != nil {
			return nil, errorf(422, "stream_mode: want a mode or a list of modes")
		}
	}
	for _, m := range modes {
		if m == "messages" {
			return nil, errorf(422, "stream_mode %q (the deprecated message mode) is not supported; use messages-tuple", m)
		}
		if !streamModes[m] {
			return nil, errorf(422, "stream_mode %q is not supported (supported: values, updates, messages-tuple, debug, tasks, checkpoints, custom)", m)
		}
		p.modes[m] = true
	}
	if len(req.Input) > 0 && string(req.Input) != "null" {
		v, err := decodeValue(req.Input)
		if err != nil {
			return nil, errorf(400, "input: %v", err)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, errorf(422, "input: want an object of state fields or null")
		}
		if _, err := writesOf(a.Graph, "input", m); err != nil {
			return nil, err
		}
		p.input = m
	}
	if c := req.Command; c != nil {
		if len(c.Goto) > 0 && string(c.Goto) != "null" {
			// A node name or a list of them; {node, input} (a Send) is
			// not supported.
			var one string
			if json.Unmarshal(c.Goto, &one) == nil {
				p.gotoNodes = []string{one}
			} else if err := json.Unmarshal(c.Goto, &p.gotoNodes); err != nil {
				return nil, errorf(422, "command.goto: want a node name or a list of node names ({node, input} sends are not supported)")
			}
			for _, n := range p.gotoNodes {
				if a.Graph.Nodes[n] == nil {
					return nil, errorf(422, "command.goto: graph %q has no node %q", a.Graph.Name, n)
				}
			}
		}
		if len(c.Resume) > 0 {
			v, err := decodeValue(c.Resume)
			if err != nil {
				return nil, errorf(400, "command.resume: %v", err)
			}
			p.resume, p.hasResume = v, true
		}
		if len(c.Update) > 0 && string(c.Update) != "null" {
			v, err := decodeValue(c.Update)
			if err != nil {
				return nil, errorf(400, "command.update: %v", err)
			}
			m, ok := v.(map[string]any)
			if !ok {
				// [[key, value], ...]
				if list, isList := v.([]any); isList {
					m = map[string]any{}
					for _, kv := range list {
						pair, ok := kv.([]any)
						if !ok || len(pair) != 2 {
							return nil, errorf(422, "command.update: want an object or a list of [field, value] pairs")
						}
						k, _ := pair[0].(string)
						m[k] = pair[1]
					}
				} else {
					return nil, errorf(422, "command.update: want an object of state fields")
				}
			}
			if p.update, err = writesOf(a.Graph, "command.update", m); err != nil {
				return nil, err
			}
		}
		if !p.hasResume && p.update == nil && p.gotoNodes == nil {
			return nil, errorf(422, "command: want resume, update or goto")
		}
		if p.hasResume && p.gotoNodes != nil {
			return nil, errorf(422, "command: resume and goto together are not supported (goto replaces the step the resume would answer)")
		}
	}
	var err error
	if p.cfg.InterruptBefore, err = nodeList(a, "interrupt_before", req.InterruptBefore); err != nil {
		return nil, err
	}
	if p.cfg.InterruptAfter, err = nodeList(a, "interrupt_after", req.InterruptAfter); err != nil {
		return nil, err
	}
	if c := req.Config; c != nil {
		p.cfg.StepLimit = c.RecursionLimit
		for k, v := range c.Configurable {
			switch k {
			case "timeout":
				sv, _ := v.(string)
				d, err := time.ParseDuration(sv)
				if err != nil || d < 0 {
					return nil, errorf(422, "config.configurable.timeout: want a duration like \"30s\", got %v", v)
				}
				p.cfg.Timeout = runtime.Duration(d)
			case "max_llm_calls", "max_tokens", "max_state_size":
				n, ok := intOf(v)
				if !ok {
					return nil, errorf(422, "config.configurable.%s: want a non-negative integer, got %v", k, v)
				}
				switch k {
				case "max_llm_calls":
					p.cfg.LLMCalls = n
				case "max_tokens":
					p.cfg.Tokens = n
				default:
					p.cfg.StateSize = int64(n)
				}
			case "max_cost_usd":
				f, ok := v.(float64)
				if !ok || f < 0 {
					return nil, errorf(422, "config.configurable.max_cost_usd: want a non-negative number, got %v", v)
				}
				p.cfg.CostUSD = f
			}
		}
	}
	p.cid = req.CheckpointID
	if p.cid == "" && req.Checkpoint != nil {
		p.cid = req.Checkpoint.CheckpointID
	}
	switch req.MultitaskStrategy {
	case "", "reject", "enqueue", "interrupt", "rollback":
	default:
		return nil, errorf(422, "multitask_strategy: want reject, enqueue, interrupt or rollback, got %q", req.MultitaskStrategy)
	}
	switch req.OnDisconnect {
	case "", "cancel", "continue":
	default:
		return nil, errorf(422, "on_disconnect: want cancel or continue, got %q", req.OnDisconnect)
	}
	return p, nil
}

// errCancel is the cause of a run stopped by a cancel or a multitask
// strategy; errShutdown that of a run stopped by the server's shutdown
// (it stays queued for the next start).
type errCancel struct{ action string }

func (e *errCancel) Error() string { return "run cancelled (" + e.action + ")" }

var errShutdown = errors.New("server shutting down")

// execution is a run this process knows: queued, running or finished
// recently. Its events are kept for streams joining it.
type execution struct {
	srv *Server
	// run is owned by the goroutine executing it; first is a copy as
	// created, for the response to the request that created it.
	run   *Run
	first Run
	a     *assistant
	plan  *plan

	mu       sync.Mutex
	events   []StoredEvent
	notify   chan struct{} // closed and replaced at each event
	done     chan struct{}
	final    any // the wait result
	cancel   context.CancelCauseFunc
	action   string        // cancel action requested before or while running
	stop     chan struct{} // closed when a cancel is requested
	finished bool
	started  bool // off the queue (executing, or finished while queued)
	// remote: the run executes elsewhere (or waits in the Queue); its
	// events come from the store.
	remote bool
	// token is the fencing token of this worker's claim on the run (with
	// a Queue); wctx carries the fence while the run executes, for the
	// writes of its events.
	token string
	wctx  context.Context
	// exited, while set, is closed when the execution executing the run
	// returns.
	exited chan struct{}
}

func newExecution(s *Server, run *Run, a *assistant, p *plan) *execution {
	return &execution{srv: s, run: run, first: *run, a: a, plan: p, notify: make(chan struct{}), done: make(chan struct{}),
		stop: make(chan struct{})}
}

func (e *execution) emit(event string, data any) { e.emitWith(e.srv, event, data) }

// requestCancel stops the run with action (interrupt or rollback).
func (e *execution) requestCancel(action string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.action == "" {
		e.action = action
		close(e.stop)
	}
	if e.cancel != nil {
		e.cancel(&errCancel{action: e.action})
	}
}

// queuedGauge returns the gauge of queued runs (lgrun.runs.queued) when
// the observer keeps one.
func (s *Server) queuedGauge() metric.Int64UpDownCounter {
	if q, ok := s.opts.Observer.(interface {
		QueuedRuns() metric.Int64UpDownCounter
	}); ok {
		return q.QueuedRuns()
	}
	return nil
}

// queued adds delta to the gauge of queued runs. With a Queue, the gauge
// is the database's count instead (see syncQueued): runs accepted,
// claimed and run by other processes count there.
func (s *Server) queued(delta int64) {
	if g := s.queuedGauge(); g != nil && s.opts.Queue == nil {
		g.Add(context.Background(), delta)
	}
}

// depthMaxAge is how long a queue depth read from the database serves.
const depthMaxAge = time.Second

// syncQueued brings the gauge of queued runs to the Queue's depth (pending
// runs of every process), read at most once a depthMaxAge.
func (s *Server) syncQueued(ctx context.Context) {
	g := s.queuedGauge()
	if g == nil || s.opts.Queue == nil {
		return
	}
	s.depthMu.Lock()
	defer s.depthMu.Unlock()
	if time.Since(s.depthAt) < depthMaxAge {
		return
	}
	n, err := s.opts.Queue.Depth(ctx)
	if err != nil {
		s.opts.Logf("lgrun serve: %v", err)
		return
	}
	g.Add(context.Background(), int64(n)-s.depth)
	s.depth, s.depthAt = int64(n), time.Now()
}

// dequeue takes the run off the queued gauge, once.
func (e *execution) dequeue() {
	e.mu.Lock()
	was := e.started
	e.started = true
	e.mu.Unlock()
	if !was && e.srv != nil {
		e.srv.queued(-1)
	}
}

// busy reports whether a thread has a run queued or running.
func (s *Server) busy(tid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busyLocked(tid)
}

func (s *Server) busyLocked(tid string) bool {
	if s.opts.Queue != nil && s.active[tid] == nil {
		busy, err := s.opts.Queue.Busy(context.Background(), tid, "")
		return busy || err != nil
	}
	if s.active[tid] != nil {
		return true
	}
	for _, e := range s.runs {
		if e.run.ThreadID == tid && !e.isFinished() {
			return true
		}
	}
	return false
}

func (e *execution) isFinished() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.finished
}

// reserve marks a thread busy for a state update, or answers 409.
func (s *Server) reserve(tid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busyLocked(tid) {
		return errorf(409, "thread %q is busy: a run is pending or running", tid)
	}
	s.active[tid] = &execution{}
	return nil
}

func (s *Server) release(tid string) {
	s.mu.Lock()
	delete(s.active, tid)
	s.mu.Unlock()
	s.dispatch(tid)
}

// runner returns a runner of a's graph whose events go to events.
func (s *Server) runner(a *assistant, events func(runtime.Event)) *runtime.Runner {
	return &runtime.Runner{Graph: a.Graph, Saver: s.opts.Saver, Kinds: a.Kinds, Version: s.opts.Version,
		GraphFile: a.Graph.File, Events: events, Now: s.opts.Now, IDs: s.opts.IDs, Observer: s.opts.Observer}
}

// idleStatus is a thread's status when no run is active on it.
func (s *Server) idleStatus(cp *runtime.Checkpoint) string {
	if cp != nil && (len(cp.Next) > 0 || len(interruptsOf(cp)) > 0) {
		return "interrupted"
	}
	return "idle"
}

// startRun validates and queues a run; tid "" makes a temporary thread.
func (s *Server) startRun(r *http.Request, tid string) (*execution, error) {
	req := &RunRequest{}
	if err := decode(r, req); err != nil {
		return nil, err
	}
	if req.AssistantID == "" {
		return nil, errorf(422, "assistant_id is required")
	}
	a, err := s.assistant(r.Context(), req.AssistantID)
	if err != nil {
		return nil, err
	}
	req.Config = a.withDefaults(req.Config)
	p, err := planRun(a, req)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	now := s.opts.Now()
	temporary := tid == ""
	if temporary {
		tid = newID()
	} else if err := checkThreadID(tid); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errorf(503, "the server is shutting down")
	}
	t, err := s.opts.Store.Thread(ctx, tid)
	switch {
	case errors.Is(err, ErrNotFound) && (temporary || req.IfNotExists == "create"):
		t = &Thread{ID: tid, Created: now, Metadata: map[string]any{}, Status: "idle"}
	case errors.Is(err, ErrNotFound):
		return nil, errorf(404, "thread %q not found (pass if_not_exists: \"create\" to create it)", tid)
	case err != nil:
		return nil, err
	}
	if t.GraphID != "" && t.GraphID != a.Graph.Name {
		return nil, errorf(422, "thread %q belongs to graph %q, not %q", tid, t.GraphID, a.Graph.Name)
	}
	strategy := req.MultitaskStrategy
	if strategy == "" {
		strategy = "enqueue"
	}
	var inflight []*execution
	if s.opts.Queue != nil && !temporary && (strategy == "interrupt" || strategy == "rollback") {
		if runs, err := s.opts.Store.Runs(ctx, tid); err == nil {
			for _, old := range runs {
				if old.Status == runPending || old.Status == runRunning {
					defer s.cancelQueued(old.ID, strategy)
				}
			}
		}
	}
	if !temporary && s.busyLocked(tid) {
		if strategy == "reject" {
			return nil, errorf(409, "thread %q is already running a run; wait for it to finish or choose another multitask_strategy (enqueue, interrupt, rollback)", tid)
		}
		if strategy == "interrupt" || strategy == "rollback" {
			for _, e := range s.runs {
				if e.run.ThreadID == tid && !e.isFinished() {
					inflight = append(inflight, e)
				}
			}
		}
	}
	run := &Run{ID: newID(), ThreadID: tid, AssistantID: a.ID, GraphID: a.Graph.Name, Created: now, Updated: now,
		Status: runPending, Metadata: req.Metadata, Request: req, Strategy: strategy, Temporary: temporary}
	if run.Metadata == nil {
		run.Metadata = map[string]any{}
	}
	run.Trace, run.Baggage = observe.TraceHeaders(r.Header)
	run.Background = !strings.HasSuffix(r.URL.Path, "/wait") && !strings.HasSuffix(r.URL.Path, "/stream")
	t.GraphID, t.Status, t.Updated = a.Graph.Name, "busy", now
	if t.Metadata["graph_id"] == nil {
		t.Metadata["graph_id"] = a.Graph.Name
	}
	if err := s.opts.Store.PutThread(ctx, t); err != nil {
		return nil, err
	}
	if err := s.opts.Store.PutRun(ctx, run); err != nil {
		return nil, err
	}
	e := newExecution(s, run, a, p)
	e.remote = s.opts.Queue != nil
	s.runs[run.ID] = e
	s.queued(1)
	for _, old := range inflight {
		old.requestCancel(strategy)
	}
	go s.dispatch(tid)
	return e, nil
}

// dispatch starts the oldest queued run of a thread when none is active.
func (s *Server) dispatch(tid string) {
	if s.opts.Queue != nil {
		// Workers anywhere claim it.
		if err := s.opts.Queue.Notify(context.Background(), "runs", tid); err != nil {
			s.opts.Logf("lgrun serve: %v", err)
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[tid] != nil || s.closed {
		return
	}
	var next *execution
	for _, e := range s.runs {
		if e.run.ThreadID != tid || e.isFinished() {
			continue
		}
		if next == nil || e.run.Seq < next.run.Seq {
			next = e
		}
	}
	if next == nil {
		return
	}
	s.active[tid] = next
	s.wg.Add(1)
	go s.execute(next)
}

// requeue loads the runs a previous process left pending or running.
func (s *Server) requeue() error {
	ctx := context.Background()
	runs, err := s.opts.Store.Unfinished(ctx)
	if err != nil {
		return fmt.Errorf("load unfinished runs: %w", err)
	}
	threads := map[string]bool{}
	for _, run := range runs {
		a := s.assistants[run.GraphID]
		if a == nil {
			run.Status, run.Error = runError, fmt.Sprintf("graph %q is not served any more", run.GraphID)
			if err := s.opts.Store.PutRun(ctx, run); err != nil {
				return err
			}
			continue
		}
		p, err := planRun(a, run.Request)
		if err != nil {
			run.Status, run.Error = runError, err.Error()
			if err := s.opts.Store.PutRun(ctx, run); err != nil {
				return err
			}
			continue
		}
		e := newExecution(s, run, a, p)
		if run.Request.StreamResumable {
			// The stream goes on where it was: event ids continue.
			if e.events, err = s.opts.Store.Events(ctx, run.ID, -1); err != nil {
				return fmt.Errorf("load events of run %s: %w", run.ID, err)
			}
		}
		s.runs[run.ID] = e
		s.queued(1)
		threads[run.ThreadID] = true
	}
	for tid := range threads {
		go s.dispatch(tid)
	}
	return nil
}

// execute runs one queued run to its end.
func (s *Server) execute(e *execution) {
	defer s.wg.Done()
	// The run joins the trace of the request that created it.
	ctx, cancel := context.WithCancelCause(observe.RunContext(s.base, e.run.Trace, e.run.Baggage, e.run.Background))
	defer cancel(nil)
	// unfenced is for the writes that follow the run's own deletion.
	unfenced := context.WithoutCancel(ctx)
	e.mu.Lock()
	if e.token != "" {
		// Every write of a claimed run holds only while the claim does.
		ctx = s.opts.Queue.Fence(ctx, e.run.ID, e.token)
	}
	e.cancel = cancel
	e.wctx = context.WithoutCancel(ctx)
	exited := make(chan struct{})
	e.exited = exited
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		if e.exited == exited {
			e.exited = nil
		}
		e.mu.Unlock()
		close(exited)
	}()
	// At most MaxRuns runs execute at once; the others stay pending.
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	case <-e.stop:
	case <-ctx.Done():
	}
	e.dequeue()
	e.mu.Lock()
	action := e.action
	e.mu.Unlock()
	run := e.run
	tid := run.ThreadID
	store := s.opts.Store
	bg := context.WithoutCancel(ctx)

	var res *runtime.Result
	var err error
	if action != "" {
		err = &errCancel{action: action} // cancelled while queued
	} else {
		head, herr := s.head(bg, tid)
		if herr != nil {
			err = herr
		} else {
			if !run.Started {
				run.Started = true
				if head != nil {
					run.StartHead = head.ID
				}
			}
			run.Attempt++
			run.Status, run.Updated = runRunning, s.opts.Now()
			if perr := store.PutRun(bg, run); perr != nil {
				err = perr
				if errors.Is(perr, runtime.ErrFenced) {
					cancel(errLostClaim)
				}
			} else {
				e.emit("metadata", map[string]any{"run_id": run.ID, "attempt": run.Attempt})
				res, err = s.call(ctx, e, head)
				// A requeued run may find the thread's lease still held by
				// the process that died running it (Postgres leases expire
				// by TTL): it waits for the lease, as nothing ran yet.
				for be := (*runtime.BusyError)(nil); run.Attempt > 1 && errors.As(err, &be) && ctx.Err() == nil; {
					select {
					case <-ctx.Done():
					case <-time.After(200 * time.Millisecond):
						res, err = s.call(ctx, e, head)
					}
				}
			}
		}
	}
	if errors.Is(err, runtime.ErrFenced) {
		cancel(errLostClaim)
	}
	// Requeued (by Release or the sweeper): another worker goes on; this
	// process follows it like any remote run.
	lost := func() bool {
		if s.opts.Queue == nil || !errors.Is(context.Cause(ctx), errShutdown) && !errors.Is(context.Cause(ctx), errLostClaim) {
			return false
		}
		s.mu.Lock()
		if s.active[tid] == e {
			delete(s.active, tid)
		}
		s.mu.Unlock()
		// The events this worker could not store are not the run's: the
		// stream goes on from the store's.
		evs, eerr := store.Events(unfenced, run.ID, -1)
		e.mu.Lock()
		if eerr == nil && errors.Is(context.Cause(ctx), errLostClaim) {
			e.events = evs
		}
		e.remote = true
		e.mu.Unlock()
		return true
	}
	if lost() {
		return
	}
	if errors.Is(context.Cause(ctx), errShutdown) {
		// Left running in the store: the next start requeues it.
		s.finish(e, nil)
		return
	}
	status := runSuccess
	var final any
	var ce *errCancel
	var be *runtime.BudgetError
	switch {
	case errors.As(err, &ce) || errors.As(context.Cause(ctx), &ce):
		status = runInterrupted
		action = ce.action
	case err != nil && errors.As(err, &be) && be.What == "timeout":
		status = runTimeout
	case err != nil:
		status = runError
	}
	head, herr := s.head(bg, tid)
	if herr != nil && err == nil {
		err, status = herr, runError
	}
	if err != nil && status != runInterrupted {
		msg := publicError(err)
		e.emit("error", map[string]any{"error": errorName(err), "message": msg})
		final = map[string]any{"__error__": map[string]any{"error": errorName(err), "message": msg}}
		run.Error = msg
	} else if head != nil {
		vals := map[string]any{}
		for k, v := range head.Values {
			vals[k] = v
		}
		if ints := interruptList(head); len(ints) > 0 {
			vals["__interrupt__"] = ints
		}
		final = outValues(e.a.Graph, vals)
	} else {
		final = map[string]any{}
	}
	e.emit("end", map[string]any{"run_id": run.ID, "status": status})
	_ = res
	if errors.Is(context.Cause(ctx), errLostClaim) && lost() { // the end was fenced off
		return
	}

	t, terr := store.Thread(bg, tid)
	if terr == nil {
		t.Updated = s.opts.Now()
		t.Error = ""
		switch {
		case status == runError:
			t.Status, t.Error = "error", run.Error
		default:
			t.Status = s.idleStatus(head)
		}
	}
	if status == runInterrupted && action == "rollback" {
		// The run is gone and the thread goes back to where it began: a
		// new head copied from the checkpoint before the run (the run's
		// checkpoints stay only as an abandoned branch of the history),
		// or no checkpoints at all.
		if run.StartHead == "" {
			if derr := s.opts.Saver.DeleteThread(bg, tid); derr != nil && !errors.Is(derr, runtime.ErrNotFound) {
				s.opts.Logf("lgrun serve: rollback of run %s: %v", run.ID, derr)
			}
			if t != nil {
				t.Status = "idle"
			}
		} else if head != nil && head.ID != run.StartHead {
			cp, uerr := s.runner(e.a, nil).Update(bg, tid, run.StartHead, nil, "")
			if uerr != nil {
				s.opts.Logf("lgrun serve: rollback of run %s: %v", run.ID, uerr)
			} else if t != nil {
				t.Status = s.idleStatus(cp)
			}
		}
		if derr := store.DeleteRun(bg, run.ID); derr != nil {
			s.opts.Logf("lgrun serve: rollback of run %s: %v", run.ID, derr)
		}
	} else {
		run.Status, run.Updated = status, s.opts.Now()
		if perr := store.PutRun(bg, run); perr != nil {
			s.opts.Logf("lgrun serve: save run %s: %v", run.ID, perr)
			if errors.Is(perr, runtime.ErrFenced) {
				cancel(errLostClaim)
				lost()
				return
			}
		}
	}
	if terr == nil {
		if run.Temporary && run.Request.OnCompletion != "keep" {
			if derr := s.opts.Saver.DeleteThread(bg, tid); derr != nil && !errors.Is(derr, runtime.ErrNotFound) {
				s.opts.Logf("lgrun serve: delete temporary thread: %v", derr)
			}
			_ = store.DeleteThread(bg, tid)
			// The run row outlives its thread; the fenced delete took the
			// claimed row with it.
			_ = store.PutRun(unfenced, run)
		} else {
			s.mu.Lock()
			if t.Status != "error" && s.queuedLocked(tid, run.ID) {
				t.Status = "busy"
			}
			s.mu.Unlock()
			if perr := store.PutThread(bg, t); perr != nil {
				s.opts.Logf("lgrun serve: save thread %s: %v", tid, perr)
			}
		}
	}
	s.finish(e, final)
}

// queuedLocked reports whether the thread has runs queued besides run.
func (s *Server) queuedLocked(tid, run string) bool {
	if s.opts.Queue != nil {
		busy, _ := s.opts.Queue.Busy(context.Background(), tid, run)
		return busy
	}
	for _, e := range s.runs {
		if e.run.ThreadID == tid && e.run.ID != run && !e.isFinished() {
			return true
		}
	}
	return false
}

// finish ends an execution, starts the thread's next run, and forgets the
// execution after a while.
func (s *Server) finish(e *execution, final any) {
	e.dequeue()
	e.mu.Lock()
	e.final, e.finished = final, true
	close(e.done)
	close(e.notify)
	e.notify = nil
	e.mu.Unlock()
	s.mu.Lock()
	if s.active[e.run.ThreadID] == e {
		delete(s.active, e.run.ThreadID)
	}
	s.mu.Unlock()
	go s.dispatch(e.run.ThreadID)
	time.AfterFunc(2*time.Minute, func() {
		s.mu.Lock()
		if s.runs[e.run.ID] == e {
			delete(s.runs, e.run.ID)
		}
		s.mu.Unlock()
	})
}

// call runs the runtime operation a request asks for.
func (s *Server) call(ctx context.Context, e *execution, head *runtime.Checkpoint) (*runtime.Result, error) {
	p, run := e.plan, e.run
	r := s.runner(e.a, e.translate)
	tid := run.ThreadID
	resume := func(opts runtime.ResumeOptions) (*runtime.Result, error) {
		res, err := r.Resume(ctx, opts)
		if errors.Is(err, runtime.ErrNothingToResume) {
			return nil, nil
		}
		return res, err
	}
	switch {
	case run.Attempt > 1 && head != nil && head.ID != run.StartHead:
		// Requeued after a crash, with steps already committed: continue.
		return resume(runtime.ResumeOptions{Thread: tid, Config: p.cfg})
	case p.hasResume || p.update != nil || p.gotoNodes != nil:
		if head == nil {
			return nil, fmt.Errorf("thread %q has nothing to resume: it has no checkpoint yet", tid)
		}
		return r.Resume(ctx, runtime.ResumeOptions{Thread: tid, Value: p.resume, HasValue: p.hasResume, Set: p.update, Goto: p.gotoNodes, Config: p.cfg})
	case p.cid != "" && head != nil:
		if p.input != nil {
			set, err := writesOf(e.a.Graph, "input", p.input)
			if err != nil {
				return nil, err
			}
			return r.Fork(ctx, tid, p.cid, set, "", p.cfg)
		}
		return r.Replay(ctx, tid, p.cid, p.cfg)
	case p.input == nil && head != nil:
		return resume(runtime.ResumeOptions{Thread: tid, Config: p.cfg})
	}
	if head != nil && p.input != nil && (len(head.Next) > 0 || len(interruptsOf(head)) > 0) {
		// New input on a thread that stopped mid-run (a cancel, an
		// interrupt strategy, a breakpoint): it is applied as an update at
		// the head and the stopped steps continue from there.
		set, err := writesOf(e.a.Graph, "input", p.input)
		if err != nil {
			return nil, err
		}
		return r.Fork(ctx, tid, head.ID, set, "", p.cfg)
	}
	in := p.input
	if in == nil {
		in = map[string]any{}
	}
	return r.Run(ctx, runtime.RunOptions{Thread: tid, Input: in, Config: p.cfg})
}

// errorName is the error class the SDK shows.
func errorName(err error) string {
	var sl *runtime.StepLimitError
	var be *runtime.BudgetError
	var ne *runtime.NodeError
	switch {
	case errors.As(err, &sl):
		return "GraphRecursionError"
	case errors.As(err, &be):
		return "BudgetError"
	case errors.As(err, &ne):
		return "NodeError"
	case errors.Is(err, runtime.ErrUnfinished), errors.As(err, new(*runtime.PausedError)):
		return "InvalidUpdateError"
	}
	return "Error"
}

// publicError is err's message without the CLI's command hints.
func publicError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "; resume it with `lgrun"); i > 0 {
		msg = msg[:i]
	}
	return msg
}

func (s *Server) runJSON(run *Run) map[string]any {
	kw := map[string]any{}
	if b, err := json.Marshal(run.Request); err == nil {
		_ = json.Unmarshal(b, &kw)
	}
	return map[string]any{"run_id": run.ID, "thread_id": run.ThreadID, "assistant_id": run.AssistantID,
		"created_at": ts(run.Created), "updated_at": ts(run.Updated), "status": run.Status,
		"metadata": run.Metadata, "kwargs": kw, "multitask_strategy": run.Strategy}
}

func (s *Server) createRun(w http.ResponseWriter, r *http.Request) error {
	e, err := s.startRun(r, r.PathValue("tid"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Location", runPath(&e.first))
	return writeJSON(w, 200, s.runJSON(&e.first))
}

func runPath(run *Run) string {
	return "/threads/" + run.ThreadID + "/runs/" + run.ID
}

// wait blocks until e ends or ctx is done, writing a newline every second
// so proxies and clients keep the connection (JSON skips leading space).
func (s *Server) waitFor(w http.ResponseWriter, r *http.Request, e *execution, cancelOnDisconnect bool) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Location", runPath(e.run))
	w.WriteHeader(200)
	fl, _ := w.(http.Flusher)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-e.done:
			e.mu.Lock()
			final := e.final
			e.mu.Unlock()
			b, err := json.Marshal(final)
			if err != nil {
				return err
			}
			_, err = w.Write(b)
			return err
		case <-tick.C:
			_, _ = w.Write([]byte("\n"))
			if fl != nil {
				fl.Flush()
			}
		case <-r.Context().Done():
			if cancelOnDisconnect {
				e.requestCancel("interrupt")
			}
			return nil
		}
	}
}

func (s *Server) waitRun(w http.ResponseWriter, r *http.Request) error {
	e, err := s.startRun(r, r.PathValue("tid"))
	if err != nil {
		return err
	}
	od := e.run.Request.OnDisconnect
	return s.waitFor(w, r, e, od == "" || od == "cancel")
}

// execOf returns a run of a thread: its live execution, or a finished one
// rebuilt from the store.
func (s *Server) execOf(r *http.Request) (*execution, error) {
	tid, rid := r.PathValue("tid"), r.PathValue("rid")
	s.mu.Lock()
	e := s.runs[rid]
	s.mu.Unlock()
	if e != nil && (tid == "" || e.run.ThreadID == tid) {
		return e, nil
	}
	run, err := s.opts.Store.Run(r.Context(), rid)
	if errors.Is(err, ErrNotFound) || err == nil && tid != "" && run.ThreadID != tid {
		return nil, errorf(404, "run %q of thread %q not found", rid, tid)
	}
	if err != nil {
		return nil, err
	}
	if s.opts.Queue != nil && (run.Status == runPending || run.Status == runRunning) {
		return s.remoteExecution(run), nil
	}
	a := s.assistants[run.GraphID]
	e = newExecution(s, run, a, nil)
	e.finished = true
	close(e.done)
	e.notify = nil
	vals := map[string]any{}
	if head, err := s.head(r.Context(), run.ThreadID); err == nil && head != nil {
		for k, v := range head.Values {
			vals[k] = v
		}
		if ints := interruptList(head); len(ints) > 0 {
			vals["__interrupt__"] = ints
		}
	}
	if run.Status == runError {
		e.final = map[string]any{"__error__": map[string]any{"error": "Error", "message": run.Error}}
	} else {
		e.final = outValues(s.graph(run.GraphID), vals)
	}
	if evs, err := s.opts.Store.Events(r.Context(), rid, -1); err == nil {
		e.events = evs
	}
	return e, nil
}

func (s *Server) joinRun(w http.ResponseWriter, r *http.Request) error {
	e, err := s.execOf(r)
	if err != nil {
		return err
	}
	return s.waitFor(w, r, e, r.URL.Query().Get("cancel_on_disconnect") == "1" || r.URL.Query().Get("cancel_on_disconnect") == "true")
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request) error {
	e, err := s.execOf(r)
	if err != nil {
		return err
	}
	run, err := s.opts.Store.Run(r.Context(), e.run.ID)
	if errors.Is(err, ErrNotFound) {
		return errorf(404, "run %q not found", e.run.ID)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, 200, s.runJSON(run))
}

func (s *Server) listRuns(w http.ResponseWriter, r *http.Request) error {
	tid := r.PathValue("tid")
	if _, err := s.thread(r, tid); err != nil {
		return err
	}
	q := r.URL.Query()
	limit, offset := 10, 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return errorf(422, "limit: want a number, got %q", v)
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return errorf(422, "offset: want a number, got %q", v)
		}
		offset = n
	}
	runs, err := s.opts.Store.Runs(r.Context(), tid)
	if err != nil {
		return err
	}
	out := []any{}
	status := q.Get("status")
	var kept []*Run
	for _, run := range runs {
		if status == "" || run.Status == status {
			kept = append(kept, run)
		}
	}
	for _, run := range page(kept, offset, limit) {
		out = append(out, s.runJSON(run))
	}
	return writeJSON(w, 200, out)
}

func (s *Server) cancelRun(w http.ResponseWriter, r *http.Request) error {
	e, err := s.execOf(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	action := q.Get("action")
	if action == "" {
		action = "interrupt"
	}
	if action != "interrupt" && action != "rollback" {
		return errorf(422, "action: want interrupt or rollback, got %q", action)
	}
	wait := q.Get("wait") == "1" || q.Get("wait") == "true"
	if e.isFinished() {
		return errorf(409, "run %q is already %s", e.run.ID, e.run.Status)
	}
	e.requestCancel(action)
	if s.opts.Queue != nil {
		s.cancelQueued(e.run.ID, action)
	}
	s.mu.Lock()
	queued := s.active[e.run.ThreadID] != e
	s.mu.Unlock()
	if queued {
		go s.dispatch(e.run.ThreadID) // a queued run ends when it is picked
	}
	if wait {
		select {
		case <-e.done:
		case <-r.Context().Done():
			return errorf(503, "run %q did not stop in time", e.run.ID)
		}
		w.WriteHeader(204)
		return nil
	}
	w.WriteHeader(202)
	return nil
}

func (s *Server) deleteRun(w http.ResponseWriter, r *http.Request) error {
	e, err := s.execOf(r)
	if err != nil {
		return err
	}
	if !e.isFinished() {
		// Not e.run.Status: the run's goroutine writes it until the run
		// finishes.
		return errorf(409, "run %q is pending or running: cancel it first", e.run.ID)
	}
	if err := s.opts.Store.DeleteRun(r.Context(), e.run.ID); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.runs, e.run.ID)
	s.mu.Unlock()
	w.WriteHeader(204)
	return nil
}

// Shutdown stops starting runs and waits for running ones until ctx is
// done; then it stops them at their current step (what finished is kept
// as pending writes) and leaves them queued for the next start.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if s.opts.Queue != nil {
		s.qcancel() // claim no more
		defer func() {
			s.qwg.Wait()
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.opts.Queue.Release(rctx, s.worker); err != nil {
				s.opts.Logf("lgrun serve: %v", err)
			}
		}()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	s.cancelAll()
	<-done
}

func (s *Server) cancelAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.active {
		e.mu.Lock()
		if e.cancel != nil {
			e.cancel(errShutdown)
		}
		e.mu.Unlock()
	}
	s.cancel()
}

// cancelRuns cancels the runs named by run_ids (of thread_id), or every
// pending and/or running run (status pending, running or all).
func (s *Server) cancelRuns(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ThreadID string   `json:"thread_id"`
		RunIDs   []string `json:"run_ids"`
		Status   string   `json:"status"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	action := r.URL.Query().Get("action")
	if action == "" {
		action = "interrupt"
	}
	if action != "interrupt" && action != "rollback" {
		return errorf(422, "action: want interrupt or rollback, got %q", action)
	}
	switch req.Status {
	case "", "pending", "running", "all":
	default:
		return errorf(422, "status: want pending, running or all, got %q", req.Status)
	}
	if len(req.RunIDs) == 0 && req.Status == "" {
		return errorf(422, "give run_ids or status")
	}
	want := map[string]bool{}
	for _, id := range req.RunIDs {
		want[id] = true
	}
	s.mu.Lock()
	var picked []*execution
	for _, e := range s.runs {
		if e.isFinished() || req.ThreadID != "" && e.run.ThreadID != req.ThreadID {
			continue
		}
		running := s.active[e.run.ThreadID] == e
		switch {
		case len(want) > 0:
			if !want[e.run.ID] {
				continue
			}
		case req.Status == "pending" && running, req.Status == "running" && !running:
			continue
		}
		picked = append(picked, e)
	}
	s.mu.Unlock()
	for _, e := range picked {
		if s.opts.Queue != nil {
			s.cancelQueued(e.run.ID, action)
		}
		e.requestCancel(action)
		go s.dispatch(e.run.ThreadID)
	}
	w.WriteHeader(204)
	return nil
}

// createBatch creates several background runs; each body names its
// thread_id ("" for a thread-less run).
func (s *Server) createBatch(w http.ResponseWriter, r *http.Request) error {
	var reqs []json.RawMessage
	if err := decode(r, &reqs); err != nil {
		return err
	}
	out := []any{}
	for i, raw := range reqs {
		raw, err := snakeKeys(raw)
		if err != nil {
			return errorf(422, "run %d: want an object: %v", i, err)
		}
		var head struct {
			ThreadID string `json:"thread_id"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			return errorf(422, "run %d: %v", i, err)
		}
		sub := r.Clone(r.Context())
		sub.Body = io.NopCloser(bytes.NewReader(raw))
		e, err := s.startRun(sub, head.ThreadID)
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				ae.Msg = fmt.Sprintf("run %d: %s", i, ae.Msg)
			}
			return err
		}
		out = append(out, s.runJSON(&e.first))
	}
	return writeJSON(w, 200, out)
}

// snakeKeys renames the camelCase top-level keys of a JSON object to
// snake_case unless the snake_case key is there too: the SDK's createBatch
// sends each payload as given to it (threadId, interruptBefore, …).
func snakeKeys(raw json.RawMessage) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	for k, v := range m {
		var b strings.Builder
		for _, c := range k {
			if c >= 'A' && c <= 'Z' {
				b.WriteByte('_')
				c += 'a' - 'A'
			}
			b.WriteRune(c)
		}
		if sk := b.String(); sk != k {
			if _, ok := m[sk]; !ok {
				m[sk] = v
			}
			delete(m, k)
		}
	}
	return json.Marshal(m)
}
