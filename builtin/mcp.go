package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/lgrun/lgrun/spec"
)

// An mcp tool entry is a source of tools: a Model Context Protocol server
// whose tools (all, or those listed) become the model's functions, named
// prefix + the server's name. The environment keeps one long-lived session
// per server (mcpPool), made on first use and made again after the server
// dies; each function is a *spec.Tool of kind mcp made from the listing
// (mcpFunction), so the tools node runs, checks, times out, scripts and
// records it like any other tool.

// defaultMCPConnect bounds connecting to a server and listing its tools.
const defaultMCPConnect = 30 * time.Second

// mcpPool holds an environment's sessions, by server.
type mcpPool struct {
	mu     sync.Mutex
	conns  map[string]*mcpConn
	closed bool
}

func newMCPPool() *mcpPool { return &mcpPool{conns: map[string]*mcpConn{}} }

// mcpConn is one server's session and its tool listing.
type mcpConn struct {
	mu     sync.Mutex
	sess   *mcp.ClientSession
	gen    int // counts sessions, so functions made from an old listing are remade
	tools  []*mcp.Tool
	funcs  map[string]*spec.Tool // by function name, of listing gen
	stderr *capWriter
	// stop ends sess (and a stdio server's process group).
	stop func()
}

// mcpFunction is what a function made from an mcp source refers to.
type mcpFunction struct {
	source *spec.Tool
	tool   string // the server's name of the tool
}

// close ends every session of the pool; later use starts new ones.
func (p *mcpPool) close() error {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[string]*mcpConn{}
	p.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		if c.sess != nil {
			c.stop()
			c.sess = nil
		}
		c.mu.Unlock()
	}
	return nil
}

// CloseMCP ends the environment's MCP sessions (a stdio server's process
// gets its stdin closed, then SIGTERM after 5 s). A later run connects
// again.
func (e *Environment) CloseMCP() error { return e.mcp.close() }

// mcpKey identifies the server of source t of graph g: the resolved
// command, its directory and environment, or the URL and its headers.
func (e *engine) mcpKey(g *spec.Graph, t *spec.Tool) (string, error) {
	if t.MCP.URL != "" {
		var hs []string
		for _, k := range spec.SortedKeys(t.HeadersEnv) {
			hs = append(hs, k+"="+t.HeadersEnv[k])
		}
		return "url\x00" + t.MCP.URL + "\x00" + strings.Join(hs, "\x00") + "\x00" + strings.Join(t.AllowHosts, ","), nil
	}
	dir, err := filepath.Abs(filepath.Dir(g.File))
	if err != nil {
		return "", fmt.Errorf("graph directory: %v", err)
	}
	env := e.mcpEnv(t)
	return "cmd\x00" + dir + "\x00" + strings.Join(t.Command, "\x00") + "\x00" + strings.Join(env, "\x00"), nil
}

