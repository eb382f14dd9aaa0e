package spec_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/lgrun/lgrun/spec"
)

// TestStateSchema: each field's type, optionality, enum, description and
// default, and the schema compiles and accepts the defaults.
func TestStateSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.yaml")
	src := `version: 1
name: s
state:
  n: {type: int, default: 2, description: a count}
  tags: {type: list, items: string}
  mode: {type: string, enum: [a, b], default: a}
  note: {type: string, optional: true}
  msgs: {type: messages}
nodes:
  x: {kind: noop}
edges:
  - {from: START, to: x}
  - {from: x, to: END}
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	g, errs := spec.LoadFile(path, nil)
	if errs.HasErrors() {
		t.Fatal(errs)
	}
	s := g.StateSchema()
	b, _ := json.Marshal(s)
	want := `{"additionalProperties":false,"properties":{` +
		`"mode":{"default":"a","enum":["a","b"],"type":"string"},` +
		`"msgs":{"default":[],"items":{"properties":{"content":{"type":"string"},"role":{"enum":["system","user","assistant","tool"]}},"required":["role"],"type":"object"},"type":"array"},` +
		`"n":{"default":2,"description":"a count","type":"integer"},` +
		`"note":{"anyOf":[{"type":"string"},{"type":"null"}]},` +
		`"tags":{"default":[],"items":{"type":"string"},"type":"array"}},"type":"object"}`
	if string(b) != want {
		t.Fatalf("schema\n%s\nwant\n%s", b, want)
	}
	if err := spec.CheckJSONSchema(s); err != nil {
		t.Fatal(err)
	}
}
