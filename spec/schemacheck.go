package spec

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"gopkg.in/yaml.v3"

	"github.com/lgrun/lgrun/schema"
)

var printer = message.NewPrinter(language.English)

// embeddedSchema is a JSON Schema embedded in package schema, compiled on
// first use. doc is the parsed document, for "allowed keys" hints.
type embeddedSchema struct {
	url, what string
	src       []byte
	// prep, when set, edits the parsed document before it is compiled.
	prep func(doc any)
	// quick lets quickValid accept a valid value without compiling the
	// schema. Set for the schemas of package schema, which the tests
	// compile and check quickValid against; not for a registry's, which
	// may not compile.
	quick bool

	docOnce sync.Once
	doc     any
	docErr  error // preset when the source could not be made

	once     sync.Once
	val      *jsonschema.Schema
	err      error
	compiled atomic.Bool // for tests: load compiled the schema
}

var (
	graphSchema = &embeddedSchema{url: schema.GraphURL, what: "graph", src: schema.Graph, prep: withoutKindRules, quick: true}
	testSchema  = &embeddedSchema{url: schema.TestURL, what: "test file", src: schema.Test, quick: true}
)

// document parses the schema (once) and prepares it.
func (es *embeddedSchema) document() (any, error) {
	es.docOnce.Do(func() {
		if es.docErr != nil {
			return
		}
		doc, err := decodeSchemaDoc(es.src)
		if err != nil {
			es.docErr = fmt.Errorf("parse embedded %s schema: %w", es.what, err)
			return
		}
		if es.prep != nil {
			es.prep(doc)
		}
		es.doc = doc
	})
	return es.doc, es.docErr
}

// load compiles the schema (once).
func (es *embeddedSchema) load() (*jsonschema.Schema, error) {
	es.once.Do(func() {
		doc, err := es.document()
		if err != nil {
			es.err = err
			return
		}
		es.compiled.Store(true)
		c := jsonschema.NewCompiler()
		if err := c.AddResource(es.url, doc); err != nil {
			es.err = fmt.Errorf("load embedded %s schema: %w", es.what, err)
			return
		}
		es.val, es.err = c.Compile(es.url)
	})
	return es.val, es.err
}

// validateWith checks the decoded value v of a file against the JSON Schema
// es and reports each violation at the YAML position it refers to. A value
// quickValid accepts needs no compiled schema.
func validateWith(es *embeddedSchema, file string, root *yaml.Node, v any, errs *ErrorList) {
	if es.quick {
		if doc, err := es.document(); err == nil && quickValid(doc, v) {
			return
		}
	}
	sch, err := es.load()
	if err != nil {
		errs.Add(Pos{File: file}, "%v", err)
		return
	}
	err = sch.Validate(v)
	if err == nil {
		return
	}
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		errs.Add(Pos{File: file}, "validate: %v", err)
		return
	}
	for _, leaf := range schemaLeaves(ve) {
		reportSchemaError(es.doc, file, root, leaf, errs)
	}
}

// schemaLeaves flattens a validation error tree into the errors worth
// showing. For anyOf/oneOf failures it drops the branches that only failed
// because the value has another type; when one branch is left it shows that
// branch's errors, else the branch that got furthest into the value, or one
// merged message.
func schemaLeaves(e *jsonschema.ValidationError) []*jsonschema.ValidationError {
	switch e.ErrorKind.(type) {
	case *kind.PropertyNames:
		// Its cause is the name's pattern error, located relative to the name.
		return []*jsonschema.ValidationError{e}
	case *kind.AnyOf, *kind.OneOf:
		if len(e.Causes) == 0 {
			return []*jsonschema.ValidationError{e}
		}
		var kept [][]*jsonschema.ValidationError
		for _, c := range e.Causes {
			leaves := schemaLeaves(c)
			if !typeMismatch(leaves, len(e.InstanceLocation)) {
				kept = append(kept, leaves)
			}
		}
		switch len(kept) {
		case 0:
			return []*jsonschema.ValidationError{e}
		case 1:
			return kept[0]
		}
		var best []*jsonschema.ValidationError
		bestDepth := -1
		for _, leaves := range kept {
			d := 0
			for _, l := range leaves {
				d = max(d, len(l.InstanceLocation))
			}
			if d > bestDepth {
				best, bestDepth = leaves, d
			}
		}
		if bestDepth <= len(e.InstanceLocation) {
			return []*jsonschema.ValidationError{e}
		}
		return best
	}
	if len(e.Causes) == 0 {
		return []*jsonschema.ValidationError{e}
	}
	var out []*jsonschema.ValidationError
	for _, c := range e.Causes {
		out = append(out, schemaLeaves(c)...)
	}
	return out
}

