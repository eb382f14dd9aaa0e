package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

func pairsOrEmpty(p [][]any) [][]any {
	if p == nil {
		return [][]any{}
	}
	return p
}

func fieldOf(g *spec.Graph, name string) *spec.Field {
	if g == nil {
		return nil
	}
	return g.Field(name)
}

// emit appends an event to the run's log (and, for a resumable stream, to
// the store) and wakes the streams reading it.
func (e *execution) emitWith(s *Server, event string, data any) {
	b, err := json.Marshal(data)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": "Error", "message": "unencodable event: " + err.Error()})
		event = "error"
	}
	e.mu.Lock()
	ev := StoredEvent{ID: len(e.events), Event: event, Data: b}
	e.events = append(e.events, ev)
	if e.notify != nil {
		close(e.notify)
		e.notify = make(chan struct{})
	}
	ctx, cancel := e.wctx, e.cancel
	e.mu.Unlock()
	if ctx == nil {
		ctx = context.Background()
	}
	if s != nil && (e.run.Request.StreamResumable || s.opts.Queue != nil) {
		if err := s.opts.Store.AppendEvent(ctx, e.run.ID, ev); err != nil {
			s.opts.Logf("lgrun serve: %v", err)
			if errors.Is(err, runtime.ErrFenced) && cancel != nil {
				cancel(errLostClaim) // the run stops: another worker has it
			}
		}
		if s.opts.Queue != nil {
			s.notifyEvents(e.run.ID) // for streams on other processes
		}
	}
}

// translate turns runtime events into the SSE events of the requested
// stream modes.
func (e *execution) translate(ev runtime.Event) {
	e.translateWith(e.srv, ev)
}

// nsName renders an event's namespace as the SDK's "mode|ns1|ns2" suffix
// ("" for the top graph): each part is node:task.
func nsName(ns string) string {
	if ns == "" {
		return ""
	}
	parts := strings.Split(ns, runtime.ChildSep)
	for i, p := range parts {
		parts[i] = strings.Replace(p, "@", ":", 1)
	}
	return "|" + strings.Join(parts, "|")
}

func (e *execution) translateWith(s *Server, ev runtime.Event) {
	p := e.plan
	if ev.Namespace != "" && !p.subgraphs {
		return
	}
	suffix := nsName(ev.Namespace)
	out := func(mode string, data any) { e.emitWith(s, mode+suffix, data) }
	thread := e.run.ThreadID
	var g *spec.Graph // the graph of the event: messages fields get LangChain's shape too
	if ev.Namespace == "" {
		g = e.a.Graph
	}
	now := func() string { return time.Now().UTC().Format(time.RFC3339Nano) }
	switch ev.Kind {
	case runtime.EvRunStart, runtime.EvCheckpoint:
		if p.modes["values"] {
			out("values", outValues(g, ev.Values))
		}
		next := ev.Next
		if next == nil {
			next = []string{}
		}
		if p.modes["checkpoints"] {
			tasks := []any{}
			for _, n := range next {
				tasks = append(tasks, map[string]any{"id": fmt.Sprintf("%d:%s", ev.Step+1, n), "name": n, "interrupts": []any{}})
			}
			out("checkpoints", map[string]any{"values": outValues(g, ev.Values), "next": next, "tasks": tasks,
				"config":   map[string]any{"configurable": checkpointRef(thread, ev.Checkpoint)},
				"metadata": map[string]any{"step": ev.Step}})
		}
		if p.modes["debug"] {
			out("debug", map[string]any{"step": ev.Step, "timestamp": now(), "type": "checkpoint", "payload": map[string]any{
				"config": map[string]any{"configurable": checkpointRef(thread, ev.Checkpoint)},
				"values": ev.Values, "next": next, "tasks": []any{},
				"metadata":   map[string]any{"step": ev.Step},
				"checkpoint": checkpointRef(thread, ev.Checkpoint),
			}})
		}
	case runtime.EvNodeStart:
		if p.modes["tasks"] {
			out("tasks", map[string]any{"id": fmt.Sprintf("%d:%s", ev.Step, ev.Node), "name": ev.Node, "input": nil,
				"triggers": []string{}, "interrupts": []any{}})
		}
		if p.modes["debug"] {
			out("debug", map[string]any{"step": ev.Step, "timestamp": now(), "type": "task", "payload": map[string]any{
				"id": fmt.Sprintf("%d:%s", ev.Step, ev.Node), "name": ev.Node, "input": nil, "triggers": []string{}, "interrupts": []any{}}})
		}
	case runtime.EvNodeEnd:
		if ev.Interrupt != nil {
			return
		}
		writes := map[string]any{}
		var pairs [][]any
		for _, w := range ev.Writes {
			v := w.Value
			if f := fieldOf(g, w.Field); f != nil && f.Type.Kind == spec.KindMessages {
				v = outMessages(v)
			}
			writes[w.Field] = v
			pairs = append(pairs, []any{w.Field, v})
		}
		if p.modes["updates"] {
			out("updates", map[string]any{ev.Node: writes})
		}
		if p.modes["tasks"] {
			out("tasks", map[string]any{"id": fmt.Sprintf("%d:%s", ev.Step, ev.Node), "name": ev.Node, "result": pairsOrEmpty(pairs), "interrupts": []any{}})
		}
		if p.modes["debug"] {
			if pairs == nil {
				pairs = [][]any{}
			}
			out("debug", map[string]any{"step": ev.Step, "timestamp": now(), "type": "task_result", "payload": map[string]any{
				"id": fmt.Sprintf("%d:%s", ev.Step, ev.Node), "name": ev.Node, "error": nil, "result": pairs, "interrupts": []any{}}})
		}
	case runtime.EvNodeError:
		if p.modes["tasks"] {
			out("tasks", map[string]any{"id": fmt.Sprintf("%d:%s", ev.Step, ev.Node), "name": ev.Node, "error": ev.Error, "interrupts": []any{}})
		}
		if p.modes["debug"] {
			out("debug", map[string]any{"step": ev.Step, "timestamp": now(), "type": "task_result", "payload": map[string]any{
				"id": fmt.Sprintf("%d:%s", ev.Step, ev.Node), "name": ev.Node, "error": ev.Error, "result": [][]any{}, "interrupts": []any{}}})
		}
	case runtime.EvInterrupt:
		if ev.Interrupt == nil {
			return
		}
		in := interruptJSON(ev.Checkpoint, *ev.Interrupt)
		if p.modes["updates"] {
			out("updates", map[string]any{"__interrupt__": []any{in}})
		}
		if p.modes["values"] && ev.Namespace == "" {
			out("values", map[string]any{"__interrupt__": []any{in}})
		}
	case runtime.EvToken:
		if p.modes["messages-tuple"] {
			id := fmt.Sprintf("run-%s-%s-%d", e.run.ID, ev.Node, ev.Step)
			out("messages", []any{
				map[string]any{"type": "AIMessageChunk", "content": ev.Token, "id": id, "tool_calls": []any{}, "tool_call_chunks": []any{}},
				map[string]any{"langgraph_node": ev.Node, "langgraph_step": ev.Step, "langgraph_checkpoint_ns": strings.TrimPrefix(suffix, "|"),
					"thread_id": thread, "run_id": e.run.ID, "tags": []string{}},
			})
		}
	}
}