// mcpEnv is the environment of a stdio server: the exec tools' allowlist
// and the source's env names, as set.
func (e *engine) mcpEnv(t *spec.Tool) []string {
	env := []string{}
	for _, k := range append(slices.Clone(execEnv), t.MCP.Env...) {
		if v := e.opts.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// mcpConnOf returns the pool's entry for source t.
func (e *engine) mcpConnOf(g *spec.Graph, t *spec.Tool) (*mcpConn, error) {
	key, err := e.mcpKey(g, t)
	if err != nil {
		return nil, err
	}
	p := e.env.mcp
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.conns[key]
	if c == nil {
		c = &mcpConn{}
		p.conns[key] = c
	}
	return c, nil
}

// session returns c's live session, connecting (and listing the tools)
// when there is none. Called with c.mu held.
func (e *engine) session(ctx context.Context, g *spec.Graph, t *spec.Tool, c *mcpConn) (*mcp.ClientSession, error) {
	if c.sess != nil {
		return c.sess, nil
	}
	var tr mcp.Transport
	var cmd *exec.Cmd
	if t.MCP.URL != "" {
		tr = &mcp.StreamableClientTransport{
			Endpoint:             t.MCP.URL,
			HTTPClient:           e.mcpHTTPClient(t),
			MaxRetries:           -1,
			DisableStandaloneSSE: true,
		}
	} else {
		dir, err := filepath.Abs(filepath.Dir(g.File))
		if err != nil {
			return nil, fmt.Errorf("graph directory: %v", err)
		}
		cmd = exec.Command(commandPath(dir, t.Command[0]), t.Command[1:]...)
		cmd.Dir = dir
		ownGroup(cmd)
		cmd.Env = e.mcpEnv(t)
		c.stderr = &capWriter{limit: 4 << 10}
		cmd.Stderr = c.stderr
		tr = &mcp.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}
	}
	cctx, cancel := context.WithTimeout(ctx, durOr(t.Timeout, defaultMCPConnect))
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "lgrun", Version: "v0"}, nil)
	sess, err := client.Connect(cctx, tr, nil)
	if err != nil {
		endGroup(cmd)
		return nil, e.mcpError(t, c, "connect", err)
	}
	stop := func() {
		_ = sess.Close()
		endGroup(cmd)
	}
	var tools []*mcp.Tool
	for tool, err := range sess.Tools(cctx, nil) {
		if err != nil {
			stop()
			return nil, e.mcpError(t, c, "list tools", err)
		}
		tools = append(tools, tool)
	}
	c.sess, c.tools, c.funcs, c.stop = sess, tools, nil, stop
	c.gen++
	go func() {
		// A session whose connection ends (the server died) is dropped, so
		// the next use starts the server again.
		_ = sess.Wait()
		endGroup(cmd)
		c.mu.Lock()
		if c.sess == sess {
			c.sess = nil
		}
		c.mu.Unlock()
	}()
	return sess, nil
}

// mcpError describes a failure to reach the server of source t, with what
// a stdio server said on stderr.
func (e *engine) mcpError(t *spec.Tool, c *mcpConn, what string, err error) error {
	where := t.MCP.URL
	if where == "" {
		where = strings.Join(t.Command, " ")
	}
	msg := fmt.Sprintf("mcp server of %s (%s): %s: %v", t.Name, where, what, err)
	if c.stderr != nil {
		if s := strings.TrimSpace(string(c.stderr.bytes())); s != "" {
			msg += ": " + clip(s, 500)
		}
	}
	return errors.New(msg)
}

// mcpHTTPClient is the options' HTTP client, sending the source's headers
// and refusing hosts outside its allow_hosts (redirects included).
func (e *engine) mcpHTTPClient(t *spec.Tool) *http.Client {
	base := e.opts.HTTPClient
	rt := base.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	hc := *base
	hc.Transport = &mcpTransport{base: rt, hosts: t.AllowHosts, headers: t.HeadersEnv, getenv: e.opts.Getenv}
	return &hc
}

type mcpTransport struct {
	base    http.RoundTripper
	hosts   []string
	headers map[string]string
	getenv  func(string) string
}

func (m *mcpTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := allowed(r.URL, m.hosts); err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	for h, env := range m.headers {
		r.Header.Set(h, m.getenv(env))
	}
	return m.base.RoundTrip(r)
}

