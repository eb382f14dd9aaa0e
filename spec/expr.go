package spec

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"unsafe"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	exprchecker "github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
	"gopkg.in/yaml.v3"
)

// ExprMemoryBudget bounds the memory one expression evaluation may use
// (in expr's allocation units), so no expression can exhaust memory.
const ExprMemoryBudget = 2_000_000

// exprMaxNodes bounds the size of one expression.
const exprMaxNodes = 5000

// ExprMaxDepth bounds how deeply brackets, parentheses and braces may nest
// in one expression. expr's parser is recursive, so a deeper expression is
// rejected before it is parsed rather than exhausting the stack.
const ExprMaxDepth = 100

// Eval runs e against env (a map of the variables the expression was
// compiled with) under the memory budget. Its result is normalized
// (see [Normalize]).
func (e *Expr) Eval(env map[string]any) (any, error) {
	if e == nil || e.Program == nil {
		return nil, fmt.Errorf("expression not compiled")
	}
	if e.flat != nil {
		if st, ok := env["state"].(map[string]any); ok && st != nil && len(env) == 1 {
			if p := e.flat.program(); p != nil {
				return e.run(p, st)
			}
		}
	}
	return e.run(e.Program, env)
}

// run runs prog, which is e's, on env with a VM from the pool.
func (e *Expr) run(prog *vm.Program, env any) (any, error) {
	m := vmPool.Get().(*vm.VM)
	m.MemoryBudget = ExprMemoryBudget
	out, err := m.Run(prog, env)
	// Drop what the run left on the stack and in its variables, so a VM
	// waiting in the pool keeps no value alive.
	clear(m.Stack[:cap(m.Stack)])
	clear(m.Variables)
	vmPool.Put(m)
	if err != nil {
		return nil, &EvalError{Pos: e.Pos, Src: e.Src, Err: trimExprErr(err)}
	}
	return Normalize(out), nil
}

// EvalState is Eval over the environment {"state": state}. An expression
// that reads nothing but fields of the state runs on state itself, without
// a map made for the environment (see [flatProgram]).
func (e *Expr) EvalState(state map[string]any) (any, error) {
	if e != nil && e.flat != nil && state != nil {
		if p := e.flat.program(); p != nil {
			return e.run(p, state)
		}
	}
	return e.Eval(map[string]any{"state": state})
}

// vmPool holds expr VMs for reuse: a VM keeps its stack and variables
// between runs (vm.VM.Run resets them), where a new one allocates them on
// every evaluation.
var vmPool = sync.Pool{New: func() any { return new(vm.VM) }}

func trimExprErr(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		return errors.New(fe.Message)
	}
	return err
}

// exprFuncs are helper functions available in every expression.
var exprFuncs = []expr.Option{
	expr.Function("has_tool_calls", func(params ...any) (any, error) {
		return HasToolCalls(params[0]), nil
	}, new(func([]any) bool)),
	expr.Function("last_message", func(params ...any) (any, error) {
		l, _ := toList(params[0])
		if len(l) == 0 {
			return map[string]any{"id": "", "role": "", "content": ""}, nil
		}
		return l[len(l)-1], nil
	}, new(func([]any) map[string]any)),
	expr.Function("message", func(params ...any) (any, error) {
		role, _ := params[0].(string)
		content, _ := params[1].(string)
		return map[string]any{"role": role, "content": content}, nil
	}, new(func(string, string) map[string]any)),
	expr.Function("json", func(params ...any) (any, error) {
		return jsonString(params[0])
	}, new(func(any) string)),
}

// HasToolCalls reports whether the last message of a messages list is an
// assistant message with tool calls.
func HasToolCalls(v any) bool {
	l, _ := toList(v)
	if len(l) == 0 {
		return false
	}
	m, _ := toMap(l[len(l)-1])
	if m == nil || m["role"] != "assistant" {
		return false
	}
	calls, _ := toList(m["tool_calls"])
	return len(calls) > 0
}

// exprCompiler compiles expressions embedded in YAML scalars and re-bases
// their errors onto the file.
type exprCompiler struct {
	file string
	src  []string // the file's lines, for block scalar indentation
	errs *ErrorList
	// configs caches expr's configuration per env (by map identity).
	configs map[unsafe.Pointer]*conf.Config
	// flatEnvs are the envs over the state only, by the same key, for
	// flattening (see [flatEnv]).
	flatEnvs map[unsafe.Pointer]*flatEnv
}

