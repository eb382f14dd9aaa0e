package builtin

import (
	"encoding/json"
	"reflect"

	"github.com/lgrun/lgrun/spec"
)

// history returns the messages of field in state as canonical maps (the
// maps are the state's own: callers must not modify them).
func history(state map[string]any, field string) []map[string]any {
	if field == "" {
		return nil
	}
	l, _ := state[field].([]any)
	out := make([]map[string]any, 0, len(l))
	for _, x := range l {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func calls(m map[string]any) []map[string]any {
	l, _ := m["tool_calls"].([]any)
	out := make([]map[string]any, 0, len(l))
	for _, x := range l {
		if c, ok := x.(map[string]any); ok {
			out = append(out, c)
		}
	}
	return out
}

// errorContent is the content of a tool message reporting a failure, as
// the model sees it.
func errorContent(msg string) string {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return string(b)
}

// missingResult is the error result filled in for a tool call whose result
// never arrived.
const missingResult = "no result: the run stopped before this tool call finished"

// fillMissing returns msgs with an error tool result inserted after each
// assistant tool call that has none (a run cancelled or failed between the
// call and its result), so providers accept the conversation. The inserted
// messages have no id: the runtime names them when they are merged.
func fillMissing(msgs []map[string]any) ([]map[string]any, int) {
	out := make([]map[string]any, 0, len(msgs))
	n := 0
	for i := 0; i < len(msgs); i++ {
		m := msgs[i]
		out = append(out, m)
		cs := calls(m)
		if str(m, "role") != "assistant" || len(cs) == 0 {
			continue
		}
		have := map[string]bool{}
		for i+1 < len(msgs) && str(msgs[i+1], "role") == "tool" {
			i++
			have[str(msgs[i], "tool_call_id")] = true
			out = append(out, msgs[i])
		}
		for _, c := range cs {
			if !have[str(c, "id")] {
				out = append(out, map[string]any{
					"role": "tool", "tool_call_id": str(c, "id"),
					"name": str(c, "name"), "content": errorContent(missingResult),
				})
				n++
			}
		}
	}
	return out, n
}

// trimMessages keeps the last keepLast messages that are not system
// messages (and the system messages too when keepSystem). A kept window
// never starts with tool results whose call was dropped.
func trimMessages(msgs []map[string]any, keepLast int, keepSystem bool) []map[string]any {
	if keepLast <= 0 {
		return msgs
	}
	var others []int
	for i, m := range msgs {
		if !(keepSystem && str(m, "role") == "system") {
			others = append(others, i)
		}
	}
	if len(others) <= keepLast {
		return msgs
	}
	from := len(others) - keepLast
	for from < len(others) && str(msgs[others[from]], "role") == "tool" {
		from++
	}
	keep := map[int]bool{}
	for _, i := range others[from:] {
		keep[i] = true
	}
	out := make([]map[string]any, 0, keepLast+2)
	for i, m := range msgs {
		if keep[i] || (keepSystem && str(m, "role") == "system") {
			out = append(out, m)
		}
	}
	return out
}

// messageWrites returns the messages-reducer writes that turn cur into
// want: removals of dropped messages, and new messages appended. When a
// new message belongs before existing ones (a filled-in tool result), those
// are removed and appended again after it, keeping their ids: a first write
// removes them and a second appends them, since within one write a message
// removed and added again keeps its place. Messages are identified by
// identity (want holds cur's own maps for kept messages); a message without
// an id cannot be removed or moved and stays where it is. New messages
// have no id: the runtime names them when they are merged.
func messageWrites(cur, want []map[string]any) [][]any {
	same := func(m map[string]any) uintptr { return reflect.ValueOf(m).Pointer() }
	inCur := map[uintptr]bool{}
	for _, m := range cur {
		inCur[same(m)] = true
	}
	inWant := map[uintptr]bool{}
	for _, m := range want {
		inWant[same(m)] = true
	}
	var out []any
	for _, m := range cur {
		if id := str(m, "id"); id != "" && !inWant[same(m)] {
			out = append(out, map[string]any{"id": id, "remove": true})
		}
	}
	first := -1
	for i, m := range want {
		if !inCur[same(m)] {
			first = i
			break
		}
	}
	if first < 0 {
		if len(out) == 0 {
			return nil
		}
		return [][]any{out}
	}
	var added []any
	moves := false
	for _, m := range want[first:] {
		if !inCur[same(m)] {
			added = append(added, spec.DeepCopy(m))
		} else if id := str(m, "id"); id != "" {
			out = append(out, map[string]any{"id": id, "remove": true})
			added = append(added, spec.DeepCopy(m))
			moves = true
		}
	}
	if !moves {
		return [][]any{append(out, added...)}
	}
	return [][]any{out, added}
}

// assistantMessage is the canonical message of a reply.
func assistantMessage(node string, r *chatReply) map[string]any {
	m := map[string]any{"role": "assistant", "name": node, "content": r.Content}
	if len(r.ToolCalls) > 0 {
		l := make([]any, len(r.ToolCalls))
		for i, c := range r.ToolCalls {
			l[i] = map[string]any{"id": c.ID, "name": c.Name, "arguments": c.Arguments}
		}
		m["tool_calls"] = l
	}
	return m
}
