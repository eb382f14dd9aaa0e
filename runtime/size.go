package runtime

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/lgrun/lgrun/spec"
)

// DefaultStateSize is the state size limit (see [StateSizeError]) when
// neither the run nor the graph's limits.state_size sets one: 16 MiB.
const DefaultStateSize = 16 << 20

// StateSizeError stops a run whose next checkpoint would hold a state
// larger than the state size limit. The checkpoint is not written: the
// thread stays at its last good checkpoint, status budget-exceeded, and
// resumes with a higher limit. The size is that of the state as JSON,
// counting each string by its length.
type StateSizeError struct {
	Limit int64
	Size  int64 // the refused state's size
	Step  int   // the step of the refused checkpoint
	// Fields are the fields the refused checkpoint changed, largest first.
	Fields []FieldSize
}

// FieldSize is the size of one field's value as JSON.
type FieldSize struct {
	Field string
	Size  int64
}

func (e *StateSizeError) Error() string {
	var fs []string
	for i, f := range e.Fields {
		if i == 3 {
			fs = append(fs, fmt.Sprintf("%d more", len(e.Fields)-i))
			break
		}
		fs = append(fs, fmt.Sprintf("%s %s", f.Field, spec.FormatSize(f.Size)))
	}
	return fmt.Sprintf("state size limit of %s exceeded at step %d: the state would be %s (changed: %s); the state is saved", spec.FormatSize(e.Limit), e.Step, spec.FormatSize(e.Size), strings.Join(fs, ", "))
}

// stateSizeLimit is the effective state size limit of a thread.
func (r *Runner) stateSizeLimit(cfg Config) int64 {
	switch {
	case cfg.StateSize > 0:
		return cfg.StateSize
	case r.Graph.Limits.StateSize > 0:
		return r.Graph.Limits.StateSize
	}
	return DefaultStateSize
}

// stateSize is the size of a checkpoint's state as JSON, field by field.
// Sizes are computed incrementally from the parent's: a field the
// checkpoint did not change keeps its size, and an append adds the size of
// its items, so a step costs what its delta holds, not what the state does.
// Merge and messages deltas give an upper bound, made exact when the total
// passes the limit.
type stateSize struct {
	total int64
	// fields holds each field's size, in the order of the first
	// measurement of the chain (sorted by name), so the next checkpoint's
	// sizes are found without a map.
	fields []fieldSize
}

type fieldSize struct {
	name  string
	n     int64
	upper bool // n is an upper bound
}

// checkStateSize measures cp's state (from parent's sizes when parent is
// cp's parent and was measured) and records the result on cp. It returns a
// [StateSizeError] when the state is larger than limit.
func checkStateSize(parent, cp *Checkpoint, limit int64) error {
	var prev []fieldSize
	if parent != nil && parent.size != nil && parent.ID == cp.ParentID && len(parent.size.fields) == len(cp.Values) {
		prev = parent.size.fields
	}
	s := &stateSize{fields: make([]fieldSize, 0, len(cp.Values))}
	for _, p := range prev {
		v, ok := cp.Values[p.name]
		if !ok {
			// Another set of fields: measure them all.
			s.fields, prev = s.fields[:0], nil
			break
		}
		op, changed := cp.Delta[p.name]
		switch {
		case !changed:
		case op.Kind == OpAppend:
			items, _ := op.Value.([]any)
			list, _ := v.([]any)
			if len(items) > 0 {
				p.n += listSize(items) - 2 // without the brackets
				if len(list) > len(items) {
					p.n++ // the comma after the old items
				}
			}
		case op.Kind == OpMerge || op.Kind == OpMessages:
			p.n, p.upper = p.n+jsonSize(op.Value), true
		default:
			p.n, p.upper = jsonSize(v), false
		}
		s.fields = append(s.fields, p)
	}
	if prev == nil {
		for _, k := range spec.SortedKeys(cp.Values) {
			s.fields = append(s.fields, fieldSize{name: k, n: jsonSize(cp.Values[k])})
		}
	}
	s.sum()
	if s.total > limit {
		for i, f := range s.fields {
			if f.upper {
				s.fields[i] = fieldSize{name: f.name, n: jsonSize(cp.Values[f.name])}
			}
		}
		s.sum()
	}
	if s.total <= limit {
		cp.size = s
		return nil
	}
	e := &StateSizeError{Limit: limit, Size: s.total, Step: cp.Step}
	for _, f := range s.fields {
		if _, ok := cp.Delta[f.name]; ok {
			e.Fields = append(e.Fields, FieldSize{Field: f.name, Size: f.n})
		}
	}
	sort.Slice(e.Fields, func(i, j int) bool {
		a, b := e.Fields[i], e.Fields[j]
		return a.Size > b.Size || a.Size == b.Size && a.Field < b.Field
	})
	return e
}

func (s *stateSize) sum() {
	s.total = 2 + int64(max(len(s.fields)-1, 0)) // braces and commas
	for _, f := range s.fields {
		s.total += int64(len(f.name)) + 3 + f.n // "k":v
	}
}

// jsonSize returns the size of a canonical value encoded as JSON, counting
// each string by its length in bytes (escapes are not counted). It walks
// the value without allocating.
func jsonSize(v any) int64 {
	var buf [32]byte
	switch x := v.(type) {
	case nil:
		return 4
	case bool:
		if x {
			return 4
		}
		return 5
	case string:
		return int64(len(x)) + 2
	case int:
		return int64(len(strconv.AppendInt(buf[:0], int64(x), 10)))
	case int64:
		return int64(len(strconv.AppendInt(buf[:0], x, 10)))
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return 4
		}
		return int64(len(strconv.AppendFloat(buf[:0], x, 'g', -1, 64)))
	case []any:
		return listSize(x)
	case map[string]any:
		n := 2 + int64(max(len(x)-1, 0))
		for k, e := range x {
			n += int64(len(k)) + 3 + jsonSize(e)
		}
		return n
	}
	return int64(len(fmt.Sprint(v)))
}

// listSize is jsonSize of a list.
func listSize(x []any) int64 {
	n := 2 + int64(max(len(x)-1, 0))
	for _, e := range x {
		n += jsonSize(e)
	}
	return n
}
