package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// jsonDoc is one section of docs/cli-json.md: the top-level keys of its
// example and the keys it marks optional.
type jsonDoc struct {
	keys     map[string]bool
	optional map[string]bool
}

// readJSONDocs parses docs/cli-json.md: each "## heading" section, its
// ```json blocks (examples) and an "Optional keys:" line.
func readJSONDocs(t *testing.T) map[string]jsonDoc {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "cli-json.md"))
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]jsonDoc{}
	sections := strings.Split(string(b), "\n## ")[1:]
	for _, sec := range sections {
		title, body, _ := strings.Cut(sec, "\n")
		d := jsonDoc{keys: map[string]bool{}, optional: map[string]bool{}}
		blocks := strings.Split(body, "```json\n")[1:]
		if len(blocks) == 0 {
			t.Fatalf("docs/cli-json.md: section %q has no JSON example", title)
		}
		for _, blk := range blocks {
			example, _, _ := strings.Cut(blk, "```")
			var m map[string]any
			if err := json.Unmarshal([]byte(example), &m); err != nil {
				t.Fatalf("docs/cli-json.md: section %q: an example is not a JSON object: %v", title, err)
			}
			for k := range m {
				d.keys[k] = true
			}
		}
		if _, opt, ok := strings.Cut(body, "Optional keys:"); ok {
			opt, _, _ = strings.Cut(opt, "\n\n")
			for _, k := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(opt, -1) {
				if !d.keys[k[1]] {
					t.Errorf("docs/cli-json.md: section %q: optional key %q is not in the example", title, k[1])
				}
				d.optional[k[1]] = true
			}
		}
		docs[title] = d
	}
	return docs
}

// TestJSONOutputIsDocumented runs every command with -o json and checks
// that it prints one JSON object whose top-level keys are the ones
// docs/cli-json.md shows for it: none missing (but optional ones), none
// undocumented.
func TestJSONOutputIsDocumented(t *testing.T) {
	docs := readJSONDocs(t)
	env := map[string]string{"LGRUN_DB": filepath.Join(t.TempDir(), "db")}
	graphs := filepath.Join("..", "..", "graphs")
	loop, approval := filepath.Join(graphs, "loop.yaml"), filepath.Join(graphs, "approval.yaml")

	// lgrun runs args, wants exit code, and returns the parsed document.
	lgrun := func(section string, code int, args ...string) map[string]any {
		t.Helper()
		out, errOut, got := runCLI(t, false, env, append(args, "-o", "json")...)
		if got != code {
			t.Fatalf("lgrun %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, out, errOut)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("lgrun %s -o json: not one JSON object: %v\n%s", strings.Join(args, " "), err, out)
		}
		d, ok := docs[section]
		if !ok {
			t.Fatalf("docs/cli-json.md has no section %q", section)
		}
		for k := range m {
			if !d.keys[k] {
				t.Errorf("lgrun %s -o json: key %q is not documented in section %q", strings.Join(args, " "), k, section)
			}
		}
		for k := range d.keys {
			if _, ok := m[k]; !ok && !d.optional[k] {
				t.Errorf("lgrun %s -o json: documented key %q is missing", strings.Join(args, " "), k)
			}
		}
		return m
	}
	tested := map[string]bool{}
	check := func(section string, code int, args ...string) map[string]any {
		tested[section] = true
		return lgrun(section, code, args...)
	}

	const runs = "run, resume, fork, replay"
	check(runs, exitPaused, "run", approval, "-t", "a1")
	check(runs, exitOK, "resume", "-t", "a1", "--value", `{"approved": true}`)
	check(runs, exitOK, "run", loop, "-t", "t1")
	check(runs, exitLimit, "run", loop, "-t", "lim", "--max-steps", "1")
	check(runs, exitOK, "run", loop, "--no-db")
	h := check("history", exitOK, "history", "-t", "t1")
	check("history", exitOK, "history", "-t", "t1", "--subgraphs")
	cps := h["checkpoints"].([]any)
	first := cps[len(cps)-1].(map[string]any)["checkpoint"].(string)
	head := cps[0].(map[string]any)["checkpoint"].(string)
	check(runs, exitOK, "fork", "-t", "t1", "-c", first, "--set", "target=2")
	check(runs, exitOK, "replay", "-t", "t1", "-c", first)
	check("state", exitOK, "state", "-t", "t1")
	check("state", exitOK, "state", "-t", "t1", "-c", first)
	check("diff", exitOK, "diff", "-t", "t1", first, head)
	check("threads", exitOK, "threads")
	check("usage", exitOK, "usage", "-t", "t1")
	check("gc", exitOK, "gc", "--keep", "100")
	check("threads delete", exitOK, "threads", "delete", "lim")
	check("validate", exitOK, "validate", loop)
	check("test", exitOK, "test", filepath.Join(graphs, "loop.test.yaml"))
	check("graph", exitOK, "graph", loop)

	var missing []string
	for s := range docs {
		if !tested[s] {
			missing = append(missing, s)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("docs/cli-json.md sections no command was checked against: %v", missing)
	}
}
