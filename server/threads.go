package server

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/lgrun/lgrun/runtime"
)

// newID returns a random UUID (version 4).
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// checkThreadID rejects ids that clash with lgrun's child-run names.
func checkThreadID(id string) error {
	if id == "" || strings.Contains(id, runtime.ChildSep) || strings.TrimSpace(id) != id {
		return errorf(422, "thread_id %q: thread ids must be non-empty, without spaces at the ends and without %q", id, runtime.ChildSep)
	}
	return nil
}

// thread loads a thread or answers 404.
func (s *Server) thread(r *http.Request, id string) (*Thread, error) {
	t, err := s.opts.Store.Thread(r.Context(), id)
	if errors.Is(err, ErrNotFound) {
		return nil, errorf(404, "thread %q not found", id)
	}
	return t, err
}

func (s *Server) createThread(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ThreadID   string         `json:"thread_id"`
		Metadata   map[string]any `json:"metadata"`
		IfExists   string         `json:"if_exists"`
		Supersteps []struct {
			Updates []struct {
				Values  map[string]any `json:"values"`
				AsNode  string         `json:"as_node"`
				Command any            `json:"command"`
			} `json:"updates"`
		} `json:"supersteps"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.ThreadID == "" {
		req.ThreadID = newID()
	}
	if err := checkThreadID(req.ThreadID); err != nil {
		return err
	}
	switch req.IfExists {
	case "", "raise", "do_nothing":
	default:
		return errorf(422, "if_exists: want raise or do_nothing, got %q", req.IfExists)
	}
	old, err := s.opts.Store.Thread(r.Context(), req.ThreadID)
	if err == nil {
		if req.IfExists == "do_nothing" {
			return s.writeThread(w, r, old)
		}
		return errorf(409, "thread %q already exists", req.ThreadID)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	now := s.opts.Now()
	t := &Thread{ID: req.ThreadID, Created: now, Updated: now, Metadata: req.Metadata, Status: "idle"}
	if t.Metadata == nil {
		t.Metadata = map[string]any{}
	}
	var a *assistant
	if g, ok := t.Metadata["graph_id"].(string); ok {
		if a, err = s.assistant(r.Context(), g); err != nil {
			return err
		}
		t.GraphID = a.Graph.Name
	}
	// Supersteps seed the thread's history: each update is committed as
	// a checkpoint, in order, as threads.updateState would.
	type update struct {
		set    []runtime.Write
		asNode string
	}
	var updates []update
	for i, st := range req.Supersteps {
		for j, u := range st.Updates {
			what := fmt.Sprintf("supersteps[%d].updates[%d]", i, j)
			if a == nil {
				return errorf(422, "supersteps need metadata.graph_id: the graph whose state they write")
			}
			if u.Command != nil {
				return errorf(422, "%s.command is not supported; give values and as_node", what)
			}
			if u.AsNode != "" && a.Graph.Nodes[u.AsNode] == nil {
				return errorf(422, "%s.as_node: graph %q has no node %q", what, a.Graph.Name, u.AsNode)
			}
			set, err := writesOf(a.Graph, what+".values", u.Values)
			if err != nil {
				return err
			}
			updates = append(updates, update{set, u.AsNode})
		}
	}
	if err := s.opts.Store.PutThread(r.Context(), t); err != nil {
		return err
	}
	for _, u := range updates {
		if _, err := s.runner(a, nil).Update(r.Context(), t.ID, "", u.set, u.asNode); err != nil {
			return errorf(422, "supersteps: %v", err)
		}
	}
	if len(updates) > 0 {
		if cp, err := s.head(r.Context(), t.ID); err == nil {
			t.Status = s.idleStatus(cp)
			if err := s.opts.Store.PutThread(r.Context(), t); err != nil {
				return err
			}
		}
	}
	return s.writeThread(w, r, t)
}

func (s *Server) writeThread(w http.ResponseWriter, r *http.Request, t *Thread) error {
	out, err := s.threadJSON(r.Context(), t)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, out)
}

func (s *Server) getThread(w http.ResponseWriter, r *http.Request) error {
	t, err := s.thread(r, r.PathValue("tid"))
	if err != nil {
		return err
	}
	return s.writeThread(w, r, t)
}

type threadQuery struct {
	Metadata map[string]any `json:"metadata"`
	Values   map[string]any `json:"values"`
	IDs      []string       `json:"ids"`
	Status   string         `json:"status"`
	Limit    int            `json:"limit"`
	Offset   int            `json:"offset"`
}

func (s *Server) matchThreads(r *http.Request, q threadQuery) ([]map[string]any, error) {
	all, err := s.opts.Store.Threads(r.Context())
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, id := range q.IDs {
		ids[id] = true
	}
	var out []map[string]any
	for _, t := range all {
		if len(ids) > 0 && !ids[t.ID] || q.Status != "" && t.Status != q.Status || !matchMetadata(t.Metadata, q.Metadata) {
			continue
		}
		j, err := s.threadJSON(r.Context(), t)
		if err != nil {
			return nil, err
		}
		if len(q.Values) > 0 {
			v, _ := j["values"].(map[string]any)
			if !matchMetadata(v, q.Values) {
				continue
			}
		}
		out = append(out, j)
	}
	return out, nil
}

func (s *Server) searchThreads(w http.ResponseWriter, r *http.Request) error {
	q := threadQuery{Limit: 10}
	if err := decode(r, &q); err != nil {
		return err
	}
	list, err := s.matchThreads(r, q)
	if err != nil {
		return err
	}
	out := page(list, q.Offset, q.Limit)
	if out == nil {
		out = []map[string]any{}
	}
	return writeJSON(w, 200, out)
}

func (s *Server) countThreads(w http.ResponseWriter, r *http.Request) error {
	var q threadQuery
	if err := decode(r, &q); err != nil {
		return err
	}
	list, err := s.matchThreads(r, q)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, len(list))
}

func (s *Server) patchThread(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Metadata map[string]any `json:"metadata"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.thread(r, r.PathValue("tid"))
	if err != nil {
		return err
	}
	for k, v := range req.Metadata {
		t.Metadata[k] = v
	}
	t.Updated = s.opts.Now()
	if err := s.opts.Store.PutThread(r.Context(), t); err != nil {
		return err
	}
	return s.writeThread(w, r, t)
}

