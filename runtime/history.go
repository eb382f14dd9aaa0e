package runtime

import (
	"context"
	"errors"
	"fmt"
	"sort"
)

// HistoryOptions select the checkpoints of a thread's history (see
// [ReadHistory]).
type HistoryOptions struct {
	// Limit, when > 0, returns at most this many checkpoints: the newest
	// of those selected.
	Limit int
	// Before, when set, selects only the checkpoints older than it (ids
	// less than Before).
	Before string
	// Filter, when not nil, selects only the checkpoints it returns true
	// for. It sees each checkpoint as List returns it (no Values, no
	// Pending) and must neither keep nor modify it.
	Filter func(*Checkpoint) bool
	// Shared lets the Values of the returned checkpoints share the parts
	// that did not change between them (a list item, a message, an
	// object), which saves copying each checkpoint's whole state: the
	// caller must then treat every Values as read-only (or copy it with
	// spec.DeepCopy before changing it). Without Shared each checkpoint's
	// Values is its own, as Get returns it. The top-level map of each
	// checkpoint is its own either way.
	Shared bool
}

// HistoryReader is implemented by savers that read a thread's history
// with every checkpoint's values in one pass (a walk of the checkpoint
// tree applying each delta once) rather than one Get per checkpoint.
// [ReadHistory] uses it when the saver has it.
//
// History returns the selected checkpoints of thread newest first, each
// exactly as Get returns it (Values, Delta, Metadata and Pending), with
// the contract of [ReadHistory].
type HistoryReader interface {
	History(ctx context.Context, thread string, o HistoryOptions) ([]*Checkpoint, error)
}

// ReadHistory returns the checkpoints of thread that o selects, newest
// first (all branches, by id), each with its Values and Pending writes as
// Get returns them. It uses the saver's [HistoryReader] when s has one,
// and [HistoryByGet] otherwise.
//
// It returns ErrNotFound when the thread does not exist. Checkpoints
// whose own rows cannot be read (those List reports) are left out and
// reported, like List does, in an error joining a [CorruptError] for each
// one older than o.Before, returned together with the others. A selected
// checkpoint whose values or pending writes cannot be read fails the
// call with the error Get returns for it (for the newest such); when a
// chain is damaged in more than one place, a [HistoryReader] may name
// another of its bad rows than Get does.
func ReadHistory(ctx context.Context, s Saver, thread string, o HistoryOptions) ([]*Checkpoint, error) {
	if h, ok := s.(HistoryReader); ok {
		return h.History(ctx, thread, o)
	}
	return HistoryByGet(ctx, s, thread, o)
}

// HistoryByGet is [ReadHistory] for any saver: List, then Get of every
// selected checkpoint, each rebuilt on its own. It is what ReadHistory
// does for savers without a [HistoryReader]; o.Shared does not matter.
func HistoryByGet(ctx context.Context, s Saver, thread string, o HistoryOptions) ([]*Checkpoint, error) {
	list, err := s.List(ctx, thread, 0)
	bad, ok := CorruptErrors(err)
	if !ok {
		return nil, err
	}
	var kept []error
	for _, b := range bad {
		if o.Before == "" || b.Checkpoint < o.Before {
			kept = append(kept, b)
		}
	}
	var out []*Checkpoint
	for _, c := range SortNewestFirst(list) {
		if o.Before != "" && c.ID >= o.Before {
			continue
		}
		if o.Filter != nil && !o.Filter(c) {
			continue
		}
		full, err := s.Get(ctx, thread, c.ID)
		if err != nil {
			return nil, fmt.Errorf("load checkpoint %s: %w", c.ID, err)
		}
		out = append(out, full)
		if o.Limit > 0 && len(out) >= o.Limit {
			break
		}
	}
	return out, errors.Join(kept...)
}

// SortNewestFirst sorts cps by id, greatest (newest) first, in place, and
// returns it.
func SortNewestFirst(cps []*Checkpoint) []*Checkpoint {
	sort.SliceStable(cps, func(i, j int) bool { return cps[i].ID > cps[j].ID })
	return cps
}
