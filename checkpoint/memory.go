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
	cps    map[string]*memCheckpoint
	order  []string // commit order
	writes map[string][]runtime.PendingWrite

	// The thread's checkpoints, and the string lists they hold, are
	// allocated in chunks (see [memThread.newCheckpoint] and
	// [memThread.strings]), so a commit costs a few allocations and the
	// collector has fewer objects to scan.
	slab   []memCheckpoint
	strs   []string
	counts []int32
}

// memCheckpoint is a stored checkpoint. Its Next and the lists of its
// writes live in the thread's string arena; its Metadata.Writes is nil
// and kept flat in writes (per node: the node, then its fields) and
// counts (per node, its number of fields; -1 for a nil list; counts is
// nil when Writes was). Nothing in it is modified after the commit that
// made it: a read copies (see [memCheckpoint.view]).
//
// Only some checkpoints keep their values (cp.Values): the kept ones
// (first checkpoints, values the saver could not make from the parent's,
// and every [memKeepEvery]th checkpoint of a chain) and, until its first
// child is committed, the newest one, whose values map the child then
// takes over and changes in place. The others are made again from the
// nearest ancestor with values by applying the deltas in between (see
// [memThread.valuesOf]), so the saver keeps one values map per
// memKeepEvery checkpoints of a chain rather than one per checkpoint.
type memCheckpoint struct {
	cp     runtime.Checkpoint
	writes []string
	counts []int32
	// kept: cp.Values are this checkpoint's for good (nil included).
	kept bool
	// depth counts the checkpoints since the nearest kept ancestor.
	depth int32
}

// memKeepEvery is how often a chain keeps a checkpoint's values: reading
// another checkpoint's values applies fewer than this many deltas.
const memKeepEvery = 16

// view returns the stored checkpoint with its Writes map made again. It
// shares the stored lists: the caller copies it before it leaves the
// saver.
func (e *memCheckpoint) view() runtime.Checkpoint {
	cp := e.cp
	if e.counts == nil {
		return cp
	}
	w := make(map[string][]string, len(e.counts))
	i := 0
	for _, n := range e.counts {
		node := e.writes[i]
		i++
		if n < 0 {
			w[node] = nil
			continue
		}
		w[node] = e.writes[i : i+int(n) : i+int(n)]
		i += int(n)
	}
	cp.Metadata.Writes = w
	return cp
}

// newCheckpoint returns a zero checkpoint to store, from the thread's
// current chunk.
func (t *memThread) newCheckpoint() *memCheckpoint {
	if len(t.slab) == 0 {
		t.slab = make([]memCheckpoint, 64)
	}
	e := &t.slab[0]
	t.slab = t.slab[1:]
	return e
}

// strings copies ss into the thread's string arena (nil for nil). The
// copy's capacity is its length, and the arena only ever appends after
// what it handed out, so no stored list is written again.
func (t *memThread) strings(ss ...string) []string {
	if ss == nil {
		return nil
	}
	if len(ss) > cap(t.strs)-len(t.strs) {
		t.strs = make([]string, 0, max(256, len(ss)))
	}
	n := len(t.strs)
	t.strs = append(t.strs, ss...)
	return t.strs[n:len(t.strs):len(t.strs)]
}

// storeWrites stores w (a checkpoint's Metadata.Writes) flat in the
// thread's arenas, in e.writes and e.counts.
func (t *memThread) storeWrites(e *memCheckpoint, w map[string][]string) {
	if w == nil {
		return
	}
	if len(w) > cap(t.counts)-len(t.counts) {
		t.counts = make([]int32, 0, max(256, len(w)))
	}
	size := 0
	for _, fs := range w {
		size += 1 + len(fs)
	}
	if size > cap(t.strs)-len(t.strs) {
		t.strs = make([]string, 0, max(256, size))
	}
	s, c := len(t.strs), len(t.counts)
	for node, fs := range w {
		t.strs = append(t.strs, node)
		t.strs = append(t.strs, fs...)
		if fs == nil {
			t.counts = append(t.counts, -1)
		} else {
			t.counts = append(t.counts, int32(len(fs)))
		}
	}
	e.writes = t.strs[s:len(t.strs):len(t.strs)]
	e.counts = t.counts[c:len(t.counts):len(t.counts)]
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
		t = &memThread{cps: map[string]*memCheckpoint{}, writes: map[string][]runtime.PendingWrite{}}
		m.threads[id] = t
	}
	e := t.newCheckpoint()
	cp := &e.cp
	copyCheckpoint(cp, c.Checkpoint, false)
	cp.Next = t.strings(c.Checkpoint.Next...)
	t.storeWrites(e, c.Checkpoint.Metadata.Writes)
	t.storeValues(e, c.Checkpoint)
	cp.Pending = nil
	t.cps[cp.ID] = e
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
	v := cp.view()
	values, err := t.valuesOf(cp, new(runtime.Applier), nil)
	if err != nil {
		return nil, err
	}
	v.Values = values
	out := cloneCheckpoint(&v)
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
		cp := t.cps[t.order[i]].view()
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