func (s *Server) deleteThread(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("tid")
	if _, err := s.thread(r, id); err != nil {
		return err
	}
	if s.busy(id) {
		return errorf(409, "thread %q is busy: cancel its runs first", id)
	}
	if err := s.deleteThreadData(r, id); err != nil {
		return err
	}
	w.WriteHeader(204)
	return nil
}

func (s *Server) deleteThreadData(r *http.Request, id string) error {
	if err := s.opts.Saver.DeleteThread(r.Context(), id); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return err
	}
	return s.opts.Store.DeleteThread(r.Context(), id)
}

// copyThread copies a thread with its whole history under a new id.
func (s *Server) copyThread(w http.ResponseWriter, r *http.Request) error {
	src, err := s.thread(r, r.PathValue("tid"))
	if err != nil {
		return err
	}
	// Every checkpoint with its values, in one walk (shared values: they
	// are only read, and committed).
	list, err := runtime.ReadHistory(r.Context(), s.opts.Saver, src.ID, runtime.HistoryOptions{Shared: true})
	if err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return err
	}
	th, err := s.opts.Saver.Thread(r.Context(), src.ID)
	if err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return err
	}
	now := s.opts.Now()
	t := *src
	t.ID, t.Created, t.Updated = newID(), now, now
	t.Metadata = map[string]any{}
	for k, v := range src.Metadata {
		t.Metadata[k] = v
	}
	if th != nil {
		// Checkpoint ids are the source's, so each copied checkpoint keeps
		// its delta against a parent copied before it: the copy costs
		// what the source's history cost, not a full state per
		// checkpoint. Only a checkpoint whose parent is not in the list
		// (the first, or one whose parent was deleted) is written whole.
		copied := make(map[string]bool, len(list))
		// Oldest first, so each parent exists before its child.
		for i := len(list) - 1; i >= 0; i-- {
			cp := list[i]
			nt := *th
			nt.ID = t.ID
			nt.Status = runtime.StatusRunning
			expect := ""
			if i < len(list)-1 {
				expect = list[i+1].ID
			}
			cp.Thread = t.ID
			if !copied[cp.ParentID] {
				// A parent that is not in the history (deleted by gc)
				// cannot be referred to.
				cp.ParentID = ""
			}
			if cp.ParentID == "" || cp.Delta == nil {
				// Full values, as the first checkpoint of a chain.
				cp.Delta = runtime.Delta{}
				for k, v := range cp.Values {
					cp.Delta[k] = runtime.Op{Kind: runtime.OpSet, Value: v}
				}
			}
			c := &runtime.Commit{Checkpoint: cp, ExpectHead: expect, Thread: nt}
			if i == 0 {
				c.Thread.Status, c.Thread.Error = th.Status, th.Error
				c.Writes = cp.Pending
			}
			if err := s.opts.Saver.Commit(r.Context(), c); err != nil {
				return fmt.Errorf("copy checkpoint %s: %w", cp.ID, err)
			}
			copied[cp.ID] = true
		}
	}
	if err := s.opts.Store.PutThread(r.Context(), &t); err != nil {
		return err
	}
	return s.writeThread(w, r, &t)
}

// pruneThreads deletes the given threads (strategy delete; keep_latest
// answers 422).
func (s *Server) pruneThreads(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ThreadIDs []string `json:"thread_ids"`
		Strategy  string   `json:"strategy"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Strategy != "" && req.Strategy != "delete" {
		return errorf(422, "strategy %q is not supported (only delete)", req.Strategy)
	}
	n := 0
	for _, id := range req.ThreadIDs {
		if _, err := s.opts.Store.Thread(r.Context(), id); errors.Is(err, ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		if s.busy(id) {
			return errorf(409, "thread %q is busy: cancel its runs first", id)
		}
		if err := s.deleteThreadData(r, id); err != nil {
			return err
		}
		n++
	}
	return writeJSON(w, 200, map[string]int{"pruned_count": n})
}
