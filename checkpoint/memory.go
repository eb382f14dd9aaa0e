package checkpoint

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Memory is an in-memory saver. It keeps every checkpoint whole; it is
// meant for tests and runs that need no durability.
type Memory struct {
	mu      sync.Mutex
	threads map[string]*memThread
}

type memThread struct {
	row    runtime.Thread
	cps    map[string]*runtime.Checkpoint
	order  []string // commit order
	writes map[string][]runtime.PendingWrite
}

var _ runtime.Saver = (*Memory)(nil)

// NewMemory returns an empty in-memory saver.
func NewMemory() *Memory { return &Memory{threads: map[string]*memThread{}} }

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
	if t == nil {
		t = &memThread{cps: map[string]*runtime.Checkpoint{}, writes: map[string][]runtime.PendingWrite{}}
		m.threads[id] = t
	}
	cp := cloneCheckpoint(c.Checkpoint)
	cp.Pending = nil
	t.cps[cp.ID] = cp
	t.order = append(t.order, cp.ID)
	row := c.Thread
	row.Head = cp.ID
	if row.Created.IsZero() {
		row.Created = t.row.Created
	}
	t.row = row
	if len(c.Writes) > 0 {
		t.writes[cp.ID] = append([]runtime.PendingWrite(nil), c.Writes...)
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
		t.writes[t.row.Head] = append(t.writes[t.row.Head], mk.Writes...)
	}
	created := t.row.Created
	t.row = mk.Thread
	t.row.Created = created
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
	out.Pending = append([]runtime.PendingWrite(nil), t.writes[id]...)
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
		cp.Pending = nil
		out = append(out, &cp)
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
	row := t.row
	return &row, nil
}

// Threads implements runtime.Saver.
func (m *Memory) Threads(context.Context) ([]*runtime.Thread, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*runtime.Thread, 0, len(m.threads))
	for _, t := range m.threads {
		row := t.row
		out = append(out, &row)
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

func cloneCheckpoint(c *runtime.Checkpoint) *runtime.Checkpoint {
	out := *c
	if c.Values != nil {
		out.Values = spec.DeepCopy(c.Values).(map[string]any)
	}
	out.Next = append([]string(nil), c.Next...)
	return &out
}
