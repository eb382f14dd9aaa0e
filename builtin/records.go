package builtin

import (
	"encoding/json"
	"fmt"
)

// record is one entry of NodeResult.Records: a model reply (kind model) or
// a tool result (kind tool). Checkpoints keep them, so `lgrun replay` can
// re-run a step with the recorded results instead of calling again.
type record struct {
	Kind string `json:"kind"`
	// kind model
	Model string     `json:"model,omitempty"`
	Reply *chatReply `json:"reply,omitempty"`
	// kind tool
	CallID  string `json:"call_id,omitempty"`
	Tool    string `json:"tool,omitempty"`
	Content string `json:"content,omitempty"`
	Error   bool   `json:"error,omitempty"`
}

const (
	recordModel = "model"
	recordTool  = "tool"
)

// decodeRecords reads the records a replay hands back. They arrive as the
// node wrote them (in-memory savers) or as decoded JSON (SQLite), so they
// go through JSON either way.
func decodeRecords(raw []any) ([]record, error) {
	out := make([]record, 0, len(raw))
	for i, x := range raw {
		b, err := json.Marshal(x)
		if err != nil {
			return nil, fmt.Errorf("replay record %d: %w", i, err)
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("replay record %d: %w", i, err)
		}
		out = append(out, r)
	}
	return out, nil
}