// functions returns the tools refs name, with each mcp source replaced by
// the functions it imports. offline makes them from the listed names
// without reaching the server (tests and replays, which answer every call
// from a script or a record); their parameters accept any object.
func (e *engine) functions(ctx context.Context, g *spec.Graph, refs []spec.NameRef, offline bool) ([]*spec.Tool, error) {
	var out []*spec.Tool
	seen := map[string]string{}
	add := func(t *spec.Tool, from string) error {
		if o, dup := seen[t.Name]; dup {
			return fmt.Errorf("tool name %q is given by both %s and %s; set a prefix on the mcp source", t.Name, o, from)
		}
		seen[t.Name] = from
		out = append(out, t)
		return nil
	}
	for _, ref := range refs {
		t := g.Tools[ref.Name]
		if t == nil {
			continue
		}
		if t.MCP == nil {
			if err := add(t, "tool "+t.Name); err != nil {
				return nil, err
			}
			continue
		}
		fns, err := e.mcpFunctions(ctx, g, t, offline)
		if err != nil {
			return nil, err
		}
		for _, fn := range fns {
			if err := add(fn, "mcp source "+t.Name); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// mcpFunctions returns the functions of source t.
func (e *engine) mcpFunctions(ctx context.Context, g *spec.Graph, t *spec.Tool, offline bool) ([]*spec.Tool, error) {
	if offline {
		if len(t.MCP.Tools) == 0 {
			return nil, fmt.Errorf("tools.%s: an mcp source used without its server (tests, replays) must list its tools", t.Name)
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.offlineFns == nil {
			e.offlineFns = map[*spec.Tool][]*spec.Tool{}
		}
		if fns, ok := e.offlineFns[t]; ok {
			return fns, nil
		}
		var fns []*spec.Tool
		for _, name := range t.MCP.Tools {
			fns = append(fns, newMCPFunction(t, name, "MCP tool "+name+" of "+t.Name, map[string]any{"type": "object"}))
		}
		e.offlineFns[t] = fns
		return fns, nil
	}
	c, err := e.mcpConnOf(g, t)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := e.session(ctx, g, t, c); err != nil {
		return nil, err
	}
	if c.funcs == nil {
		c.funcs = map[string]*spec.Tool{}
	}
	var names []string
	have := map[string]*mcp.Tool{}
	for _, tool := range c.tools {
		have[tool.Name] = tool
		names = append(names, tool.Name)
	}
	want := t.MCP.Tools
	if len(want) == 0 {
		want = names
	}
	var out []*spec.Tool
	for _, name := range want {
		tool := have[name]
		if tool == nil {
			return nil, fmt.Errorf("tools.%s: the mcp server has no tool %q (it has %s)", t.Name, name, strings.Join(names, ", "))
		}
		key := t.Name + "\x00" + name
		fn := c.funcs[key]
		if fn == nil {
			params, err := schemaMap(tool.InputSchema)
			if err != nil {
				return nil, fmt.Errorf("tools.%s: tool %q: input schema: %v", t.Name, name, err)
			}
			desc := tool.Description
			if desc == "" {
				desc = tool.Title
			}
			fn = newMCPFunction(t, name, desc, params)
			c.funcs[key] = fn
		}
		out = append(out, fn)
	}
	return out, nil
}

// newMCPFunction makes the function of source t's tool name.
func newMCPFunction(t *spec.Tool, name, desc string, params map[string]any) *spec.Tool {
	fn := *t
	fn.Name = t.MCP.Function(name)
	fn.Description = desc
	fn.Parameters = params
	fn.Settings = map[string]any{mcpSourceKey: &mcpFunction{source: t, tool: name}}
	return &fn
}

// mcpSourceKey holds a function's *mcpFunction in its Settings.
const mcpSourceKey = "\x00mcp"

// schemaMap turns a tool's input schema into a JSON object.
func schemaMap(s any) (map[string]any, error) {
	if s == nil {
		return map[string]any{"type": "object", "properties": map[string]any{}}, nil
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	delete(m, "$schema")
	return m, nil
}

// mcpCall runs function t on its server. An isError result is an error
// (the model sees it as the tool's failure); so is a transport failure,
// which also drops the session, so the next use connects again.
func (e *engine) mcpCall(ctx context.Context, g *spec.Graph, t *spec.Tool, args map[string]any) (string, error) {
	fi, _ := t.Settings[mcpSourceKey].(*mcpFunction)
	if fi == nil {
		return "", fmt.Errorf("tool %q: an mcp source is not itself a function", t.Name)
	}
	c, err := e.mcpConnOf(g, fi.source)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	sess, err := e.session(ctx, g, fi.source, c)
	c.mu.Unlock()
	if err != nil {
		return "", err
	}
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: fi.tool, Arguments: args})
	if err != nil {
		var werr *jsonrpc.Error
		if ctx.Err() == nil && !errors.As(err, &werr) {
			c.mu.Lock()
			if c.sess == sess {
				c.sess = nil
				go c.stop()
			}
			c.mu.Unlock()
			return "", e.mcpError(fi.source, c, "call "+fi.tool, err)
		}
		return "", err
	}
	out := resultText(res)
	if res.IsError {
		if out == "" {
			out = "the tool reported an error"
		}
		return "", errors.New(out)
	}
	return out, nil
}

// resultText renders a tool result for the model: its text blocks; the
// structured content as JSON when there is no text; other blocks (images,
// resources) as JSON.
func resultText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
			continue
		}
		if b, err := json.Marshal(c); err == nil {
			parts = append(parts, string(b))
		}
	}
	if len(parts) == 0 && res.StructuredContent != nil {
		if s, err := jsonText(res.StructuredContent); err == nil {
			return s
		}
	}
	return strings.Join(parts, "\n")
}

