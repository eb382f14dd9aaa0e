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
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/lgrun/lgrun"
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
	exitState     = 7
	exitCorrupt   = 8
	exitInterrupt = 130
)

// helpFooter ends the root help: the exit codes (the README table) and the
// environment variables lgrun reads.
const helpFooter = `
Exit codes:
  0    done
  1    failed: a node or tool failed (the last good checkpoint is kept: fix and
       resume), a test case failed, a thread or checkpoint was not found
  2    usage error: a wrong flag or argument (a --set field the graph does not
       declare or a value it does not take, --value that is not JSON)
  3    invalid graph (run and friends, validate, a test file that does not load)
  4    paused at an interrupt (the output shows the payload and the resume command)
  5    a step limit, budget or state size limit was reached (resume with a
       higher limit)
  6    thread conflict: another process moved the thread on
  7    the thread is not in a state for this: resume of a thread that is done,
       --value for a thread that waits at no interrupt node, new input to a
       thread that is paused or did not finish
  8    a stored checkpoint cannot be read (damaged or undecodable): the error
       names it and the last good checkpoint to fork from
  130  interrupted by a signal (state saved)

Environment:
  LGRUN_DB          checkpoint database: an SQLite path or a postgres:// URL
                    (default .lgrun/lgrun.db; --db wins)
  LGRUN_DURABILITY  process or power (--durability wins)
  LGRUN_PROVIDER    openai: call real servers instead of mock models
  OPENAI_API_KEY    API key of openai models (a model's api_key_env names another)
  OPENAI_BASE_URL   server of openai models without base_url
  LGRUN_API_KEYS    lgrun serve: comma-separated keys clients must send in x-api-key
  NO_COLOR          no colour even on a terminal
`

// IO holds the streams and environment a command uses, so tests can
// inject them.
type IO struct {
	In     io.Reader
	Out    io.Writer
	Err    io.Writer
	Getenv func(string) string
	Color  bool // colour on Out
	Cwd    string

	ErrColor bool             // colour on Err
	ErrTTY   bool             // Err is a terminal: slow nodes show a live elapsed time
	Width    int              // Err's terminal width; 0 when not a terminal (no limit)
	OutWidth int              // Out's terminal width; 0 when not a terminal (no limit)
	Now      func() time.Time // the clock of progress; nil is time.Now
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
	colour := os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
	if isTerminal(os.Stdout) {
		io.Color = colour
		io.OutWidth = termWidth(os.Stdout)
	}
	if isTerminal(os.Stderr) {
		io.ErrColor, io.ErrTTY = colour, true
		io.Width = termWidth(os.Stderr)
	}
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
			printError(io.Err, err)
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
	case errors.Is(err, runtime.ErrNothingToResume), errors.Is(err, runtime.ErrValueNotNeeded),
		errors.Is(err, runtime.ErrUnfinished), errors.As(err, new(*runtime.PausedError)):
		return exitState
	}
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
a crash or a budget limit and resume exactly where it was.

Progress and diagnostics go to stderr, the final output to stdout; -o json
prints one JSON document (shapes in docs/cli-json.md).`,
		Example: `  lgrun run graphs/approval.yaml --thread t1
  lgrun resume --thread t1 --value '{"approved": true}'
  lgrun validate --strict graphs/ && lgrun test graphs/`,
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
	pf.StringVar(&g.db, "db", "", "checkpoint database: SQLite path or postgres:// URL (default $LGRUN_DB, else .lgrun/lgrun.db)")
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
		newServeCmd(io, g),
		newWorkerCmd(io, g),
		newMCPCmd(io, g),
	)
	for _, c := range root.Commands() {
		c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	}
	// The footer is the root's only: subcommands inherit the template.
	root.SetUsageTemplate(root.UsageTemplate() + "{{if not .HasParent}}" + helpFooter + "{{end}}")
	registerCompletions(root, io, g)
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
func (g *globalOpts) openExisting(io *IO, thread string) (lgrun.Store, error) {
	if _, err := g.durabilityOpt(io); err != nil {
		return nil, err
	}
	p := g.dbPath(io)
	if lgrun.IsPostgresURL(p) {
		return g.openSaver(io)
	}
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		if thread != "" {
			return nil, fmt.Errorf("thread %q not found: %w at %s (nothing has run here yet; pass --db or set LGRUN_DB)", thread, errNoDatabase, p)
		}
		return nil, fmt.Errorf("%w at %s (nothing has run here yet; pass --db or set LGRUN_DB)", errNoDatabase, p)
	}
	return g.openSaver(io)
}

// openSaver opens the checkpoint store --db (or LGRUN_DB) names: a
// postgres:// URL, or an SQLite file, creating its directory. Every command
// opens its store here.
func (g *globalOpts) openSaver(io *IO) (lgrun.Store, error) {
	d, err := g.durabilityOpt(io)
	if err != nil {
		return nil, err
	}
	p := g.dbPath(io)
	if lgrun.IsPostgresURL(p) {
		return lgrun.Open(context.Background(), p, nil)
	}
	if dir := filepath.Dir(p); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create database directory: %w", err)
		}
	}
	return lgrun.Open(context.Background(), p, &checkpoint.Options{Durability: d})
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

// isTerminal reports whether f is a terminal (golang.org/x/term: an
// ioctl, so /dev/null and pipes are not).
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// termWidth is the width of terminal f in columns, or 0 when unknown.
func termWidth(f *os.File) int {
	w, _, err := term.GetSize(int(f.Fd()))
	if err != nil || w <= 0 {
		return 0
	}
	return w
}
