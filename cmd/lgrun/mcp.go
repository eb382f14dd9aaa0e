package main

import (
	"io"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/mcpserver"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

func newMCPCmd(sio *IO, g *globalOpts) *cobra.Command {
	var memory bool
	c := &cobra.Command{
		Use:   "mcp FILE|DIR|GLOB...",
		Short: "Serve graphs as MCP tools over stdio",
		Long: `Serve the graphs as Model Context Protocol tools on stdin/stdout, for desktop
MCP clients: one tool per graph, named after it, whose arguments are the input
state (the tool's input schema is the state's JSON Schema) and whose result is
the final state, as structured content and as JSON text. Each call runs a new
thread, checkpointed in the database (or in memory with --no-db); its id is in
the result's _meta as lgrun/thread. Diagnostics go to stderr.`,
		Example: `  lgrun mcp graphs/weather-agent.yaml
  lgrun mcp graphs/ --no-db`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("mcp needs at least one graph file, directory or glob")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := expandGraphArgs(args)
			if err != nil {
				return err
			}
			eng := sio.engine()
			defer func() { _ = eng.CloseMCP() }()
			var graphs []*spec.Graph
			for _, f := range files {
				if spec.IsTestFile(f) {
					continue
				}
				gr, diags := eng.Load(f)
				if len(diags) > 0 {
					printDiagnostics(sio.Err, diags, sio.Cwd)
				}
				if diags.HasErrors() {
					return invalidGraph{n: len(diags.Errors())}
				}
				graphs = append(graphs, gr)
			}
			var saver runtime.Saver
			if memory {
				saver = checkpoint.NewMemory()
			} else {
				s, err := g.openSaver(sio)
				if err != nil {
					return err
				}
				defer s.Close()
				saver = s
			}
			srv, err := mcpserver.NewServer(eng, graphs, saver, Version)
			if err != nil {
				return usagef("%v", err)
			}
			t := &mcp.IOTransport{Reader: io.NopCloser(sio.In), Writer: nopWriteCloser{sio.Out}}
			return srv.Run(cmd.Context(), t)
		},
	}
	c.Flags().BoolVar(&memory, "no-db", false, "keep checkpoints in memory only (nothing is saved)")
	return c
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