// ResolveMCP connects to the server of every mcp source of g and of its
// subgraphs and reports, at their positions in the file, listed tools the
// server does not have, servers that cannot be reached, and function
// names that clash with another tool of the graph (for sources importing
// all their tools, which validation cannot check without the server). It
// is what `lgrun validate --resolve` adds to validation.
func (e *Environment) ResolveMCP(ctx context.Context, g *spec.Graph, opts Options) spec.ErrorList {
	var errs spec.ErrorList
	seen := map[*spec.Graph]bool{}
	var walk func(g *spec.Graph)
	walk = func(g *spec.Graph) {
		if seen[g] {
			return
		}
		seen[g] = true
		errs = append(errs, e.resolveGraph(ctx, g, opts)...)
		for _, p := range spec.SortedKeys(g.Subgraphs) {
			walk(g.Subgraphs[p])
		}
	}
	walk(g)
	return errs
}

func (e *Environment) resolveGraph(ctx context.Context, g *spec.Graph, opts Options) spec.ErrorList {
	var errs spec.ErrorList
	en, err := newEngine(e, g, opts)
	if err != nil {
		errs.Add(spec.Pos{File: g.File, Line: 1, Col: 1}, "%v", err)
		return errs
	}
	owner := map[string]string{}
	for _, name := range spec.SortedKeys(g.Tools) {
		if g.Tools[name].MCP == nil {
			owner[name] = "tool " + name
		}
	}
	for _, name := range spec.SortedKeys(g.Tools) {
		t := g.Tools[name]
		if t.MCP == nil {
			continue
		}
		c, err := en.mcpConnOf(g, t)
		if err == nil {
			c.mu.Lock()
			_, err = en.session(ctx, g, t, c)
			c.mu.Unlock()
		}
		if err != nil {
			errs.Add(t.Pos, "tools.%s: %v", name, err)
			continue
		}
		c.mu.Lock()
		var have []string
		for _, tool := range c.tools {
			have = append(have, tool.Name)
		}
		c.mu.Unlock()
		for i, tool := range t.MCP.Tools {
			if !slices.Contains(have, tool) {
				errs.Add(t.MCP.ToolPos[i], "tools.%s.tools: the mcp server has no tool %q (it has %s)", name, tool, strings.Join(have, ", "))
			}
		}
		if len(t.MCP.Tools) > 0 {
			continue // listed names were checked against the graph when it loaded
		}
		for _, tool := range have {
			fn := t.MCP.Function(tool)
			if o, dup := owner[fn]; dup {
				errs.Add(t.Pos, "tools.%s: the server's tool %q is the function %q, which %s already is; set prefix or list the tools to import", name, tool, fn, o)
				continue
			}
			owner[fn] = "a tool of mcp source " + name
		}
	}
	return errs
}
