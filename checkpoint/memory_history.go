package checkpoint

import (
	"context"
	"fmt"
	"sort"

	"github.com/lgrun/lgrun/runtime"
)

var _ runtime.HistoryReader = (*Memory)(nil)

// History implements [runtime.HistoryReader]: the selected checkpoints
// under one lock, without the List and the lookups of one Get each.
// Memory keeps every checkpoint whole, so each is still copied whole
// (o.Shared does not change that): the saver shares no memory with its
// callers.
func (m *Memory) History(_ context.Context, thread string, o runtime.HistoryOptions) ([]*runtime.Checkpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.threads[thread]
	if t == nil {
		return nil, fmt.Errorf("thread %q: %w", thread, runtime.ErrNotFound)
	}
	ids := make([]string, len(t.order))
	copy(ids, t.order)
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	var out []*runtime.Checkpoint
	var apply runtime.Applier
	made := map[string]map[string]any{} // values made by this read
	for _, id := range ids {
		if o.Limit > 0 && len(out) >= o.Limit {
			break
		}
		if o.Before != "" && id >= o.Before {
			continue
		}
		cp := t.cps[id].view()
		if o.Filter != nil {
			// The filter sees the checkpoint as List returns it, a copy.
			meta := cp
			meta.Values = nil
			if !o.Filter(cloneCheckpoint(&meta)) {
				continue
			}
		}
		values, err := t.valuesOf(t.cps[id], &apply, made)
		if err != nil {
			return nil, err
		}
		cp.Values = values
		c := cloneCheckpoint(&cp)
		c.Pending = clonePending(t.writes[id])
		out = append(out, c)
	}
	return out, nil
}
