package checkpoint

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Memory is an in-memory saver, meant for tests and runs that need no
// durability. It keeps every checkpoint's values whole, made like a
// saver that stores deltas: the parent's values with the checkpoint's
// delta applied, through a [runtime.Applier] per thread, so a checkpoint
// costs what its delta holds and lists share their items with the
// parent's. Nothing it stores is shared with its callers.
type Memory struct {
	mu      sync.Mutex
	threads map[string]*memThread
	leases  map[string]memLease // threads being run
	// leaseTTL is the TTL of the run leases this saver gives.
	leaseTTL time.Duration
}

// memLease is a run lease: who holds it (token), since when and until
// when unless renewed.
type memLease struct {
	token    string
	acquired time.Time
	expires  time.Time
}

// MemoryOptions configure an in-memory saver.
type MemoryOptions struct {
	// LeaseTTL is how long a run lease lasts without renewal;
	// [DefaultLeaseTTL] when zero. As with [SQLite], the holder renews it
	// every third of the TTL and an expired lease is taken over.
	LeaseTTL time.Duration
}

type memThread struct {
	// apply makes the values of the thread's checkpoints from their
	// parents' (see [Memory.values]).
	apply  runtime.Applier
	row    runtime.Thread
	cps    map[string]*runtime.Checkpoint
	order  []string // commit order
	writes map[string][]runtime.PendingWrite
}

var _ runtime.Saver = (*Memory)(nil)

// NewMemory returns an empty in-memory saver with the default options.
func NewMemory() *Memory { return NewMemoryWith(nil) }

// NewMemoryWith returns an empty in-memory saver configured by opts (nil
// for the defaults).
func NewMemoryWith(opts *MemoryOptions) *Memory {
	ttl := DefaultLeaseTTL
	if opts != nil && opts.LeaseTTL > 0 {
		ttl = opts.LeaseTTL
	}
	return &Memory{threads: map[string]*memThread{}, leases: map[string]memLease{}, leaseTTL: ttl}
}

// Commit implements runtime.Saver.
func (m *Memory) Commit(_ context.Context, c *runtime.Commit) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := c.Thread.ID
	t := m.threads[id]
	head := ""
	if t != nil {
		head = t.row.Head
	}
	if head != c.ExpectHead {
		return fmt.Errorf("commit to thread %q: %w (head is %s, expected %s)", id, runtime.ErrConflict, head, c.ExpectHead)
	}
	if p := c.Checkpoint.ParentID; p != "" && (t == nil || t.cps[p] == nil) {
		return fmt.Errorf("commit to thread %q: parent checkpoint %s: %w", id, p, runtime.ErrNotFound)
	}
	if t != nil && t.cps[c.Checkpoint.ID] != nil {
		return fmt.Errorf("commit to thread %q: checkpoint %s already exists", id, c.Checkpoint.ID)
	}
	if t == nil {
		t = &memThread{cps: map[string]*runtime.Checkpoint{}, writes: map[string][]runtime.PendingWrite{}}
		m.threads[id] = t
	}
	cp := cloneCheckpointWithout(c.Checkpoint, true)
	cp.Values = t.values(c.Checkpoint, cp.Delta)
	cp.Pending = nil
	t.cps[cp.ID] = cp
	t.order = append(t.order, cp.ID)
	row := *cloneThread(c.Thread)
	row.Head = cp.ID
	if row.Created.IsZero() {
		row.Created = t.row.Created
	}
	if row.Created.IsZero() {
		row.Created = row.Updated
	}
	t.row = row
	if len(c.Writes) > 0 {
		t.writes[cp.ID] = clonePending(c.Writes)
	}
	return nil
}

// Mark implements runtime.Saver.
func (m *Memory) Mark(_ context.Context, mk *runtime.Mark) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.threads[mk.Thread.ID]
	if t == nil {
		return fmt.Errorf("mark thread %q: %w", mk.Thread.ID, runtime.ErrNotFound)
	}
	if t.row.Head != mk.Thread.Head {
		return fmt.Errorf("mark thread %q: %w (head is %s, expected %s)", mk.Thread.ID, runtime.ErrConflict, t.row.Head, mk.Thread.Head)
	}
	if mk.ClearWrites {
		delete(t.writes, t.row.Head)
	}
	if len(mk.Writes) > 0 {
		t.writes[t.row.Head] = append(t.writes[t.row.Head], clonePending(mk.Writes)...)
	}
	// Like SQLite, Mark changes only the status, error, config and time.
	row := cloneThread(mk.Thread)
	t.row.Status, t.row.Error, t.row.Config, t.row.Updated = row.Status, row.Error, row.Config, row.Updated
	return nil
}

// Get implements runtime.Saver.
func (m *Memory) Get(_ context.Context, thread, id string) (*runtime.Checkpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.threads[thread]
	if t == nil {
		return nil, fmt.Errorf("thread %q: %w", thread, runtime.ErrNotFound)
	}
	if id == "" {
		id = t.row.Head
	}
	cp := t.cps[id]
	if cp == nil {
		return nil, fmt.Errorf("checkpoint %q: %w", id, runtime.ErrNotFound)
	}
	out := cloneCheckpoint(cp)
	out.Pending = clonePending(t.writes[id])
	return out, nil
}

