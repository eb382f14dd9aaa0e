package builtin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/lgrun/lgrun/spec"
)

// schema returns the compiled JSON Schema s, cached under owner (the
// *spec.Node or *spec.Tool that declares it).
func (e *engine) schema(owner any, s map[string]any) (*jsonschema.Schema, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if sc := e.schemas[owner]; sc != nil {
		return sc, nil
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("mem:///schema.json", doc); err != nil {
		return nil, err
	}
	sc, err := c.Compile("mem:///schema.json")
	if err != nil {
		return nil, err
	}
	e.schemas[owner] = sc
	return sc, nil
}

// parseJSON decodes text as one JSON value in canonical form.
func parseJSON(text string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing text after the JSON value")
	}
	return spec.Normalize(v), nil
}

// stripFence removes a Markdown code fence around a reply, which models
// add even when asked not to.
func stripFence(s string) string {
	t := strings.TrimSpace(s)
	if !strings.HasPrefix(t, "```") {
		return t
	}
	t = strings.TrimPrefix(t, "```")
	if i := strings.IndexByte(t, '\n'); i >= 0 {
		t = t[i+1:] // drop the info string (```json)
	}
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(t), "```"))
}

// validationText condenses a schema validation error to one line per
// problem, e.g. `at /category: value must be one of "billing", ...`.
func validationText(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	var parts []string
	var walk func(u jsonschema.OutputUnit)
	walk = func(u jsonschema.OutputUnit) {
		if u.Error != nil && len(u.Errors) == 0 {
			loc := u.InstanceLocation
			if loc == "" {
				loc = "/"
			}
			parts = append(parts, fmt.Sprintf("at %s: %s", loc, u.Error.String()))
		}
		for _, c := range u.Errors {
			walk(c)
		}
	}
	walk(*ve.BasicOutput())
	if len(parts) == 0 {
		return strings.ReplaceAll(ve.Error(), "\n", "; ")
	}
	return strings.Join(parts, "; ")
}
