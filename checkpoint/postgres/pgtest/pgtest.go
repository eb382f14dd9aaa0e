// Package pgtest gives tests a schema of their own on the machine's
// PostgreSQL server, so that tests against it run in parallel.
//
// The server is LGRUN_PG_TEST_URL, by default
// postgres://postgres@127.0.0.1:5432/test (trust auth). When it cannot be
// reached the test fails, unless LGRUN_PG_SKIP=1 is set and CI is not
// "true": then it is skipped, saying why.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultURL is the server the tests use unless LGRUN_PG_TEST_URL says
// otherwise.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// ServerURL returns the test server's URL.
func ServerURL() string {
	if u := os.Getenv("LGRUN_PG_TEST_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Schema creates a fresh schema lgrun_test_<random> and drops it (with
// everything in it) when tb ends. It returns its name and the server's URL
// with search_path set to it.
func Schema(tb testing.TB) (name, u string) {
	tb.Helper()
	name = Name(tb)
	exec(tb, `CREATE SCHEMA `+name)
	return name, WithSearchPath(ServerURL(), name)
}

// Name returns a fresh schema name lgrun_test_<random> without creating
// the schema, and drops the schema, if anything created it, when tb ends.
func Name(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "lgrun_test_" + hex.EncodeToString(b)
	exec(tb, `SELECT 1`) // fail (or skip) here when the server is unreachable
	tb.Cleanup(func() { drop(tb, name) })
	return name
}

// drop drops schema name and everything in it. Two tests' drops (or a
// drop and a worker of the test that is still stopping) can deadlock on
// the catalog under load; PostgreSQL then aborts one of them, which is
// retried.
func drop(tb testing.TB, name string) {
	tb.Helper()
	q := `DROP SCHEMA IF EXISTS ` + name + ` CASCADE`
	for i := 0; ; i++ {
		err := try(q)
		var pe *pgconn.PgError
		if err == nil {
			return
		}
		if i < 5 && errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001" || pe.Code == "55P03") {
			time.Sleep(time.Duration(50<<i) * time.Millisecond)
			continue
		}
		tb.Fatalf("%s: %v", q, err)
	}
}

// try runs q on the test server once.
func try(q string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, q)
	return err
}

// exec runs q on the test server.
func exec(tb testing.TB, q string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		if os.Getenv("LGRUN_PG_SKIP") == "1" && os.Getenv("CI") != "true" {
			tb.Skipf("PostgreSQL unreachable (LGRUN_PG_SKIP=1): %v", err)
		}
		tb.Fatalf("PostgreSQL test server unreachable (start it, set LGRUN_PG_TEST_URL, or set LGRUN_PG_SKIP=1 to skip locally): %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, q); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
}

// WithSearchPath returns the URL u with search_path set to schema.
func WithSearchPath(u, schema string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	q := p.Query()
	q.Set("search_path", schema)
	p.RawQuery = q.Encode()
	return p.String()
}
