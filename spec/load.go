package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// Options configure loading.
type Options struct {
	// ReadFile reads subgraph and fixture files; os.ReadFile when nil.
	ReadFile func(path string) ([]byte, error)
	// CheckFixtures, when set, checks the fixtures file (path and contents)
	// of each mock model and returns its problems, positioned in that file.
	// The mock provider implements it (builtin.CheckFixtures); spec only
	// knows that such files exist.
	CheckFixtures func(path string, src []byte) ErrorList
	// Registry declares the node kinds, Go tools and model providers the
	// graph may use beyond the language's own; nil for none.
	Registry *Registry
}

func (l *loader) registry() *Registry {
	if l.opts == nil {
		return nil
	}
	return l.opts.Registry
}

// LoadFile reads, validates and compiles the graph file at path. It returns
// the graph (nil when there are errors) and every diagnostic, warnings
// included, sorted.
func LoadFile(path string, opts *Options) (*Graph, ErrorList) {
	read := os.ReadFile
	if opts != nil && opts.ReadFile != nil {
		read = opts.ReadFile
	}
	src, err := read(path)
	if err != nil {
		return nil, ErrorList{{Pos: Pos{File: path}, Msg: fmt.Sprintf("read graph: %v", unwrapPathErr(err))}}
	}
	return Parse(path, src, opts)
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// Parse validates and compiles src as the graph file named file.
func Parse(file string, src []byte, opts *Options) (*Graph, ErrorList) {
	l := &loader{opts: opts, stack: map[string]bool{}, cache: map[string]*Graph{}}
	return l.parse(file, src)
}

type loader struct {
	opts  *Options
	stack map[string]bool // files being loaded, for cycle detection
	cache map[string]*Graph
	// fixtures are the fixtures files already checked.
	fixtures map[string]bool
}

// checkFixtures checks a fixtures file with Options.CheckFixtures, once
// per file however many models name it.
func (l *loader) checkFixtures(path string, src []byte, errs *ErrorList) {
	if l.opts == nil || l.opts.CheckFixtures == nil || l.fixtures[path] {
		return
	}
	if l.fixtures == nil {
		l.fixtures = map[string]bool{}
	}
	l.fixtures[path] = true
	*errs = append(*errs, l.opts.CheckFixtures(path, src)...)
}

func (l *loader) read(path string) ([]byte, error) {
	if l.opts != nil && l.opts.ReadFile != nil {
		return l.opts.ReadFile(path)
	}
	return os.ReadFile(path)
}

func (l *loader) parse(file string, src []byte) (*Graph, ErrorList) {
	var errs ErrorList
	abs, _ := filepath.Abs(file)
	l.stack[abs] = true
	defer delete(l.stack, abs)

	root := parseYAML(file, src, &errs)
	if root == nil {
		errs.Sort()
		return nil, errs
	}
	conv := &valueConv{file: file, errs: &errs}
	v := conv.value(root)
	if errs.HasErrors() {
		errs.Sort()
		return nil, errs
	}
	validateWith(l.registry().graphSchema(), file, root, v, &errs)
	// Semantic checks run even when the schema found problems, so a user sees
	// every problem at once; a semantic error at the same position as a
	// schema error adds nothing and is dropped.
	schemaPos := map[Pos]bool{}
	for _, e := range errs {
		schemaPos[e.Pos] = true
	}
	nSchema := len(errs)
	sum := sha256.Sum256(src)
	c := &checker{
		loader: l,
		reg:    l.registry(),
		file:   file,
		dir:    filepath.Dir(file),
		errs:   &errs,
		ec:     &exprCompiler{file: file, src: splitLines(src), errs: &errs},
		g: &Graph{
			File:       file,
			Hash:       hex.EncodeToString(sum[:]),
			Nodes:      map[string]*Node{},
			Models:     map[string]*Model{},
			Tools:      map[string]*Tool{},
			Subgraphs:  map[string]*Graph{},
			fieldIndex: map[string]*Field{},
			out:        map[string][]*Edge{},
		},
	}
	c.check(root)
	kept := errs[:nSchema]
	for _, e := range errs[nSchema:] {
		if !schemaPos[e.Pos] {
			kept = append(kept, e)
		}
	}
	errs = kept
	errs.Sort()
	if errs.HasErrors() {
		return nil, errs
	}
	return c.g, errs
}