// storeValues sets e's values, for checkpoint c whose delta e holds a
// copy of: its parent's values with the delta applied, which shares the
// parent's lists (the runtime makes each checkpoint's values that way, see
// [runtime.ApplyDelta]). When the parent is not kept, its values map is
// changed in place and the parent's values are dropped (made again when
// read). A first checkpoint, or one whose fields are not its parent's and
// its delta's (a caller's hand-made values), is copied whole and kept.
func (t *memThread) storeValues(e *memCheckpoint, c *runtime.Checkpoint) {
	if parent := t.cps[c.ParentID]; parent != nil && c.Values != nil && (parent.cp.Values != nil || !parent.kept) {
		var values map[string]any
		switch {
		case parent.kept:
			values = maps.Clone(parent.cp.Values)
		case parent.cp.Values != nil:
			// The parent's values can be made again: take them over.
			values = parent.cp.Values
			parent.cp.Values = nil
		default:
			// A fork from a checkpoint whose values were dropped.
			pv, err := t.valuesOf(parent, new(runtime.Applier), nil)
			if err == nil {
				values = maps.Clone(pv)
			}
		}
		// values is nil only if the parent's could not be made again (it
		// cannot happen): then c's are copied whole below.
		if values != nil && t.apply.Apply(values, e.cp.Delta) == nil && len(values) == len(c.Values) {
			e.cp.Values = values
			e.depth = parent.depth + 1
			e.kept = e.depth >= memKeepEvery
			if e.kept {
				e.depth = 0
			}
			return
		}
	}
	e.kept = true
	if c.Values != nil {
		e.cp.Values = spec.DeepCopy(c.Values).(map[string]any)
	}
}

// valuesOf returns e's values: the stored ones, or its parent's with its
// delta applied, by a, which the caller makes for the read (its lists are
// then shared only within the read). cache, when not nil, holds values
// made by the read already, by checkpoint id. The values returned must
// not be modified: the caller copies them.
func (t *memThread) valuesOf(e *memCheckpoint, a *runtime.Applier, cache map[string]map[string]any) (map[string]any, error) {
	if e.kept || e.cp.Values != nil {
		return e.cp.Values, nil
	}
	if v, ok := cache[e.cp.ID]; ok {
		return v, nil
	}
	// A checkpoint that is not kept has a parent, and its delta applied
	// to the parent's values when it was committed.
	parent, err := t.valuesOf(t.cps[e.cp.ParentID], a, cache)
	if err != nil {
		return nil, err
	}
	values := maps.Clone(parent)
	if err := a.Apply(values, e.cp.Delta); err != nil {
		return nil, fmt.Errorf("checkpoint %s: making its values again: %w", e.cp.ID, err)
	}
	if cache != nil {
		cache[e.cp.ID] = values
	}
	return values, nil
}

// cloneCheckpoint deep-copies everything a caller could modify, so the
// saver never shares memory with its callers.
func cloneCheckpoint(c *runtime.Checkpoint) *runtime.Checkpoint {
	out := new(runtime.Checkpoint)
	copyCheckpoint(out, c, true)
	out.Next = slices.Clone(c.Next)
	out.Metadata.Writes = cloneLists(c.Metadata.Writes)
	return out
}

// copyCheckpoint sets *out to a deep copy of c, except for Next and
// Metadata.Writes, which it leaves as c's (the caller copies them), and
// for Values, which it leaves nil unless values is set.
func copyCheckpoint(out, c *runtime.Checkpoint, values bool) {
	// Field by field: what the runtime caches on its checkpoints (their
	// measured size, their expression environment) stays with it.
	*out = runtime.Checkpoint{
		Thread: c.Thread, ID: c.ID, ParentID: c.ParentID, Step: c.Step, TurnStep: c.TurnStep,
		Delta: c.Delta, Next: c.Next, Waiting: c.Waiting, Metadata: c.Metadata, Pending: c.Pending,
	}
	if c.Values != nil && values {
		out.Values = spec.DeepCopy(c.Values).(map[string]any)
	}
	if c.Delta != nil {
		out.Delta = make(runtime.Delta, len(c.Delta))
		for k, op := range c.Delta {
			out.Delta[k] = runtime.Op{Kind: op.Kind, Value: spec.DeepCopy(op.Value)}
		}
	}
	out.Waiting = cloneLists(c.Waiting)
	m := &out.Metadata
	m.Usage = slices.Clone(c.Metadata.Usage)
	if c.Metadata.Records != nil {
		m.Records = make(map[string][]any, len(c.Metadata.Records))
		for k, v := range c.Metadata.Records {
			m.Records[k] = spec.DeepCopy(v).([]any)
		}
	}
	out.Pending = clonePending(c.Pending)
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
