package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/lgrun/lgrun/checkpoint/postgres/pgtest"
)

// TestPostgresScripts runs testdata/postgres/*.txtar with LGRUN_DB set to
// a postgres:// URL on a schema of the script's own (see pgtest), so
// every command goes through the Postgres saver.
func TestPostgresScripts(t *testing.T) {
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	pgtest.Name(t) // fails (or skips) when the server is unreachable
	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join("testdata", "postgres"),
		UpdateScripts:       os.Getenv("LGRUN_UPDATE_SCRIPTS") == "1",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup: func(e *testscript.Env) error {
			// The saver creates the schema named by search_path; pgtest
			// drops it when the test ends.
			e.Setenv("LGRUN_DB", pgtest.WithSearchPath(pgtest.ServerURL(), pgtest.Name(t)))
			e.Setenv("REPO", repo)
			e.Setenv("NO_COLOR", "1")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"status":  cmdStatus,
			"jsoneq":  cmdJSONEq,
			"jsonget": cmdJSONGet,
		},
	})
}