// compileSrc compiles src against env as expr.Compile does, but builds
// expr's configuration (its builtins, our functions, the typed env) once
// per env instead of once per expression, which was half of the time a
// large graph took to validate. An env map must not change once used.
func (c *exprCompiler) compileSrc(src string, env types.Map) (*vm.Program, error) {
	key := reflect.ValueOf(env).UnsafePointer()
	cfg := c.configs[key]
	if cfg == nil {
		cfg = conf.CreateNew()
		for _, op := range append([]expr.Option{expr.Env(env), expr.MaxNodes(exprMaxNodes)}, exprFuncs...) {
			op(cfg)
		}
		for name := range cfg.Disabled {
			delete(cfg.Builtins, name)
		}
		cfg.Check()
		if c.configs == nil {
			c.configs = map[unsafe.Pointer]*conf.Config{}
		}
		c.configs[key] = cfg
	}
	tree, err := exprchecker.ParseCheck(src, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Optimize {
		if err := optimizer.Optimize(&tree.Node, cfg); err != nil {
			var fe *file.Error
			if errors.As(err, &fe) {
				return nil, fe.Bind(tree.Source)
			}
			return nil, err
		}
	}
	return compiler.Compile(tree, cfg)
}

// stateEnv is the environment type of expressions over the state.
func stateEnv(fields []*Field) types.Map {
	st := types.Map{}
	for _, f := range fields {
		st[f.Name] = f.Type.ExprType()
	}
	return types.Map{"state": st}
}

// compile compiles the scalar n against env. want, when not nil, checks the
// result type; it returns a message when the type is wrong.
func (c *exprCompiler) compile(n *yaml.Node, path string, env types.Map, want func(reflect.Type) string) *Expr {
	if n == nil {
		return nil
	}
	pos := nodePos(c.file, n)
	if n.Kind != yaml.ScalarNode {
		c.errs.Add(pos, "%s: want an expression (a string), got %s", path, kindName(n))
		return nil
	}
	if strings.TrimSpace(n.Value) == "" {
		c.errs.Add(pos, "%s: empty expression", path)
		return nil
	}
	return c.compileAt(n, n.Value, 0, path, env, want)
}

// compileAt compiles src, the part of the scalar n's value that starts at
// rune offset off, and reports its errors at their place in the file. The
// expression's Pos is where src starts.
func (c *exprCompiler) compileAt(n *yaml.Node, src string, off int, path string, env types.Map, want func(reflect.Type) string) *Expr {
	pos := c.offsetPos(n, off)
	if off == 0 {
		pos = nodePos(c.file, n)
	}
	if line, col, ok := nestingTooDeep(src, ExprMaxDepth); ok {
		c.errs.Add(c.offsetPos(n, off+valueOffset([]rune(src), line, col)), "%s: brackets nest more than %d deep", path, ExprMaxDepth)
		return nil
	}
	prog, err := c.compileSrc(src, env)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			style := n.Style
			if off != 0 || src != n.Value {
				style = 0 // a part of the scalar: its quotes are not around src
			}
			if mk, ok := findMistake(fe, src, style, env); ok {
				c.errs.errAt(c.offsetPos(n, off+valueOffset([]rune(src), mk.line, mk.col)), fmt.Sprintf("%s: %s", path, mk.msg), err)
			} else {
				c.errs.errAt(c.offsetPos(n, off+valueOffset([]rune(src), fe.Line, fe.Column)), fmt.Sprintf("%s: %s", path, c.exprMessage(fe, src, env)), err)
			}
		} else {
			c.errs.Add(pos, "%s: %v", path, err)
		}
		return nil
	}
	if want != nil {
		t := prog.Node().Type()
		if _, null := prog.Node().(*ast.NilNode); null {
			t = nullType
		}
		if msg := want(t); msg != "" {
			c.errs.Add(pos, "%s: %s", path, msg)
			return nil
		}
	}
	if mk, ok := literalPlaceholder(src); ok {
		*c.errs = append(*c.errs, &Error{Pos: c.offsetPos(n, off+valueOffset([]rune(src), mk.line, mk.col)), Severity: SevWarning, Msg: fmt.Sprintf("%s: %s", path, mk.msg)})
	}
	return &Expr{Src: src, Pos: pos, Program: prog, flat: c.flatFor(env, src)}
}

