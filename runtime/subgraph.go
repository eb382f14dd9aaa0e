package runtime

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/lgrun/lgrun/spec"
)

// Child runs (subgraph and map nodes) are threads of their own in the same
// saver, named under the parent thread: "<thread>/<node>@<step>-<tag>" for a
// subgraph and "<thread>/<node>@<step>-<tag>#<item>" for a map item, where
// tag comes from the checkpoint the parent step started from. So a resumed
// parent step finds its children again (a finished child is not re-run, an
// interrupted or failed one is resumed), and `lgrun history --subgraphs`
// finds them by prefix. A replay gets fresh children.

// ChildSep separates a parent thread id from its children's names.
const ChildSep = "/"

// ThreadIDRule says which ids can name a thread.
const ThreadIDRule = `thread ids must be non-empty, without spaces at the ends and without "` + ChildSep + `" (reserved for subgraph runs)`

// ThreadIDError is the error of a thread id a run cannot start: see
// [ThreadIDRule].
type ThreadIDError struct{ ID string }

func (e *ThreadIDError) Error() string { return fmt.Sprintf("thread id %q: %s", e.ID, ThreadIDRule) }

// CheckThreadID returns a [*ThreadIDError] when id cannot name a thread a
// run starts: it is empty, has spaces at its ends, or contains [ChildSep]
// (which would clash with the names of child runs).
func CheckThreadID(id string) error {
	if id == "" || strings.TrimSpace(id) != id || strings.Contains(id, ChildSep) {
		return &ThreadIDError{ID: id}
	}
	return nil
}

// IsChildThread reports whether id names a subgraph or map-item run.
func IsChildThread(id string) bool { return strings.Contains(id, ChildSep) }

func childThreadID(call *NodeCall, suffix string) string {
	return call.Thread + ChildSep + call.Node.Name + "@" + fmt.Sprint(call.Step) + "-" + call.ChildTag + suffix
}

// childRunner returns a runner for a child graph that shares this runner's
// saver, kinds and event stream (events carry the child's namespace).
// msgRun is the child's message-id prefix.
func (r *Runner) childRunner(g *spec.Graph, ns, msgRun string) *Runner {
	return &Runner{
		Graph: g, Saver: r.Saver, Kinds: r.Kinds, Now: r.Now, IDs: r.ids(), Version: r.Version,
		GraphFile: g.File, Strict: r.Strict, ReuseRecords: r.ReuseRecords, child: true, msgRun: msgRun,
		Observer: r.Observer,
		Events: func(e Event) {
			if e.Namespace == "" {
				e.Namespace = ns
			} else {
				e.Namespace = ns + ChildSep + e.Namespace
			}
			r.emit(e)
		},
	}
}

// childOutcome is a finished (or paused) child run.
type childOutcome struct {
	values    map[string]any
	goto_     []string
	interrupt *Interrupt
	// usage is every model call of a finished child run, its node names
	// prefixed with the parent node's ("research/researcher"), so the
	// parent's totals and budgets count them.
	usage []Usage
}

// childUsage collects the model usage recorded in a child run's checkpoints.
func childUsage(ctx context.Context, s Saver, id, node string) ([]Usage, error) {
	cps, err := s.List(ctx, id, 0)
	if err != nil {
		return nil, fmt.Errorf("read usage of child run %s: %w", id, err)
	}
	var out []Usage
	for i := len(cps) - 1; i >= 0; i-- {
		for _, u := range cps[i].Metadata.Usage {
			u.Node = node + ChildSep + u.Node
			out = append(out, u)
		}
	}
	return out, nil
}

