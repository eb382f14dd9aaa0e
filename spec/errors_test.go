package spec_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/lgrun/lgrun/spec"
)

// frame is a test Frame: a position and a text around an error.
type frame struct {
	pos  spec.Pos
	text string
	err  error
}

func (f *frame) Error() string                         { return spec.FormatChain(f) }
func (f *frame) Unwrap() error                         { return f.err }
func (f *frame) ErrorFrame() (spec.Pos, string, error) { return f.pos, f.text, f.err }

func TestFormatChain(t *testing.T) {
	at := func(line, col int) spec.Pos { return spec.Pos{File: "g.yaml", Line: line, Col: col} }
	cause := errors.New("index out of range")
	eval := &spec.EvalError{Pos: at(14, 21), Src: "state.l[3]", Err: cause}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"one frame", eval, `g.yaml:14:21: evaluate "state.l[3]": index out of range`},
		{"the innermost position wins", &frame{at(14, 5), `edge from "b"`, eval},
			`g.yaml:14:21: edge from "b": evaluate "state.l[3]": index out of range`},
		{"fmt wrappers keep their text", &frame{at(3, 3), "step 2", fmt.Errorf("set x: %w", eval)},
			`g.yaml:14:21: step 2: set x: evaluate "state.l[3]": index out of range`},
		{"a frame without text", &frame{at(3, 3), "", eval}, `g.yaml:14:21: evaluate "state.l[3]": index out of range`},
		{"no position", &frame{spec.Pos{}, "step 2", cause}, "step 2: index out of range"},
		{"joined errors, a line each", &frame{at(3, 3), `node "m"`, errors.Join(&frame{spec.Pos{}, "item 0", eval}, &frame{spec.Pos{}, "item 1", cause})},
			"g.yaml:14:21: node \"m\": item 0: evaluate \"state.l[3]\": index out of range\ng.yaml:3:3: node \"m\": item 1: index out of range"},
		{"a wrapper that reorders is kept whole", &frame{at(3, 3), "commit", fmt.Errorf("%w: and more", eval)},
			`g.yaml:3:3: commit: g.yaml:14:21: evaluate "state.l[3]": index out of range: and more`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
	if p := spec.ChainPos(&frame{at(14, 5), "edge", fmt.Errorf("x: %w", eval)}); p != at(14, 21) {
		t.Errorf("ChainPos = %v, want g.yaml:14:21", p)
	}
}
