package spec

// StateSchema returns a JSON Schema of g's state as a run's input: an
// object with one property per field (its type, enum, description and
// default), none required and no others allowed. MCP clients get it as
// the input schema of a graph served as a tool.
func (g *Graph) StateSchema() map[string]any {
	props := map[string]any{}
	for _, f := range g.Fields {
		s := typeSchema(f.Type)
		if f.Optional && f.Type.Kind != KindAny {
			s = map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
		}
		if len(f.Enum) > 0 {
			s["enum"] = f.Enum
		}
		if f.Description != "" {
			s["description"] = f.Description
		}
		if f.Default != nil {
			s["default"] = f.Default
		}
		props[f.Name] = s
	}
	return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
}

// typeSchema is the JSON Schema of a field type.
func typeSchema(t Type) map[string]any {
	switch t.Kind {
	case KindString:
		return map[string]any{"type": "string"}
	case KindInt:
		return map[string]any{"type": "integer"}
	case KindFloat:
		return map[string]any{"type": "number"}
	case KindBool:
		return map[string]any{"type": "boolean"}
	case KindObject:
		return map[string]any{"type": "object"}
	case KindList:
		s := map[string]any{"type": "array"}
		if t.Items != "" && t.Items != KindAny {
			s["items"] = typeSchema(Type{Kind: t.Items})
		}
		return s
	case KindMessages:
		return map[string]any{"type": "array", "items": map[string]any{
			"type":     "object",
			"required": []any{"role"},
			"properties": map[string]any{
				"role":    map[string]any{"enum": []any{"system", "user", "assistant", "tool"}},
				"content": map[string]any{"type": "string"},
			},
		}}
	}
	return map[string]any{}
}
