package lgrun_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lgrun/lgrun"
	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/checkpoint/postgres"
	"github.com/lgrun/lgrun/checkpoint/postgres/pgtest"
)

// Open picks the saver by the database's name: a postgres:// or
// postgresql:// URL is PostgreSQL, anything else an SQLite path.
func TestOpenDispatches(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	s, err := lgrun.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*checkpoint.SQLite); !ok || s.Path() != path {
		t.Errorf("Open(%s) = %T %s, want SQLite", path, s, s.Path())
	}
	s.Close()
	_, u := pgtest.Schema(t)
	for _, u := range []string{u, strings.Replace(u, "postgres://", "postgresql://", 1)} {
		s, err := lgrun.Open(ctx, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := s.(*postgres.Postgres); !ok || !strings.HasPrefix(s.Path(), "postgres ") {
			t.Errorf("Open(%s) = %T %s, want Postgres", u, s, s.Path())
		}
		s.Close()
	}
}
