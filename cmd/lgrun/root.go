package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// Version is lgrun's version, recorded in checkpoint metadata.
var Version = "0.1.0-dev"

// Exit codes, documented in the README. Decided only in exitCode.
const (
	exitOK        = 0
	exitFailed    = 1
	exitUsage     = 2
	exitInvalid   = 3
	exitPaused    = 4
	exitLimit     = 5
	exitConflict  = 6
	exitCorrupt   = 7
	exitInterrupt = 130
)

// IO holds the streams and environment a command uses, so tests can
// inject them.
type IO struct {
	In     io.Reader
	Out    io.Writer
	Err    io.Writer
	Getenv func(string) string
	Color  bool // colour on Out
	Cwd    string
}

// exitError carries an exit code decided by a command (e.g. validate's
// "errors found") without printing anything more.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// usageError is a wrong flag or argument.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// noArgs is cobra.NoArgs reporting a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return unknownCommand(cmd, args[0])
	}
	return nil
}

// unknownCommand reports an unexpected word after cmd, with cobra's
// "did you mean" suggestions for commands that have subcommands.
func unknownCommand(cmd *cobra.Command, arg string) error {
	msg := fmt.Sprintf("unknown command %q for %q", arg, cmd.CommandPath())
	if s := cmd.SuggestionsFor(arg); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return &usageError{errors.New(msg)}
}

// pausedError reports a run stopped at an interrupt (already printed).
type pausedError struct{}

func (pausedError) Error() string { return "paused at an interrupt" }

// invalidGraph reports a graph with errors (already printed).
type invalidGraph struct{ n int }

func (e invalidGraph) Error() string { return fmt.Sprintf("graph has %d errors", e.n) }

// Main runs lgrun with os.Args and returns the exit code.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cwd, _ := os.Getwd()
	io := &IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Getenv: os.Getenv, Cwd: cwd}
	io.Color = isTerminal(os.Stdout) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
	return run(ctx, io, os.Args[1:])
}

func run(ctx context.Context, io *IO, args []string) int {
	root := newRootCmd(io)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	code := exitCode(ctx, err)
	if err != nil && code != exitOK {
		var ee *exitError
		if !errors.As(err, &ee) && !errors.As(err, new(pausedError)) && !errors.As(err, new(invalidGraph)) {
			fmt.Fprintf(io.Err, "lgrun: %v\n", err)
			if ue := (*usageError)(nil); errors.As(err, &ue) {
				fmt.Fprintf(io.Err, "run 'lgrun --help' for usage\n")
			}
		}
	}
	return code
}

// exitCode maps an error to the process exit code. It is the only place
// that decides exit codes.
func exitCode(ctx context.Context, err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	var ue *usageError
	var sl *runtime.StepLimitError
	var be *runtime.BudgetError
	var se *runtime.StateSizeError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, new(pausedError)):
		return exitPaused
	case errors.As(err, new(invalidGraph)):
		return exitInvalid
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, runtime.ErrNeedValue):
		// resume at an interrupt node without --value: a missing flag.
		return exitUsage
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return exitInterrupt
	case errors.As(err, &sl), errors.As(err, &be), errors.As(err, &se):
		return exitLimit
	case errors.Is(err, runtime.ErrConflict):
		return exitConflict
	case errors.As(err, new(*runtime.CorruptError)):
		return exitCorrupt
	}
	// Also a command the thread's state refuses: PausedError,
	// ErrUnfinished, ErrNothingToResume.
	return exitFailed
}

// globalOpts are flags every command shares.
type globalOpts struct {
	db         string
	durability string
}

