package spec

import (
	"reflect"
	"sync"
	"unsafe"

	"github.com/expr-lang/expr/ast"
	exprchecker "github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/checker/nature"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
)

// Flattening. Over the environment {"state": ...}, expr reads state.count
// with a reflect map lookup that allocates (runtime.Fetch). With the state
// map itself as the environment, the same read is the VM's plain map index
// (OpLoadFast) and no environment map has to be made. A flat program is
// the expression's program with each state.<field> of its checked tree,
// and nothing else, replaced by the identifier <field> with the member's
// type and place. Only an expression whose env is exactly {"state": ...}
// and whose every use of state is such a member flattens: not one using
// state alone, state[k] with a computed k, state?.x, $env, a let (whose
// variable could shadow a field's name) or a call of a member.
//
// A flat program is compiled when the expression first runs, not when the
// graph is checked: validating a graph pays nothing for it, and a run pays
// one more compile per expression it evaluates, once per process.

// flatEnv is one env over the state only, shared by the expressions of
// one graph compiled against it.
type flatEnv struct {
	cfg  *conf.Config // the config Program was compiled with
	flat *conf.Config // cfg with the state map as the environment, once made
}

// flatProgram makes an expression's flat program on first use.
type flatProgram struct {
	env  *flatEnv
	src  string
	once sync.Once
	prog *vm.Program // nil when the expression does not flatten
}

// flatMu serializes flat compiles: expr's checker and compiler write to
// the config's type cache, which the expressions of a graph share.
var flatMu sync.Mutex

// flatFor returns the flat program maker of an expression src compiled
// against env, or nil when env is not over the state only.
func (c *exprCompiler) flatFor(env types.Map, src string) *flatProgram {
	if _, ok := env["state"]; !ok || len(env) != 1 {
		return nil
	}
	key := reflect.ValueOf(env).UnsafePointer()
	fe := c.flatEnvs[key]
	if fe == nil {
		fe = &flatEnv{cfg: c.configs[key]}
		if c.flatEnvs == nil {
			c.flatEnvs = map[unsafe.Pointer]*flatEnv{}
		}
		c.flatEnvs[key] = fe
	}
	return &flatProgram{env: fe, src: src}
}

// program returns the flat program, compiling it on the first call; nil
// means the expression does not flatten (run its Program).
func (p *flatProgram) program() *vm.Program {
	p.once.Do(func() {
		flatMu.Lock()
		defer flatMu.Unlock()
		p.prog = p.env.compile(p.src)
	})
	return p.prog
}

// compile compiles src as compileSrc did, on a tree of its own, flattens
// the tree and compiles it with the state as the environment; nil when
// src does not flatten.
func (fe *flatEnv) compile(src string) *vm.Program {
	if fe.cfg == nil {
		return nil
	}
	tree, err := exprchecker.ParseCheck(src, fe.cfg)
	if err != nil {
		return nil
	}
	if fe.cfg.Optimize {
		if err := optimizer.Optimize(&tree.Node, fe.cfg); err != nil {
			return nil
		}
	}
	fc := &flatCheck{}
	ast.Walk(&tree.Node, fc)
	if fc.bad || fc.idents != len(fc.members) {
		return nil
	}
	p := &flatPatch{members: fc.members}
	ast.Walk(&tree.Node, p)
	if p.patched != len(fc.members) {
		return nil
	}
	if fe.flat == nil {
		cp := *fe.cfg
		cp.Env = nature.FromType(reflect.TypeOf(map[string]any(nil)))
		cp.NtCache = nature.Cache{}
		fe.flat = &cp
	}
	prog, err := compiler.Compile(tree, fe.flat)
	if err != nil {
		return nil
	}
	return prog
}

// flatCheck counts the identifiers named state and collects the members
// state.<field> that flattening can replace; bad is set by anything that
// stops it.
type flatCheck struct {
	idents  int
	members map[*ast.MemberNode]bool
	bad     bool
}

func (v *flatCheck) Visit(n *ast.Node) {
	switch x := (*n).(type) {
	case *ast.IdentifierNode:
		switch x.Value {
		case "state":
			v.idents++
		case "$env":
			v.bad = true
		}
	case *ast.VariableDeclaratorNode:
		v.bad = true
	case *ast.CallNode:
		if m, ok := x.Callee.(*ast.MemberNode); ok && v.members[m] {
			v.bad = true
		}
	case *ast.MemberNode:
		id, ok := x.Node.(*ast.IdentifierNode)
		if !ok || id.Value != "state" {
			return
		}
		prop, ok := x.Property.(*ast.StringNode)
		if !ok || x.Optional || x.Method || prop.Value == "$env" {
			return // state[k] and the like: the idents count tells
		}
		if v.members == nil {
			v.members = map[*ast.MemberNode]bool{}
		}
		v.members[x] = true
	}
}

// flatPatch replaces each member of members by the identifier of its
// field.
type flatPatch struct {
	members map[*ast.MemberNode]bool
	patched int
}

func (v *flatPatch) Visit(n *ast.Node) {
	m, ok := (*n).(*ast.MemberNode)
	if !ok || !v.members[m] {
		return
	}
	id := &ast.IdentifierNode{Value: m.Property.(*ast.StringNode).Value}
	id.SetLocation(m.Location())
	id.SetNature(*m.Nature())
	*n = id
	v.patched++
}
