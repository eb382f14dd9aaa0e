package runtime_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
)

// Two engines in one process keep their own id clocks: a runner whose
// clock is far ahead does not push the ids of another runner (even on the
// same saver) into its future.
func TestIDClocksPerEngineDoNotInterfere(t *testing.T) {
	const src = `version: 1
name: ids
state:
  n: {type: int, reducer: add}
nodes:
  a: {kind: set, set: {n: "1"}}
  b: {kind: set, set: {n: "1"}}
edges:
  - {from: START, to: a}
  - {from: a, to: b}
  - {from: b, to: END}
`
	g := mustGraph(t, src)
	saver := checkpoint.NewMemory()
	future := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	past := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	engines := []struct {
		name string
		at   time.Time
		ids  *runtime.IDClock
	}{{"future", future, &runtime.IDClock{}}, {"past", past, &runtime.IDClock{}}}
	var wg sync.WaitGroup
	for _, e := range engines {
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := &runtime.Runner{Graph: g, Saver: saver, IDs: e.ids, Now: func() time.Time { return e.at }}
				mustDone(t)(r.Run(bg, runtime.RunOptions{Thread: fmt.Sprintf("%s-%d", e.name, i)}))
			}()
		}
	}
	wg.Wait()
	for _, e := range engines {
		for i := range 4 {
			for _, cp := range history(t, saver, fmt.Sprintf("%s-%d", e.name, i)) {
				n, err := strconv.ParseUint(cp.ID, 16, 64)
				if err != nil {
					t.Fatal(err)
				}
				got := time.Unix(0, int64(n)).UTC()
				if got.Before(e.at) || got.After(e.at.Add(time.Second)) {
					t.Errorf("engine %s: checkpoint id %s is at %s, want its own clock's time %s", e.name, cp.ID, got, e.at)
				}
			}
		}
	}
}

// The library, not only the CLI, refuses thread ids that would clash with
// child-run names.
func TestRunChecksThreadID(t *testing.T) {
	r := newRunner(t, `version: 1
name: ids
state:
  n: {type: int}
nodes:
  a: {kind: noop}
edges:
  - {from: START, to: a}
  - {from: a, to: END}
`)
	for _, id := range []string{"a/b", " a", "a\t"} {
		_, err := r.Run(bg, runtime.RunOptions{Thread: id})
		te := wantErrAs[*runtime.ThreadIDError](t, err)
		if te.ID != id {
			t.Errorf("error names %q, want %q", te.ID, id)
		}
		if _, err := r.Saver.Thread(bg, id); err == nil {
			t.Errorf("thread %q was created", id)
		}
	}
	mustDone(t)(r.Run(bg, runtime.RunOptions{Thread: "a-b.c_1"}))
}

// No package-level clock: every id comes from an [runtime.IDClock] its
// caller owns (a runner's, an engine's, a test's), so nothing one caller
// does moves another's ids. The check reads the package's source: a
// package variable holding a clock, of any name, fails it.
func TestNoPackageLevelIDClock(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	if pkgs["runtime"] == nil {
		t.Fatal("package runtime not found")
	}
	for _, f := range pkgs["runtime"].Files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, sp := range gd.Specs {
				vs := sp.(*ast.ValueSpec)
				typ := vs.Type
				if s, ok := typ.(*ast.StarExpr); ok {
					typ = s.X
				}
				if id, ok := typ.(*ast.Ident); ok && id.Name == "IDClock" {
					t.Errorf("%s: package variable %s holds an IDClock", fset.Position(vs.Pos()), vs.Names[0].Name)
				}
				for _, v := range vs.Values {
					if cl, ok := v.(*ast.CompositeLit); ok {
						if id, ok := cl.Type.(*ast.Ident); ok && id.Name == "IDClock" {
							t.Errorf("%s: package variable %s holds an IDClock", fset.Position(vs.Pos()), vs.Names[0].Name)
						}
					}
				}
			}
		}
	}
}