// typeMismatch reports whether leaves are only type errors at depth, the
// failure of an anyOf branch written for another type of value.
func typeMismatch(leaves []*jsonschema.ValidationError, depth int) bool {
	for _, l := range leaves {
		if _, ok := l.ErrorKind.(*kind.Type); !ok || len(l.InstanceLocation) != depth {
			return false
		}
	}
	return len(leaves) > 0
}

// typeWants collects the types an anyOf/oneOf error would have accepted.
func typeWants(e *jsonschema.ValidationError) []string {
	if t, ok := e.ErrorKind.(*kind.Type); ok {
		return t.Want
	}
	var out []string
	for _, c := range e.Causes {
		out = append(out, typeWants(c)...)
	}
	return out
}

func reportSchemaError(doc any, file string, root *yaml.Node, e *jsonschema.ValidationError, errs *ErrorList) {
	loc := e.InstanceLocation
	where := formatPath(loc)
	prefix := ""
	if where != "" {
		prefix = where + ": "
	}
	switch k := e.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		allowed := schemaProperties(doc, e.SchemaURL)
		for _, p := range k.Properties {
			n := lookupPath(root, append(append([]string{}, loc...), p), true)
			msg := fmt.Sprintf("unknown key %q", p)
			if where != "" {
				msg += " in " + where
			}
			if s := suggest(p, allowed); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			} else if len(allowed) > 0 {
				msg += fmt.Sprintf(" (allowed: %s)", strings.Join(allowed, ", "))
			}
			errs.Add(nodePos(file, n), "%s", msg)
		}
	case *kind.Required:
		n := lookupPath(root, loc, false)
		for _, m := range k.Missing {
			errs.Add(nodePos(file, n), "%smissing required key %q", prefix, m)
		}
	case *kind.PropertyNames:
		// jsonschema v6.0.3 aliases the validator's location slice into
		// this error (validator.go: verr.InstanceLocation = vd.vloc), so
		// by now it may name another key. Our propertyNames are all on
		// top-level properties: take the key from the schema location.
		if _, frag, _ := strings.Cut(e.SchemaURL, "#"); strings.HasPrefix(frag, "/properties/") && strings.HasSuffix(frag, "/propertyNames") {
			loc = []string{strings.TrimSuffix(strings.TrimPrefix(frag, "/properties/"), "/propertyNames")}
			prefix = formatPath(loc) + ": "
		}
		n := lookupPath(root, append(append([]string{}, loc...), k.Property), true)
		rule := "use letters, digits and _, not starting with a digit"
		if len(e.Causes) == 1 {
			if p, ok := e.Causes[0].ErrorKind.(*kind.Pattern); ok {
				rule = patternRule(p.Want)
			}
		}
		errs.Add(nodePos(file, n), "%sinvalid name %q: %s", prefix, k.Property, rule)
	case *kind.AnyOf, *kind.OneOf:
		n := lookupPath(root, loc, false)
		if wants := typeWants(e); len(wants) > 0 {
			errs.Add(nodePos(file, n), "%sgot %s, want %s", prefix, jsonTypeOfNode(n), typeList(wants))
		} else {
			errs.Add(nodePos(file, n), "%sinvalid value (%s)", prefix, kindName(n))
		}
	case *kind.Type:
		n := lookupPath(root, loc, false)
		errs.Add(nodePos(file, n), "%sgot %s, want %s", prefix, jsonTypeOfNode(n), typeList(k.Want))
	case *kind.Pattern:
		n := lookupPath(root, loc, false)
		if strings.HasSuffix(e.SchemaURL, "#/$defs/duration") {
			errs.Add(nodePos(file, n), "%sinvalid duration %q (write a Go duration such as 30s, 5m or 1h30m)", prefix, k.Got)
		} else {
			errs.Add(nodePos(file, n), "%sinvalid value %q: %s", prefix, k.Got, patternRule(k.Want))
		}
	case *kind.MinProperties:
		n := lookupPath(root, loc, false)
		errs.Add(nodePos(file, n), "%sneeds at least %d %s", prefix, k.Want, plural(k.Want, "entry", "entries"))
	case *kind.MinItems:
		n := lookupPath(root, loc, false)
		errs.Add(nodePos(file, n), "%sneeds at least %d %s", prefix, k.Want, plural(k.Want, "item", "items"))
	case *kind.MinLength:
		n := lookupPath(root, loc, false)
		errs.Add(nodePos(file, n), "%smust not be empty", prefix)
	case *kind.Minimum:
		n := lookupPath(root, loc, false)
		errs.Add(nodePos(file, n), "%smust be at least %s", prefix, k.Want.RatString())
	case *kind.Maximum:
		n := lookupPath(root, loc, false)
		errs.Add(nodePos(file, n), "%smust be at most %s", prefix, k.Want.RatString())
	case *kind.Enum:
		n := lookupPath(root, loc, false)
		var want []string
		for _, w := range k.Want {
			want = append(want, fmt.Sprint(w))
		}
		msg := fmt.Sprintf("%sinvalid value %q, want one of %s", prefix, describeValue(k.Got), strings.Join(want, ", "))
		if s, ok := k.Got.(string); ok {
			if sug := suggest(s, want); sug != "" {
				msg += fmt.Sprintf("; did you mean %q?", sug)
			}
		}
		errs.Add(nodePos(file, n), "%s", msg)
	default:
		n := lookupPath(root, loc, false)
		errs.Add(nodePos(file, n), "%s%s", prefix, e.ErrorKind.LocalizedString(printer))
	}
}

