// Package server serves lgrun graphs over the LangGraph Agent Server API,
// the HTTP API the official LangGraph SDKs (@langchain/langgraph-sdk,
// langgraph-sdk) and LangGraph Studio speak: assistants, threads, runs and
// their Server-Sent Event streams. See docs/server.md for what is
// supported.
//
// Checkpoints live in a runtime.Saver; the server's own rows (threads
// before their first checkpoint, runs, their statuses and resumable stream
// events) live in a [Store]. Background runs are durable: [New] requeues
// the runs a killed server left pending or running, and they continue from
// their last checkpoint.
package server

import (
	"context"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/server/ui"
	"github.com/lgrun/lgrun/spec"
)

// KindsFunc binds the node kinds beyond the runtime's own to a graph (in
// cmd/lgrun, those of the command's lgrun.Engine).
type KindsFunc func(*spec.Graph) (map[string]runtime.NodeFunc, error)

// Options configure a [Server].
type Options struct {
	Graphs []*spec.Graph
	Saver  runtime.Saver
	Store  Store
	Kinds  KindsFunc
	// APIKeys, when not empty, are the keys a request must send in
	// x-api-key; /ok needs none.
	APIKeys []string
	// MaxBody bounds request bodies in bytes; 0 means 10 MiB.
	MaxBody int64
	// RequestTimeout bounds non-streaming requests (not /wait and /join,
	// which last as long as their run); 0 means 30 s.
	RequestTimeout time.Duration
	// MaxRuns bounds the runs that execute at once (the others wait,
	// pending, in order per thread); 0 means 64.
	MaxRuns int
	// Heartbeat is the interval of SSE heartbeat comments; 0 means 5 s.
	Heartbeat time.Duration
	// Version is reported by /info and recorded in checkpoints.
	Version string
	// Logf logs server-side failures; log.Printf when nil.
	Logf func(format string, args ...any)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// IDs makes checkpoint ids for every run (an engine's clock); each
	// runner makes its own when nil.
	IDs *runtime.IDClock
	// Observer watches the runs (tracing, metrics); may be nil. When it
	// has a QueuedRuns gauge (an *observe.Observer does), the server
	// counts the runs waiting to execute in it.
	Observer runtime.Observer
	// Metrics, when set, serves GET /metrics (the Prometheus text
	// format), behind the API keys like every endpoint but /ok.
	Metrics http.Handler
	// Queue, when set, is the run queue shared by every process on the
	// database: runs are claimed from it by the Workers of any process
	// (0: this process only serves the API). See queue.go.
	Queue   Queue
	Workers int
	// ClaimTTL is how long a worker's claim on a run outlives its last
	// heartbeat (sent every third of it) before the sweeper requeues the
	// run; 0 means 5 s.
	ClaimTTL time.Duration
	// MCP, when set, is served at /mcp behind the same API-key check (in
	// cmd/lgrun, mcpserver.Handler: the graphs as MCP tools over
	// streamable HTTP). It streams, so the request timeout does not apply.
	MCP http.Handler
}

// assistant is a served graph.
type assistant struct {
	ID    string
	Graph *spec.Graph
	Kinds map[string]runtime.NodeFunc
	// stored is set for an assistant created through the API; nil for a
	// graph's default assistant.
	stored *Assistant
}

// Server serves the Agent Server API. Create it with [New], serve its
// [Server.Handler], and call [Server.Shutdown] to drain.
type Server struct {
	opts       Options
	assistants map[string]*assistant // by assistant id and by graph id
	order      []*assistant
	started    time.Time

	mu     sync.Mutex
	active map[string]*execution // running run by thread id
	runs   map[string]*execution // live or recently finished, by run id
	closed bool
	sem    chan struct{} // one token per executing run
	wg     sync.WaitGroup
	// base is cancelled by Shutdown's deadline: runs stop at a step
	// boundary and stay resumable.
	base   context.Context
	cancel context.CancelFunc

	// With a Queue: this process's worker id, its claims (run id →
	// fencing token), the claim loops' wake-up and their context.
	worker  string
	claims  map[string]string
	wake    chan struct{}
	qctx    context.Context
	qcancel context.CancelFunc
	qwg     sync.WaitGroup
	// The queue depth last read from the database and added to the
	// queued-runs gauge, and when.
	depthMu sync.Mutex
	depth   int64
	depthAt time.Time
}

