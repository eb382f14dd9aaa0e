package server

import (
	"encoding/json"
	"strings"

	"github.com/lgrun/lgrun/spec"
)

// lgrun messages are {id, role, content, name, tool_call_id, tool_calls:
// [{id, name, arguments}]}; LangChain's, which the SDK and useStream read,
// are {id, type: human|ai|system|tool, content, tool_calls: [{id, name,
// args}]}. The server adds type (and args) to the messages it sends, and
// accepts LangChain messages in input, keeping what lgrun stores.

var roleType = map[string]string{"user": "human", "assistant": "ai", "system": "system", "tool": "tool"}
var typeRole = map[string]string{"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant", "system": "system", "tool": "tool"}

// outValues returns values with the messages of g's messages fields in
// both shapes. values is not modified.
func outValues(g *spec.Graph, values map[string]any) map[string]any {
	if g == nil || values == nil {
		return values
	}
	var out map[string]any
	for _, f := range g.Fields {
		if f.Type.Kind != spec.KindMessages {
			continue
		}
		v, ok := values[f.Name]
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string]any, len(values))
			for k, x := range values {
				out[k] = x
			}
		}
		out[f.Name] = outMessages(v)
	}
	if out == nil {
		return values
	}
	return out
}

// outMessages converts a message list, or one message (a node's write).
func outMessages(v any) any {
	switch x := v.(type) {
	case []any:
		l := make([]any, len(x))
		for i, m := range x {
			l[i] = outMessage(m)
		}
		return l
	case map[string]any:
		return outMessage(x)
	}
	return v
}

func outMessage(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	out := make(map[string]any, len(m)+1)
	for k, x := range m {
		out[k] = x
	}
	if r, ok := m["role"].(string); ok {
		out["type"] = roleType[r]
	}
	if calls, ok := m["tool_calls"].([]any); ok {
		l := make([]any, len(calls))
		for i, c := range calls {
			cm, ok := c.(map[string]any)
			if !ok {
				l[i] = c
				continue
			}
			nc := map[string]any{"id": cm["id"], "name": cm["name"], "arguments": cm["arguments"], "type": "tool_call"}
			var args any = map[string]any{}
			if s, ok := cm["arguments"].(string); ok && s != "" {
				_ = json.Unmarshal([]byte(s), &args)
			}
			nc["args"] = args
			l[i] = nc
		}
		out["tool_calls"] = l
	}
	return out
}

// inValues rewrites LangChain messages in the messages fields of values
// into lgrun's shape, in place.
func inValues(g *spec.Graph, values map[string]any) {
	for _, f := range g.Fields {
		if f.Type.Kind != spec.KindMessages {
			continue
		}
		switch x := values[f.Name].(type) {
		case []any:
			for i, m := range x {
				x[i] = inMessage(m)
			}
		case map[string]any:
			values[f.Name] = inMessage(x)
		}
	}
}

func inMessage(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	if _, hasRole := m["role"]; hasRole {
		if _, hasType := m["type"]; !hasType {
			return m
		}
	}
	out := map[string]any{}
	role, _ := m["role"].(string)
	if role == "" {
		t, _ := m["type"].(string)
		role = typeRole[t]
		if role == "" {
			role = t // an unknown type: the check names it
		}
	}
	out["role"] = role
	for _, k := range []string{"id", "name", "tool_call_id"} {
		if s, ok := m[k].(string); ok && s != "" {
			out[k] = s
		}
	}
	switch c := m["content"].(type) {
	case string:
		out["content"] = c
	case []any:
		// content parts: the text ones, joined
		var b strings.Builder
		for _, p := range c {
			if pm, ok := p.(map[string]any); ok {
				if s, ok := pm["text"].(string); ok {
					b.WriteString(s)
				}
			}
		}
		out["content"] = b.String()
	case nil:
	default:
		out["content"] = c
	}
	if calls, ok := m["tool_calls"].([]any); ok && len(calls) > 0 {
		l := make([]any, 0, len(calls))
		for _, c := range calls {
			cm, ok := c.(map[string]any)
			if !ok {
				continue
			}
			nc := map[string]any{"id": cm["id"], "name": cm["name"]}
			if a, ok := cm["arguments"]; ok {
				nc["arguments"] = a
			} else if a, ok := cm["args"]; ok {
				nc["arguments"] = a
			}
			l = append(l, nc)
		}
		out["tool_calls"] = l
	}
	return out
}
