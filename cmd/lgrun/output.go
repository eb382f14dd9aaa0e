package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Output modes of -o/--output. Report formats (junit, github, mermaid,
// dot) stay on --format.
const (
	outText = "text"
	outJSON = "json"
)

// addOutputFlag registers -o/--output text|json on c, stored in *dst. The
// JSON shape of every command is documented in docs/cli-json.md.
func addOutputFlag(c *cobra.Command, dst *string) {
	c.Flags().StringVarP(dst, "output", "o", outText, "output: text or json (shapes in docs/cli-json.md)")
	_ = c.RegisterFlagCompletionFunc("output", fixedValues(outText, outJSON))
}

// checkOutput rejects an -o value other than text or json.
func checkOutput(o string) error {
	switch o {
	case outText, outJSON:
		return nil
	}
	return usagef("--output: want text or json, got %q", o)
}

// reconcileFormat checks -o and --format together, for a command whose
// --format is a report (extra: junit, github) or one of the spellings of
// -o before it (text, json: deprecated, moved to *output). It leaves
// *format json when the output is JSON, so that one switch serves both.
func reconcileFormat(cmd *cobra.Command, io *IO, output, format *string, extra string) error {
	if err := checkOutput(*output); err != nil {
		return err
	}
	switch *format {
	case "", extra:
	case outText, outJSON:
		// The spellings before -o, kept for one release.
		deprecated(io, "--format "+*format, "-o "+*format)
		*output, *format = *format, ""
	default:
		return usagef("--format: want %s, got %q", extra, *format)
	}
	if *format != "" && cmd.Flags().Changed("output") {
		return usagef("--format %s and --output exclude each other", *format)
	}
	if *output == outJSON {
		*format = outJSON
	}
	return nil
}

// addLegacyJSONFlag registers the hidden, deprecated --json that sets *dst
// to json: the spelling before -o json, kept for one release.
func addLegacyJSONFlag(c *cobra.Command, io *IO, dst *string) {
	f := c.Flags().VarPF(&legacyJSON{io: io, dst: dst}, "json", "", "deprecated: use -o json")
	f.NoOptDefVal = "true"
	f.Hidden = true
}

// legacyJSON is the value of a deprecated boolean --json flag.
type legacyJSON struct {
	io  *IO
	dst *string
	set bool
}

func (l *legacyJSON) String() string { return fmt.Sprint(l.set) }
func (l *legacyJSON) Type() string   { return "bool" }
func (l *legacyJSON) IsBoolFlag() bool {
	return true
}

func (l *legacyJSON) Set(s string) error {
	switch s {
	case "true":
		l.set, *l.dst = true, outJSON
		deprecated(l.io, "--json", "-o json")
	case "false":
		l.set = false
	default:
		return fmt.Errorf("want true or false, got %q", s)
	}
	return nil
}

var _ pflag.Value = (*legacyJSON)(nil)

// deprecated warns on stderr that old is spelled new now.
func deprecated(io *IO, old, new string) {
	fmt.Fprintf(io.Err, "lgrun: warning: %s is deprecated; use %s\n", old, new)
}

// writeJSON prints v as indented JSON on stdout: the final output of -o json.
func writeJSON(io *IO, v any) error {
	enc := json.NewEncoder(io.Out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// fixedValues completes a flag or argument from a fixed list.
func fixedValues(vals ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return vals, cobra.ShellCompDirectiveNoFileComp
	}
}

// readArg reads a flag value given as @file (the file's contents), - (all
// of stdin) or literal text. name is the flag, for errors.
func readArg(ios *IO, name, v string) ([]byte, error) {
	switch {
	case v == "-":
		if ios.In == nil {
			return nil, usagef("%s -: no standard input", name)
		}
		b, err := io.ReadAll(ios.In)
		if err != nil {
			return nil, usagef("%s -: read standard input: %v", name, err)
		}
		return b, nil
	case strings.HasPrefix(v, "@"):
		b, err := os.ReadFile(v[1:])
		if err != nil {
			return nil, usagef("%s: %v", name, err)
		}
		return b, nil
	}
	return []byte(v), nil
}
