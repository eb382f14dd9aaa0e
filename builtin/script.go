package builtin

// Script replaces every model and tool of a graph with scripted answers, for
// `lgrun test`: Models holds replies per llm node in call order (the same
// reply objects as mock fixtures: text, json, tool_calls, usage, error) and
// Tools holds results per tool in call order. Tools without a script run
// for real when they are pure (expr) and fail otherwise.
type Script struct {
	Models map[string][]any
	Tools  map[string][]any
}