// runChild runs, resumes or reuses the child thread of call named by
// suffix ("" for a subgraph, "#<item>" for a map item).
func runChild(ctx context.Context, call *NodeCall, g *spec.Graph, suffix string, input map[string]any) (*childOutcome, error) {
	parent := call.Runner
	id := childThreadID(call, suffix)
	ns := strings.TrimPrefix(id, call.Thread+ChildSep)
	cr := parent.childRunner(g, ns, childRun(parent.msgRun, call.Node.Name, call.Step, suffix))
	th, err := parent.Saver.Thread(ctx, id)
	// The child reserves each call on the parent step's ledger too (and so
	// on up the chain): it gets no copy of what is left as limits of its
	// own, which concurrent children would each spend in full.
	ctx = withParentLedger(ctx, call.Ledger, call.Node.Name)
	cfg := Config{StateSize: call.StateSize}
	var res *Result
	switch {
	case errors.Is(err, ErrNotFound):
		res, err = cr.Run(ctx, RunOptions{Thread: id, Input: input, Config: cfg})
	case err != nil:
		return nil, fmt.Errorf("load child run %q: %w", id, err)
	case th.Status == StatusDone:
		cp, gerr := cr.get(ctx, id, "")
		if gerr != nil {
			return nil, gerr
		}
		res = &Result{Thread: id, Status: StatusDone, Checkpoint: cp}
	default:
		res, err = cr.Resume(ctx, ResumeOptions{Thread: id, Value: call.Resume, HasValue: call.HasResume && th.Status == StatusInterrupted && waitsForValue(ctx, parent.Saver, id), Config: cfg})
	}
	if err != nil {
		return nil, &ChildError{Graph: g.Name, Run: id, Err: err}
	}
	out := &childOutcome{values: res.Checkpoint.Values, goto_: res.Goto}
	if res.Status == StatusDone {
		if out.usage, err = childUsage(ctx, parent.Saver, id, call.Node.Name); err != nil {
			return nil, err
		}
	}
	if res.Status == StatusInterrupted && len(res.Interrupts) > 0 {
		in := res.Interrupts[0]
		for _, x := range res.Interrupts {
			if x.When == InterruptNode {
				in = x
				break
			}
		}
		path := ns + ChildSep + in.Node
		if in.Path != "" {
			path = ns + ChildSep + in.Path
		}
		out.interrupt = &Interrupt{Node: call.Node.Name, When: in.When, Payload: in.Payload, Path: path}
	}
	return out, nil
}

// waitsForValue reports whether the child thread (or a descendant) waits at
// an interrupt node, so a resume value belongs to it.
func waitsForValue(ctx context.Context, s Saver, id string) bool {
	cp, err := s.Get(ctx, id, "")
	if err != nil {
		return false
	}
	for _, p := range cp.Pending {
		if p.Kind == PendingInterrupt && p.Interrupt != nil && p.Interrupt.When == InterruptNode {
			return true
		}
	}
	return false
}

// childInput computes a child's input from the parent state: the node's
// input mappings, or the fields both graphs share.
func childInput(node *spec.ChildConfig, child *spec.Graph, env map[string]any) (map[string]any, error) {
	in := map[string]any{}
	if len(node.Input) > 0 {
		for _, a := range node.Input {
			v, err := a.Expr.Eval(env)
			if err != nil {
				return nil, fmt.Errorf("input %s: %w", a.Field, err)
			}
			in[a.Field] = v
		}
		return in, nil
	}
	state, _ := env["state"].(map[string]any)
	for _, f := range child.Fields {
		if v, ok := state[f.Name]; ok {
			in[f.Name] = v
		}
	}
	return in, nil
}

// childOutput maps a child's final values to parent writes: output_map, or
// the shared fields the child changed. For list fields the parent merges by
// appending, only the items the child added are written.
func childOutput(node *spec.ChildConfig, parent, child *spec.Graph, input, final map[string]any) []Write {
	pairs := map[string]string{} // parent field → child field
	if node.OutputMap != nil {
		pairs = node.OutputMap
	} else {
		for _, f := range child.Fields {
			if parent.Field(f.Name) != nil {
				pairs[f.Name] = f.Name
			}
		}
	}
	var out []Write
	for _, pf := range spec.SortedKeys(pairs) {
		cf := pairs[pf]
		v, ok := final[cf]
		if !ok {
			continue
		}
		before, had := input[cf]
		if had && reflect.DeepEqual(spec.Normalize(before), v) {
			continue // unchanged
		}
		pfield := parent.Field(pf)
		switch pfield.Reducer.Kind {
		case spec.ReduceAppend, spec.ReduceAdd, spec.ReduceMessages:
			if l, ok := v.([]any); ok {
				if b, ok := spec.Normalize(before).([]any); ok && had && len(b) <= len(l) && reflect.DeepEqual(b, l[:len(b)]) {
					v = l[len(b):]
				}
			}
		}
		out = append(out, Write{Field: pf, Value: v})
	}
	return out
}

