// Package builtin implements the node kinds and tool kinds that talk to the
// outside world: llm (any OpenAI-compatible server, or the offline mock
// provider) and tools (expr, http and exec tools).
package builtin

import (
	"net/http"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Options configure the builtin kinds.
type Options struct {
	// Getenv reads API keys and header values; required.
	Getenv func(string) string
	// HTTPClient is used for model and http-tool requests; a default
	// client when nil.
	HTTPClient *http.Client
	Script     *Script
}

// Kinds returns the node kinds this package implements, bound to the
// models and tools of g.
func Kinds(g *spec.Graph, opts Options) (map[string]runtime.NodeFunc, error) {
	return map[string]runtime.NodeFunc{}, nil
}
