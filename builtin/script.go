package builtin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/lgrun/lgrun/spec"
)

// Script replaces the models and tools of a graph with scripted answers, for
// `lgrun test`. Models holds replies per llm node in call order (the same
// reply objects as mock fixtures: text, json, tool_calls, usage, error); a
// node it does not list answers from its mock model's fixtures, or fails
// when its model is not a mock. Tools holds results per tool in call order
// (a string is the result, any other value its JSON text); tools without a
// script run for real when they are pure (expr) and fail the node
// otherwise. A scripted model call is made once: no rate limit, retries or
// fallbacks.
type Script struct {
	Models map[string][]any
	Tools  map[string][]any
}

// scripted is a Script being consumed by one Kinds.
type scripted struct {
	mu         sync.Mutex
	replies    map[string][]*mockReply
	results    map[string][]string
	nextReply  map[string]int
	nextResult map[string]int
}

func newScripted(s *Script) (*scripted, error) {
	sc := &scripted{
		replies: map[string][]*mockReply{}, results: map[string][]string{},
		nextReply: map[string]int{}, nextResult: map[string]int{},
	}
	var errs []error
	for _, node := range spec.SortedKeys(s.Models) {
		for i, raw := range s.Models[node] {
			r, err := decodeReply(raw)
			if err != nil {
				errs = append(errs, fmt.Errorf("script: models.%s[%d]: %w", node, i, err))
				continue
			}
			sc.replies[node] = append(sc.replies[node], r)
		}
	}
	for _, tool := range spec.SortedKeys(s.Tools) {
		for i, raw := range s.Tools[tool] {
			v := spec.Normalize(raw)
			s, ok := v.(string)
			if !ok {
				var err error
				if s, err = jsonText(v); err != nil {
					errs = append(errs, fmt.Errorf("script: tools.%s[%d]: %w", tool, i, err))
				}
			}
			sc.results[tool] = append(sc.results[tool], s)
		}
	}
	return sc, errors.Join(errs...)
}

// decodeReply reads one reply object strictly (unknown keys are errors).
func decodeReply(raw any) (*mockReply, error) {
	b, err := yaml.Marshal(spec.Normalize(raw))
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	r := &mockReply{}
	if err := dec.Decode(r); err != nil {
		return nil, errors.New(yamlTypes.Replace(err.Error()))
	}
	return r, r.check()
}

// scripts reports whether the script has replies for node.
func (s *scripted) scripts(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.replies[node]
	return ok
}

// chat answers with the node's next scripted reply.
func (s *scripted) chat(ctx context.Context, req *chatRequest, onToken func(string)) (*chatReply, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	i := s.nextReply[req.Node]
	list := s.replies[req.Node]
	if i < len(list) {
		s.nextReply[req.Node] = i + 1
	}
	s.mu.Unlock()
	if _, scripted := s.replies[req.Node]; !scripted {
		return nil, fmt.Errorf("test case does not script node %q, and its model is not a mock (tests make no network calls); add models.%s to the case", req.Node, req.Node)
	}
	if i >= len(list) {
		return nil, fmt.Errorf("test script exhausted: node %q called its model %d times but models.%s has %d replies", req.Node, i+1, req.Node, len(list))
	}
	return list[i].reply(req, onToken, fmt.Sprintf("models.%s[%d]", req.Node, i))
}

// tool returns the next scripted result of tool t. ok is false when t has
// no script and is pure, so it runs for real.
func (s *scripted) tool(t *spec.Tool) (content string, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list, has := s.results[t.Name]
	if !has {
		if t.Kind != "http" && t.Kind != "exec" && t.Kind != "mcp" {
			// Pure expressions, and Go tools and tools of Go kinds (the
			// embedder's own code), run for real unless scripted.
			return "", false, nil
		}
		return "", false, fmt.Errorf("test script: tool %q (kind %s) has no scripted results, and only expr tools run for real in tests; add tools.%s to the case", t.Name, t.Kind, t.Name)
	}
	i := s.nextResult[t.Name]
	if i >= len(list) {
		return "", false, fmt.Errorf("test script exhausted: tool %q was called %d times but tools.%s has %d results", t.Name, i+1, t.Name, len(list))
	}
	s.nextResult[t.Name] = i + 1
	return list[i], true, nil
}
