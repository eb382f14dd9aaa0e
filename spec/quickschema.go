package spec

import (
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"
)

// quickValid reports whether the decoded value v is valid against the
// parsed JSON Schema doc, without compiling the schema: a process that
// loads one good graph would otherwise spend more on compiling the graph
// schema than on everything else it does.
//
// It answers only "certainly valid". It knows the keywords the embedded
// schemas use, with the semantics of draft 2020-12 as the compiler
// implements them (numbers compared as big.Rat, lengths in code points,
// patterns as unanchored Go regexps); on any keyword, keyword value or
// reference it does not know it gives up. When it says no, the caller
// validates with the compiled schema, which also explains what is wrong,
// so diagnostics come only from the compiler.
func quickValid(doc, v any) bool {
	root, ok := doc.(map[string]any)
	if !ok {
		return false
	}
	q := &quickCheck{root: root}
	return q.valid(root, v, 0) && !q.unsure
}

// quickCheck is one quickValid call. unsure is set when the answer of some
// subschema is not known: the whole answer is then "not sure", even when
// the unknown part sat under a not-taken branch of anyOf or if.
type quickCheck struct {
	root   map[string]any
	unsure bool
}

// quickMaxDepth bounds $ref recursion (a schema that refers to itself
// without consuming the value would not end).
const quickMaxDepth = 64

// quickAnnotations are keywords that do not constrain a value.
var quickAnnotations = map[string]bool{
	"description": true, "title": true, "$comment": true, "default": true,
	"examples": true, "deprecated": true, "$defs": true,
}

func (q *quickCheck) giveUp() bool {
	q.unsure = true
	return false
}

// valid reports whether v is valid against schema s; on anything it does
// not know it sets q.unsure.
func (q *quickCheck) valid(s, v any, depth int) bool {
	if q.unsure {
		return false
	}
	if depth > quickMaxDepth {
		return q.giveUp()
	}
	switch s := s.(type) {
	case bool:
		return s
	case map[string]any:
		return q.object(s, v, depth)
	}
	return q.giveUp()
}

func (q *quickCheck) object(s map[string]any, v any, depth int) bool {
	ok := true
	for k, kv := range s {
		if !ok || q.unsure {
			break
		}
		if quickAnnotations[k] {
			continue
		}
		switch k {
		case "$schema":
			if depth != 0 || kv != "https://json-schema.org/draft/2020-12/schema" {
				return q.giveUp()
			}
		case "$id":
			// Only the root's (depth 0: every step in goes deeper): a
			// nested $id changes where references resolve.
			if depth != 0 {
				return q.giveUp()
			}
		case "$ref":
			ok = q.ref(kv, v, depth)
		case "type":
			ok = q.typ(kv, v)
		case "enum":
			list, isList := kv.([]any)
			if !isList {
				return q.giveUp()
			}
			found := false
			for _, e := range list {
				if q.equal(v, e) {
					found = true
					break
				}
			}
			ok = found
		case "const":
			ok = q.equal(v, kv)
		case "allOf", "anyOf", "oneOf":
			ok = q.combine(k, kv, v, depth)
		case "if":
			// then and else are read here.
			branch := "else"
			if q.valid(kv, v, depth+1) {
				branch = "then"
			}
			if q.unsure {
				return false
			}
			if bs, has := s[branch]; has {
				ok = q.valid(bs, v, depth+1)
			}
		case "then", "else":
			if _, has := s["if"]; !has {
				continue // ignored without if
			}
		case "properties", "additionalProperties", "propertyNames", "required", "minProperties":
			ok = q.objectKeyword(s, k, kv, v, depth)
		case "items", "minItems":
			ok = q.arrayKeyword(k, kv, v, depth)
		case "minLength", "pattern":
			ok = q.stringKeyword(k, kv, v)
		case "minimum", "maximum":
			ok = q.numberKeyword(k, kv, v)
		default:
			return q.giveUp()
		}
	}
	return ok && !q.unsure
}

// ref follows a reference into the root's $defs ("#/$defs/name").
func (q *quickCheck) ref(kv, v any, depth int) bool {
	r, ok := kv.(string)
	if !ok {
		return q.giveUp()
	}
	name, ok := strings.CutPrefix(r, "#/$defs/")
	if !ok || strings.ContainsAny(name, "/~%") {
		return q.giveUp()
	}
	defs, _ := q.root["$defs"].(map[string]any)
	target, ok := defs[name]
	if !ok {
		return q.giveUp()
	}
	return q.valid(target, v, depth+1)
}

func (q *quickCheck) typ(kv, v any) bool {
	switch t := kv.(type) {
	case string:
		return q.isType(t, v)
	case []any:
		for _, e := range t {
			name, ok := e.(string)
			if !ok {
				return q.giveUp()
			}
			if q.isType(name, v) {
				return true
			}
		}
		return false
	}
	return q.giveUp()
}

func (q *quickCheck) isType(t string, v any) bool {
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	case "number":
		return q.number(v) != nil
	case "integer":
		n := q.number(v)
		return n != nil && n.IsInt()
	}
	return q.giveUp()
}