// nestingTooDeep scans src for brackets, parentheses and braces outside
// string literals and reports where (1-based line, 0-based rune column, as
// expr counts) the first one opening past depth max is. It is linear and
// keeps no stack, so it is safe on any input.
func nestingTooDeep(src string, max int) (line, col int, found bool) {
	depth := 0
	line, col = 1, 0
	var quote rune // the open string literal's quote, or 0
	escaped := false
	for _, r := range src {
		switch {
		case quote != 0:
			switch {
			case escaped:
				escaped = false
			case r == '\\' && quote != '`':
				escaped = true
			case r == quote:
				quote = 0
			}
		case r == '"' || r == '\'' || r == '`':
			quote = r
		case r == '(' || r == '[' || r == '{':
			depth++
			if depth > max {
				return line, col, true
			}
		case r == ')' || r == ']' || r == '}':
			depth--
		}
		if r == '\n' {
			line, col = line+1, 0
		} else {
			col++
		}
	}
	return 0, 0, false
}

func (l *ErrorList) errAt(pos Pos, msg string, err error) {
	*l = append(*l, &Error{Pos: pos, Severity: SevError, Msg: msg, Err: err})
}

var (
	unknownFieldRE = lazyRE(`^unknown field (\w+)$`)
	unknownNameRE  = lazyRE(`^unknown name (\w+)$`)
)

// exprMessage rewords an expr compile error: Go type names become the
// language's, and an unknown field of state names the declared fields.
func (c *exprCompiler) exprMessage(fe *file.Error, src string, env types.Map) string {
	if m := unknownFieldRE().FindStringSubmatch(fe.Message); m != nil {
		st, _ := env["state"].(types.Map)
		lines := strings.Split(src, "\n")
		if st != nil && fe.Line >= 1 && fe.Line <= len(lines) {
			line := []rune(lines[fe.Line-1])
			if col := fe.Column; col >= 0 && col <= len(line) && strings.HasSuffix(string(line[:col]), "state.") {
				msg := fmt.Sprintf("undeclared state field %q", m[1])
				if s := suggest(m[1], SortedKeys(st)); s != "" {
					msg += fmt.Sprintf("; did you mean %q?", s)
				}
				return msg
			}
		}
	}
	if m := unknownNameRE().FindStringSubmatch(fe.Message); m != nil {
		msg := fmt.Sprintf("unknown name %q", m[1])
		if st, _ := env["state"].(types.Map); st != nil && st[m[1]] != nil {
			return msg + fmt.Sprintf("; did you mean \"state.%s\"?", m[1])
		}
		names := SortedKeys(env)
		if s := suggest(m[1], names); s != "" {
			return msg + fmt.Sprintf("; did you mean %q?", s)
		}
		return msg + fmt.Sprintf(" (the expression can use %s)", strings.Join(names, ", "))
	}
	msg := exprMessage(fe.Message)
	if st, _ := env["state"].(types.Map); st != nil {
		if name := bareField(src, st); name != "" {
			msg += fmt.Sprintf(" (state fields are read as state.%s, not %s)", name, name)
		}
	}
	return msg
}

// bareField returns the first identifier of src that names a state field
// without the state. prefix, or "".
func bareField(src string, st types.Map) string {
	tree, err := parser.Parse(src)
	if err != nil {
		return ""
	}
	v := &identFinder{fields: st}
	ast.Walk(&tree.Node, v)
	return v.found
}

type identFinder struct {
	fields types.Map
	found  string
}

func (v *identFinder) Visit(n *ast.Node) {
	if id, ok := (*n).(*ast.IdentifierNode); ok && v.found == "" && v.fields[id.Value] != nil {
		v.found = id.Value
	}
}

func exprMessage(m string) string {
	m = strings.ReplaceAll(m, "map[string]interface {}", "object")
	m = strings.ReplaceAll(m, "[]interface {}", "list")
	m = strings.ReplaceAll(m, "interface {}", "any")
	return m
}

