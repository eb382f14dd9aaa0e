package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/lgrun/lgrun/runtime"
)

func (s *Server) stateAt(w http.ResponseWriter, r *http.Request, tid, cid string) error {
	if _, err := s.thread(r, tid); err != nil {
		return err
	}
	cp, err := s.opts.Saver.Get(r.Context(), tid, cid)
	if errors.Is(err, runtime.ErrNotFound) {
		if cid != "" {
			return errorf(404, "checkpoint %q of thread %q not found", cid, tid)
		}
		return writeJSON(w, 200, emptyState(tid))
	}
	if err != nil {
		return err
	}
	return writeJSON(w, 200, threadState(s.graph(cp.Metadata.Graph), cp))
}

func (s *Server) getState(w http.ResponseWriter, r *http.Request) error {
	return s.stateAt(w, r, r.PathValue("tid"), r.PathValue("cid"))
}

// checkpointArg is a checkpoint reference as the SDK sends it.
type checkpointArg struct {
	CheckpointID string `json:"checkpoint_id"`
}

func (s *Server) getStateAt(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Checkpoint checkpointArg `json:"checkpoint"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	return s.stateAt(w, r, r.PathValue("tid"), req.Checkpoint.CheckpointID)
}

func (s *Server) updateState(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Values       json.RawMessage `json:"values"`
		AsNode       string          `json:"as_node"`
		CheckpointID string          `json:"checkpoint_id"`
		Checkpoint   *checkpointArg  `json:"checkpoint"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	tid := r.PathValue("tid")
	t, err := s.thread(r, tid)
	if err != nil {
		return err
	}
	if t.GraphID == "" {
		return errorf(400, "thread %q has no graph yet: start a run on it (or create it with metadata.graph_id) before updating its state", tid)
	}
	a, err := s.assistant(r.Context(), t.GraphID)
	if err != nil {
		return err
	}
	values := map[string]any{}
	if len(req.Values) > 0 && string(req.Values) != "null" {
		v, err := decodeValue(req.Values)
		if err != nil {
			return errorf(400, "values: %v", err)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return errorf(422, "values: want an object of state fields")
		}
		values = m
	}
	set, err := writesOf(a.Graph, "values", values)
	if err != nil {
		return err
	}
	if req.AsNode != "" && a.Graph.Nodes[req.AsNode] == nil {
		return errorf(422, "as_node: graph %q has no node %q", a.Graph.Name, req.AsNode)
	}
	cid := req.CheckpointID
	if cid == "" && req.Checkpoint != nil {
		cid = req.Checkpoint.CheckpointID
	}
	if err := s.reserve(tid); err != nil {
		return err
	}
	defer s.release(tid)
	cp, err := s.runner(a, nil).Update(r.Context(), tid, cid, set, req.AsNode)
	if errors.Is(err, runtime.ErrNotFound) {
		if cid == "" {
			return errorf(400, "thread %q has no state yet: start a run on it first", tid)
		}
		return errorf(404, "thread %q has no checkpoint %q", tid, cid)
	}
	if err != nil {
		return errorf(422, "update state: %v", err)
	}
	t.Updated = s.opts.Now()
	t.Status = s.idleStatus(cp)
	if err := s.opts.Store.PutThread(r.Context(), t); err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"checkpoint": checkpointRef(tid, cp.ID)})
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) error {
	req := struct {
		Limit    int            `json:"limit"`
		Before   any            `json:"before"`
		Metadata map[string]any `json:"metadata"`
	}{Limit: 10}
	if r.Method == http.MethodGet {
		if l := r.URL.Query().Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil {
				return errorf(422, "limit: want a number, got %q", l)
			}
			req.Limit = n
		}
		req.Before = r.URL.Query().Get("before")
	} else if err := decode(r, &req); err != nil {
		return err
	}
	tid := r.PathValue("tid")
	if _, err := s.thread(r, tid); err != nil {
		return err
	}
	before := ""
	switch b := req.Before.(type) {
	case string:
		before = b
	case map[string]any:
		// {configurable: {checkpoint_id}} or {checkpoint_id}
		if c, ok := b["configurable"].(map[string]any); ok {
			b = c
		}
		before, _ = b["checkpoint_id"].(string)
	}
	cps, err := s.historyOf(r.Context(), tid, req.Limit, before, req.Metadata)
	if err != nil {
		return err
	}
	b, err := s.historyJSON(cps)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	_, err = w.Write(b)
	return err
}
