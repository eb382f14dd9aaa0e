// Package mcpserver serves lgrun graphs as Model Context Protocol tools,
// with the official Go SDK's server: one tool per graph, named after the
// graph, whose input schema is the graph's state schema
// ([spec.Graph.StateSchema]) and whose result is the run's final state, as
// structured content and as JSON text. `lgrun mcp` serves it over stdio;
// [Handler] is the streamable HTTP endpoint `lgrun serve` mounts at /mcp.
//
// Each call runs a new thread (its id and the run's status are in the
// result's _meta as lgrun/thread and lgrun/status). A run that fails is an
// isError result with the failure; one that pauses at an interrupt is a
// result with status interrupted and the state so far.
package mcpserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// NewServer returns an MCP server with one tool per graph, run by eng with
// checkpoints in saver. Two graphs with the same name are an error.
func NewServer(eng *lgrun.Engine, graphs []*spec.Graph, saver runtime.Saver, version string) (*mcp.Server, error) {
	s := mcp.NewServer(&mcp.Implementation{Name: "lgrun", Version: version}, nil)
	var names []string
	for _, g := range graphs {
		if slices.Contains(names, g.Name) {
			return nil, fmt.Errorf("%s: a graph named %q is served already; graph names are the tool names", g.File, g.Name)
		}
		names = append(names, g.Name)
		desc := g.Description
		if desc == "" {
			desc = "Runs the lgrun graph " + g.Name + "; the arguments are the input state."
		}
		s.AddTool(&mcp.Tool{Name: g.Name, Description: desc, InputSchema: g.StateSchema()}, runGraph(eng, g, saver))
	}
	return s, nil
}

// Handler returns the streamable HTTP handler of the server of graphs
// (see [NewServer]), for `lgrun serve` to mount at /mcp behind its
// authentication; it does none of its own.
func Handler(eng *lgrun.Engine, graphs []*spec.Graph, saver runtime.Saver, version string) (http.Handler, error) {
	s, err := NewServer(eng, graphs, saver, version)
	if err != nil {
		return nil, err
	}
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil), nil
}

// runGraph is the tool handler of graph g.
func runGraph(eng *lgrun.Engine, g *spec.Graph, saver runtime.Saver) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var input map[string]any
		if raw := req.Params.Arguments; len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &input); err != nil {
				return failed("the arguments are not a JSON object: " + err.Error()), nil
			}
		}
		thread, err := newThread()
		if err != nil {
			return nil, err
		}
		res, err := eng.Run(ctx, g, saver, thread, input)
		if err != nil {
			return failed(err.Error()), nil
		}
		if res.Status == runtime.StatusFailed || res.Status == runtime.StatusBudget {
			msg := string(res.Status)
			if th, terr := saver.Thread(ctx, thread); terr == nil && th.Error != "" {
				msg += ": " + th.Error
			}
			r := failed(msg)
			r.Meta = mcp.Meta{"lgrun/thread": thread, "lgrun/status": string(res.Status)}
			return r, nil
		}
		values := map[string]any{}
		if res.Checkpoint != nil {
			values = res.Checkpoint.Values
		}
		b, err := json.Marshal(values)
		if err != nil {
			return nil, err
		}
		return &mcp.CallToolResult{
			Meta:              mcp.Meta{"lgrun/thread": thread, "lgrun/status": string(res.Status)},
			Content:           []mcp.Content{&mcp.TextContent{Text: string(b)}},
			StructuredContent: values,
		}, nil
	}
}

func failed(msg string) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: msg}}}
}

// newThread returns a fresh thread id.
func newThread() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "mcp-" + hex.EncodeToString(b[:]), nil
}
