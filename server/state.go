package server

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// stateSchema is the JSON Schema of a graph's state.
func stateSchema(g *spec.Graph) map[string]any {
	props := map[string]any{}
	for _, f := range g.Fields {
		p := typeSchema(f.Type)
		if f.Description != "" {
			p["description"] = f.Description
		}
		if f.Default != nil {
			p["default"] = f.Default
		}
		if len(f.Enum) > 0 {
			p["enum"] = f.Enum
		}
		if f.Optional {
			p = map[string]any{"anyOf": []any{p, map[string]any{"type": "null"}}}
		}
		props[f.Name] = p
	}
	return map[string]any{"title": g.Name, "type": "object", "properties": props, "$schema": "http://json-schema.org/draft-07/schema#"}
}

func typeSchema(t spec.Type) map[string]any {
	switch t.Kind {
	case spec.KindString:
		return map[string]any{"type": "string"}
	case spec.KindInt:
		return map[string]any{"type": "integer"}
	case spec.KindFloat:
		return map[string]any{"type": "number"}
	case spec.KindBool:
		return map[string]any{"type": "boolean"}
	case spec.KindObject:
		return map[string]any{"type": "object"}
	case spec.KindMessages:
		return map[string]any{"type": "array", "items": map[string]any{"type": "object"}}
	case spec.KindList:
		if t.Items != "" && t.Items != spec.KindAny {
			return map[string]any{"type": "array", "items": typeSchema(spec.Type{Kind: t.Items})}
		}
		return map[string]any{"type": "array"}
	}
	return map[string]any{}
}