func newRootCmd(io *IO) *cobra.Command {
	g := &globalOpts{}
	root := &cobra.Command{
		Use:   "lgrun",
		Short: "Run declarative agent graphs written in YAML",
		Long: `lgrun runs agent graphs written in YAML: typed state, nodes, edges, interrupts.
Every superstep is checkpointed to SQLite, so a run can stop at an interrupt,
a crash or a budget limit and resume exactly where it was.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       Version,
		// Args and RunE make an unknown command a usage error (exit 2):
		// without them cobra reports it as a plain error.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownCommand(cmd, args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetOut(io.Out)
	root.SetErr(io.Err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.db, "db", "", "checkpoint database (default $LGRUN_DB, else .lgrun/lgrun.db)")
	pf.StringVar(&g.durability, "durability", "", "process (survive crashes, default) or power (fsync every step)")
	root.AddCommand(
		newRunCmd(io, g),
		newResumeCmd(io, g),
		newReplayCmd(io, g),
		newForkCmd(io, g),
		newHistoryCmd(io, g),
		newStateCmd(io, g),
		newDiffCmd(io, g),
		newThreadsCmd(io, g),
		newGCCmd(io, g),
		newValidateCmd(io),
		newSchemaCmd(io),
		newGraphCmd(io),
		newTestCmd(io),
		newUsageCmd(io, g),
	)
	for _, c := range root.Commands() {
		c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	}
	return root
}

// dbPath resolves the checkpoint database path.
func (g *globalOpts) dbPath(io *IO) string {
	if g.db != "" {
		return g.db
	}
	if p := io.Getenv("LGRUN_DB"); p != "" {
		return p
	}
	return filepath.Join(".lgrun", "lgrun.db")
}

// errNoDatabase reports that the checkpoint database does not exist.
var errNoDatabase = errors.New("no checkpoint database")

// openExisting opens the checkpoint database for commands that only read
// or continue threads: a missing database is not created; the error wraps
// errNoDatabase. thread, when set, is named in the error.
func (g *globalOpts) openExisting(io *IO, thread string) (*checkpoint.SQLite, error) {
	if _, err := g.durabilityOpt(io); err != nil {
		return nil, err
	}
	p := g.dbPath(io)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		if thread != "" {
			return nil, fmt.Errorf("thread %q not found: %w at %s (nothing has run here yet; pass --db or set LGRUN_DB)", thread, errNoDatabase, p)
		}
		return nil, fmt.Errorf("%w at %s (nothing has run here yet; pass --db or set LGRUN_DB)", errNoDatabase, p)
	}
	return g.openSaver(io)
}

// openSaver opens the SQLite checkpoint database, creating its directory.
func (g *globalOpts) openSaver(io *IO) (*checkpoint.SQLite, error) {
	d, err := g.durabilityOpt(io)
	if err != nil {
		return nil, err
	}
	p := g.dbPath(io)
	if dir := filepath.Dir(p); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create database directory: %w", err)
		}
	}
	return checkpoint.OpenSQLite(p, &checkpoint.Options{Durability: d})
}

// durabilityOpt resolves --durability (or LGRUN_DURABILITY).
func (g *globalOpts) durabilityOpt(io *IO) (checkpoint.Durability, error) {
	d := checkpoint.Durability(g.durability)
	if g.durability == "" {
		d = checkpoint.Durability(io.Getenv("LGRUN_DURABILITY"))
	}
	if d != "" && d != checkpoint.DurabilityProcess && d != checkpoint.DurabilityPower {
		return "", usagef("--durability: want process or power, got %q", d)
	}
	return d, nil
}

// loadGraph loads and checks a graph file, printing diagnostics. Warnings
// go to stderr; errors make it return invalidGraph.
func loadGraph(io *IO, path string) (*spec.Graph, error) {
	if _, err := os.Stat(path); err != nil {
		// A graph argument that names no file is a usage error, as in validate.
		return nil, usagef("graph file %s: %v", path, unwrapPath(err))
	}
	g, diags := io.engine().Load(path)
	if len(diags) > 0 {
		printDiagnostics(io.Err, diags, io.Cwd)
	}
	if diags.HasErrors() {
		return nil, invalidGraph{n: len(diags.Errors())}
	}
	return g, nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	// /dev/null is a character device too, but not a terminal.
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}