func runSubgraph(ctx context.Context, call *NodeCall) (*NodeResult, error) {
	sc, err := configOf[*spec.SubgraphConfig](call.Node)
	if err != nil {
		return nil, err
	}
	node := &sc.ChildConfig
	child := call.Graph.Subgraphs[node.GraphPath]
	if child == nil {
		return nil, fmt.Errorf("subgraph %s was not loaded", node.GraphPath)
	}
	input, err := childInput(node, child, map[string]any{"state": call.State})
	if err != nil {
		return nil, err
	}
	out, err := runChild(ctx, call, child, "", input)
	if err != nil {
		return nil, err
	}
	if out.interrupt != nil {
		return &NodeResult{Interrupt: out.interrupt}, nil
	}
	return &NodeResult{Writes: childOutput(node, call.Graph, child, input, out.values), Goto: out.goto_, Usage: out.usage}, nil
}

// mapItem is the record of one finished map item, kept so a failed map
// step redoes only the items that did not finish.
type mapItem struct {
	Index  int     `json:"index"`
	Writes []Write `json:"writes"`
	Usage  []Usage `json:"usage,omitempty"`
	// Goto holds the routes the mapped node chose for this item.
	Goto []string `json:"goto,omitempty"`
}

func runMap(ctx context.Context, call *NodeCall) (*NodeResult, error) {
	node, err := configOf[*spec.MapConfig](call.Node)
	if err != nil {
		return nil, err
	}
	v, err := node.Over.EvalState(call.State)
	if err != nil {
		return nil, fmt.Errorf("over: %w", err)
	}
	items, ok := v.([]any)
	if !ok && v != nil {
		return nil, fmt.Errorf("over %q yielded %s, want a list", node.Over.Src, spec.TypeName(v))
	}
	done := map[int]mapItem{}
	for _, rec := range call.Partial {
		if it, ok := decodeMapItem(rec); ok {
			done[it.Index] = it
		}
	}
	results := make([]*mapItem, len(items))
	errs := make([]error, len(items))
	var interrupt *Interrupt
	var mu sync.Mutex
	sem := make(chan struct{}, max(node.MapLimit, 1))
	var wg sync.WaitGroup
	for i, item := range items {
		if it, ok := done[i]; ok {
			results[i] = &it
			continue
		}
		wg.Add(1)
		go func(i int, item any) {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = context.Cause(ctx)
				return
			}
			defer func() { <-sem }()
			res, in, err := mapOne(ctx, call, node, i, item)
			if err != nil {
				errs[i] = &ItemError{Index: i, Err: err}
				return
			}
			if in != nil {
				mu.Lock()
				if interrupt == nil || in.When == InterruptNode && interrupt.When != InterruptNode {
					interrupt = in
				}
				mu.Unlock()
				return
			}
			results[i] = res
		}(i, item)
	}
	wg.Wait()
	out := &NodeResult{}
	for _, r := range results {
		if r != nil {
			out.Records = append(out.Records, *r)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return out, err
	}
	if interrupt != nil {
		return &NodeResult{Interrupt: interrupt, Records: out.Records}, nil
	}
	writer := map[string]int{}
	for i, r := range results {
		for _, w := range r.Writes {
			if f := call.Graph.Field(w.Field); f != nil && f.Reducer.Kind == spec.ReduceReplace {
				if j, dup := writer[w.Field]; dup && j != i {
					return nil, fmt.Errorf("items %d and %d both wrote replace field %q; give it a reducer (append, add, merge) to collect per-item results", j, i, w.Field)
				}
				writer[w.Field] = i
			}
		}
		out.Writes = append(out.Writes, r.Writes...)
		out.Usage = append(out.Usage, r.Usage...)
		for _, to := range r.Goto {
			if !slices.Contains(out.Goto, to) {
				out.Goto = append(out.Goto, to)
			}
		}
	}
	sort.Strings(out.Goto)
	out.Records = nil
	return out, nil
}