// configSchema describes the config keys a run takes (see runConfig).
func configSchema() map[string]any {
	return map[string]any{"type": "object", "properties": map[string]any{
		"recursion_limit": map[string]any{"type": "integer", "description": "superstep limit of the run"},
		"configurable": map[string]any{"type": "object", "properties": map[string]any{
			"timeout":        map[string]any{"type": "string", "description": "wall-time limit, e.g. 30s"},
			"max_llm_calls":  map[string]any{"type": "integer"},
			"max_tokens":     map[string]any{"type": "integer"},
			"max_cost_usd":   map[string]any{"type": "number"},
			"max_state_size": map[string]any{"type": "integer", "description": "bytes of JSON"},
		}},
	}}
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func checkpointRef(thread, id string) map[string]any {
	if id == "" {
		return nil
	}
	return map[string]any{"thread_id": thread, "checkpoint_ns": "", "checkpoint_id": id, "checkpoint_map": nil}
}

// interruptJSON is an Interrupt as the SDK reads it.
func interruptJSON(cpID string, in runtime.Interrupt) map[string]any {
	id := cpID + ":" + in.Node
	if in.Path != "" {
		id = cpID + ":" + in.Path
	}
	return map[string]any{"id": id, "value": in.Payload, "when": map[runtime.InterruptWhen]string{
		runtime.InterruptBefore: "before", runtime.InterruptAfter: "after", runtime.InterruptNode: "during"}[in.When],
		"resumable": true, "ns": []string{in.Node}}
}

func interruptsOf(cp *runtime.Checkpoint) []runtime.Interrupt {
	var out []runtime.Interrupt
	for _, p := range cp.Pending {
		if p.Kind == runtime.PendingInterrupt && p.Interrupt != nil {
			out = append(out, *p.Interrupt)
		}
	}
	return out
}

// waitingInterrupts are the interrupts a run that resumes cp answers: node
// interrupts (a value) and before-breakpoints.
func interruptList(cp *runtime.Checkpoint) []any {
	out := []any{}
	for _, in := range interruptsOf(cp) {
		out = append(out, interruptJSON(cp.ID, in))
	}
	return out
}

// threadState renders a checkpoint as a ThreadState.
func threadState(g *spec.Graph, cp *runtime.Checkpoint) map[string]any {
	tasks := []any{}
	errs := map[string]string{}
	ints := map[string][]any{}
	for _, p := range cp.Pending {
		switch {
		case p.Kind == runtime.PendingError:
			errs[p.Node] = p.Error
		case p.Kind == runtime.PendingInterrupt && p.Interrupt != nil:
			ints[p.Interrupt.Node] = append(ints[p.Interrupt.Node], interruptJSON(cp.ID, *p.Interrupt))
		}
	}
	for _, n := range cp.Next {
		var e any
		if m, ok := errs[n]; ok {
			e = m
		}
		in := ints[n]
		if in == nil {
			in = []any{}
		}
		tasks = append(tasks, map[string]any{"id": cp.ID + ":" + n, "name": n, "error": e, "interrupts": in, "checkpoint": nil, "state": nil})
	}
	next := cp.Next
	if next == nil {
		next = []string{}
	}
	writes := map[string]any{}
	for node, fields := range cp.Metadata.Writes {
		writes[node] = fields
	}
	var parent any
	if cp.ParentID != "" {
		parent = checkpointRef(cp.Thread, cp.ParentID)
	}
	return map[string]any{
		"values": outValues(g, cp.Values), "next": next, "tasks": tasks,
		"checkpoint": checkpointRef(cp.Thread, cp.ID),
		"metadata": map[string]any{"source": string(cp.Metadata.Source), "step": cp.Step, "writes": writes,
			"parents": map[string]any{}, "graph_id": cp.Metadata.Graph,
			"usage": usageList(cp.Metadata.Usage), "totals": cp.Metadata.Totals},
		"created_at": ts(cp.Metadata.Time), "parent_checkpoint": parent,
		"interrupts": interruptList(cp),
	}
}

// graph returns the served graph of that name, nil if none.
func (s *Server) graph(name string) *spec.Graph {
	if a := s.assistants[name]; a != nil {
		return a.Graph
	}
	return nil
}

// emptyState is the ThreadState of a thread without checkpoints.
func emptyState(thread string) map[string]any {
	return map[string]any{"values": map[string]any{}, "next": []string{}, "tasks": []any{},
		"checkpoint": map[string]any{"thread_id": thread, "checkpoint_ns": "", "checkpoint_id": nil, "checkpoint_map": nil},
		"metadata":   map[string]any{}, "created_at": nil, "parent_checkpoint": nil, "interrupts": []any{}}
}

// head returns a thread's head checkpoint, nil when it has none.
func (s *Server) head(ctx context.Context, thread string) (*runtime.Checkpoint, error) {
	cp, err := s.opts.Saver.Get(ctx, thread, "")
	if errors.Is(err, runtime.ErrNotFound) {
		return nil, nil
	}
	return cp, err
}

// threadJSON renders a thread with its head's values and interrupts.
func (s *Server) threadJSON(ctx context.Context, t *Thread) (map[string]any, error) {
	cp, err := s.head(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	md := t.Metadata
	if md == nil {
		md = map[string]any{}
	}
	out := map[string]any{"thread_id": t.ID, "created_at": ts(t.Created), "updated_at": ts(t.Updated),
		"state_updated_at": ts(t.Updated), "metadata": md, "status": t.Status,
		"values": nil, "interrupts": map[string]any{}, "config": map[string]any{}}
	if t.Error != "" {
		out["error"] = t.Error
	}
	if cp != nil {
		out["values"] = outValues(s.graph(t.GraphID), cp.Values)
		ints := map[string]any{}
		for _, in := range interruptsOf(cp) {
			id := cp.ID + ":" + in.Node
			ints[id] = []any{interruptJSON(cp.ID, in)}
		}
		out["interrupts"] = ints
	}
	return out, nil
}

// writesOf turns a values object into writes, checked against the graph.
func writesOf(g *spec.Graph, what string, values map[string]any) ([]runtime.Write, error) {
	inValues(g, values)
	var ws []runtime.Write
	for _, k := range sortedKeys(values) {
		if g.Field(k) == nil {
			names := make([]string, 0, len(g.Fields))
			for _, f := range g.Fields {
				names = append(names, f.Name)
			}
			return nil, errorf(422, "%s: graph %q has no state field %q (fields: %s)", what, g.Name, k, strings.Join(names, ", "))
		}
		v := spec.Normalize(values[k])
		w := []runtime.NodeWrites{{Node: "__input__", Writes: []runtime.Write{{Field: k, Value: v}}}}
		if _, _, _, err := runtime.Merge(g, 0, nil, w); err != nil {
			var we *runtime.WriteError
			if errors.As(err, &we) {
				err = we.Err
			}
			return nil, errorf(422, "%s: field %q: %v", what, k, err)
		}
		ws = append(ws, runtime.Write{Field: k, Value: v})
	}
	return ws, nil
}

// historyOf returns a thread's checkpoints newest first, filtered. It
// reads them in one walk of the thread's checkpoints (runtime.ReadHistory)
// with shared values: rendering them (historyJSON) only reads them.
// Checkpoints whose rows cannot be read are left out; one whose values
// cannot be rebuilt fails the request.
func (s *Server) historyOf(ctx context.Context, thread string, limit int, before string, md map[string]any) ([]*runtime.Checkpoint, error) {
	o := runtime.HistoryOptions{Limit: limit, Before: before, Shared: true}
	if len(md) > 0 {
		o.Filter = func(c *runtime.Checkpoint) bool {
			return matchMetadata(map[string]any{"source": string(c.Metadata.Source), "step": c.Step}, md)
		}
	}
	list, err := runtime.ReadHistory(ctx, s.opts.Saver, thread, o)
	if err != nil && !(errors.Is(err, runtime.ErrNotFound) && len(list) == 0) {
		if _, ok := runtime.CorruptErrors(err); !ok {
			return nil, err
		}
	}
	return list, nil
}

// usageList is a step's model calls, [] when it made none.
func usageList(us []runtime.Usage) []runtime.Usage {
	if us == nil {
		return []runtime.Usage{}
	}
	return us
}
