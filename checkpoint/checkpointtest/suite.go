// Package checkpointtest is the conformance suite of [runtime.Saver]: every
// implementation runs [Run] from its own tests.
//
// Values are compared as JSON (state is plain JSON): a saver may return
// 2 for a stored 2.0, but never a different value, a different shape or a
// type outside the JSON data model.
package checkpointtest

import (
	"testing"

	"github.com/lgrun/lgrun/runtime"
)

// NewSaver returns an empty saver for one test; it registers its own
// cleanup with t.
type NewSaver func(t *testing.T) runtime.Saver

// Run runs the conformance suite against savers made by newSaver, one
// fresh saver per subtest. Besides the contract written on [runtime.Saver],
// it holds savers to what the runtime relies on:
//
//   - Get rebuilds the values of any checkpoint of any branch, whatever the
//     delta ops (set, append, merge, messages with upserts and removals),
//     as plain JSON values (int, float64, string, bool, nil, []any,
//     map[string]any); List returns Delta, Next, Waiting and Metadata as
//     committed, newest (last committed) first.
//   - Commit is a compare-and-swap on the head: exactly one of concurrent
//     commits on one head wins, the others fail with ErrConflict and leave
//     nothing behind; a parent that is not a checkpoint of the thread fails
//     with ErrNotFound. A forked commit (parent not the head) is allowed.
//   - Mark changes only the status, error, config and update time, under
//     the same compare-and-swap; its writes add to the head's pending
//     writes in order unless ClearWrites.
//   - Pending writes round-trip (results, interrupts with payloads,
//     errors) and stay with the checkpoint they were recorded against.
//   - Nothing returned shares memory with the saver, and nothing passed to
//     Commit or Mark is kept by reference.
//   - DeleteThread removes the thread's child runs ("<id>/...", see
//     [runtime.ChildSep]) but no other thread, whatever its name.
//   - A commit with a zero Thread.Created keeps the creation time.
//   - runtime.ReadHistory (the saver's runtime.HistoryReader, if any)
//     returns exactly what one Get per checkpoint does, whatever the
//     branches, limit, before id and filter, and after GC.
//   - GC (on savers that have it) deletes the threads last updated before
//     its cut with their child runs and prunes threads to their latest
//     checkpoints and head, leaving what it keeps unchanged.
//   - Reads see one consistent state while another goroutine writes the
//     same thread: no read reports damage that a concurrent write caused.
func Run(t *testing.T, newSaver NewSaver) {
	tests := []struct {
		name string
		fn   func(*testing.T, runtime.Saver)
	}{
		{"CommitGet", testCommitGet},
		{"DeltaOps", testDeltaOps},
		{"ListOrder", testListOrder},
		{"Conflict", testConflict},
		{"UnknownParent", testUnknownParent},
		{"DuplicateID", testDuplicateID},
		{"ConcurrentCAS", testConcurrentCAS},
		{"ParallelThreads", testParallelThreads},
		{"Mark", testMark},
		{"MarkClearWrites", testMarkClearWrites},
		{"PendingRoundTrip", testPendingRoundTrip},
		{"NotFound", testNotFound},
		{"DeleteThread", testDeleteThread},
		{"DeleteThreadChildren", testDeleteThreadChildren},
		{"Threads", testThreads},
		{"CreatedKept", testCreatedKept},
		{"DeepCopy", testDeepCopy},
		{"InputNotRetained", testInputNotRetained},
		{"Forks", testForks},
		{"LongChainForks", testLongChainForks},
		{"History", testHistory},
		{"ReadWhileWriting", testReadWhileWriting},
	}
	// GC is not part of runtime.Saver: it is held to its options on the
	// savers that have it (the SQL ones; not the in-memory saver).
	if _, ok := newSaver(t).(gcSaver); ok {
		tests = append(tests, struct {
			name string
			fn   func(*testing.T, runtime.Saver)
		}{"GC", testGC})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newSaver(t))
		})
	}
}