// number returns v as a number, or nil when v is not one (it gives up on
// values a decoded file does not hold).
func (q *quickCheck) number(v any) *big.Rat {
	switch v.(type) {
	case int, int64, float64, json.Number:
		n, ok := new(big.Rat).SetString(fmt.Sprint(v))
		if !ok {
			q.giveUp()
			return nil
		}
		return n
	case nil, bool, string, []any, map[string]any:
		return nil
	}
	q.giveUp()
	return nil
}

// equal is JSON equality, numbers by value.
func (q *quickCheck) equal(a, b any) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case bool:
		bb, ok := b.(bool)
		return ok && a == bb
	case string:
		bs, ok := b.(string)
		return ok && a == bs
	case []any:
		bl, ok := b.([]any)
		if !ok || len(a) != len(bl) {
			return false
		}
		for i := range a {
			if !q.equal(a[i], bl[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok || len(a) != len(bm) {
			return false
		}
		for k, av := range a {
			bv, ok := bm[k]
			if !ok || !q.equal(av, bv) {
				return false
			}
		}
		return true
	}
	na := q.number(a)
	if na == nil {
		return false
	}
	nb := q.number(b)
	return nb != nil && na.Cmp(nb) == 0
}

func (q *quickCheck) combine(k string, kv, v any, depth int) bool {
	list, ok := kv.([]any)
	if !ok || len(list) == 0 {
		return q.giveUp()
	}
	n := 0
	for _, sub := range list {
		if q.valid(sub, v, depth+1) {
			n++
		}
		if q.unsure {
			return false
		}
	}
	switch k {
	case "allOf":
		return n == len(list)
	case "anyOf":
		return n > 0
	}
	return n == 1
}

func (q *quickCheck) objectKeyword(s map[string]any, k string, kv, v any, depth int) bool {
	obj, isObj := v.(map[string]any)
	switch k {
	case "properties":
		props, ok := kv.(map[string]any)
		if !ok {
			return q.giveUp()
		}
		for name, ps := range props {
			if pv, has := obj[name]; has && !q.valid(ps, pv, depth+1) {
				return false
			}
		}
	case "additionalProperties":
		if _, has := s["patternProperties"]; has {
			return q.giveUp()
		}
		props, _ := s["properties"].(map[string]any)
		for name, pv := range obj {
			if _, declared := props[name]; !declared && !q.valid(kv, pv, depth+1) {
				return false
			}
		}
	case "propertyNames":
		for name := range obj {
			if !q.valid(kv, name, depth+1) {
				return false
			}
		}
	case "required":
		list, ok := kv.([]any)
		if !ok {
			return q.giveUp()
		}
		for _, e := range list {
			name, ok := e.(string)
			if !ok {
				return q.giveUp()
			}
			if _, has := obj[name]; isObj && !has {
				return false
			}
		}
	case "minProperties":
		min, ok := q.count(kv)
		if !ok {
			return q.giveUp()
		}
		return !isObj || len(obj) >= min
	}
	return !q.unsure
}

func (q *quickCheck) arrayKeyword(k string, kv, v any, depth int) bool {
	arr, isArr := v.([]any)
	switch k {
	case "items":
		for _, e := range arr {
			if !q.valid(kv, e, depth+1) {
				return false
			}
		}
	case "minItems":
		min, ok := q.count(kv)
		if !ok {
			return q.giveUp()
		}
		return !isArr || len(arr) >= min
	}
	return !q.unsure
}

func (q *quickCheck) stringKeyword(k string, kv, v any) bool {
	str, isStr := v.(string)
	switch k {
	case "minLength":
		min, ok := q.count(kv)
		if !ok {
			return q.giveUp()
		}
		return !isStr || utf8.RuneCountInString(str) >= min
	case "pattern":
		p, ok := kv.(string)
		if !ok {
			return q.giveUp()
		}
		re, err := quickPattern(p)
		if err != nil {
			return q.giveUp()
		}
		return !isStr || re.MatchString(str)
	}
	return q.giveUp()
}

func (q *quickCheck) numberKeyword(k string, kv, v any) bool {
	bound := q.number(kv)
	if bound == nil {
		return q.giveUp()
	}
	n := q.number(v)
	if n == nil {
		return !q.unsure // not a number: the keyword does not apply
	}
	if k == "minimum" {
		return n.Cmp(bound) >= 0
	}
	return n.Cmp(bound) <= 0
}

// count reads a non-negative integer keyword value.
func (q *quickCheck) count(kv any) (int, bool) {
	n := q.number(kv)
	if n == nil || !n.IsInt() || n.Sign() < 0 || !n.Num().IsInt64() {
		return 0, false
	}
	return int(n.Num().Int64()), true
}

// quickPatterns caches the compiled patterns of the embedded schemas.
var quickPatterns sync.Map // string -> *regexp.Regexp

func quickPattern(p string) (*regexp.Regexp, error) {
	if re, ok := quickPatterns.Load(p); ok {
		return re.(*regexp.Regexp), nil
	}
	re, err := regexp.Compile(p)
	if err != nil {
		return nil, err
	}
	quickPatterns.Store(p, re)
	return re, nil
}
