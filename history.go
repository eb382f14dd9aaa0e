package lgrun

import (
	"context"
	"fmt"

	"github.com/lgrun/lgrun/runtime"
)

// HistoryValues returns the thread's checkpoints that o selects, newest
// first, each with its values and pending writes as [State] and
// saver.Get return them. The savers of this module read them in one walk
// of the thread's checkpoints, applying each stored delta once, instead
// of rebuilding every checkpoint on its own (see [runtime.ReadHistory]
// for the errors and [runtime.HistoryOptions] for o; with o.Shared the
// values of different checkpoints share their unchanged parts and must
// be treated as read-only).
func HistoryValues(ctx context.Context, saver runtime.Saver, thread string, o runtime.HistoryOptions) ([]*runtime.Checkpoint, error) {
	cps, err := runtime.ReadHistory(ctx, saver, thread, o)
	if err != nil {
		return cps, fmt.Errorf("history of thread %q: %w", thread, err)
	}
	return cps, nil
}
