package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/checkpoint/postgres"
	"github.com/lgrun/lgrun/mcpserver"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/server"
	"github.com/lgrun/lgrun/server/pgstore"
	"github.com/lgrun/lgrun/spec"
)

// envAPIKeys names the variable holding the API keys lgrun serve accepts
// (comma-separated); unset means no authentication.
const envAPIKeys = "LGRUN_API_KEYS"

type serveOpts struct {
	addr    string
	maxBody int64
	timeout time.Duration
	drain   time.Duration
	maxRuns int
	// leaseTTL is the Postgres saver's run-lease TTL: how long the runs of
	// a process that died wait before another process takes them over.
	leaseTTL time.Duration
	// With --db postgres://…: workers claiming runs from the shared queue,
	// and how long a dead worker's claim lasts.
	concurrency int
	claimTTL    time.Duration
	// worker: lgrun worker (runs only; --addr serves /ok alone).
	worker bool
}

func newServeCmd(io *IO, g *globalOpts) *cobra.Command {
	o := &serveOpts{}
	c := &cobra.Command{
		Use:   "serve GRAPH.yaml|DIR...",
		Short: "Serve graphs over the LangGraph Agent Server API (for the LangGraph SDK)",
		Long: `Serve graphs over the LangGraph Agent Server API, so the official LangGraph
SDKs drive them: every graph becomes an assistant whose graph_id is the graph's
name. A directory serves the graph files directly in it (not its subdirectories,
where subgraphs live). Threads, runs and checkpoints are kept in the database
(--db; runs in a file beside it ending in -server.db); background runs that a
crash interrupts continue when the server starts again. See docs/server.md.

Set LGRUN_API_KEYS to a comma-separated list of keys to require x-api-key.`,
		Example: `  lgrun serve graphs/
  LGRUN_API_KEYS=secret lgrun serve graphs/approval.yaml --addr 127.0.0.1:8123`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("serve takes one or more graph files or directories")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return serveRun(cmd.Context(), io, g, o, args)
		},
	}
	f := c.Flags()
	f.StringVar(&o.addr, "addr", "127.0.0.1:2024", "address to listen on (loopback unless you give another host)")
	f.Int64Var(&o.maxBody, "max-body", 10<<20, "largest request body in bytes")
	f.DurationVar(&o.timeout, "request-timeout", 30*time.Second, "time limit of non-streaming requests")
	f.IntVar(&o.maxRuns, "max-runs", 64, "runs executing at once (the others wait, pending)")
	f.DurationVar(&o.leaseTTL, "lease-ttl", 0, "with --db postgres://…: how long a thread's lease outlives a process that died (its runs continue elsewhere after this; default: --claim-ttl)")
	f.IntVar(&o.concurrency, "concurrency", 4, "with --db postgres://…: runs this process claims from the shared queue at once (0: API only)")
	f.DurationVar(&o.claimTTL, "claim-ttl", 5*time.Second, "with --db postgres://…: how long a worker's claim on a run outlives its last heartbeat before the run is requeued")
	f.DurationVar(&o.drain, "drain", 10*time.Second, "on SIGTERM, how long running runs may go on before they stop at their step (and resume at the next start)")
	return c
}