// List implements runtime.Saver.
func (m *Memory) List(_ context.Context, thread string, limit int) ([]*runtime.Checkpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.threads[thread]
	if t == nil {
		return nil, fmt.Errorf("thread %q: %w", thread, runtime.ErrNotFound)
	}
	var out []*runtime.Checkpoint
	for i := len(t.order) - 1; i >= 0; i-- {
		if limit > 0 && len(out) >= limit {
			break
		}
		cp := *t.cps[t.order[i]]
		cp.Values = nil
		out = append(out, cloneCheckpoint(&cp))
	}
	return out, nil
}

// Thread implements runtime.Saver.
func (m *Memory) Thread(_ context.Context, id string) (*runtime.Thread, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.threads[id]
	if t == nil {
		return nil, fmt.Errorf("thread %q: %w", id, runtime.ErrNotFound)
	}
	return cloneThread(t.row), nil
}

// Threads implements runtime.Saver.
func (m *Memory) Threads(context.Context) ([]*runtime.Thread, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*runtime.Thread, 0, len(m.threads))
	for _, t := range m.threads {
		out = append(out, cloneThread(t.row))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Updated.Equal(out[j].Updated) {
			return out[i].Updated.After(out[j].Updated)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// DeleteThread implements runtime.Saver.
func (m *Memory) DeleteThread(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.threads[id] == nil {
		return fmt.Errorf("thread %q: %w", id, runtime.ErrNotFound)
	}
	delete(m.threads, id)
	for k := range m.threads {
		if strings.HasPrefix(k, id+"/") {
			delete(m.threads, k)
		}
	}
	return nil
}

// values returns the values to store for checkpoint c, whose delta the
// saver copied as delta: its parent's stored values with the delta
// applied, which shares the parent's lists (the runtime makes each
// checkpoint's values that way, see [runtime.ApplyDelta]). A first
// checkpoint, or one whose fields are not its parent's and its delta's
// (a caller's hand-made values), is copied whole.
func (t *memThread) values(c *runtime.Checkpoint, delta runtime.Delta) map[string]any {
	if parent := t.cps[c.ParentID]; parent != nil && parent.Values != nil && c.Values != nil {
		values := maps.Clone(parent.Values)
		if err := t.apply.Apply(values, delta); err == nil && len(values) == len(c.Values) {
			return values
		}
	}
	if c.Values == nil {
		return nil
	}
	return spec.DeepCopy(c.Values).(map[string]any)
}

// cloneCheckpoint deep-copies everything a caller could modify, so the
// saver never shares memory with its callers.
func cloneCheckpoint(c *runtime.Checkpoint) *runtime.Checkpoint {
	return cloneCheckpointWithout(c, false)
}

// cloneCheckpointWithout is cloneCheckpoint, leaving Values out (nil)
// when noValues is set.
func cloneCheckpointWithout(c *runtime.Checkpoint, noValues bool) *runtime.Checkpoint {
	// Field by field: what the runtime caches on its checkpoints (their
	// measured size, their expression environment) stays with it.
	out := runtime.Checkpoint{
		Thread: c.Thread, ID: c.ID, ParentID: c.ParentID, Step: c.Step, TurnStep: c.TurnStep,
		Delta: c.Delta, Next: c.Next, Waiting: c.Waiting, Metadata: c.Metadata, Pending: c.Pending,
	}
	if c.Values != nil && !noValues {
		out.Values = spec.DeepCopy(c.Values).(map[string]any)
	}
	if c.Delta != nil {
		out.Delta = make(runtime.Delta, len(c.Delta))
		for k, op := range c.Delta {
			out.Delta[k] = runtime.Op{Kind: op.Kind, Value: spec.DeepCopy(op.Value)}
		}
	}
	out.Next = slices.Clone(c.Next)
	out.Waiting = cloneLists(c.Waiting)
	m := &out.Metadata
	m.Writes = cloneLists(c.Metadata.Writes)
	m.Usage = slices.Clone(c.Metadata.Usage)
	if c.Metadata.Records != nil {
		m.Records = make(map[string][]any, len(c.Metadata.Records))
		for k, v := range c.Metadata.Records {
			m.Records[k] = spec.DeepCopy(v).([]any)
		}
	}
	out.Pending = clonePending(c.Pending)
	return &out
}

func cloneLists(m map[string][]string) map[string][]string {
	if m == nil {
		return nil
	}
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[k] = slices.Clone(v)
	}
	return out
}

func clonePending(ws []runtime.PendingWrite) []runtime.PendingWrite {
	if ws == nil {
		return nil
	}
	out := make([]runtime.PendingWrite, len(ws))
	for i, w := range ws {
		if w.Result != nil {
			r := *w.Result
			r.Writes = slices.Clone(r.Writes)
			for j := range r.Writes {
				r.Writes[j].Value = spec.DeepCopy(r.Writes[j].Value)
			}
			r.Goto = slices.Clone(r.Goto)
			r.Usage = slices.Clone(r.Usage)
			if r.Records != nil {
				r.Records = spec.DeepCopy(r.Records).([]any)
			}
			if r.Interrupt != nil {
				in := *r.Interrupt
				in.Payload = spec.DeepCopy(in.Payload)
				r.Interrupt = &in
			}
			w.Result = &r
		}
		if w.Interrupt != nil {
			in := *w.Interrupt
			in.Payload = spec.DeepCopy(in.Payload)
			w.Interrupt = &in
		}
		out[i] = w
	}
	return out
}

func cloneThread(t runtime.Thread) *runtime.Thread {
	t.Config.InterruptBefore = slices.Clone(t.Config.InterruptBefore)
	t.Config.InterruptAfter = slices.Clone(t.Config.InterruptAfter)
	return &t
}
