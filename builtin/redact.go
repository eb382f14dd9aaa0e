package builtin

import (
	"errors"
	"sort"
	"strings"
)

// redactedText replaces a secret wherever it would be stored or shown.
const redactedText = "[REDACTED]"

// minSecret is the shortest secret redacted: shorter ones would mangle
// ordinary text.
const minSecret = 4

// redactor removes a set of secrets (an API key, a tool's header tokens)
// from text. It is the one mechanism applied where text crosses out of a
// model call or a tool call: every string of a model reply, every streamed
// token (through a [tokenRedactor]), every tool result and every error.
// The zero value and nil redact nothing.
type redactor struct {
	secrets []string // longest first, so a secret inside another goes second
}

// newRedactor returns a redactor of the given secrets; empty and too short
// ones are dropped.
func newRedactor(secrets ...string) *redactor {
	r := &redactor{}
	seen := map[string]bool{}
	for _, s := range secrets {
		if len(s) >= minSecret && !seen[s] {
			seen[s] = true
			r.secrets = append(r.secrets, s)
		}
	}
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return r
}

// String returns s with every secret replaced.
func (r *redactor) String(s string) string {
	if r == nil {
		return s
	}
	for _, x := range r.secrets {
		s = strings.ReplaceAll(s, x, redactedText)
	}
	return s
}

// Error returns err with its text redacted; nil stays nil. The result
// keeps err's chain for errors.Is/As only when nothing was replaced.
func (r *redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if red := r.String(msg); red != msg {
		return errors.New(red)
	}
	return err
}

// reply redacts every string of a model reply in place.
func (r *redactor) reply(rep *chatReply) {
	rep.Content = r.String(rep.Content)
	for i := range rep.ToolCalls {
		tc := &rep.ToolCalls[i]
		tc.ID, tc.Name, tc.Arguments = r.String(tc.ID), r.String(tc.Name), r.String(tc.Arguments)
	}
}

// pending returns how many bytes at the end of s could be the start of a
// secret that the next token completes.
func (r *redactor) pending(s string) int {
	if r == nil {
		return 0
	}
	n := 0
	for _, x := range r.secrets {
		for k := min(len(x)-1, len(s)); k > n; k-- {
			if strings.HasSuffix(s, x[:k]) {
				n = k
				break
			}
		}
	}
	return n
}

// tokenRedactor redacts a stream of tokens whose secrets may be split
// across tokens: it holds back the end of the text that could begin a
// secret until the next token tells, so out never sees any part of one.
type tokenRedactor struct {
	r    *redactor
	out  func(string)
	held string
}

// tokens returns a tokenRedactor writing to out; with no out, nil (whose
// methods do nothing).
func (r *redactor) tokens(out func(string)) *tokenRedactor {
	if out == nil {
		return nil
	}
	return &tokenRedactor{r: r, out: out}
}

// write takes the next token.
func (t *tokenRedactor) write(tok string) {
	if t == nil || tok == "" {
		return
	}
	buf := t.r.String(t.held + tok)
	keep := t.r.pending(buf)
	t.held = buf[len(buf)-keep:]
	if s := buf[:len(buf)-keep]; s != "" {
		t.out(s)
	}
}

// flush sends what is held back, once the stream has ended whole. A
// stream that fails is not flushed: its held text belongs to no reply.
func (t *tokenRedactor) flush() {
	if t == nil || t.held == "" {
		return
	}
	s := t.held
	t.held = ""
	t.out(s)
}
