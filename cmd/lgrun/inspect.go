package main

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

func notFound(err error, thread string) error {
	if errors.Is(err, runtime.ErrNotFound) {
		return fmt.Errorf("%w (list threads with `lgrun threads`)", err)
	}
	return err
}

func newHistoryCmd(io *IO, g *globalOpts) *cobra.Command {
	var thread string
	var limit int
	var output string
	var subgraphs bool
	c := &cobra.Command{
		Use:   "history --thread ID",
		Short: "List a thread's checkpoints, newest first",
		Example: `  lgrun history --thread t1
  lgrun history --thread t1 --subgraphs -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if thread == "" {
				return usagef("history needs --thread")
			}
			s, err := g.openExisting(io, thread)
			if err != nil {
				return err
			}
			defer s.Close()
			// A checkpoint that cannot be read is listed, marked, among the
			// others; the command then fails with what is wrong (exit 8).
			var corrupt []error
			list := func(thread string) ([]*runtime.Checkpoint, []*runtime.CorruptError, error) {
				cps, err := s.List(cmd.Context(), thread, limit)
				bad, ok := runtime.CorruptErrors(err)
				if !ok {
					return nil, nil, notFound(err, thread)
				}
				for _, b := range bad {
					corrupt = append(corrupt, runtime.FindLastGood(cmd.Context(), s, b))
				}
				return cps, bad, nil
			}
			cps, bad, err := list(thread)
			if err != nil {
				return err
			}
			var kids []*runtime.Thread
			if subgraphs {
				kids, err = runtime.ChildThreads(cmd.Context(), s, thread)
				if _, ok := runtime.CorruptErrors(err); !ok {
					return err
				}
				if err != nil {
					corrupt = append(corrupt, err)
				}
			}
			if output == outJSON {
				type row struct {
					ID      string              `json:"checkpoint"`
					Corrupt string              `json:"corrupt,omitempty"` // what is wrong with it; nothing else is set
					Parent  string              `json:"parent,omitempty"`
					Step    int                 `json:"step"`
					Time    time.Time           `json:"time"`
					Source  runtime.Source      `json:"source,omitempty"`
					Writes  map[string][]string `json:"writes,omitempty"`
					Changed []string            `json:"changed"`
					Next    []string            `json:"next"`
				}
				toRows := func(cps []*runtime.Checkpoint, bad []*runtime.CorruptError) []row {
					rows := make([]row, 0, len(cps)+len(bad))
					for _, h := range mergeHistory(cps, bad) {
						if h.bad != nil {
							rows = append(rows, row{ID: h.bad.Checkpoint, Corrupt: h.bad.Err.Error(), Changed: []string{}, Next: []string{}})
							continue
						}
						cp := h.cp
						rows = append(rows, row{cp.ID, "", cp.ParentID, cp.Step, cp.Metadata.Time, cp.Metadata.Source, cp.Metadata.Writes, spec.SortedKeys(cp.Delta), orEmpty(cp.Next)})
					}
					return rows
				}
				type out struct {
					Thread      string           `json:"thread"`
					Checkpoints []row            `json:"checkpoints"`
					Subgraphs   map[string][]row `json:"subgraphs,omitempty"`
				}
				o := out{Thread: thread, Checkpoints: toRows(cps, bad)}
				if subgraphs {
					o.Subgraphs = map[string][]row{}
				}
				for _, k := range kids {
					kcps, kbad, err := list(k.ID)
					if err != nil {
						return err
					}
					o.Subgraphs[k.ID] = toRows(kcps, kbad)
				}
				if err := writeJSON(io, o); err != nil {
					return err
				}
				return errors.Join(corrupt...)
			}
			printHistory := func(cps []*runtime.Checkpoint, bad []*runtime.CorruptError) error {
				tw := tabwriter.NewWriter(io.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CHECKPOINT\tSTEP\tTIME\tSOURCE\tWRITES\tCHANGED\tNEXT")
				for _, h := range mergeHistory(cps, bad) {
					if h.bad != nil {
						fmt.Fprintf(tw, "%s\t?\t?\tCORRUPT\t-\t-\t-\n", h.bad.Checkpoint)
						continue
					}
					cp := h.cp
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", cp.ID, cp.Step, cp.Metadata.Time.Local().Format("2006-01-02 15:04:05.000"),
						cp.Metadata.Source, dash(sortedWrites(cp.Metadata.Writes)), dash(strings.Join(spec.SortedKeys(cp.Delta), ",")), dash(strings.Join(cp.Next, ",")))
				}
				return tw.Flush()
			}
			if err := printHistory(cps, bad); err != nil {
				return err
			}
			for _, k := range kids {
				kcps, kbad, err := list(k.ID)
				if err != nil {
					return err
				}
				fmt.Fprintf(io.Out, "\nsubgraph run %s (graph %s, %s)\n", k.ID, k.Graph, k.Status)
				if err := printHistory(kcps, kbad); err != nil {
					return err
				}
			}
			return errors.Join(corrupt...)
		},
	}
	c.Flags().StringVarP(&thread, "thread", "t", "", "thread id (required)")
	c.Flags().IntVarP(&limit, "limit", "n", 0, "show at most this many checkpoints")
	c.Flags().BoolVar(&subgraphs, "subgraphs", false, "also list the checkpoints of subgraph and map-item runs")
	addOutputFlag(c, &output)
	addLegacyJSONFlag(c, io, &output)
	return c
}

// histEntry is a listed checkpoint or one that cannot be read.
type histEntry struct {
	cp  *runtime.Checkpoint
	bad *runtime.CorruptError
}

// mergeHistory merges the readable and the corrupt checkpoints of a
// thread, newest (greatest id) first.
func mergeHistory(cps []*runtime.Checkpoint, bad []*runtime.CorruptError) []histEntry {
	out := make([]histEntry, 0, len(cps)+len(bad))
	for _, cp := range cps {
		out = append(out, histEntry{cp: cp})
	}
	for _, b := range bad {
		out = append(out, histEntry{bad: b})
	}
	id := func(h histEntry) string {
		if h.bad != nil {
			return h.bad.Checkpoint
		}
		return h.cp.ID
	}
	sort.SliceStable(out, func(i, j int) bool { return id(out[i]) > id(out[j]) })
	return out
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newStateCmd(io *IO, g *globalOpts) *cobra.Command {
	var thread, cpID, graphPath, output string
	c := &cobra.Command{
		Use:   "state --thread ID [--checkpoint C]",
		Short: "Show a thread's state: values, next nodes, interrupts and metadata",
		Example: `  lgrun state --thread t1
  lgrun state --thread t1 --checkpoint 1f0c2a9e4b7d3c10 -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if thread == "" {
				return usagef("state needs --thread")
			}
			s, err := g.openExisting(io, thread)
			if err != nil {
				return err
			}
			defer s.Close()
			th, err := s.Thread(cmd.Context(), thread)
			if err != nil {
				return notFound(err, thread)
			}
			cp, err := s.Get(cmd.Context(), thread, cpID)
			if err != nil {
				return notFound(runtime.FindLastGood(cmd.Context(), s, err), thread)
			}
			ints, pending := []runtime.Interrupt{}, cp.Pending
			if pending == nil {
				pending = []runtime.PendingWrite{}
			}
			for _, p := range cp.Pending {
				if p.Kind == runtime.PendingInterrupt && p.Interrupt != nil {
					ints = append(ints, *p.Interrupt)
				}
			}
			if output == outJSON {
				return writeJSON(io, map[string]any{
					"thread": th.ID, "status": th.Status, "error": th.Error, "checkpoint": cp.ID, "parent": cp.ParentID,
					"step": cp.Step, "values": cp.Values, "next": orEmpty(cp.Next), "interrupts": ints,
					"pending": pending, "metadata": cp.Metadata,
				})
			}
			// The graph, when it still loads, gives field order and transcripts.
			var gr *spec.Graph
			if graphPath == "" {
				graphPath = th.GraphFile
			}
			if graphPath != "" {
				gr, _ = io.engine().Load(graphPath)
			}
			st := style{on: io.Color}
			w := io.Out
			fmt.Fprintf(w, "thread      %s (%s)\n", th.ID, th.Status)
			if th.Error != "" && cpID == "" {
				fmt.Fprintf(w, "error       %s\n", th.Error)
			}
			fmt.Fprintf(w, "checkpoint  %s (step %d, %s, %s)\n", cp.ID, cp.Step, cp.Metadata.Source, cp.Metadata.Time.Local().Format(time.RFC3339))
			fmt.Fprintf(w, "graph       %s %.12s (lgrun %s)\n", cp.Metadata.Graph, cp.Metadata.GraphHash, cp.Metadata.Version)
			fmt.Fprintf(w, "next        %s\n", dash(strings.Join(cp.Next, ", ")))
			for _, in := range ints {
				fmt.Fprintf(w, "interrupt   %s %s", in.When, in.Node)
				if in.Payload != nil {
					fmt.Fprintf(w, " payload=%s", compactJSON(in.Payload))
				}
				fmt.Fprintln(w)
			}
			for _, p := range cp.Pending {
				switch p.Kind {
				case runtime.PendingWrites:
					fmt.Fprintf(w, "pending     %s finished (its writes are kept and not re-run)\n", p.Node)
				case runtime.PendingError:
					fmt.Fprintf(w, "failed      %s: %s\n", p.Node, p.Error)
				}
			}
			if kids, err := runtime.ChildThreads(cmd.Context(), s, thread); err == nil {
				for _, k := range kids {
					fmt.Fprintf(w, "subgraph    %s (graph %s, %s, checkpoint %s)\n", k.ID, k.Graph, k.Status, k.Head)
				}
			}
			if t := cp.Metadata.Totals; t.LLMCalls > 0 {
				fmt.Fprintf(w, "usage       %d LLM calls, %d in + %d out tokens, $%.4f\n", t.LLMCalls, t.InputTokens, t.OutputTokens, t.CostUSD)
			}
			fmt.Fprintln(w, "values")
			printValues(w, gr, cp.Values, st, io.OutWidth)
			return nil
		},
	}
	c.Flags().StringVarP(&thread, "thread", "t", "", "thread id (required)")
	c.Flags().StringVarP(&cpID, "checkpoint", "c", "", "checkpoint id (default: the latest)")
	c.Flags().StringVar(&graphPath, "graph", "", "graph file for field order and transcripts (default: the thread's)")
	addOutputFlag(c, &output)
	addLegacyJSONFlag(c, io, &output)
	return c
}