// New builds a server and requeues the runs a previous process left
// unfinished.
func New(opts Options) (*Server, error) {
	if opts.MaxBody == 0 {
		opts.MaxBody = 10 << 20
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.MaxRuns <= 0 {
		opts.MaxRuns = 64
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = 5 * time.Second
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, assistants: map[string]*assistant{}, started: opts.Now(),
		active: map[string]*execution{}, runs: map[string]*execution{}, sem: make(chan struct{}, opts.MaxRuns)}
	s.base, s.cancel = context.WithCancel(context.Background())
	for _, g := range opts.Graphs {
		if s.assistants[g.Name] != nil {
			return nil, fmt.Errorf("two graphs are named %q (%s and %s): graph ids must be unique", g.Name, s.assistants[g.Name].Graph.File, g.File)
		}
		kinds, err := opts.Kinds(g)
		if err != nil {
			return nil, fmt.Errorf("graph %s: %w", g.File, err)
		}
		a := &assistant{ID: assistantID(g.Name), Graph: g, Kinds: kinds}
		s.assistants[g.Name], s.assistants[a.ID] = a, a
		s.order = append(s.order, a)
	}
	if opts.Queue != nil {
		if s.opts.ClaimTTL <= 0 {
			s.opts.ClaimTTL = 5 * time.Second
		}
		s.sem = make(chan struct{}, max(opts.MaxRuns, opts.Workers))
		s.qctx, s.qcancel = context.WithCancel(context.Background())
		s.startQueue()
		return s, nil
	}
	if err := s.requeue(); err != nil {
		return nil, err
	}
	return s, nil
}

// assistantID is the default assistant's id of a graph, as the JS server
// derives it: uuid5(graph_id, 6ba7b821-9dad-11d1-80b4-00c04fd430c8).
func assistantID(graphID string) string {
	ns := []byte{0x6b, 0xa7, 0xb8, 0x21, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}
	h := sha1.New()
	h.Write(ns)
	h.Write([]byte(graphID))
	u := h.Sum(nil)[:16]
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// apiError is an error answered as JSON {"error", "message"} with a status.
type apiError struct {
	Status int
	Code   string
	Msg    string
}

func (e *apiError) Error() string { return e.Msg }

func errorf(status int, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: http.StatusText(status), Msg: fmt.Sprintf(format, args...)}
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	h := func(pattern string, f func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(pattern, s.wrap(f, false))
	}
	long := func(pattern string, f func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(pattern, s.wrap(f, true))
	}
	h("GET /ok", func(w http.ResponseWriter, r *http.Request) error {
		// Liveness and readiness: the store's database must answer.
		if p, ok := s.opts.Store.(interface{ Ping(context.Context) error }); ok {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := p.Ping(ctx); err != nil {
				return writeJSON(w, 503, map[string]any{"ok": false, "error": "database: " + err.Error()})
			}
		}
		return writeJSON(w, 200, map[string]bool{"ok": true})
	})
	h("GET /info", s.info)
	if s.opts.Metrics != nil {
		h("GET /metrics", func(w http.ResponseWriter, r *http.Request) error {
			s.syncQueued(r.Context())
			s.opts.Metrics.ServeHTTP(w, r)
			return nil
		})
	}

	h("POST /assistants", s.createAssistant)
	h("PATCH /assistants/{id}", s.patchAssistant)
	h("DELETE /assistants/{id}", s.deleteAssistant)
	h("POST /assistants/{id}/versions", s.assistantVersions)
	h("POST /assistants/{id}/latest", s.setLatest)
	h("POST /assistants/search", s.searchAssistants)
	h("POST /assistants/count", s.countAssistants)
	h("GET /assistants/{id}", s.getAssistant)
	h("GET /assistants/{id}/graph", s.assistantGraph)
	h("GET /assistants/{id}/schemas", s.assistantSchemas)
	h("GET /assistants/{id}/subgraphs", s.assistantSubgraphs)
	h("GET /assistants/{id}/subgraphs/{ns}", s.assistantSubgraphs)

	h("POST /threads", s.createThread)
	h("POST /threads/search", s.searchThreads)
	h("POST /threads/count", s.countThreads)
	h("GET /threads/{tid}", s.getThread)
	h("PATCH /threads/{tid}", s.patchThread)
	h("DELETE /threads/{tid}", s.deleteThread)
	h("POST /threads/{tid}/copy", s.copyThread)
	h("GET /threads/{tid}/state", s.getState)
	h("GET /threads/{tid}/state/{cid}", s.getState)
	h("POST /threads/{tid}/state/checkpoint", s.getStateAt)
	h("POST /threads/{tid}/state", s.updateState)
	h("POST /threads/{tid}/history", s.history)
	h("GET /threads/{tid}/history", s.history)

	h("POST /threads/{tid}/runs", s.createRun)
	long("POST /threads/{tid}/runs/stream", s.streamRun)
	long("POST /threads/{tid}/runs/wait", s.waitRun)
	h("GET /threads/{tid}/runs", s.listRuns)
	h("GET /threads/{tid}/runs/{rid}", s.getRun)
	h("DELETE /threads/{tid}/runs/{rid}", s.deleteRun)
	h("POST /threads/{tid}/runs/{rid}/cancel", s.cancelRun)
	long("GET /threads/{tid}/runs/{rid}/join", s.joinRun)
	long("GET /threads/{tid}/runs/{rid}/stream", s.joinStream)
	long("GET /runs/{rid}/stream", s.joinStream)
	h("POST /runs/cancel", s.cancelRuns)
	h("POST /runs/batch", s.createBatch)
	h("POST /threads/prune", s.pruneThreads)
	h("POST /runs", s.createRun)
	long("POST /runs/stream", s.streamRun)
	long("POST /runs/wait", s.waitRun)

	notImpl := func(what string) func(w http.ResponseWriter, r *http.Request) error {
		return func(w http.ResponseWriter, r *http.Request) error {
			return errorf(http.StatusNotImplemented, "%s are not supported by lgrun serve (see docs/server.md)", what)
		}
	}
	for _, p := range []string{"POST /runs/crons", "POST /runs/crons/search", "POST /runs/crons/count",
		"PATCH /runs/crons/{id}", "DELETE /runs/crons/{id}", "POST /threads/{tid}/runs/crons"} {
		h(p, notImpl("crons"))
	}
	if s.opts.MCP != nil {
		mcp := func(w http.ResponseWriter, r *http.Request) error {
			s.opts.MCP.ServeHTTP(w, r)
			return nil
		}
		long("/mcp", mcp)
		long("/mcp/", mcp)
	}
	h("/store/", notImpl("the store endpoints"))
	// The web page (docs/ui.md): its assets need no API key.
	mux.Handle("GET /ui/", ui.Handler("/ui/"))
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	h("/", func(w http.ResponseWriter, r *http.Request) error {
		return errorf(http.StatusNotFound, "no endpoint %s %s (see docs/server.md for the supported ones)", r.Method, r.URL.Path)
	})
	return mux
}

// wrap applies authentication, the body size limit and (unless long) the
// request timeout, and answers a returned error as JSON. Panics become a
// 500 without a stack trace.
func (s *Server) wrap(f func(w http.ResponseWriter, r *http.Request) error, long bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				s.opts.Logf("lgrun serve: panic serving %s %s: %v", r.Method, r.URL.Path, p)
				writeError(w, errorf(500, "internal error"))
			}
		}()
		if r.URL.Path != "/ok" && !s.authorized(r) {
			writeError(w, errorf(http.StatusUnauthorized, "missing or wrong x-api-key"))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBody)
		if !long {
			ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		if err := f(w, r); err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				if r.Context().Err() != nil && !long {
					ae = errorf(http.StatusServiceUnavailable, "request timed out")
				} else {
					s.opts.Logf("lgrun serve: %s %s: %v", r.Method, r.URL.Path, err)
					ae = errorf(500, "%s", err.Error())
				}
			}
			writeError(w, ae)
		}
	})
}

