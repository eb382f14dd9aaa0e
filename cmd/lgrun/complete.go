package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lgrun/lgrun/runtime"
)

// compFunc is a cobra completion function.
type compFunc = func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective)

// registerCompletions makes shell completion (`lgrun completion bash` and
// friends) complete thread ids, checkpoint ids, node names and enum flag
// values. Ids
// come from the database the command would use (--db, $LGRUN_DB, the
// default); a missing database completes nothing and is not created.
func registerCompletions(root *cobra.Command, io *IO, g *globalOpts) {
	_ = root.RegisterFlagCompletionFunc("durability", fixedValues("process", "power"))
	_ = root.RegisterFlagCompletionFunc("db", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"db"}, cobra.ShellCompDirectiveFilterFileExt
	})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Flags().Lookup("thread") != nil {
			_ = c.RegisterFlagCompletionFunc("thread", threadCompletion(io, g))
		}
		if c.Flags().Lookup("checkpoint") != nil {
			_ = c.RegisterFlagCompletionFunc("checkpoint", checkpointCompletion(io, g))
		}
		if c.Flags().Lookup("graph") != nil {
			_ = c.RegisterFlagCompletionFunc("graph", yamlFiles)
		}
		for _, f := range []string{"as-node", "interrupt-before", "interrupt-after"} {
			if c.Flags().Lookup(f) != nil {
				_ = c.RegisterFlagCompletionFunc(f, nodeCompletion(io, g))
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	for _, c := range root.Commands() {
		switch c.Name() {
		case "run", "graph":
			c.ValidArgsFunction = func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
				if len(args) > 0 {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return yamlFiles(nil, nil, "")
			}
		case "validate", "test":
			c.ValidArgsFunction = yamlFiles
		case "diff":
			// Two checkpoint ids of --thread.
			cp := checkpointCompletion(io, g)
			c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				if len(args) >= 2 {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return cp(cmd, args, toComplete)
			}
		case "threads":
			for _, sub := range c.Commands() {
				if sub.Name() == "delete" {
					sub.ValidArgsFunction = threadCompletion(io, g)
				}
			}
		}
	}
}

// yamlFiles completes graph and test files.
func yamlFiles(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return []string{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
}

// threadCompletion completes the ids of the database's threads (not
// subgraph runs), with their status and graph as descriptions.
func threadCompletion(io *IO, g *globalOpts) compFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		s, err := g.openExisting(io, "")
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		defer s.Close()
		ts, err := s.Threads(cmd.Context())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		var out []string
		for _, t := range ts {
			if runtime.IsChildThread(t.ID) || !strings.HasPrefix(t.ID, toComplete) {
				continue
			}
			out = append(out, t.ID+"\t"+string(t.Status)+" · "+t.Graph)
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// nodeCompletion completes the node names of the graph the command runs:
// run's argument, else --graph, else the graph file --thread was started
// with. In a comma-separated list (--interrupt-before a,b) it completes the
// last name.
func nodeCompletion(io *IO, g *globalOpts) compFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		fail := cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		path, _ := cmd.Flags().GetString("graph")
		if cmd.Name() == "run" && len(args) > 0 {
			path = args[0]
		}
		if path == "" {
			thread, _ := cmd.Flags().GetString("thread")
			if thread == "" {
				return nil, fail
			}
			s, err := g.openExisting(io, thread)
			if err != nil {
				return nil, fail
			}
			defer s.Close()
			th, err := s.Thread(cmd.Context(), thread)
			if err != nil {
				return nil, fail
			}
			path = th.GraphFile
		}
		gr, _ := io.engine().Load(path)
		if gr == nil {
			return nil, fail
		}
		done, last := "", toComplete
		if i := strings.LastIndex(toComplete, ","); i >= 0 {
			done, last = toComplete[:i+1], toComplete[i+1:]
		}
		var out []string
		for _, n := range gr.NodeOrder {
			if strings.HasPrefix(n, last) {
				out = append(out, done+n+"\t"+gr.Nodes[n].Kind)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// checkpointCompletion completes the checkpoint ids of the thread named
// by --thread, newest first, with step and source as descriptions.
func checkpointCompletion(io *IO, g *globalOpts) compFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		thread, _ := cmd.Flags().GetString("thread")
		if thread == "" {
			return cobra.AppendActiveHelp(nil, "give --thread first"), cobra.ShellCompDirectiveNoFileComp
		}
		s, err := g.openExisting(io, thread)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		defer s.Close()
		cps, err := s.List(cmd.Context(), thread, 0)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		var out []string
		for _, cp := range cps {
			if strings.HasPrefix(cp.ID, toComplete) {
				out = append(out, fmt.Sprintf("%s\tstep %d · %s", cp.ID, cp.Step, cp.Metadata.Source))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
