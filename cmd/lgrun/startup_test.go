package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestStartupInitAllocations is the start-up guard of BENCHMARKS.md
// ("Start-up"): the real binary, run on a 1-node graph with --no-db and
// GODEBUG=inittrace=1, reports what each package's init allocated. The
// packages of this module must stay lazy: work they need only for some
// commands or only to explain a mistake (regexps, schemas, tables) is done
// on first use. Allocation counts are deterministic, unlike timings. (That a
// good graph loads without compiling the graph schema is checked in package
// spec, TestGoodGraphSkipsSchemaCompile; that the lazy metaschemas work,
// concurrently, in TestJSONSchemaMetaschemasLazy.)
func TestStartupInitAllocations(t *testing.T) {
	// lazyDeps are dependencies patched to be lazy, held to the same budget:
	// jsonschema compiled five drafts' metaschemas in init (1.7 MB), see
	// third_party/jsonschema/LGRUN.md.
	lazyDeps := map[string]bool{"github.com/santhosh-tekuri/jsonschema/v6": true}
	// tight holds packages made lazy since to what their init still
	// allocates (BENCHMARKS.md, "Start-up and peak RSS, second pass"):
	// checkpoint's CRC-32C tables and lease owner token (9.9 KB before);
	// checkpoint/postgres's block checksums take the same table.
	tight := map[string]int{"github.com/lgrun/lgrun/checkpoint": 2 << 10, "github.com/lgrun/lgrun/checkpoint/postgres": 2 << 10}
	bin := buildLgrun(t)
	dir := t.TempDir()
	graph := filepath.Join(dir, "x.yaml")
	src := "version: 1\nname: x\nstate:\n  out: {type: string}\nnodes:\n  only:\n    kind: set\n    set:\n      out: '\"done\"'\nedges:\n  - {from: START, to: only}\n  - {from: only, to: END}\n"
	if err := os.WriteFile(graph, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", graph, "--no-db", "-q")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "GODEBUG=inittrace=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("lgrun run: %v\n%s%s", err, stdout.Bytes(), stderr.Bytes())
	}
	if !strings.HasPrefix(stdout.String(), "✔ done in 1 step") {
		t.Fatalf("stdout %q; want the run done", stdout.String())
	}
	// "init github.com/lgrun/lgrun/spec @13 ms, 0.32 ms clock, 223832 bytes, 1049 allocs"
	const budget = 16 << 10 // bytes per package of this module
	var own, all, n int
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 11 || f[0] != "init" || f[8] != "bytes," {
			continue
		}
		b, err := strconv.Atoi(f[7])
		if err != nil {
			t.Fatalf("inittrace line %q: %v", sc.Text(), err)
		}
		n++
		all += b
		if pkg := f[1]; pkg == "github.com/lgrun/lgrun" || strings.HasPrefix(pkg, "github.com/lgrun/lgrun/") || lazyDeps[pkg] {
			if !lazyDeps[pkg] {
				own += b
			}
			max := budget
			if m, ok := tight[pkg]; ok {
				max = m
			}
			if b > max {
				t.Errorf("init of %s allocates %d bytes (%s); want at most %d: do the work on first use", pkg, b, f[9], max)
			}
		}
	}
	if n < 100 {
		t.Fatalf("only %d inittrace lines in stderr; GODEBUG=inittrace=1 not honoured?\n%s", n, stderr.Bytes())
	}
	t.Logf("%d package inits allocate %d bytes, %d of them in this module's", n, all, own)
}