func (s *Server) authorized(r *http.Request) bool {
	if len(s.opts.APIKeys) == 0 {
		return true
	}
	key := r.Header.Get("x-api-key")
	if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && key == "" {
		key = b // what Prometheus sends (its scrape config's authorization)
	}
	got := []byte(key)
	ok := 0
	for _, k := range s.opts.APIKeys {
		ok |= subtle.ConstantTimeCompare(got, []byte(k))
	}
	return ok == 1
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.Status, map[string]string{"error": e.Code, "message": e.Msg, "detail": e.Msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(b)
	return err
}

// decode reads a JSON body into v. An empty body leaves v as it is;
// unknown fields are ignored (the SDK sends fields older servers lack).
func decode(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", mbe.Limit)
		}
		return errorf(400, "read request body: %v", err)
	}
	if strings.TrimSpace(string(b)) == "" {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return errorf(400, "request body is not valid JSON: %v (at byte %d)", err, se.Offset)
		case errors.As(err, &te):
			return errorf(422, "request body: field %s: want %s, got JSON %s", te.Field, te.Type, te.Value)
		}
		return errorf(400, "request body: %v", err)
	}
	return nil
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, 200, map[string]any{
		"version":              s.opts.Version,
		"server":               "lgrun",
		"langgraph_py_version": nil,
		"flags":                map[string]bool{"assistants": true, "crons": false, "langsmith": false},
		"host":                 nil,
	})
}

