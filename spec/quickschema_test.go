package spec

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
)

// quickCorpus is every YAML file of the module (graphs, test files,
// valid and invalid goldens, and the files of the CLI's script tests),
// decoded as the loader decodes them. Files that do not decode are left
// out: the loader never validates them.
func quickCorpus(t *testing.T) map[string]any {
	t.Helper()
	out := map[string]any{}
	add := func(name string, src []byte) {
		var errs ErrorList
		root := parseYAML(name, src, &errs)
		if root == nil || errs.HasErrors() {
			return
		}
		v := (&valueConv{file: name, errs: &errs}).value(root)
		if errs.HasErrors() {
			return
		}
		out[name] = v
	}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		switch {
		case strings.HasSuffix(path, ".yaml"), strings.HasSuffix(path, ".yml"):
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			add(path, src)
		case strings.HasSuffix(path, ".txtar"):
			a, err := txtar.ParseFile(path)
			if err != nil {
				return err
			}
			for _, f := range a.Files {
				if strings.HasSuffix(f.Name, ".yaml") {
					add(path+"/"+f.Name, f.Data)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 200 {
		t.Fatalf("corpus has %d files; the walk missed the module's YAML", len(out))
	}
	return out
}

// mutations returns variants of v that break it in the ways a user does:
// a key removed, a key added, a scalar of another type or value, an empty
// list, each at every place in the value (bounded by limit).
func mutations(v any, limit int) []any {
	var out []any
	var walk func(cur any, replace func(any) any)
	scalars := []any{nil, true, 0, -1, 1.5, "", "x", "START", []any{}, map[string]any{}, 1e9}
	walk = func(cur any, replace func(any) any) {
		if len(out) >= limit {
			return
		}
		for _, s := range scalars {
			out = append(out, replace(s))
		}
		switch c := cur.(type) {
		case map[string]any:
			keys := make([]string, 0, len(c))
			for k := range c {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			out = append(out, replace(withKey(c, "zz_unknown", 1)))
			for _, k := range keys {
				out = append(out, replace(withoutKey(c, k)))
				walk(c[k], func(nv any) any { return replace(withKey(c, k, nv)) })
			}
		case []any:
			for i := range c {
				walk(c[i], func(nv any) any {
					cp := append([]any(nil), c...)
					cp[i] = nv
					return replace(cp)
				})
			}
		}
	}
	walk(v, func(nv any) any { return nv })
	return out
}

func withKey(m map[string]any, k string, v any) map[string]any {
	cp := make(map[string]any, len(m)+1)
	for kk, vv := range m {
		cp[kk] = vv
	}
	cp[k] = v
	return cp
}

func withoutKey(m map[string]any, k string) map[string]any {
	cp := withKey(m, k, nil)
	delete(cp, k)
	return cp
}

// TestQuickValidAgreesWithCompiler checks quickValid against the compiled
// schemas: whatever it accepts, the compiler accepts, on every file of the
// module and thousands of broken variants of them; and it does accept the
// files the compiler accepts, so a good graph loads without compiling.
func TestQuickValidAgreesWithCompiler(t *testing.T) {
	type target struct {
		es   *embeddedSchema
		name string
	}
	var accepted, fellBack, checked int
	for name, v := range quickCorpus(t) {
		tg := target{graphSchema, "graph"}
		if strings.HasSuffix(name, ".test.yaml") {
			tg = target{testSchema, "test"}
		}
		doc, err := tg.es.document()
		if err != nil {
			t.Fatal(err)
		}
		sch, err := tg.es.load()
		if err != nil {
			t.Fatal(err)
		}
		for i, mv := range append([]any{v}, mutations(v, 120)...) {
			checked++
			quick := quickValid(doc, mv)
			full := sch.Validate(mv) == nil
			if quick && !full {
				t.Fatalf("%s (%s schema), variant %d: quickValid accepts what the compiled schema rejects: %s\n%#v",
					name, tg.name, i, sch.Validate(mv), mv)
			}
			if i == 0 && full && !quick {
				t.Errorf("%s: valid, but quickValid is not sure: a good file should not need the compiled schema", name)
			}
			if full && quick {
				accepted++
			} else if full {
				fellBack++
			}
		}
	}
	t.Logf("%d values checked; %d valid ones accepted quickly, %d valid ones fell back", checked, accepted, fellBack)
	if accepted == 0 {
		t.Fatal("quickValid accepted nothing")
	}
}

// TestQuickValidGivesUp checks that keywords quickValid does not know,
// and references it cannot follow, make it answer "not sure" instead of
// ignoring them.
func TestQuickValidGivesUp(t *testing.T) {
	for _, s := range []string{
		`{"type": "string", "format": "email"}`,
		`{"type": "object", "unevaluatedProperties": false}`,
		`{"$ref": "other.json"}`,
		`{"$ref": "#/$defs/missing"}`,
		`{"type": "object", "properties": {"a": {"$id": "x", "type": "string"}}}`,
		`{"$schema": "http://json-schema.org/draft-07/schema", "type": "object"}`,
		`{"anyOf": [{"type": "string"}, {"maxLength": 3}]}`,
		`{"if": {"format": "date"}, "then": true}`,
	} {
		doc, err := parseSchemaDoc(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []any{"abc", map[string]any{"a": "b"}} {
			if quickValid(doc, v) {
				t.Errorf("quickValid(%s, %#v) = true; want not sure", s, v)
			}
		}
	}
}

func parseSchemaDoc(s string) (any, error) {
	es := &embeddedSchema{url: "https://lgrun.dev/schema/t.json", what: "t", src: []byte(s)}
	return es.document()
}

// TestGoodGraphSkipsSchemaCompile is the start-up guard (BENCHMARKS.md,
// "Start-up"): loading a good graph does not compile the graph schema; a
// graph with a schema error does, and reports it as before.
func TestGoodGraphSkipsSchemaCompile(t *testing.T) {
	good := "version: 1\nname: x\nstate:\n  out: {type: string}\nnodes:\n  only:\n    kind: set\n    set:\n      out: '\"done\"'\nedges:\n  - {from: START, to: only}\n  - {from: only, to: END}\n"
	bad := good + "bogus: 1\n"
	check := func(src string) (*embeddedSchema, ErrorList) {
		es := &embeddedSchema{url: graphSchema.url, what: graphSchema.what, src: graphSchema.src, prep: graphSchema.prep, quick: true}
		var errs ErrorList
		root := parseYAML("x.yaml", []byte(src), &errs)
		v := (&valueConv{file: "x.yaml", errs: &errs}).value(root)
		if errs.HasErrors() {
			t.Fatal(errs)
		}
		validateWith(es, "x.yaml", root, v, &errs)
		return es, errs
	}
	es, errs := check(good)
	if len(errs) != 0 || es.compiled.Load() {
		t.Errorf("good graph: errors %v, schema compiled %v; want none and false", errs, es.compiled.Load())
	}
	es, errs = check(bad)
	if len(errs) == 0 || !es.compiled.Load() {
		t.Errorf("unknown key: errors %v, schema compiled %v; want an error and true", errs, es.compiled.Load())
	}
	if g, diags := Parse("x.yaml", []byte(bad), nil); g != nil || !strings.Contains(fmt.Sprint(diags), "bogus") {
		t.Errorf("Parse(unknown key) = %v, %v; want the schema's error", g, diags)
	}
}

// TestQuickValidKeywords checks each keyword quickValid knows on values
// the compiled schema accepts and rejects: it must agree when it is sure.
func TestQuickValidKeywords(t *testing.T) {
	for _, c := range []struct {
		schema string
		v      any
	}{
		{`{"const": "a"}`, "b"},
		{`{"const": 1}`, 1.0},
		{`{"enum": ["a", 2]}`, 2},
		{`{"enum": ["a", 2]}`, "2"},
		{`{"type": "integer"}`, 1.5},
		{`{"type": "integer"}`, 2.0},
		{`{"type": ["string", "null"]}`, nil},
		{`{"type": ["string", "null"]}`, false},
		{`{"minimum": 1, "maximum": 3}`, 0},
		{`{"minimum": 1, "maximum": 3}`, 3.5},
		{`{"minimum": 1, "maximum": 3}`, "x"},
		{`{"minLength": 2}`, "é"},
		{`{"minLength": 2}`, "éé"},
		{`{"pattern": "^[a-z]+$"}`, "Ab"},
		{`{"items": {"type": "string"}, "minItems": 2}`, []any{"a"}},
		{`{"items": {"type": "string"}, "minItems": 1}`, []any{"a", 1}},
		{`{"oneOf": [{"type": "string"}, {"minLength": 1}]}`, "a"},
		{`{"oneOf": [{"type": "string"}, {"minLength": 1}]}`, ""},
		{`{"allOf": [{"type": "string"}, {"minLength": 1}]}`, ""},
		{`{"propertyNames": {"pattern": "^a"}}`, map[string]any{"b": 1}},
		{`{"properties": {"a": {"type": "string"}}, "additionalProperties": false}`, map[string]any{"a": "x", "b": 1}},
		{`{"properties": {"a": {"type": "string"}}, "additionalProperties": false}`, map[string]any{"a": 1}},
		{`{"required": ["a"], "minProperties": 2}`, map[string]any{"a": 1}},
		{`{"if": {"properties": {"k": {"const": "x"}}}, "then": {"required": ["y"]}, "else": {"required": ["z"]}}`, map[string]any{"k": "x", "z": 1}},
		{`{"if": {"properties": {"k": {"const": "x"}}}, "then": {"required": ["y"]}, "else": {"required": ["z"]}}`, map[string]any{"k": "w", "z": 1}},
		{`{"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s"}`, 1},
		{`false`, 1},
	} {
		es := &embeddedSchema{url: "https://lgrun.dev/schema/t.json", what: "t", src: []byte(c.schema)}
		doc, err := es.document()
		if err != nil {
			t.Fatal(err)
		}
		sch, err := es.load()
		if err != nil {
			t.Fatalf("%s: %v", c.schema, err)
		}
		want := sch.Validate(c.v) == nil
		if got := quickValid(doc, c.v); got != want {
			t.Errorf("quickValid(%s, %#v) = %v; the compiled schema says %v", c.schema, c.v, got, want)
		}
	}
}

// TestValidateWithConcurrent validates good and bad graphs at once
// against one fresh schema (as lgrun serve loads graphs): the quick path
// and the first compile race for the parsed document (run with -race).
func TestValidateWithConcurrent(t *testing.T) {
	good := "version: 1\nname: x\nstate:\n  out: {type: string}\nnodes:\n  only:\n    kind: set\n    set:\n      out: '\"done\"'\nedges:\n  - {from: START, to: only}\n  - {from: only, to: END}\n"
	es := &embeddedSchema{url: graphSchema.url, what: graphSchema.what, src: graphSchema.src, prep: graphSchema.prep, quick: true}
	var wg sync.WaitGroup
	results := make([]int, 16)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := good
			if i%2 == 1 {
				src += "bogus: 1\n"
			}
			var errs ErrorList
			root := parseYAML("x.yaml", []byte(src), &errs)
			v := (&valueConv{file: "x.yaml", errs: &errs}).value(root)
			validateWith(es, "x.yaml", root, v, &errs)
			results[i] = len(errs)
		}()
	}
	wg.Wait()
	for i, n := range results {
		if want := i % 2; (n > 0) != (want == 1) {
			t.Errorf("goroutine %d: %d errors; want errors only for the bad graph", i, n)
		}
	}
}
