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

// A Frame is an error that adds context to the error it wraps: a position,
// a text, or both. Frames render through [FormatChain], so a chain of them
// names each piece once: the innermost position, then every frame's text.
type Frame interface {
	error
	// ErrorFrame returns the frame's position (zero when it has none), its
	// own text without the wrapped error's ("" when it adds none), and the
	// wrapped error.
	ErrorFrame() (pos Pos, text string, wrapped error)
}

// FormatChain renders err as "file:line:col: text: text: cause", with the
// position of the innermost [Frame] that has one, so an error re-wrapped
// at several layers states its position once. Wrappers that are not
// frames (fmt.Errorf with %w) keep their text; a wrapper whose message
// does not end with its wrapped error's is rendered as it renders itself.
// Joined errors (errors.Join) become one line each, every line with the
// frames around the join.
func FormatChain(err error) string {
	return strings.Join(formatChain(err, Pos{}, ""), "\n")
}

func formatChain(err error, pos Pos, text string) []string {
	for err != nil {
		if f, ok := err.(Frame); ok {
			p, t, inner := f.ErrorFrame()
			if p.IsValid() {
				pos = p
			}
			if t != "" {
				text += t
				if inner != nil {
					text += ": "
				}
			}
			err = inner
			continue
		}
		msg := err.Error()
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			var lines, msgs []string
			for _, e := range j.Unwrap() {
				if e != nil {
					msgs = append(msgs, e.Error())
					lines = append(lines, formatChain(e, pos, text)...)
				}
			}
			if strings.Join(msgs, "\n") == msg {
				return lines
			}
		}
		if inner := errors.Unwrap(err); inner != nil {
			if im := inner.Error(); strings.HasSuffix(msg, im) {
				text += strings.TrimSuffix(msg, im)
				err = inner
				continue
			}
		}
		text += msg
		break
	}
	if !pos.IsValid() {
		return []string{text}
	}
	return []string{pos.String() + ": " + text}
}

// ChainPos returns the position [FormatChain] puts in front of err: that
// of the innermost [Frame] with one, or the zero Pos.
func ChainPos(err error) Pos {
	var pos Pos
	for err != nil {
		if f, ok := err.(Frame); ok {
			p, _, inner := f.ErrorFrame()
			if p.IsValid() {
				pos = p
			}
			err = inner
			continue
		}
		err = errors.Unwrap(err)
	}
	return pos
}

// EvalError is an expression that failed at run time.
type EvalError struct {
	Pos Pos
	Src string // the expression
	Err error  // what went wrong, without expr's own position
}

func (e *EvalError) Error() string { return FormatChain(e) }

// Unwrap returns the underlying error.
func (e *EvalError) Unwrap() error { return e.Err }

// ErrorFrame implements [Frame].
func (e *EvalError) ErrorFrame() (Pos, string, error) {
	return e.Pos, fmt.Sprintf("evaluate %q", e.Src), e.Err
}