func (s *Server) assistantGraph(w http.ResponseWriter, r *http.Request) error {
	a, err := s.assistant(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	g := a.Graph
	nodes := []map[string]any{{"id": "__start__", "type": "schema", "data": "__start__"}}
	for _, n := range g.NodeOrder {
		nodes = append(nodes, map[string]any{"id": n, "type": "runnable", "data": map[string]any{"name": n, "kind": g.Nodes[n].Kind}})
	}
	nodes = append(nodes, map[string]any{"id": "__end__", "type": "schema", "data": "__end__"})
	edges := []map[string]any{}
	name := func(n string) string {
		switch n {
		case spec.Start:
			return "__start__"
		case spec.End:
			return "__end__"
		}
		return n
	}
	for _, e := range g.Edges {
		labels := edgeLabels(e)
		for _, from := range e.From {
			for _, t := range e.Targets() {
				edge := map[string]any{"source": name(from.Name), "target": name(t.Name), "conditional": e.Conditional()}
				if l, ok := labels[t.Name]; ok {
					edge["data"] = l
				}
				edges = append(edges, edge)
			}
		}
	}
	return writeJSON(w, 200, map[string]any{"nodes": nodes, "edges": edges})
}

// edgeLabels names the condition under which a conditional edge leads to
// each of its targets: the when or route expression, "else" or "default".
func edgeLabels(e *spec.Edge) map[string]string {
	out := map[string]string{}
	add := func(refs []spec.NameRef, label string) {
		for _, r := range refs {
			if prev, ok := out[r.Name]; ok {
				out[r.Name] = prev + " | " + label
			} else {
				out[r.Name] = label
			}
		}
	}
	if e.When != nil {
		add(e.To, e.When.Src)
		add(e.Else, "else")
	}
	for _, r := range e.Routes {
		if r.When != nil {
			add(r.To, r.When.Src)
		}
	}
	add(e.Default, "default")
	if e.Route != nil {
		add(e.Paths, e.Route.Src)
	}
	return out
}

func (s *Server) assistantSchemas(w http.ResponseWriter, r *http.Request) error {
	a, err := s.assistant(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, 200, graphSchemas(a.Graph))
}

func graphSchemas(g *spec.Graph) map[string]any {
	st := stateSchema(g)
	return map[string]any{
		"graph_id": g.Name, "input_schema": st, "output_schema": st, "state_schema": st,
		"config_schema": configSchema(), "context_schema": nil,
	}
}

// subgraphsOf adds the schemas of g's subgraph and map nodes to out, by
// namespace: the node names from g down, joined by "|".
func subgraphsOf(g *spec.Graph, prefix string, recurse bool, out map[string]any) {
	for _, name := range g.NodeOrder {
		n := g.Nodes[name]
		path := n.ChildGraph()
		sub := g.Subgraphs[path]
		if path == "" || sub == nil {
			continue
		}
		ns := prefix + name
		out[ns] = graphSchemas(sub)
		if recurse {
			subgraphsOf(sub, ns+"|", true, out)
		}
	}
}

func (s *Server) assistantSubgraphs(w http.ResponseWriter, r *http.Request) error {
	a, err := s.assistant(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	recurse := r.URL.Query().Get("recurse") == "true" || r.URL.Query().Get("recurse") == "1"
	all := map[string]any{}
	subgraphsOf(a.Graph, "", true, all)
	out := map[string]any{}
	ns := r.PathValue("ns")
	for k, v := range all {
		switch {
		case ns != "" && k == ns, ns == "" && (recurse || !strings.Contains(k, "|")):
			out[k] = v
		case ns != "" && recurse && strings.HasPrefix(k, ns+"|"):
			out[k] = v
		}
	}
	if ns != "" && len(out) == 0 {
		return errorf(404, "graph %q has no subgraph %q", a.Graph.Name, ns)
	}
	return writeJSON(w, 200, out)
}

// page returns list[offset:offset+limit] within bounds (limit <= 0: all).
func page[T any](list []T, offset, limit int) []T {
	if offset < 0 {
		offset = 0
	}
	if offset >= len(list) {
		return nil
	}
	list = list[offset:]
	if limit > 0 && limit < len(list) {
		list = list[:limit]
	}
	return list
}

// matchMetadata reports whether md holds every key of want with an equal
// (JSON) value.
func matchMetadata(md, want map[string]any) bool {
	for k, v := range want {
		got, ok := md[k]
		if !ok {
			return false
		}
		a, _ := json.Marshal(got)
		b, _ := json.Marshal(v)
		if string(a) != string(b) {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
