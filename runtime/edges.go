package runtime

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/lgrun/lgrun/spec"
)

// nextNodes computes the nodes the next superstep runs after the nodes in
// finished ran (or [spec.Start], for input), evaluating conditional edges
// on values. gotos holds routes returned by nodes. waiting is the join
// bookkeeping of the previous checkpoint; the updated copy is returned.
func (r *Runner) nextNodes(values map[string]any, finished []string, gotos map[string][]string, waiting map[string][]string) ([]string, map[string][]string, error) {
	next, w, _, err := r.route(values, finished, gotos, waiting)
	return next, w, err
}

// route is nextNodes that also returns the branches taken (see
// spec.Graph.Branches), for coverage.
func (r *Runner) route(values map[string]any, finished []string, gotos map[string][]string, waiting map[string][]string) ([]string, map[string][]string, []string, error) {
	g := r.Graph
	set := map[string]bool{}
	add := func(t string) { set[t] = true }
	// The branches taken are only reported through events.
	wantBranches := r.Events != nil
	var branches []string
	for _, n := range finished {
		for _, t := range gotos[n] {
			set[t] = true
			if node := g.Nodes[n]; node != nil && wantBranches {
				branches = append(branches, node.GotoBranchID(t))
			}
		}
		for _, e := range g.Outgoing(n) {
			key, err := evalEdge(e, values, add)
			if err != nil {
				return nil, nil, nil, &EdgeError{From: n, Pos: e.Pos, Err: err}
			}
			if key != "" && wantBranches {
				branches = append(branches, e.BranchID(n, key))
			}
		}
	}
	// Joins: record finished sources; fire when all have finished.
	var out map[string][]string
	if len(waiting) > 0 || len(g.Joins()) > 0 {
		out = map[string][]string{}
		for k, v := range waiting {
			out[k] = append([]string(nil), v...)
		}
	}
	for _, j := range g.Joins() {
		for _, n := range finished {
			if contains(j.Sources, n) && !contains(out[j.Target], n) {
				out[j.Target] = append(out[j.Target], n)
			}
		}
		if len(out[j.Target]) > 0 && len(out[j.Target]) >= len(j.Sources) && coversAll(out[j.Target], j.Sources) {
			set[j.Target] = true
			delete(out, j.Target)
		}
	}
	for k, v := range out {
		if len(v) == 0 {
			delete(out, k)
		} else {
			sort.Strings(v)
		}
	}
	if len(out) == 0 {
		out = nil
	}
	delete(set, spec.End)
	next := make([]string, 0, len(set))
	for n := range set {
		next = append(next, n)
	}
	sort.Strings(next)
	return next, out, branches, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func coversAll(have, want []string) bool {
	for _, w := range want {
		if !contains(have, w) {
			return false
		}
	}
	return true
}

// evalEdge calls add with each target of one edge for the state values,
// and returns the key of the branch taken ("" for a plain edge).
func evalEdge(e *spec.Edge, values map[string]any, add func(string)) (string, error) {
	addRefs := func(refs []spec.NameRef) {
		for _, r := range refs {
			add(r.Name)
		}
	}
	switch {
	case e.When != nil:
		ok, err := evalBool(e.When, values)
		if err != nil {
			return "", err
		}
		if ok {
			addRefs(e.To)
			return "when", nil
		}
		addRefs(e.Else)
		return "else", nil
	case e.Routes != nil:
		for i, rt := range e.Routes {
			ok, err := evalBool(rt.When, values)
			if err != nil {
				return "", err
			}
			if ok {
				addRefs(rt.To)
				return "routes[" + strconv.Itoa(i) + "]", nil
			}
		}
		addRefs(e.Default)
		return "default", nil
	case e.Route != nil:
		v, err := e.Route.EvalState(values)
		if err != nil {
			return "", err
		}
		targets, err := routeNames(v)
		if err != nil {
			return "", fmt.Errorf("route %q: %w", e.Route.Src, err)
		}
		for _, t := range targets {
			ok := false
			for _, p := range e.Paths {
				ok = ok || p.Name == t
			}
			if !ok {
				return "", fmt.Errorf("route %q yielded %q, which is not one of its paths (%s)", e.Route.Src, t, refList(e.Paths))
			}
		}
		for _, t := range targets {
			add(t)
		}
		key := "route=" + strings.Join(targets, ",")
		if len(targets) == 0 {
			key = "route="
		}
		return key, nil
	}
	addRefs(e.To)
	return "", nil
}

func evalBool(x *spec.Expr, values map[string]any) (bool, error) {
	v, err := x.EvalState(values)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("condition %q yielded %s, want bool", x.Src, spec.TypeName(v))
	}
	return b, nil
}

// routeNames accepts a node name, a list of names, or nil (no route).
func routeNames(v any) ([]string, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		if x == "" {
			return nil, nil
		}
		return []string{x}, nil
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("route list holds %s, want node names", spec.TypeName(e))
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("route yielded %s, want a node name or a list of names", spec.TypeName(v))
}

func names(refs []spec.NameRef) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.Name
	}
	return out
}

func refList(refs []spec.NameRef) string { return strings.Join(names(refs), ", ") }
