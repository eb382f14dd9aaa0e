package spec

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// TestJSONSchemaMetaschemasLazy guards the patch in third_party/jsonschema:
// the metaschemas are compiled on first use, not in init. In a fresh
// process (this test binary re-run with lazyMetaEnv), eight goroutines
// compile, at once, a good and a bad schema of every draft the library
// knows, and the graph schema: the first use of the metaschemas is
// concurrent (run with -race), each bad schema is rejected by its
// draft's metaschema, each good one compiles and validates. That init
// allocates nothing is checked in cmd/lgrun (TestStartupInitAllocations).
func TestJSONSchemaMetaschemasLazy(t *testing.T) {
	if os.Getenv(lazyMetaEnv) == "1" {
		compileAllDraftsConcurrently(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestJSONSchemaMetaschemasLazy$", "-test.v")
	cmd.Env = append(os.Environ(), lazyMetaEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestJSONSchemaMetaschemasLazy") {
		t.Fatalf("fresh process: %v\n%s", err, out)
	}
}

const lazyMetaEnv = "LGRUN_TEST_LAZY_METASCHEMAS"

func compileAllDraftsConcurrently(t *testing.T) {
	drafts := []string{
		"http://json-schema.org/draft-04/schema#",
		"http://json-schema.org/draft-06/schema#",
		"http://json-schema.org/draft-07/schema#",
		"https://json-schema.org/draft/2019-09/schema",
		"https://json-schema.org/draft/2020-12/schema",
	}
	var wg sync.WaitGroup
	errc := make(chan error, 8*(4*len(drafts)+6))
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g%2 == 1 {
				ownMetaschema(g, errc) // its first use of the library
			}
			for i, d := range drafts {
				good := map[string]any{"$schema": d, "type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer", "minimum": 1}}}
				bad := map[string]any{"$schema": d, "type": "object", "properties": map[string]any{"n": map[string]any{"type": 7}}}
				url := fmt.Sprintf("mem:///%d-%d/good.json", g, i)
				c := jsonschema.NewCompiler()
				if err := c.AddResource(url, good); err != nil {
					errc <- err
					continue
				}
				sch, err := c.Compile(url)
				if err != nil {
					errc <- fmt.Errorf("%s: good schema: %v", d, err)
					continue
				}
				if err := sch.Validate(map[string]any{"n": 2}); err != nil {
					errc <- fmt.Errorf("%s: valid value: %v", d, err)
				}
				if err := sch.Validate(map[string]any{"n": 0}); err == nil {
					errc <- fmt.Errorf("%s: n = 0 accepted; want minimum 1", d)
				}
				url = fmt.Sprintf("mem:///%d-%d/bad.json", g, i)
				c = jsonschema.NewCompiler()
				if err := c.AddResource(url, bad); err != nil {
					errc <- err
					continue
				}
				var sve *jsonschema.SchemaValidationError
				if _, err := c.Compile(url); !errors.As(err, &sve) {
					errc <- fmt.Errorf("%s: bad schema: %v; want a SchemaValidationError from the metaschema", d, err)
				}
			}
			if g%2 == 0 {
				ownMetaschema(g, errc)
			}
			if _, err := graphSchema.load(); err != nil {
				errc <- fmt.Errorf("graph schema: %v", err)
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// ownMetaschema compiles a bad schema of a metaschema of its own, with
// $vocabulary: the library reads its draft's vocabulary table while
// compiling it.
func ownMetaschema(g int, errc chan<- error) {
	c := jsonschema.NewCompiler()
	meta := fmt.Sprintf("mem:///%d/meta.json", g)
	v := "https://json-schema.org/draft/2020-12/vocab/"
	if err := c.AddResource(meta, map[string]any{
		"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": meta, "$dynamicAnchor": "meta",
		"$vocabulary": map[string]any{v + "core": true, v + "applicator": true, v + "validation": true},
		"allOf": []any{
			map[string]any{"$ref": "https://json-schema.org/draft/2020-12/meta/core"},
			map[string]any{"$ref": "https://json-schema.org/draft/2020-12/meta/applicator"},
			map[string]any{"$ref": "https://json-schema.org/draft/2020-12/meta/validation"},
		},
	}); err != nil {
		errc <- err
	}
	url := fmt.Sprintf("mem:///%d/own.json", g)
	if err := c.AddResource(url, map[string]any{"$schema": meta, "type": 7}); err != nil {
		errc <- err
	}
	var sve *jsonschema.SchemaValidationError
	if _, err := c.Compile(url); !errors.As(err, &sve) {
		errc <- fmt.Errorf("own metaschema, bad schema: %v; want a SchemaValidationError", err)
	}
}
