package spec

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/expr-lang/expr/ast"
)

// analyze derives the runtime view of the edges (outgoing edges, joins) and
// applies the graph-level rules: reachability, paths to END, concurrent
// writers and the LangGraph traps.
func (c *checker) analyze() {
	g := c.g
	plain := map[[2]string]Pos{}
	for _, e := range g.Edges {
		if len(e.From) > 1 {
			var srcs []string
			seen := map[string]bool{}
			for _, f := range e.From {
				if seen[f.Name] {
					c.errs.Add(f.Pos, "join lists %q twice", f.Name)
				}
				seen[f.Name] = true
				srcs = append(srcs, f.Name)
			}
			for _, t := range e.To {
				g.joins = append(g.joins, &Join{Target: t.Name, Sources: srcs, Edge: e})
			}
			continue
		}
		src := e.From[0].Name
		if !e.Conditional() {
			for _, t := range e.To {
				k := [2]string{src, t.Name}
				if p, dup := plain[k]; dup {
					c.errs.Add(t.Pos, "duplicate edge %s -> %s (first at line %d)", src, t.Name, p.Line)
				}
				plain[k] = t.Pos
			}
		}
		g.out[src] = append(g.out[src], e)
	}
	if len(g.out[Start]) == 0 {
		c.errs.Add(c.pos(c.edgesKey), "no edge from START: add one, e.g. {from: START, to: %s}", firstOr(g.NodeOrder, "NODE"))
		return
	}

	succ := c.successors(true)
	reach := closure([]string{Start}, succ)
	for _, name := range g.NodeOrder {
		if !reach[name] {
			c.errs.Warn(g.Nodes[name].Pos, "node %q is unreachable from START", name)
		}
	}
	// Path to END, walking edges backwards.
	pred := map[string][]string{}
	for from, tos := range succ {
		for _, t := range tos {
			pred[t] = append(pred[t], from)
		}
	}
	toEnd := closure([]string{End}, pred)
	loops := c.deadLoops(succ)
	// A node run per item by a map node ends inside the map.
	mapped := map[string]bool{}
	for _, n := range g.Nodes {
		if n.MappedNode().Name != "" {
			mapped[n.MappedNode().Name] = true
		}
	}
	for _, name := range g.NodeOrder {
		if reach[name] && !toEnd[name] && !loops[name] && !mapped[name] {
			next := len(succ[name])
			if n := g.Nodes[name]; n.MappedNode().Name != "" {
				next-- // the mapped node runs inside, the run does not go on there
			}
			if next > 0 {
				continue // the path stops further on, where it is reported
			}
			c.errs.Warn(g.Nodes[name].Pos, "node %q has no path to END; the run stops there", name)
		}
	}
	c.checkTraps(succ)
	c.checkRoutesDefault()
	c.checkConcurrentWrites()
}

// checkRoutesDefault warns about routes without a default on a node that
// has no other way on: when no route matches, nothing is scheduled and the
// run ends there (LangGraph raises an error in that case).
func (c *checker) checkRoutesDefault() {
	g := c.g
	for _, src := range append([]string{Start}, g.NodeOrder...) {
		edges := g.out[src]
		if n := g.Nodes[src]; len(edges) != 1 || (n != nil && n.Goto != nil) {
			continue
		}
		e := edges[0]
		if e.Routes == nil || e.Default != nil || len(e.Routes) == 0 || alwaysTrue(e.Routes[len(e.Routes)-1].When) {
			continue
		}
		c.errs.Warn(e.routesPos, "routes from %q have no default: when no route matches, nothing runs next and the run ends after %q; add default: END (or a node) to make that explicit", src, src)
	}
}

// alwaysTrue reports whether x is the constant true.
func alwaysTrue(x *Expr) bool {
	if x == nil || x.Program == nil {
		return false
	}
	switch n := x.Program.Node().(type) {
	case *ast.BoolNode:
		return n.Value
	case *ast.ConstantNode:
		return n.Value == true
	}
	return false
}

func firstOr(s []string, d string) string {
	if len(s) > 0 {
		return s[0]
	}
	return d
}

// successors maps each node (and START) to every node it may trigger.
func (c *checker) successors(withJoins bool) map[string][]string {
	g := c.g
	succ := map[string][]string{}
	for src, edges := range g.out {
		for _, e := range edges {
			for _, t := range e.Targets() {
				succ[src] = append(succ[src], t.Name)
			}
		}
	}
	if withJoins {
		for _, j := range g.joins {
			for _, s := range j.Sources {
				succ[s] = append(succ[s], j.Target)
			}
		}
	}
	for _, n := range g.Nodes {
		for _, t := range n.GotoPaths {
			if strings.HasPrefix(t.Name, "^") {
				// Leaves this graph for the parent: like END here.
				succ[n.Name] = append(succ[n.Name], End)
				continue
			}
			succ[n.Name] = append(succ[n.Name], t.Name)
		}
		if n.MappedNode().Name != "" {
			// The mapped node runs inside the map node.
			succ[n.Name] = append(succ[n.Name], n.MappedNode().Name)
		}
	}
	return succ
}