func newDiffCmd(io *IO, g *globalOpts) *cobra.Command {
	var thread, output string
	c := &cobra.Command{
		Use:     "diff --thread ID C1 C2",
		Short:   "Show field-level differences between two checkpoints",
		Example: `  lgrun diff --thread t1 1f0c2a9e4b7d3c10 18ed37b8d7b8a0d0`,
		Args:    exactArgs(2, "two checkpoint ids"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if thread == "" {
				return usagef("diff needs --thread")
			}
			s, err := g.openExisting(io, thread)
			if err != nil {
				return err
			}
			defer s.Close()
			a, err := s.Get(cmd.Context(), thread, args[0])
			if err != nil {
				return notFound(runtime.FindLastGood(cmd.Context(), s, err), thread)
			}
			b, err := s.Get(cmd.Context(), thread, args[1])
			if err != nil {
				return notFound(runtime.FindLastGood(cmd.Context(), s, err), thread)
			}
			changes := diffValues(a.Values, b.Values)
			if output == outJSON {
				if changes == nil {
					changes = []fieldChange{}
				}
				return writeJSON(io, map[string]any{"thread": thread, "from": a.ID, "to": b.ID, "changes": changes})
			}
			if len(changes) == 0 {
				fmt.Fprintln(io.Out, "no differences")
				return nil
			}
			st := style{on: io.Color}
			for _, ch := range changes {
				switch ch.Kind {
				case "added":
					fmt.Fprintf(io.Out, "%s %s: %s\n", st.green("+"), ch.Field, truncate(compactJSON(ch.New), 200))
				case "removed":
					fmt.Fprintf(io.Out, "%s %s: %s\n", st.red("-"), ch.Field, truncate(compactJSON(ch.Old), 200))
				case "appended":
					fmt.Fprintf(io.Out, "%s %s: +%d items %s\n", st.yellow("~"), ch.Field, len(ch.Items), truncate(compactJSON(ch.Items), 200))
				default:
					fmt.Fprintf(io.Out, "%s %s: %s → %s\n", st.yellow("~"), ch.Field, truncate(compactJSON(ch.Old), 100), truncate(compactJSON(ch.New), 100))
				}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&thread, "thread", "t", "", "thread id (required)")
	addOutputFlag(c, &output)
	addLegacyJSONFlag(c, io, &output)
	return c
}

// fieldChange is one field's difference between two states.
type fieldChange struct {
	Field string `json:"field"`
	Kind  string `json:"change"` // added, removed, changed, appended
	Old   any    `json:"old,omitempty"`
	New   any    `json:"new,omitempty"`
	Items []any  `json:"items,omitempty"`
}

func diffValues(a, b map[string]any) []fieldChange {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var out []fieldChange
	for _, k := range spec.SortedKeys(keys) {
		av, aok := a[k]
		bv, bok := b[k]
		switch {
		case !aok:
			out = append(out, fieldChange{Field: k, Kind: "added", New: bv})
		case !bok:
			out = append(out, fieldChange{Field: k, Kind: "removed", Old: av})
		case !reflect.DeepEqual(av, bv):
			al, aIsList := av.([]any)
			bl, bIsList := bv.([]any)
			if aIsList && bIsList && len(bl) > len(al) && reflect.DeepEqual(al, bl[:len(al)]) {
				out = append(out, fieldChange{Field: k, Kind: "appended", Items: bl[len(al):]})
				continue
			}
			out = append(out, fieldChange{Field: k, Kind: "changed", Old: av, New: bv})
		}
	}
	return out
}

func newThreadsCmd(io *IO, g *globalOpts) *cobra.Command {
	var output string
	var all bool
	c := &cobra.Command{
		Use:   "threads",
		Short: "List threads with their status and last update",
		Example: `  lgrun threads
  lgrun threads --all -o json
  lgrun threads delete t1 t2`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var ts []*runtime.Thread
			// Threads whose row cannot be read are listed as CORRUPT;
			// the command then fails with what is wrong (exit 8).
			var corrupt error
			s, err := g.openExisting(io, "")
			switch {
			case errors.Is(err, errNoDatabase):
				// No database yet: no threads (and nothing is created).
			case err != nil:
				return err
			default:
				defer s.Close()
				ts, corrupt = s.Threads(cmd.Context())
				bad, ok := runtime.CorruptErrors(corrupt)
				if !ok {
					return corrupt
				}
				for _, b := range bad {
					ts = append(ts, &runtime.Thread{ID: b.Thread, Status: "CORRUPT"})
				}
			}
			if !all {
				kept := ts[:0]
				for _, t := range ts {
					if !runtime.IsChildThread(t.ID) {
						kept = append(kept, t)
					}
				}
				ts = kept
			}
			if output == outJSON {
				type row struct {
					ID      string         `json:"thread"`
					Status  runtime.Status `json:"status"`
					Graph   string         `json:"graph"`
					Head    string         `json:"head"`
					Updated time.Time      `json:"updated"`
					Error   string         `json:"error,omitempty"`
				}
				rows := make([]row, 0, len(ts))
				for _, t := range ts {
					rows = append(rows, row{t.ID, t.Status, t.Graph, t.Head, t.Updated, t.Error})
				}
				if err := writeJSON(io, map[string]any{"threads": rows}); err != nil {
					return err
				}
				return corrupt
			}
			tw := tabwriter.NewWriter(io.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "THREAD\tSTATUS\tGRAPH\tUPDATED\tHEAD")
			for _, t := range ts {
				updated := t.Updated.Local().Format("2006-01-02 15:04:05")
				if t.Updated.IsZero() {
					updated = "?"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Status, t.Graph, updated, t.Head)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			return corrupt
		},
	}
	addOutputFlag(c, &output)
	addLegacyJSONFlag(c, io, &output)
	c.Flags().BoolVar(&all, "all", false, "also list subgraph and map-item runs")
	var delOutput string
	del := &cobra.Command{
		Use:     "delete ID...",
		Short:   "Delete threads and all their checkpoints",
		Example: `  lgrun threads delete t1 t2`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("threads delete needs at least one thread id")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(delOutput); err != nil {
				return err
			}
			s, err := g.openExisting(io, args[0])
			if err != nil {
				return err
			}
			defer s.Close()
			deleted := []string{}
			for _, id := range args {
				if err := s.DeleteThread(cmd.Context(), id); err != nil {
					return notFound(err, id)
				}
				deleted = append(deleted, id)
				if delOutput == outText {
					fmt.Fprintf(io.Out, "deleted thread %s\n", id)
				}
			}
			if delOutput == outJSON {
				return writeJSON(io, map[string]any{"deleted": deleted})
			}
			return nil
		},
	}
	addOutputFlag(del, &delOutput)
	del.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	c.AddCommand(del)
	return c
}

func newGCCmd(io *IO, g *globalOpts) *cobra.Command {
	var opts checkpoint.GCOptions
	var olderThan time.Duration
	var output string
	c := &cobra.Command{
		Use:   "gc",
		Short: "Delete old threads or old checkpoints and reclaim space",
		Long: `Delete threads not updated for --older-than, and/or keep only the latest --keep
checkpoints of each thread (or of --thread). Kept checkpoints stay loadable: the
oldest kept checkpoint of each branch is rewritten as a full snapshot before its
ancestors are deleted. Space is reclaimed with VACUUM afterwards.`,
		Example: `  lgrun gc --older-than 720h
  lgrun gc --keep 50
  lgrun gc --thread t1 --keep 10`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if opts.Keep < 0 || olderThan < 0 {
				return usagef("--keep and --older-than must not be negative")
			}
			if opts.Keep == 0 && olderThan == 0 {
				return usagef("gc needs --keep N and/or --older-than DURATION")
			}
			if olderThan > 0 {
				opts.Before = time.Now().Add(-olderThan)
			}
			s, err := g.openExisting(io, "")
			if errors.Is(err, errNoDatabase) {
				if output == outJSON {
					return writeJSON(io, gcJSON(checkpoint.GCResult{}))
				}
				fmt.Fprintf(io.Out, "nothing to collect: %v\n", err)
				return nil
			}
			if err != nil {
				return err
			}
			defer s.Close()
			res, err := s.GC(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if output == outJSON {
				return writeJSON(io, gcJSON(res))
			}
			fmt.Fprintf(io.Out, "deleted %d threads and %d checkpoints; database %d → %d bytes\n", res.Threads, res.Checkpoints, res.BytesBefore, res.BytesAfter)
			return nil
		},
	}
	c.Flags().IntVar(&opts.Keep, "keep", 0, "keep the latest N checkpoints of each thread")
	c.Flags().DurationVar(&olderThan, "older-than", 0, "delete threads not updated for this long (e.g. 720h)")
	c.Flags().StringVarP(&opts.Thread, "thread", "t", "", "only this thread")
	addOutputFlag(c, &output)
	return c
}

// gcJSON is the -o json document of gc.
func gcJSON(r checkpoint.GCResult) map[string]any {
	return map[string]any{"threads": r.Threads, "checkpoints": r.Checkpoints, "bytes_before": r.BytesBefore, "bytes_after": r.BytesAfter}
}
