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
// friends) complete thread ids, checkpoint ids and enum flag values. Ids
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