func closure(start []string, next map[string][]string) map[string]bool {
	seen := map[string]bool{}
	stack := append([]string{}, start...)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[n] {
			continue
		}
		seen[n] = true
		stack = append(stack, next[n]...)
	}
	return seen
}

// deadLoops warns about cycles that no edge leaves, and returns their nodes.
func (c *checker) deadLoops(succ map[string][]string) map[string]bool {
	g := c.g
	mapped := map[string]bool{}
	for _, n := range g.Nodes {
		if n.MappedNode().Name != "" {
			mapped[n.MappedNode().Name] = true
		}
	}
	out := map[string]bool{}
	for _, scc := range sccs(g.NodeOrder, succ) {
		in := map[string]bool{}
		for _, n := range scc {
			in[n] = true
		}
		cyclic := len(scc) > 1
		if !cyclic {
			for _, t := range succ[scc[0]] {
				if t == scc[0] {
					cyclic = true
				}
			}
		}
		if !cyclic || mapped[scc[0]] {
			continue
		}
		exit := false
		for _, n := range scc {
			for _, t := range succ[n] {
				if !in[t] {
					exit = true
				}
			}
		}
		if exit {
			continue
		}
		sort.Slice(scc, func(i, j int) bool { return g.Nodes[scc[i]].Pos.Line < g.Nodes[scc[j]].Pos.Line })
		for _, n := range scc {
			out[n] = true
		}
		c.errs.Warn(g.Nodes[scc[0]].Pos, "loop %s has no exit condition: nothing leads out of it, so it runs until the step limit", strings.Join(append(scc, scc[0]), " -> "))
	}
	return out
}

// sccs returns the strongly connected components of the node graph (Tarjan).
func sccs(nodes []string, succ map[string][]string) [][]string {
	index := map[string]int{}
	low := map[string]int{}
	on := map[string]bool{}
	var stack []string
	var out [][]string
	i := 0
	var visit func(v string)
	visit = func(v string) {
		index[v], low[v] = i, i
		i++
		stack = append(stack, v)
		on[v] = true
		for _, w := range succ[v] {
			if w == End || w == Start {
				continue
			}
			if _, ok := index[w]; !ok {
				visit(w)
				low[v] = min(low[v], low[w])
			} else if on[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] == index[v] {
			var comp []string
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				on[w] = false
				comp = append(comp, w)
				if w == v {
					break
				}
			}
			out = append(out, comp)
		}
	}
	for _, n := range nodes {
		if _, ok := index[n]; !ok {
			visit(n)
		}
	}
	return out
}

// staticSucc maps each node to the nodes it always triggers (plain edges).
func (c *checker) staticSucc() map[string][]string {
	succ := map[string][]string{}
	for src, edges := range c.g.out {
		for _, e := range edges {
			if !e.Conditional() {
				for _, t := range e.To {
					succ[src] = append(succ[src], t.Name)
				}
			}
		}
	}
	return succ
}

