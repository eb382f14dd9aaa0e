package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lgrun/lgrun/spec"
)

func newValidateCmd(io *IO) *cobra.Command {
	var format, output string
	var strict, resolve bool
	c := &cobra.Command{
		Use:   "validate FILE|DIR|GLOB...",
		Short: "Check graph files against the schema and the semantic rules",
		Long: `Check graph files: JSON Schema, references, reachability, reducers and the
types of every expression. Every problem is printed as file:line:col. Exit
status: 0 clean (warnings allowed unless --strict), 3 errors (invalid graph),
2 usage error.
Directories are searched for *.yaml and *.yml files; test files (*.test.yaml)
are checked as test files against the graph they test, and mock fixtures
(*.fixtures.yaml) are skipped (loading a graph checks its fixtures).
Validation never connects anywhere; --resolve also connects to the servers of
mcp tools and checks that the listed tools exist and no names clash.`,
		Example: `  lgrun validate graphs/
  lgrun validate 'graphs/*.yaml' --format github
  lgrun validate graphs/ --strict -o json
  lgrun validate --resolve graphs/mcp-agent.yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("validate needs at least one file, directory or glob")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := reconcileFormat(cmd, io, &output, &format, "github"); err != nil {
				return err
			}
			files, err := expandGraphArgs(args)
			if err != nil {
				return err
			}
			var all spec.ErrorList
			eng := io.engine()
			defer func() { _ = eng.CloseMCP() }()
			opts := eng.SpecOptions()
			for _, f := range files {
				var diags spec.ErrorList
				if spec.IsTestFile(f) {
					_, diags = spec.LoadTestFile(f, opts)
				} else {
					var g *spec.Graph
					g, diags = spec.LoadFile(f, opts)
					if resolve && g != nil {
						diags = append(diags, eng.ResolveMCP(cmd.Context(), g)...)
					}
				}
				all = append(all, diags...)
			}
			all.Sort()
			nerr, nwarn := len(all.Errors()), len(all.Warnings())
			switch format {
			case "json":
				type diag struct {
					File     string `json:"file"`
					Line     int    `json:"line"`
					Col      int    `json:"col"`
					Severity string `json:"severity"`
					Message  string `json:"message"`
				}
				out := []diag{}
				for _, d := range all {
					out = append(out, diag{relPath(d.Pos.File, io.Cwd), d.Pos.Line, d.Pos.Col, d.Severity.String(), d.Msg})
				}
				if err := writeJSON(io, map[string]any{"files": len(files), "errors": nerr, "warnings": nwarn, "diagnostics": out}); err != nil {
					return err
				}
			case "github":
				for _, d := range all {
					fmt.Fprintf(io.Out, "::%s file=%s,line=%d,col=%d::%s\n", d.Severity, ghEscape(relPath(d.Pos.File, io.Cwd), true), d.Pos.Line, d.Pos.Col, ghEscape(d.Msg, false))
				}
			default:
				printDiagnostics(io.Out, all, io.Cwd)
				if nerr == 0 && nwarn == 0 {
					fmt.Fprintf(io.Out, "%s valid\n", plural(len(files), "file"))
				} else {
					fmt.Fprintf(io.Out, "%s: %s, %s\n", plural(len(files), "file"), plural(nerr, "error"), plural(nwarn, "warning"))
				}
			}
			if nerr > 0 || (strict && nwarn > 0) {
				return &exitError{code: exitInvalid}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&format, "format", "f", "", "report format: github (GitHub Actions annotations)")
	_ = c.RegisterFlagCompletionFunc("format", fixedValues("github"))
	addOutputFlag(c, &output)
	c.Flags().BoolVar(&strict, "strict", false, "treat warnings as errors")
	c.Flags().BoolVar(&resolve, "resolve", false, "also connect to the MCP servers of mcp tools: the listed tools must exist and the names must not clash")
	return c
}

func ghEscape(s string, prop bool) string {
	s = strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
	if prop {
		s = strings.NewReplacer(":", "%3A", ",", "%2C").Replace(s)
	}
	return s
}

// isGraphFile reports whether a file found in a directory is a graph or a
// graph test file (mock fixtures are not: their provider checks them).
func isGraphFile(name string) bool {
	if !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
		return false
	}
	return !strings.Contains(filepath.Base(name), ".fixtures.")
}

// expandGraphArgs turns files, directories and globs into a sorted list of
// graph and test files.
func expandGraphArgs(args []string) ([]string, error) {
	return expandFiles(args, isGraphFile, "directory %s holds no graph files (*.yaml)")
}

// expandFiles turns files, directories and globs into a sorted list of
// files without duplicates. Named files and glob matches are kept as they
// are; directories are walked for the files keep accepts, and one that has
// none is a usage error worded by noneFormat (with the directory for %s).
func expandFiles(args []string, keep func(string) bool, noneFormat string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, a := range args {
		matches := []string{a}
		if strings.ContainsAny(a, "*?[") {
			m, err := filepath.Glob(a)
			if err != nil {
				return nil, usagef("bad glob %q: %v", a, err)
			}
			if len(m) == 0 {
				return nil, usagef("%q matches no files", a)
			}
			matches = m
		}
		for _, m := range matches {
			fi, err := os.Stat(m)
			if err != nil {
				return nil, usagef("%s: %v", m, unwrapPath(err))
			}
			if !fi.IsDir() {
				add(m)
				continue
			}
			n := 0
			err = filepath.WalkDir(m, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if !d.IsDir() && keep(p) {
					add(p)
					n++
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			if n == 0 {
				return nil, usagef(noneFormat, m)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

func unwrapPath(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return pe.Err
	}
	return err
}

func newSchemaCmd(io *IO) *cobra.Command {
	return &cobra.Command{
		Use:     "schema",
		Short:   "Print the JSON Schema of graph files",
		Example: `  lgrun schema > graph.schema.json`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := io.engine().Schema()
			if err != nil {
				return err
			}
			_, err = io.Out.Write(b)
			return err
		},
	}
}

func newGraphCmd(io *IO) *cobra.Command {
	var format, output string
	c := &cobra.Command{
		Use:   "graph FILE",
		Short: "Draw a graph as Mermaid or Graphviz dot, conditional routes labelled",
		Example: `  lgrun graph graphs/loop.yaml
  lgrun graph graphs/loop.yaml --format dot | dot -Tsvg > loop.svg
  lgrun graph graphs/loop.yaml -o json`,
		Args: exactArgs(1, "a graph file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if format != "mermaid" && format != "dot" {
				return usagef("--format: want mermaid or dot, got %q", format)
			}
			if output == outJSON && cmd.Flags().Changed("format") {
				return usagef("--format %s and --output json exclude each other", format)
			}
			g, err := loadGraph(io, args[0])
			if err != nil {
				return err
			}
			switch {
			case output == outJSON:
				return writeJSON(io, graphJSON(g))
			case format == "dot":
				fmt.Fprint(io.Out, drawDot(g))
			default:
				fmt.Fprint(io.Out, drawMermaid(g))
			}
			return nil
		},
	}
	c.Flags().StringVarP(&format, "format", "f", "mermaid", "drawing: mermaid or dot")
	_ = c.RegisterFlagCompletionFunc("format", fixedValues("mermaid", "dot"))
	addOutputFlag(c, &output)
	return c
}

// graphJSON is the -o json document of graph: the nodes in file order and
// the arrows a drawing shows.
func graphJSON(g *spec.Graph) map[string]any {
	type node struct {
		Name string `json:"name"`
		Kind string `json:"kind"`
	}
	type edge struct {
		From        string `json:"from"`
		To          string `json:"to"`
		Label       string `json:"label,omitempty"`
		Conditional bool   `json:"conditional"`
	}
	nodes := []node{}
	for _, name := range g.NodeOrder {
		nodes = append(nodes, node{name, g.Nodes[name].Kind})
	}
	edges := []edge{}
	for _, e := range drawEdges(g) {
		edges = append(edges, edge{e.from, e.to, e.label, e.dashed})
	}
	return map[string]any{"name": g.Name, "nodes": nodes, "edges": edges}
}

// drawEdge is one arrow of a drawing.
type drawEdge struct {
	from, to, label string
	dashed          bool
}

// drawEdges lists the arrows of g: plain edges solid, conditional ones
// dashed and labelled with their condition, joins labelled "join".
func drawEdges(g *spec.Graph) []drawEdge {
	var out []drawEdge
	for _, e := range g.Edges {
		if len(e.From) > 1 {
			for _, f := range e.From {
				for _, t := range e.To {
					out = append(out, drawEdge{from: f.Name, to: t.Name, label: "join"})
				}
			}
			continue
		}
		src := e.From[0].Name
		switch {
		case e.When != nil:
			for _, t := range e.To {
				out = append(out, drawEdge{src, t.Name, e.When.Src, true})
			}
			for _, t := range e.Else {
				out = append(out, drawEdge{src, t.Name, "else", true})
			}
		case e.Routes != nil:
			for _, r := range e.Routes {
				for _, t := range r.To {
					out = append(out, drawEdge{src, t.Name, r.When.Src, true})
				}
			}
			for _, t := range e.Default {
				out = append(out, drawEdge{src, t.Name, "default", true})
			}
		case e.Route != nil:
			for _, t := range e.Paths {
				out = append(out, drawEdge{src, t.Name, e.Route.Src + " = " + t.Name, true})
			}
		default:
			for _, t := range e.To {
				out = append(out, drawEdge{from: src, to: t.Name})
			}
		}
	}
	for _, name := range g.NodeOrder {
		n := g.Nodes[name]
		for _, t := range n.GotoPaths {
			out = append(out, drawEdge{name, t.Name, "goto", true})
		}
		if mc, ok := spec.ConfigOf[*spec.MapConfig](n); ok && mc.MapNode.Name != "" {
			out = append(out, drawEdge{name, mc.MapNode.Name, "map " + mc.Over.Src, true})
		}
	}
	return out
}

func mermaidID(n string) string {
	switch n {
	case spec.Start:
		return "__start__"
	case spec.End:
		return "__end__"
	case "end":
		return "end_node" // a lower-case "end" id breaks Mermaid flowcharts
	}
	return strings.NewReplacer("-", "_", ".", "_").Replace(n)
}

// mermaidLabel makes s safe inside a quoted Mermaid label: truncated
// first (so no entity is cut), then quotes and HTML-special characters as
// Mermaid entity codes, which expressions like `a < b && c` need.
func mermaidLabel(s string) string {
	s = truncate(strings.ReplaceAll(s, "\n", " "), 60)
	return strings.NewReplacer("#", "#35;", `"`, "#quot;", "<", "#lt;", ">", "#gt;", "&", "#amp;").Replace(s)
}

// dotQuote quotes s as a DOT string. (json.Marshal would write < > & as
// \u003c..., which Graphviz prints literally.)
func dotQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

func drawMermaid(g *spec.Graph) string {
	var b strings.Builder
	b.WriteString("flowchart TD\n")
	b.WriteString("  __start__([START])\n  __end__([END])\n")
	for _, name := range g.NodeOrder {
		n := g.Nodes[name]
		shape := `["%s<br/><small>%s</small>"]`
		if n.Kind == "interrupt" {
			shape = `{{"%s<br/><small>%s</small>"}}`
		}
		fmt.Fprintf(&b, "  %s"+shape+"\n", mermaidID(name), name, n.Kind)
	}
	for _, e := range drawEdges(g) {
		arrow := "-->"
		if e.dashed {
			arrow = "-.->"
		}
		if e.label != "" {
			fmt.Fprintf(&b, "  %s %s|\"%s\"| %s\n", mermaidID(e.from), arrow, mermaidLabel(e.label), mermaidID(e.to))
		} else {
			fmt.Fprintf(&b, "  %s %s %s\n", mermaidID(e.from), arrow, mermaidID(e.to))
		}
	}
	return b.String()
}

func drawDot(g *spec.Graph) string {
	q := dotQuote
	var b strings.Builder
	fmt.Fprintf(&b, "digraph %s {\n  rankdir=TB;\n  node [shape=box, style=rounded];\n", q(g.Name))
	fmt.Fprintf(&b, "  %s [shape=oval];\n  %s [shape=oval];\n", q(spec.Start), q(spec.End))
	for _, name := range g.NodeOrder {
		n := g.Nodes[name]
		shape := ""
		if n.Kind == "interrupt" {
			shape = ", shape=hexagon"
		}
		fmt.Fprintf(&b, "  %s [label=%s%s];\n", q(name), q(name+"\n("+n.Kind+")"), shape)
	}
	for _, e := range drawEdges(g) {
		var attrs []string
		if e.label != "" {
			attrs = append(attrs, "label="+q(truncate(e.label, 60)))
		}
		if e.dashed {
			attrs = append(attrs, "style=dashed")
		}
		a := ""
		if len(attrs) > 0 {
			a = " [" + strings.Join(attrs, ", ") + "]"
		}
		fmt.Fprintf(&b, "  %s -> %s%s;\n", q(e.from), q(e.to), a)
	}
	b.WriteString("}\n")
	return b.String()
}