// jsonTypeOfNode names the type of a YAML value as the schema messages do.
func jsonTypeOfNode(n *yaml.Node) string {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	switch n.ShortTag() {
	case "!!null":
		return "null"
	case "!!int":
		return "integer"
	case "!!float":
		return "number"
	case "!!bool":
		return "bool"
	}
	return "string"
}

// typeList renders JSON-Schema type names in the words of a YAML file,
// e.g. "string or list".
func typeList(wants []string) string {
	names := map[string]string{"array": "list", "object": "mapping", "boolean": "bool"}
	var out []string
	for _, w := range dedupe(wants) {
		if n, ok := names[w]; ok {
			w = n
		}
		out = append(out, w)
	}
	switch len(out) {
	case 0:
		return "nothing"
	case 1:
		return out[0]
	}
	return strings.Join(out[:len(out)-1], ", ") + " or " + out[len(out)-1]
}

// patternRule explains a name pattern of the schema.
func patternRule(pattern string) string {
	switch pattern {
	case "^[A-Za-z_][A-Za-z0-9_]*$":
		return "use letters, digits and _, not starting with a digit"
	case "^[A-Za-z_][A-Za-z0-9_-]*$":
		return "use letters, digits, _ and -, not starting with a digit or -"
	case "^[A-Za-z_][A-Za-z0-9_.-]*$":
		return "use letters, digits, _, . and -, not starting with a digit, . or -"
	}
	return fmt.Sprintf("must match %s", pattern)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// schemaProperties returns the property names allowed by the object at
// url (an absolute schema location with a JSON-pointer fragment) in doc.
func schemaProperties(doc any, url string) []string {
	_, frag, _ := strings.Cut(url, "#")
	cur := doc
	for _, tok := range strings.Split(strings.TrimPrefix(frag, "/"), "/") {
		if tok == "" {
			continue
		}
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[tok]
	}
	m, _ := cur.(map[string]any)
	props, _ := m["properties"].(map[string]any)
	out := make([]string, 0, len(props))
	for p := range props {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// suggest returns the candidate closest to s by edit distance, if it is
// close enough to be a likely typo, else "".
func suggest(s string, candidates []string) string {
	limit := min(3, max(1, len(s)/3+1))
	best, bestD := "", limit+1
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance between a and b
// (insertions, deletions, substitutions and adjacent transpositions).
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// formatPath renders an instance location as "edges[3].to".
func formatPath(loc []string) string {
	var b strings.Builder
	for _, p := range loc {
		if _, err := strconv.Atoi(p); err == nil {
			b.WriteString("[" + p + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}