func (c *checker) checkTraps(succ map[string][]string) {
	g := c.g
	static := c.staticSucc()

	// Roots of static regions: START and every set of nodes one
	// conditional branch triggers together (the to of when, else, the to of
	// each route, default). Nodes in one region's static closure always run
	// when the region's roots run. The names a route or goto expression may
	// yield are roots one by one: which of them run together is not known.
	roots := [][]string{{Start}}
	names := func(refs []NameRef) []string {
		out := make([]string, len(refs))
		for i, r := range refs {
			out[i] = r.Name
		}
		return out
	}
	for _, edges := range g.out {
		for _, e := range edges {
			if !e.Conditional() {
				continue
			}
			for _, set := range [][]NameRef{e.To, e.Else, e.Default} {
				if len(set) > 0 {
					roots = append(roots, names(set))
				}
			}
			for _, r := range e.Routes {
				roots = append(roots, names(r.To))
			}
			for _, t := range e.Paths {
				roots = append(roots, []string{t.Name})
			}
		}
	}
	for _, n := range g.Nodes {
		for _, t := range n.GotoPaths {
			roots = append(roots, []string{t.Name})
		}
	}
	// A join's target runs on its own, when the join fires.
	for _, j := range g.joins {
		roots = append(roots, []string{j.Target})
	}
	// Which regions each node is in, so a join looks only at the regions
	// its sources are in instead of at every region.
	var regions []map[string]bool
	regionsOf := map[string][]int{}
	for _, r := range roots {
		reg := closure(r, static)
		for n := range reg {
			regionsOf[n] = append(regionsOf[n], len(regions))
		}
		regions = append(regions, reg)
	}
	// A join is safe when its sources run together: some region holds
	// them all, and no region holds only some of them (then those would
	// run without the others, which the join would wait for in vain).
	for _, j := range g.joins {
		srcs := dedupe(j.Sources)
		held := map[int]int{} // region -> how many of the sources it holds
		for _, s := range srcs {
			for _, i := range regionsOf[s] {
				held[i]++
			}
		}
		together, partial := false, false
		for _, n := range held {
			if n == len(srcs) {
				together = true
			} else {
				partial = true
			}
		}
		if !together || partial {
			c.errs.Warn(j.Edge.Pos, "join %q waits for %s, but they do not always run together (some are reached only through a condition); when one does not run, %q never runs and the run ends quietly", j.Target, strings.Join(j.Sources, ", "), j.Target)
		}
	}

	// A node with a static edge that can also route by itself runs both paths.
	for _, name := range g.NodeOrder {
		var staticTo, condTo []string
		for _, e := range g.out[name] {
			if e.Conditional() {
				for _, t := range e.Targets() {
					condTo = append(condTo, t.Name)
				}
			} else {
				for _, t := range e.To {
					staticTo = append(staticTo, t.Name)
				}
			}
		}
		if g.Nodes[name].Goto != nil {
			for _, t := range g.Nodes[name].GotoPaths {
				condTo = append(condTo, t.Name)
			}
		}
		if len(staticTo) > 0 && len(condTo) > 0 {
			c.errs.Warn(g.Nodes[name].Pos, "node %q has a static edge to %s and also routes conditionally (to %s): both paths run; drop the static edge or make it a route", name, strings.Join(staticTo, ", "), strings.Join(dedupe(condTo), ", "))
		}
	}

	// Branches of unequal length that meet through separate edges: the
	// target runs once per branch.
	inStatic := map[string][]string{}
	for _, src := range append([]string{Start}, g.NodeOrder...) { // file order: preds appear in messages
		tos := static[src]
		for _, t := range tos {
			inStatic[t] = append(inStatic[t], src)
		}
	}
	for _, src := range SortedKeys(static) {
		tos := static[src]
		if len(dedupe(tos)) < 2 {
			continue
		}
		dist := bfs(src, static, maxCoRunSteps)
		var met []string // nodes within reach where branches meet
		for n := range dist {
			if n != End && len(inStatic[n]) >= 2 {
				met = append(met, n)
			}
		}
		sort.Strings(met)
		for _, target := range met {
			preds := inStatic[target]
			lengths := map[int][]string{}
			for _, p := range preds {
				if d, ok := dist[p]; ok && p != src {
					lengths[d+1] = append(lengths[d+1], p)
				}
			}
			if len(lengths) < 2 {
				continue
			}
			var parts []string
			for _, l := range sortedInts(lengths) {
				parts = append(parts, fmt.Sprintf("%s (step %d)", strings.Join(lengths[l], ", "), l))
			}
			c.errs.Warn(g.Nodes[target].Pos, "node %q is reached from branches of unequal length after the fan-out at %q: %s; it will run more than once. Use a join: {from: [%s], to: %s}", target, src, strings.Join(parts, " and "), strings.Join(dedupe(preds), ", "), target)
		}
	}
}

// bfs returns the distance from start of every node within depth steps
// along next (the fan-out check looks as far ahead as the concurrent-write
// check, so its work is bounded by what is near each fan-out).
func bfs(start string, next map[string][]string, depth int) map[string]int {
	dist := map[string]int{start: 0}
	q := []string{start}
	for len(q) > 0 {
		n := q[0]
		q = q[1:]
		if dist[n] >= depth {
			continue
		}
		for _, t := range next[n] {
			if _, ok := dist[t]; !ok {
				dist[t] = dist[n] + 1
				q = append(q, t)
			}
		}
	}
	return dist
}