func newWorkerCmd(io *IO, g *globalOpts) *cobra.Command {
	o := &serveOpts{worker: true}
	c := &cobra.Command{
		Use:   "worker GRAPH.yaml|DIR... --db postgres://…",
		Short: "Execute the queued runs of lgrun serve processes on a PostgreSQL database",
		Long: `Claim runs from the run queue that lgrun serve processes on the same PostgreSQL
database (--db postgres://…) fill, and execute them: any number of workers and
servers may share a database. --addr serves GET /ok (database health) for
liveness and readiness probes. See docs/deploy.md.`,
		Example: `  lgrun worker graphs/ --db postgres://lgrun@db:5432/lgrun --concurrency 8 --addr :8080`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("worker takes one or more graph files or directories")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if !lgrun.IsPostgresURL(g.dbPath(io)) {
				return usagef("lgrun worker needs --db postgres://… (or LGRUN_DB): workers share runs through a PostgreSQL database")
			}
			return serveRun(cmd.Context(), io, g, o, args)
		},
	}
	f := c.Flags()
	f.StringVar(&o.addr, "addr", "", "address to serve GET /ok on (none when empty)")
	f.IntVar(&o.concurrency, "concurrency", 4, "runs executing at once")
	f.DurationVar(&o.claimTTL, "claim-ttl", 5*time.Second, "how long a worker's claim on a run outlives its last heartbeat before the run is requeued")
	f.DurationVar(&o.leaseTTL, "lease-ttl", 0, "how long a thread's lease outlives a process that died (default: --claim-ttl)")
	f.DurationVar(&o.drain, "drain", 10*time.Second, "on SIGTERM, how long running runs may go on before they stop at their step (and are requeued)")
	return c
}

// serveGraphFiles expands serve's arguments: files as given, directories'
// graph files (not test or fixtures files, not subdirectories).
func serveGraphFiles(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, usagef("%s: %v", a, unwrapPath(err))
		}
		if !fi.IsDir() {
			out = append(out, a)
			continue
		}
		ents, err := os.ReadDir(a)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, e := range ents {
			p := filepath.Join(a, e.Name())
			if !e.IsDir() && isGraphFile(p) && !spec.IsTestFile(p) {
				out = append(out, p)
				n++
			}
		}
		if n == 0 {
			return nil, usagef("directory %s holds no graph files (*.yaml)", a)
		}
	}
	sort.Strings(out)
	return out, nil
}

// serveEngine binds the graphs' node kinds through the command's engine
// (so runs share its rate limiters, id clock and observer): the one place
// that wires the engine for the server. The id clock and observer are
// set here, before server.New copies the options (set from inside Kinds
// they never reached the server's runners, which then had no run, step or
// node spans).
func serveEngine(eng *lgrun.Engine, saver runtime.Saver, o *server.Options) {
	for _, g := range o.Graphs {
		if r, err := eng.Runner(g, saver, lgrun.RunnerOptions{GraphFile: g.File}); err == nil {
			o.IDs, o.Observer = r.IDs, r.Observer
			break
		}
	}
	o.Kinds = func(g *spec.Graph) (map[string]runtime.NodeFunc, error) {
		r, err := eng.Runner(g, saver, lgrun.RunnerOptions{GraphFile: g.File})
		if err != nil {
			return nil, err
		}
		return r.Kinds, nil
	}
}

