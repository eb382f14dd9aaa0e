package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Assistant is a stored assistant: a served graph with its own name,
// metadata and default run config. Every graph also has a default
// assistant that is not stored (see assistantID).
type Assistant struct {
	ID          string         `json:"assistant_id"`
	GraphID     string         `json:"graph_id"`
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Config      *RunConfig     `json:"config,omitempty"`
	Metadata    map[string]any `json:"metadata"`
	Version     int            `json:"version"`
	Created     time.Time      `json:"created_at"`
	Updated     time.Time      `json:"updated_at"`
}

// assistant resolves an assistant id, or a graph id for the graph's
// default assistant, or answers 404.
func (s *Server) assistant(ctx context.Context, id string) (*assistant, error) {
	if a := s.assistants[id]; a != nil {
		return a, nil
	}
	st, err := s.opts.Store.Assistant(ctx, id)
	if err == nil {
		if base := s.assistants[st.GraphID]; base != nil {
			return &assistant{ID: st.ID, Graph: base.Graph, Kinds: base.Kinds, stored: st}, nil
		}
		return nil, errorf(404, "assistant %q is of graph %q, which is not served now", id, st.GraphID)
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	names := make([]string, 0, len(s.order))
	for _, a := range s.order {
		names = append(names, a.Graph.Name)
	}
	return nil, errorf(404, "assistant %q not found (graphs served: %s)", id, strings.Join(names, ", "))
}

func (s *Server) assistantJSON(a *assistant) map[string]any {
	if st := a.stored; st != nil {
		cfg := map[string]any{"configurable": map[string]any{}}
		if st.Config != nil {
			if st.Config.RecursionLimit > 0 {
				cfg["recursion_limit"] = st.Config.RecursionLimit
			}
			if st.Config.Configurable != nil {
				cfg["configurable"] = st.Config.Configurable
			}
		}
		md := st.Metadata
		if md == nil {
			md = map[string]any{}
		}
		return map[string]any{
			"assistant_id": st.ID, "graph_id": st.GraphID, "name": st.Name, "description": st.Description,
			"config": cfg, "context": map[string]any{}, "metadata": md, "version": st.Version,
			"created_at": ts(st.Created), "updated_at": ts(st.Updated),
		}
	}
	t := ts(s.started)
	return map[string]any{
		"assistant_id": a.ID, "graph_id": a.Graph.Name, "name": a.Graph.Name,
		"description": a.Graph.Description,
		"config":      map[string]any{"configurable": map[string]any{}}, "context": map[string]any{},
		"metadata": map[string]any{"created_by": "system"},
		"version":  1, "created_at": t, "updated_at": t,
	}
}

type assistantQuery struct {
	GraphID  string         `json:"graph_id"`
	Name     string         `json:"name"`
	Metadata map[string]any `json:"metadata"`
	Limit    int            `json:"limit"`
	Offset   int            `json:"offset"`
}

// matchAssistants lists the default assistants, then the stored ones
// (most recently updated first), that match q.
func (s *Server) matchAssistants(ctx context.Context, q assistantQuery) ([]*assistant, error) {
	all := append([]*assistant(nil), s.order...)
	stored, err := s.opts.Store.Assistants(ctx)
	if err != nil {
		return nil, err
	}
	for _, st := range stored {
		if base := s.assistants[st.GraphID]; base != nil {
			all = append(all, &assistant{ID: st.ID, Graph: base.Graph, Kinds: base.Kinds, stored: st})
		}
	}
	var out []*assistant
	for _, a := range all {
		j := s.assistantJSON(a)
		if q.GraphID != "" && a.Graph.Name != q.GraphID || q.Name != "" && !strings.Contains(j["name"].(string), q.Name) {
			continue
		}
		if !matchMetadata(j["metadata"].(map[string]any), q.Metadata) {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

func (s *Server) searchAssistants(w http.ResponseWriter, r *http.Request) error {
	q := assistantQuery{Limit: 10}
	if err := decode(r, &q); err != nil {
		return err
	}
	list, err := s.matchAssistants(r.Context(), q)
	if err != nil {
		return err
	}
	out := make([]any, 0, len(list))
	for _, a := range page(list, q.Offset, q.Limit) {
		out = append(out, s.assistantJSON(a))
	}
	return writeJSON(w, 200, out)
}

func (s *Server) countAssistants(w http.ResponseWriter, r *http.Request) error {
	var q assistantQuery
	if err := decode(r, &q); err != nil {
		return err
	}
	list, err := s.matchAssistants(r.Context(), q)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, len(list))
}

func (s *Server) getAssistant(w http.ResponseWriter, r *http.Request) error {
	a, err := s.assistant(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, 200, s.assistantJSON(a))
}

type assistantBody struct {
	AssistantID string         `json:"assistant_id"`
	GraphID     string         `json:"graph_id"`
	Config      *RunConfig     `json:"config"`
	Metadata    map[string]any `json:"metadata"`
	Name        string         `json:"name"`
	Description string         `json:"description"`
	IfExists    string         `json:"if_exists"`
}

func (s *Server) createAssistant(w http.ResponseWriter, r *http.Request) error {
	var req assistantBody
	if err := decode(r, &req); err != nil {
		return err
	}
	base := s.assistants[req.GraphID]
	if req.GraphID == "" || base == nil || base.Graph.Name != req.GraphID {
		return errorf(422, "graph_id %q: not a served graph", req.GraphID)
	}
	switch req.IfExists {
	case "", "raise", "do_nothing":
	default:
		return errorf(422, "if_exists: want raise or do_nothing, got %q", req.IfExists)
	}
	if req.Config != nil {
		if _, err := planRun(base, &RunRequest{Config: req.Config}); err != nil {
			return err
		}
	}
	if req.AssistantID == "" {
		req.AssistantID = newID()
	}
	if old, err := s.assistant(r.Context(), req.AssistantID); err == nil {
		if req.IfExists == "do_nothing" {
			return writeJSON(w, 200, s.assistantJSON(old))
		}
		return errorf(409, "assistant %q already exists", req.AssistantID)
	}
	now := s.opts.Now()
	st := &Assistant{ID: req.AssistantID, GraphID: req.GraphID, Name: req.Name, Description: req.Description,
		Config: req.Config, Metadata: req.Metadata, Version: 1, Created: now, Updated: now}
	if st.Name == "" {
		st.Name = "Untitled"
	}
	if err := s.opts.Store.PutAssistant(r.Context(), st); err != nil {
		return err
	}
	return writeJSON(w, 200, s.assistantJSON(&assistant{ID: st.ID, Graph: base.Graph, stored: st}))
}

// storedAssistant loads an assistant that may be changed: the default
// assistants of the graphs may not.
func (s *Server) storedAssistant(r *http.Request) (*assistant, error) {
	a, err := s.assistant(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	if a.stored == nil {
		return nil, errorf(409, "assistant %q is the default assistant of graph %q and cannot be changed; create another", a.ID, a.Graph.Name)
	}
	return a, nil
}

func (s *Server) patchAssistant(w http.ResponseWriter, r *http.Request) error {
	var req assistantBody
	if err := decode(r, &req); err != nil {
		return err
	}
	a, err := s.storedAssistant(r)
	if err != nil {
		return err
	}
	st := *a.stored
	if req.GraphID != "" && req.GraphID != st.GraphID {
		base := s.assistants[req.GraphID]
		if base == nil || base.Graph.Name != req.GraphID {
			return errorf(422, "graph_id %q: not a served graph", req.GraphID)
		}
		st.GraphID, a.Graph, a.Kinds = req.GraphID, base.Graph, base.Kinds
	}
	if req.Config != nil {
		if _, err := planRun(a, &RunRequest{Config: req.Config}); err != nil {
			return err
		}
		st.Config = req.Config
	}
	if req.Metadata != nil {
		md := map[string]any{}
		for k, v := range st.Metadata {
			md[k] = v
		}
		for k, v := range req.Metadata {
			md[k] = v
		}
		st.Metadata = md
	}
	if req.Name != "" {
		st.Name = req.Name
	}
	if req.Description != "" {
		st.Description = req.Description
	}
	versions, err := s.opts.Store.AssistantVersions(r.Context(), st.ID)
	if err != nil {
		return err
	}
	st.Version = 1
	if len(versions) > 0 {
		st.Version = versions[0].Version + 1
	}
	st.Updated = s.opts.Now()
	if err := s.opts.Store.PutAssistant(r.Context(), &st); err != nil {
		return err
	}
	a.stored = &st
	return writeJSON(w, 200, s.assistantJSON(a))
}

func (s *Server) deleteAssistant(w http.ResponseWriter, r *http.Request) error {
	a, err := s.storedAssistant(r)
	if err != nil {
		return err
	}
	if err := s.opts.Store.DeleteAssistant(r.Context(), a.ID); err != nil {
		return err
	}
	w.WriteHeader(204)
	return nil
}

// withDefaults fills the run config the request leaves unset from the
// assistant's config.
func (a *assistant) withDefaults(c *RunConfig) *RunConfig {
	if a.stored == nil || a.stored.Config == nil {
		return c
	}
	d := a.stored.Config
	out := &RunConfig{Configurable: map[string]any{}}
	if c != nil {
		out.RecursionLimit = c.RecursionLimit
		for k, v := range c.Configurable {
			out.Configurable[k] = v
		}
	}
	if out.RecursionLimit == 0 {
		out.RecursionLimit = d.RecursionLimit
	}
	for k, v := range d.Configurable {
		if _, ok := out.Configurable[k]; !ok {
			out.Configurable[k] = v
		}
	}
	return out
}

// versionJSON is an AssistantVersion: an Assistant without updated_at.
func (s *Server) versionJSON(a *assistant) map[string]any {
	j := s.assistantJSON(a)
	delete(j, "updated_at")
	return j
}

func (s *Server) assistantVersions(w http.ResponseWriter, r *http.Request) error {
	q := assistantQuery{Limit: 10}
	if err := decode(r, &q); err != nil {
		return err
	}
	a, err := s.assistant(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	out := []any{}
	if a.stored == nil {
		out = append(out, s.versionJSON(a))
		return writeJSON(w, 200, page(out, q.Offset, q.Limit))
	}
	versions, err := s.opts.Store.AssistantVersions(r.Context(), a.ID)
	if err != nil {
		return err
	}
	var kept []any
	for _, v := range versions {
		va := &assistant{ID: v.ID, Graph: a.Graph, stored: v}
		j := s.versionJSON(va)
		if matchMetadata(j["metadata"].(map[string]any), q.Metadata) {
			kept = append(kept, j)
		}
	}
	out = append(out, page(kept, q.Offset, q.Limit)...)
	return writeJSON(w, 200, out)
}

func (s *Server) setLatest(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Version int `json:"version"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	a, err := s.storedAssistant(r)
	if err != nil {
		return err
	}
	versions, err := s.opts.Store.AssistantVersions(r.Context(), a.ID)
	if err != nil {
		return err
	}
	for _, v := range versions {
		if v.Version == req.Version {
			base := s.assistants[v.GraphID]
			if base == nil {
				return errorf(409, "version %d of assistant %q is of graph %q, which is not served now", v.Version, a.ID, v.GraphID)
			}
			v.Updated = s.opts.Now()
			if err := s.opts.Store.PutAssistant(r.Context(), v); err != nil {
				return err
			}
			return writeJSON(w, 200, s.assistantJSON(&assistant{ID: v.ID, Graph: base.Graph, stored: v}))
		}
	}
	return errorf(404, "assistant %q has no version %d", a.ID, req.Version)
}