func sortedInts[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

// maxCoRunSteps bounds how many supersteps ahead checkConcurrentWrites
// follows nodes that started together.
const maxCoRunSteps = 64

// checkConcurrentWrites warns when two nodes that can run in the same
// superstep both write a replace field: the run would fail with a conflict.
//
// Nodes run together when one node's edges trigger them together (see
// coRunGroups), and so do the nodes those always trigger next, step by
// step. The check follows each group forward one superstep at a time (up to
// maxCoRunSteps) and looks only at who writes what in each step, so its
// work is the size of the groups' static closures, not the number of pairs
// of nodes in them.
func (c *checker) checkConcurrentWrites() {
	g := c.g
	static := c.staticSucc()
	type conflict struct {
		first, second *Node
		field         string
	}
	seen := map[conflict]bool{}
	var found []conflict
	for _, grp := range c.coRunGroups() {
		step := grp
		for range maxCoRunSteps {
			if len(step) < 2 {
				// One node's successors form a group of their own.
				break
			}
			byField := map[string][]*Node{}
			var fields []string
			for _, name := range step {
				n := g.Nodes[name]
				if n == nil {
					continue
				}
				for _, f := range dedupe(n.Writes) {
					if fd := g.Field(f); fd == nil || fd.Reducer.Kind != ReduceReplace {
						continue
					}
					if byField[f] == nil {
						fields = append(fields, f)
					}
					byField[f] = append(byField[f], n)
				}
			}
			for _, f := range fields {
				ws := byField[f]
				if len(ws) < 2 {
					continue
				}
				sort.SliceStable(ws, func(i, j int) bool { return ws[i].Pos.Line < ws[j].Pos.Line })
				// Each further writer is reported once, with the first.
				for _, w := range ws[1:] {
					k := conflict{ws[0], w, f}
					if !seen[k] {
						seen[k] = true
						found = append(found, k)
					}
				}
			}
			var next []string
			in := map[string]bool{}
			for _, name := range step {
				for _, t := range static[name] {
					if t != End && !in[t] {
						in[t] = true
						next = append(next, t)
					}
				}
			}
			step = next
		}
	}
	sort.Slice(found, func(i, j int) bool {
		a, b := found[i], found[j]
		if a.second.Pos != b.second.Pos {
			return a.second.Pos.Line < b.second.Pos.Line
		}
		if a.first.Name != b.first.Name {
			return a.first.Name < b.first.Name
		}
		return a.field < b.field
	})
	for _, k := range found {
		c.errs.Warn(k.second.Pos, "nodes %q and %q can run in the same superstep and both write replace field %q; the step would fail with a conflict (give the field a reducer)", k.first.Name, k.second.Name, k.field)
	}
}

// coRunGroups lists sets of nodes that may be triggered together in one
// superstep, such that every two nodes that can be are in some set and no
// set holds two that cannot: the targets of a source's plain edges with one
// branch of one of its conditional edges (or goto), and one branch each of
// two of its conditional edges.
func (c *checker) coRunGroups() [][]string {
	g := c.g
	var groups [][]string
	for _, src := range append([]string{Start}, g.NodeOrder...) {
		var always []string
		var choices [][][]string // per conditional edge (or goto): its branches
		for _, e := range g.out[src] {
			if !e.Conditional() {
				for _, t := range e.To {
					always = append(always, t.Name)
				}
				continue
			}
			choices = append(choices, e.branchTargets())
		}
		if n := g.Nodes[src]; n != nil && len(n.GotoPaths) > 0 {
			choices = append(choices, exprBranches(n.Goto, n.GotoPaths))
		}
		if len(choices) == 0 {
			groups = append(groups, dedupe(always))
			continue
		}
		for i, ci := range choices {
			for _, b := range ci {
				groups = append(groups, dedupe(append(append([]string{}, always...), b...)))
			}
			for _, cj := range choices[i+1:] {
				for _, b := range ci {
					for _, d := range cj {
						groups = append(groups, dedupe(append(append([]string{}, b...), d...)))
					}
				}
			}
		}
	}
	for i, grp := range groups {
		groups[i] = slices.DeleteFunc(grp, func(n string) bool { return n == End })
	}
	return groups
}

// branchTargets lists the target sets of an edge's mutually exclusive
// branches (one set for a plain edge).
func (e *Edge) branchTargets() [][]string {
	var out [][]string
	add := func(refs []NameRef) {
		var names []string
		for _, r := range refs {
			names = append(names, r.Name)
		}
		out = append(out, dedupe(names))
	}
	switch {
	case e.When != nil:
		add(e.To)
		add(e.Else)
	case e.Routes != nil:
		for _, r := range e.Routes {
			add(r.To)
		}
		add(e.Default)
	case e.Route != nil:
		return exprBranches(e.Route, e.Paths)
	default:
		add(e.To)
	}
	return out
}

// exprBranches lists the target sets of a route or goto expression over
// paths: one per path when the expression yields a single name (a string),
// else one set of all paths, since a list may name any of them together.
func exprBranches(x *Expr, paths []NameRef) [][]string {
	var names []string
	for _, p := range paths {
		names = append(names, p.Name)
	}
	names = dedupe(names)
	if x == nil || x.Program == nil || kindOfType(x.Program.Node().Type()) != KindString {
		return [][]string{names}
	}
	out := make([][]string, len(names))
	for i, n := range names {
		out[i] = []string{n}
	}
	return out
}
