package spec

import (
	"fmt"
	"strings"

	"github.com/expr-lang/expr/ast"
)

// routeValue is a name a route or goto expression may yield, and why.
type routeValue struct {
	name string
	from string // "" for a string literal, else the state field whose enum holds it
}

// routeValues lists the names the expression x may yield that can be known
// before it runs: string literals, and the enum values of a state field it
// yields as it is, through ternaries, ?? and list literals. Parts it cannot
// know (a computed string) are skipped.
func routeValues(x *Expr, fields map[string]*Field) []routeValue {
	if x == nil || x.Program == nil {
		return nil
	}
	var out []routeValue
	var walk func(n ast.Node)
	walk = func(n ast.Node) {
		switch n := n.(type) {
		case *ast.StringNode:
			out = append(out, routeValue{name: n.Value})
		case *ast.ConditionalNode:
			walk(n.Exp1)
			walk(n.Exp2)
		case *ast.BinaryNode:
			if n.Operator == "??" {
				walk(n.Left)
				walk(n.Right)
			}
		case *ast.ArrayNode:
			for _, it := range n.Nodes {
				walk(it)
			}
		case *ast.ConstantNode:
			switch v := n.Value.(type) {
			case string:
				out = append(out, routeValue{name: v})
			case []any:
				for _, it := range v {
					if s, ok := it.(string); ok {
						out = append(out, routeValue{name: s})
					}
				}
			}
		case *ast.MemberNode:
			id, ok := n.Node.(*ast.IdentifierNode)
			prop, pok := n.Property.(*ast.StringNode)
			if !ok || !pok || id.Value != "state" {
				return
			}
			f := fields[prop.Value]
			if f == nil {
				return
			}
			for _, v := range f.Enum {
				switch v := v.(type) {
				case string:
					out = append(out, routeValue{name: v, from: f.Name})
				case []any:
					for _, it := range v {
						if s, ok := it.(string); ok {
							out = append(out, routeValue{name: s, from: f.Name})
						}
					}
				}
			}
		}
	}
	walk(x.Program.Node())
	return out
}

// checkRouteValues reports each name x may yield (see routeValues) that is
// not one of paths: the step would fail when it does.
func (c *checker) checkRouteValues(x *Expr, paths []NameRef, path string) {
	if len(paths) == 0 {
		return
	}
	in := map[string]bool{"": true} // "" is no route
	for _, p := range paths {
		in[p.Name] = true
	}
	seen := map[string]bool{}
	for _, v := range routeValues(x, c.g.fieldIndex) {
		if in[v.name] || seen[v.name] {
			continue
		}
		seen[v.name] = true
		why := ""
		if v.from != "" {
			why = fmt.Sprintf(" (an enum value of state.%s)", v.from)
		}
		c.errs.Add(x.Pos, "%s: may yield %q%s, which is not one of its paths (%s); the step would fail", path, v.name, why, strings.Join(refNameList(paths), ", "))
	}
}

func refNameList(refs []NameRef) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.Name
	}
	return out
}
