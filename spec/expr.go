package spec

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
	"gopkg.in/yaml.v3"
)

// ExprMemoryBudget bounds the memory one expression evaluation may use
// (in expr's allocation units), so no expression can exhaust memory.
const ExprMemoryBudget = 2_000_000

// exprMaxNodes bounds the size of one expression.
const exprMaxNodes = 5000

// Eval runs e against env (a map of the variables the expression was
// compiled with) under the memory budget. Its result is normalized
// (see [Normalize]).
func (e *Expr) Eval(env map[string]any) (any, error) {
	if e == nil || e.Program == nil {
		return nil, fmt.Errorf("expression not compiled")
	}
	m := vm.VM{MemoryBudget: ExprMemoryBudget}
	out, err := m.Run(e.Program, env)
	if err != nil {
		return nil, fmt.Errorf("%s: evaluate %q: %w", e.Pos, e.Src, trimExprErr(err))
	}
	return Normalize(out), nil
}

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
	src := n.Value
	if strings.TrimSpace(src) == "" {
		c.errs.Add(pos, "%s: empty expression", path)
		return nil
	}
	opts := append([]expr.Option{expr.Env(env), expr.MaxNodes(exprMaxNodes)}, exprFuncs...)
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			c.errs.errAt(c.exprPos(n, fe.Line, fe.Column), fmt.Sprintf("%s: %s", path, exprMessage(fe.Message)), err)
		} else {
			c.errs.Add(pos, "%s: %v", path, err)
		}
		return nil
	}
	if want != nil {
		if msg := want(prog.Node().Type()); msg != "" {
			c.errs.Add(pos, "%s: %s", path, msg)
			return nil
		}
	}
	return &Expr{Src: src, Pos: pos, Program: prog}
}

func (l *ErrorList) errAt(pos Pos, msg string, err error) {
	*l = append(*l, &Error{Pos: pos, Severity: SevError, Msg: msg, Err: err})
}

func exprMessage(m string) string {
	m = strings.ReplaceAll(m, "map[string]interface {}", "object")
	m = strings.ReplaceAll(m, "[]interface {}", "list")
	m = strings.ReplaceAll(m, "interface {}", "any")
	return m
}

// exprPos maps an expr error location (1-based line, 0-based column) onto
// the YAML file.
func (c *exprCompiler) exprPos(n *yaml.Node, line, col int) Pos {
	if line < 1 {
		line = 1
	}
	switch n.Style {
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		if line == 1 {
			return Pos{File: c.file, Line: n.Line, Col: n.Column + 1 + col}
		}
		return Pos{File: c.file, Line: n.Line + line - 1, Col: col + 1}
	case yaml.LiteralStyle, yaml.FoldedStyle:
		indent := 0
		if l := n.Line; l < len(c.src) {
			content := c.src[l] // the line after the indicator
			indent = len(content) - len(strings.TrimLeft(content, " "))
		}
		return Pos{File: c.file, Line: n.Line + line, Col: indent + col + 1}
	}
	if line == 1 {
		return Pos{File: c.file, Line: n.Line, Col: n.Column + col}
	}
	return Pos{File: c.file, Line: n.Line + line - 1, Col: col + 1}
}

// kindOfType maps the static result type of an expression to a field kind;
// "" means the type is not known until run time.
func kindOfType(t reflect.Type) Kind {
	if t == nil {
		return ""
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

func wantString(t reflect.Type) string {
	if k := kindOfType(t); k != "" && k != KindString {
		return fmt.Sprintf("must yield a string, got %s", k)
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
	if k := kindOfType(t); k != "" && k != KindString && k != KindList {
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
