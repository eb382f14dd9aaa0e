package spec

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"testing"
)

// Node and tool decoding are table-driven: the decoders name no kind, so
// a kind is added by its declaration alone (which carries its decode
// function). The check reads the decoders' source: a case (or a
// comparison) on a built-in kind's name fails it.
func TestDecodingNamesNoKind(t *testing.T) {
	kinds := append(BuiltinNodeKinds(), "expr", "http", "exec")
	fset := token.NewFileSet()
	for _, file := range []string{"decode_nodes.go", "decode_models.go"} {
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || (fn.Name.Name != "decodeNodes" && fn.Name.Name != "decodeTools") {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				var lits []ast.Expr
				switch n := n.(type) {
				case *ast.CaseClause:
					lits = n.List
				case *ast.BinaryExpr:
					if n.Op == token.EQL || n.Op == token.NEQ {
						lits = []ast.Expr{n.X, n.Y}
					}
				}
				for _, e := range lits {
					if bl, ok := e.(*ast.BasicLit); ok && bl.Kind == token.STRING {
						if v, _ := strconv.Unquote(bl.Value); slices.Contains(kinds, v) {
							t.Errorf("%s: %s names kind %q: decode it through its declaration", fset.Position(bl.Pos()), fn.Name.Name, v)
						}
					}
				}
				return true
			})
		}
	}
}

// Every built-in kind's declaration carries its decoder.
func TestBuiltinDeclsDecode(t *testing.T) {
	for _, d := range builtins().nodes {
		if d.decode == nil {
			t.Errorf("node kind %s has no decode function", d.Name)
		}
	}
	for _, d := range builtins().tools {
		if d.decode == nil {
			t.Errorf("tool kind %s has no decode function", d.Name)
		}
	}
}
