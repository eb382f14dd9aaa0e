package main

import (
	"context"
	"fmt"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/lgrun/lgrun/runtime"
)

// usageRow is the LLM usage of one node with one model.
type usageRow struct {
	Node         string  `json:"node"`
	Model        string  `json:"model"`
	Calls        int     `json:"calls"`
	InputTokens  int     `json:"in"`
	OutputTokens int     `json:"out"`
	CostUSD      float64 `json:"cost_usd"`
	// Estimated counts the calls whose tokens were estimated from the
	// text because the server sent no usage.
	Estimated int `json:"estimated"`
}

// usageReport is what `lgrun usage` prints.
type usageReport struct {
	Thread string     `json:"thread"`
	Rows   []usageRow `json:"rows"`
	Total  usageRow   `json:"total"`
}

func newUsageCmd(io *IO, g *globalOpts) *cobra.Command {
	var thread, output string
	c := &cobra.Command{
		Use:   "usage --thread ID",
		Short: "Show a thread's LLM calls, tokens and cost by node and model",
		Long: `Show the LLM calls, input and output tokens and cost of a thread, broken down
by node and model. It adds up the usage recorded in every checkpoint of the
thread (every branch: replays and forks spent money too) and of its subgraph
and map-item runs, whose nodes show as parent/child, and the calls of steps
that failed, stopped or paused before they committed. Token counts marked ~
were estimated from the text because the server sent no usage.`,
		Example: `  lgrun usage --thread t1
  lgrun usage --thread t1 -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if thread == "" {
				return usagef("usage needs --thread")
			}
			s, err := g.openExisting(io, thread)
			if err != nil {
				return err
			}
			defer s.Close()
			rep, err := threadUsage(cmd.Context(), s, thread)
			if err != nil {
				return notFound(err, thread)
			}
			if output == outJSON {
				return writeJSON(io, rep)
			}
			if len(rep.Rows) == 0 {
				fmt.Fprintf(io.Out, "thread %s made no LLM calls\n", thread)
				return nil
			}
			tw := tabwriter.NewWriter(io.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tMODEL\tCALLS\tIN\tOUT\tCOST")
			for _, r := range append(rep.Rows, rep.Total) {
				mark := ""
				if r.Estimated > 0 {
					mark = "~"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s%d\t%s%d\t$%.6f\n", r.Node, r.Model, r.Calls, mark, r.InputTokens, mark, r.OutputTokens, r.CostUSD)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if n := rep.Total.Estimated; n > 0 {
				fmt.Fprintf(io.Out, "~ tokens of %d of %d calls estimated from the text: the server sent no usage\n", n, rep.Total.Calls)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&thread, "thread", "t", "", "thread id (required)")
	addOutputFlag(c, &output)
	addLegacyJSONFlag(c, io, &output)
	return c
}

// threadUsage adds up the usage in the checkpoints of thread, and the
// usage kept pending by a step that did not commit (failed, stopped or
// paused) at the tip of each branch. Usage of subgraph and map-item runs is
// recorded by the parent step that ran them, under node paths like
// "research/researcher", so it is included once; a call recorded twice
// (pending, then committed) has one ID and counts once.
func threadUsage(ctx context.Context, s runtime.Saver, thread string) (*usageReport, error) {
	if _, err := s.Thread(ctx, thread); err != nil {
		return nil, err
	}
	cps, err := s.List(ctx, thread, 0)
	if err != nil {
		return nil, err
	}
	var all []runtime.Usage
	parents := map[string]bool{}
	for i := len(cps) - 1; i >= 0; i-- {
		all = append(all, cps[i].Metadata.Usage...)
		parents[cps[i].ParentID] = true
	}
	for i := len(cps) - 1; i >= 0; i-- {
		if parents[cps[i].ID] {
			continue // its step committed
		}
		cp, err := s.Get(ctx, thread, cps[i].ID)
		if err != nil {
			return nil, err
		}
		for _, p := range cp.Pending {
			if p.Kind == runtime.PendingUsage && p.Result != nil {
				all = append(all, p.Result.Usage...)
			}
		}
	}
	type key struct{ node, model string }
	acc := map[key]*usageRow{}
	seen := map[string]bool{}
	for _, u := range all {
		if u.ID != "" {
			if seen[u.ID] {
				continue
			}
			seen[u.ID] = true
		}
		k := key{u.Node, u.Model}
		r := acc[k]
		if r == nil {
			r = &usageRow{Node: k.node, Model: k.model}
			acc[k] = r
		}
		r.Calls++
		r.InputTokens += u.InputTokens
		r.OutputTokens += u.OutputTokens
		r.CostUSD += u.CostUSD
		if u.Estimated {
			r.Estimated++
		}
	}
	rep := &usageReport{Thread: thread, Rows: []usageRow{}, Total: usageRow{Node: "total"}}
	for _, r := range acc {
		rep.Rows = append(rep.Rows, *r)
		rep.Total.Calls += r.Calls
		rep.Total.InputTokens += r.InputTokens
		rep.Total.OutputTokens += r.OutputTokens
		rep.Total.CostUSD += r.CostUSD
		rep.Total.Estimated += r.Estimated
	}
	sort.Slice(rep.Rows, func(i, j int) bool {
		a, b := rep.Rows[i], rep.Rows[j]
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		return a.Model < b.Model
	})
	return rep, nil
}