func serveRun(ctx context.Context, io *IO, g *globalOpts, o *serveOpts, args []string) error {
	files, err := serveGraphFiles(args)
	if err != nil {
		return err
	}
	var graphs []*spec.Graph
	for _, f := range files {
		gr, err := loadGraph(io, f)
		if err != nil {
			return err
		}
		if abs, err := absPath(f); err == nil {
			gr.File = abs
		}
		graphs = append(graphs, gr)
	}
	// Listen first: a wrong --addr creates no database.
	var ln net.Listener
	if !o.worker || o.addr != "" {
		ln, err = net.Listen("tcp", o.addr)
		if err != nil {
			return usagef("--addr %s: %v", o.addr, err)
		}
		defer ln.Close()
	}
	var saver lgrun.Store
	if p := g.dbPath(io); lgrun.IsPostgresURL(p) {
		// A dead worker's runs are requeued after the claim TTL; its
		// thread leases expire as soon, so the runs resume in seconds.
		lease := o.leaseTTL
		if lease <= 0 {
			lease = o.claimTTL
		}
		saver, err = lgrun.Open(ctx, p, &checkpoint.Options{LeaseTTL: lease})
	} else {
		saver, err = g.openSaver(io)
	}
	if err != nil {
		return err
	}
	defer saver.Close()
	store, err := openServerStore(ctx, g.dbPath(io), saver)
	if err != nil {
		return err
	}
	defer store.Close()
	var keys []string
	for _, k := range strings.Split(io.Getenv(envAPIKeys), ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	// /metrics is always served (unless OTEL_SDK_DISABLED=true), from the
	// meter provider that also exports by OTLP when an endpoint is set.
	tel, flush, t, err := io.telemetryWith(ctx, true)
	if err != nil {
		return err
	}
	defer flush()
	sopts := server.Options{
		Graphs: graphs, Saver: saver, Store: store, APIKeys: keys,
		MaxBody: o.maxBody, RequestTimeout: o.timeout, MaxRuns: o.maxRuns, Version: Version,
		Logf: func(format string, a ...any) { fmt.Fprintf(io.Err, format+"\n", a...) },
	}
	if t != nil {
		sopts.Metrics = t.Metrics
	}
	if q, ok := store.(server.Queue); ok {
		sopts.Queue, sopts.Workers, sopts.ClaimTTL = q, o.concurrency, o.claimTTL
	}
	eng := io.engine(tel...)
	defer func() { _ = eng.CloseMCP() }()
	serveEngine(eng, saver, &sopts)
	// The graphs as MCP tools at /mcp, behind the same API keys.
	if sopts.MCP, err = mcpserver.Handler(eng, graphs, saver, Version); err != nil {
		return err
	}
	srv, err := server.New(sopts)
	if err != nil {
		return err
	}
	if o.worker {
		return workerRun(ctx, io, srv, ln, o)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	names := make([]string, len(graphs))
	for i, gr := range graphs {
		names[i] = gr.Name
	}
	auth := "no API key (set " + envAPIKeys + " to require one)"
	if len(keys) > 0 {
		auth = fmt.Sprintf("x-api-key required (%d keys)", len(keys))
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() && len(keys) == 0 {
		fmt.Fprintf(io.Err, "lgrun serve: warning: listening on %s, which is not loopback, without API keys: anyone who can reach it can run the graphs (set %s)\n", ln.Addr(), envAPIKeys)
	}
	fmt.Fprintf(io.Err, "lgrun serve: listening on http://%s (graphs: %s; %s)\n", ln.Addr(), strings.Join(names, ", "), auth)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintf(io.Err, "lgrun serve: shutting down (running runs have %s to finish; the rest resume at the next start)\n", o.drain)
	dctx, cancel := context.WithTimeout(context.Background(), o.drain)
	defer cancel()
	srv.Shutdown(dctx)
	sctx, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// openServerStore opens the server's store beside the checkpoints: on
// PostgreSQL, the server_ tables in the saver's schema (sharing its
// pool); with SQLite, a file beside the checkpoint file ending in
// -server.db.
func openServerStore(ctx context.Context, dbPath string, saver lgrun.Store) (server.Store, error) {
	if pg, ok := saver.(*postgres.Postgres); ok {
		st, err := pgstore.New(ctx, pg.Pool())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", pg.Path(), err)
		}
		return st, nil
	}
	return server.OpenSQLite(strings.TrimSuffix(dbPath, filepath.Ext(dbPath)) + "-server.db")
}

// workerRun runs a worker until ctx ends, serving /ok on ln if any.
func workerRun(ctx context.Context, io *IO, srv *server.Server, ln net.Listener, o *serveOpts) error {
	var hs *http.Server
	errc := make(chan error, 1)
	where := "no --addr"
	if ln != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /ok", srv.Handler())
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- hs.Serve(ln) }()
		where = "GET /ok on http://" + ln.Addr().String()
	}
	fmt.Fprintf(io.Err, "lgrun worker: started (%d at once; %s)\n", o.concurrency, where)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintf(io.Err, "lgrun worker: shutting down (running runs have %s to finish; the rest are requeued)\n", o.drain)
	dctx, cancel := context.WithTimeout(context.Background(), o.drain)
	defer cancel()
	srv.Shutdown(dctx)
	if hs != nil {
		hs.Close()
	}
	return nil
}
