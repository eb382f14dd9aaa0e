package spec

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Pos is a position in a graph file. Line and Col are 1-based; a zero Line
// means the position is unknown (the whole file).
type Pos struct {
	File string
	Line int
	Col  int
}

// String formats p as "file:line:col".
func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// IsValid reports whether p has a line.
func (p Pos) IsValid() bool { return p.Line > 0 }

// Severity tells errors from warnings.
type Severity int

const (
	// SevError makes a graph invalid.
	SevError Severity = iota
	// SevWarning is a likely mistake that does not stop a run.
	SevWarning
)

func (s Severity) String() string {
	if s == SevWarning {
		return "warning"
	}
	return "error"
}

// Error is one diagnostic with the position it refers to.
type Error struct {
	Pos      Pos
	Severity Severity
	// Path names the element, e.g. "nodes.plan.set.count". May be empty.
	Path string
	Msg  string
	// Err is the underlying error, such as an expr *file.Error.
	Err error
}

// Error formats e as "file:line:col: error: msg".
func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Pos, e.Severity, e.Msg)
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// ErrorList is a list of diagnostics. The zero value is ready to use.
type ErrorList []*Error

// Add appends an error at pos.
func (l *ErrorList) Add(pos Pos, format string, args ...any) {
	*l = append(*l, &Error{Pos: pos, Severity: SevError, Msg: fmt.Sprintf(format, args...)})
}

// Warn appends a warning at pos.
func (l *ErrorList) Warn(pos Pos, format string, args ...any) {
	*l = append(*l, &Error{Pos: pos, Severity: SevWarning, Msg: fmt.Sprintf(format, args...)})
}

// Sort orders the list by file, line, column, then message, and drops exact duplicates.
func (l *ErrorList) Sort() {
	s := *l
	sort.SliceStable(s, func(i, j int) bool {
		a, b := s[i].Pos, s[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Col != b.Col {
			return a.Col < b.Col
		}
		return s[i].Msg < s[j].Msg
	})
	out := s[:0]
	for i, e := range s {
		if i > 0 && e.Pos == s[i-1].Pos && e.Msg == s[i-1].Msg && e.Severity == s[i-1].Severity {
			continue
		}
		out = append(out, e)
	}
	*l = out
}

// HasErrors reports whether the list holds at least one error (not only warnings).
func (l ErrorList) HasErrors() bool {
	for _, e := range l {
		if e.Severity == SevError {
			return true
		}
	}
	return false
}

// Errors returns only the errors.
func (l ErrorList) Errors() ErrorList {
	var out ErrorList
	for _, e := range l {
		if e.Severity == SevError {
			out = append(out, e)
		}
	}
	return out
}

// Warnings returns only the warnings.
func (l ErrorList) Warnings() ErrorList {
	var out ErrorList
	for _, e := range l {
		if e.Severity == SevWarning {
			out = append(out, e)
		}
	}
	return out
}

// Err returns the list as an error when it holds errors, else nil.
func (l ErrorList) Err() error {
	if !l.HasErrors() {
		return nil
	}
	return l
}

// Error lists every diagnostic, one per line.
func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// AsList extracts an ErrorList from err, or wraps a plain error as one entry.
func AsList(err error) ErrorList {
	var l ErrorList
	if errors.As(err, &l) {
		return l
	}
	var e *Error
	if errors.As(err, &e) {
		return ErrorList{e}
	}
	if err == nil {
		return nil
	}
	return ErrorList{{Msg: err.Error()}}
}