// offsetPos maps rune offset off of the scalar n's value onto the file
// (an expr error's 1-based line and 0-based rune column become an offset
// with valueOffset). It walks the scalar's source alongside its value, so
// quotes, escapes, folded line breaks and block indentation all land on the
// right character.
func (c *exprCompiler) offsetPos(n *yaml.Node, off int) Pos {
	val := []rune(n.Value)
	// Where the value starts in the source (0-based line and rune column).
	l, sc := n.Line-1, n.Column-1
	switch n.Style {
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		sc++ // the opening quote
	case yaml.LiteralStyle, yaml.FoldedStyle:
		l, sc = n.Line, 0 // content starts on the line after the indicator
	}
	var cur []rune
	if l >= 0 && l < len(c.src) {
		cur = []rune(c.src[l])
	}
	next := func() {
		l, sc = l+1, 0
		cur = nil
		if l < len(c.src) {
			cur = []rune(c.src[l])
		}
	}
	isFold := func(r rune) bool { return r == ' ' || r == '\n' }
	for i := 0; l < len(c.src) && (i < off || (i < len(val) && !isFold(val[i]))); {
		if sc >= len(cur) {
			// A line break of the source: in the value it is a newline or,
			// folded, a space; after blank lines or an escaped break, nothing.
			if i < off && isFold(val[i]) {
				i++
			}
			next()
			continue
		}
		s := cur[sc]
		switch {
		case i < len(val) && s == val[i]:
			if i == off {
				return Pos{File: c.file, Line: l + 1, Col: sc + 1}
			}
			i++
			sc++
		case s == '\\' && n.Style == yaml.DoubleQuotedStyle:
			if sc+1 >= len(cur) { // escaped line break
				next()
				continue
			}
			if i == off {
				return Pos{File: c.file, Line: l + 1, Col: sc + 1}
			}
			sc += 2 + map[rune]int{'x': 2, 'u': 4, 'U': 8}[cur[sc+1]]
			i++
		case s == '\'' && n.Style == yaml.SingleQuotedStyle:
			sc++ // the first quote of ''
		default: // indentation, trailing blanks, a carriage return
			sc++
		}
	}
	if len(c.src) == 0 {
		return nodePos(c.file, n)
	}
	if l >= len(c.src) {
		l = len(c.src) - 1
		return Pos{File: c.file, Line: l + 1, Col: len([]rune(c.src[l])) + 1}
	}
	return Pos{File: c.file, Line: l + 1, Col: sc + 1}
}

// valueOffset converts a 1-based line and 0-based column in val to a rune
// offset, clamped to len(val).
func valueOffset(val []rune, line, col int) int {
	off := 0
	for line > 1 && off < len(val) {
		if val[off] == '\n' {
			line--
		}
		off++
	}
	return min(off+max(col, 0), len(val))
}

// kindNull is the kind of the literal nil, which only optional (and any)
// fields can hold.
const kindNull Kind = "null"

// nullType stands for the type of an expression that is the literal nil
// (expr types it as any).
var nullType = reflect.TypeOf(struct{ null bool }{})

// kindOfType maps the static result type of an expression to a field kind;
// "" means the type is not known until run time.
func kindOfType(t reflect.Type) Kind {
	if t == nil {
		return ""
	}
	if t == nullType {
		return kindNull
	}
	switch t.Kind() {
	case reflect.Interface:
		return ""
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return KindInt
	case reflect.Float32, reflect.Float64:
		return KindFloat
	case reflect.String:
		return KindString
	case reflect.Bool:
		return KindBool
	case reflect.Slice, reflect.Array:
		return KindList
	case reflect.Map, reflect.Struct:
		return KindObject
	}
	return ""
}

func wantBool(t reflect.Type) string {
	if k := kindOfType(t); k != "" && k != KindBool {
		return fmt.Sprintf("condition must yield bool, got %s", k)
	}
	return ""
}

func wantList(t reflect.Type) string {
	if k := kindOfType(t); k != "" && k != KindList {
		return fmt.Sprintf("must yield a list, got %s", k)
	}
	return ""
}

func wantRoute(t reflect.Type) string {
	if k := kindOfType(t); k != "" && k != KindString && k != KindList && k != kindNull {
		return fmt.Sprintf("route must yield a node name or a list of node names, got %s", k)
	}
	return ""
}

// wantWrite checks an expression written to field f through its reducer.
func wantWrite(f *Field) func(reflect.Type) string {
	return func(t reflect.Type) string {
		k := kindOfType(t)
		if k == "" {
			return ""
		}
		if k == kindNull {
			if f.Optional || f.Type.Kind == KindAny {
				return ""
			}
			return fmt.Sprintf("writes null, but field %q is not optional (declare it optional: true to allow null)", f.Name)
		}
		ok := false
		switch f.Reducer.Kind {
		case ReduceAppend:
			ok = k == KindList || compatible(k, f.Type.Item())
		case ReduceMessages:
			ok = k == KindList || k == KindObject
		case ReduceCustom:
			ok = true
		default:
			ok = compatible(k, f.Type)
		}
		if !ok {
			return fmt.Sprintf("expression yields %s, but field %q is %s (reducer %s)", k, f.Name, f.Type, f.Reducer.Kind)
		}
		return ""
	}
}

func compatible(k Kind, t Type) bool {
	switch t.Kind {
	case KindAny, "":
		return true
	case KindFloat:
		return k == KindFloat || k == KindInt
	case KindMessages:
		return k == KindList
	}
	return k == t.Kind
}