func decodeMapItem(v any) (mapItem, bool) {
	switch x := v.(type) {
	case mapItem:
		return x, true
	case map[string]any:
		idx, ok := x["index"].(int)
		if !ok {
			return mapItem{}, false
		}
		it := mapItem{Index: idx}
		ws, _ := x["writes"].([]any)
		for _, w := range ws {
			wm, _ := w.(map[string]any)
			f, _ := wm["field"].(string)
			it.Writes = append(it.Writes, Write{Field: f, Value: spec.Normalize(wm["value"])})
		}
		us, _ := x["usage"].([]any)
		for _, u := range us {
			um, _ := u.(map[string]any)
			var usage Usage
			usage.Node, _ = um["node"].(string)
			usage.Model, _ = um["model"].(string)
			usage.ID, _ = um["id"].(string)
			usage.Estimated, _ = um["estimated"].(bool)
			usage.InputTokens, _ = um["in"].(int)
			usage.OutputTokens, _ = um["out"].(int)
			if c, ok := um["cost"].(float64); ok {
				usage.CostUSD = c
			}
			it.Usage = append(it.Usage, usage)
		}
		gs, _ := x["goto"].([]any)
		for _, g := range gs {
			if name, ok := g.(string); ok {
				it.Goto = append(it.Goto, name)
			}
		}
		return it, true
	}
	return mapItem{}, false
}

// mapOne runs item i: the mapped node on the state with item_as set, or
// the child graph with the item as input.
func mapOne(ctx context.Context, call *NodeCall, cfg *spec.MapConfig, i int, item any) (*mapItem, *Interrupt, error) {
	node := call.Node
	if cfg.GraphPath != "" {
		child := call.Graph.Subgraphs[cfg.GraphPath]
		if child == nil {
			return nil, nil, fmt.Errorf("graph %s was not loaded", cfg.GraphPath)
		}
		env := map[string]any{"state": call.State, "item": item, "index": i}
		input, err := childInput(&cfg.ChildConfig, child, env)
		if err != nil {
			return nil, nil, err
		}
		if cfg.ItemAs != "" {
			input[cfg.ItemAs] = item
		}
		out, err := runChild(ctx, call, child, fmt.Sprintf("#%d", i), input)
		if err != nil {
			return nil, nil, err
		}
		if out.interrupt != nil {
			return nil, out.interrupt, nil
		}
		return &mapItem{Index: i, Writes: childOutput(&cfg.ChildConfig, call.Graph, child, input, out.values), Usage: out.usage}, nil, nil
	}
	target := call.Graph.Nodes[cfg.MapNode.Name]
	if target == nil {
		return nil, nil, fmt.Errorf("graph has no node %q", cfg.MapNode.Name)
	}
	f := call.Graph.Field(cfg.ItemAs)
	iv, err := f.Type.Coerce(item)
	if err != nil {
		return nil, nil, fmt.Errorf("item_as %s: %w", cfg.ItemAs, err)
	}
	state := make(map[string]any, len(call.State))
	for k, v := range call.State {
		state[k] = v
	}
	state[cfg.ItemAs] = iv
	ns := fmt.Sprintf("%s#%d", node.Name, i)
	sub := *call
	sub.Node, sub.State, sub.Partial, sub.Replay = target, state, nil, nil
	sub.Emit = func(e Event) {
		e.Thread, e.Step, e.Node, e.Namespace = call.Thread, call.Step, target.Name, ns
		call.Runner.emit(e)
	}
	// A map item runs through the same invocation path as a superstep node:
	// timeout, retries with backoff, events, usage and goto.
	res, err := call.Runner.invoke(ctx, &sub)
	if err != nil {
		return nil, nil, err
	}
	if res.Interrupt != nil {
		return nil, nil, fmt.Errorf("node %q paused for a human inside a map item; use a map over a graph for that", target.Name)
	}
	return &mapItem{Index: i, Writes: res.Writes, Usage: res.Usage, Goto: res.Goto}, nil, nil
}

// ChildThreads lists the child runs of a thread (at every depth), sorted.
// Like [Saver.Threads], it returns the readable ones together with a
// [CorruptError] for each damaged row of a child.
func ChildThreads(ctx context.Context, s Saver, thread string) ([]*Thread, error) {
	all, err := s.Threads(ctx)
	bad, ok := CorruptErrors(err)
	if !ok {
		return nil, err
	}
	var out []*Thread
	for _, t := range all {
		if strings.HasPrefix(t.ID, thread+ChildSep) {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	// Only the damaged rows of this thread's children concern the caller.
	var errs []error
	for _, b := range bad {
		if strings.HasPrefix(b.Thread, thread+ChildSep) {
			errs = append(errs, b)
		}
	}
	return out, errors.Join(errs...)
}