// writeEvent writes one SSE frame.
func writeEvent(w http.ResponseWriter, ev StoredEvent) error {
	_, err := fmt.Fprintf(w, "event: %s\ndata: %s\nid: %d\n\n", ev.Event, ev.Data, ev.ID)
	return err
}

// serveStream writes e's events from index from until its end, with
// heartbeat comments; a client that goes away cancels the run when
// cancelOnDisconnect.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, e *execution, from int, cancelOnDisconnect bool) error {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("Content-Location", runPath(e.run))
	if e.run.Request != nil && e.run.Request.StreamResumable {
		h.Set("Location", runPath(e.run)+"/stream")
	}
	w.WriteHeader(200)
	fl, _ := w.(http.Flusher)
	flush := func() {
		if fl != nil {
			fl.Flush()
		}
	}
	flush()
	beat := time.NewTicker(s.opts.Heartbeat)
	defer beat.Stop()
	i := from
	for {
		e.mu.Lock()
		pending := append([]StoredEvent(nil), e.events[min(i, len(e.events)):]...)
		notify, finished := e.notify, e.finished
		e.mu.Unlock()
		for _, ev := range pending {
			if err := writeEvent(w, ev); err != nil {
				if cancelOnDisconnect {
					e.requestCancel("interrupt")
				}
				return nil
			}
			i = ev.ID + 1
		}
		flush()
		if finished {
			return nil
		}
		select {
		case <-notify:
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
				if cancelOnDisconnect {
					e.requestCancel("interrupt")
				}
				return nil
			}
			flush()
		case <-r.Context().Done():
			if cancelOnDisconnect {
				e.requestCancel("interrupt")
			}
			return nil
		}
	}
}

func (s *Server) streamRun(w http.ResponseWriter, r *http.Request) error {
	e, err := s.startRun(r, r.PathValue("tid"))
	if err != nil {
		return err
	}
	od := e.run.Request.OnDisconnect
	return s.serveStream(w, r, e, 0, od == "" || od == "cancel")
}

// joinStream streams a run from after Last-Event-ID (-1: from the start),
// or only its new events without one.
func (s *Server) joinStream(w http.ResponseWriter, r *http.Request) error {
	e, err := s.execOf(r)
	if err != nil {
		return err
	}
	from := -1
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		n, err := strconv.Atoi(last)
		if err != nil || n < -1 {
			return errorf(422, "Last-Event-ID: want an event id (a number, or -1 for all), got %q", last)
		}
		from = n + 1
	} else {
		e.mu.Lock()
		from = len(e.events)
		e.mu.Unlock()
	}
	if from < 0 {
		from = 0
	}
	cod := r.URL.Query().Get("cancel_on_disconnect")
	return s.serveStream(w, r, e, from, cod == "1" || cod == "true")
}
