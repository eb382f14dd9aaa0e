package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lgrun/lgrun/checkpoint"

	"github.com/lgrun/lgrun/checkpoint/postgres/pgtest"
	"github.com/lgrun/lgrun/server"
	"github.com/lgrun/lgrun/server/pgstore"
)

func openPG(t *testing.T) (*pgstore.Store, *pgxpool.Pool) {
	t.Helper()
	_, u := pgtest.Schema(t)
	pool, err := pgxpool.New(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st, err := pgstore.New(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	return st, pool
}

// TestStoreContract runs the same checks on the SQLite store and the
// Postgres store: they must behave alike for the server.
func TestStoreContract(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		st, err := server.OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		contract(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		st, _ := openPG(t)
		contract(t, st)
	})
}

func contract(t *testing.T, st server.Store) {
	ctx := context.Background()
	t0 := time.Unix(1700000000, 0).UTC()
	if _, err := st.Thread(ctx, "nope"); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("missing thread: %v, want ErrNotFound", err)
	}
	if _, err := st.Run(ctx, "nope"); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("missing run: %v, want ErrNotFound", err)
	}
	if _, err := st.Assistant(ctx, "nope"); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("missing assistant: %v, want ErrNotFound", err)
	}
	for i, id := range []string{"t1", "t2"} {
		th := &server.Thread{ID: id, Created: t0, Updated: t0.Add(time.Duration(i) * time.Second), Metadata: map[string]any{"n": float64(i)}, Status: "idle"}
		if err := st.PutThread(ctx, th); err != nil {
			t.Fatal(err)
		}
	}
	th, err := st.Thread(ctx, "t1")
	if err != nil || th.Metadata["n"] != float64(0) || th.Status != "idle" {
		t.Fatalf("thread t1 = %+v, %v", th, err)
	}
	th.Status, th.Updated = "busy", t0.Add(time.Hour)
	if err := st.PutThread(ctx, th); err != nil {
		t.Fatal(err)
	}
	ths, err := st.Threads(ctx)
	if err != nil || len(ths) != 2 || ths[0].ID != "t1" || ths[0].Status != "busy" || ths[1].ID != "t2" {
		t.Fatalf("threads = %v, %v (want t1 busy, then t2)", ths, err)
	}

	var runs []*server.Run
	for i, status := range []string{"success", "running", "pending"} {
		r := &server.Run{ID: "r" + string(rune('a'+i)), ThreadID: "t1", Status: status, Created: t0,
			Metadata: map[string]any{}, Request: &server.RunRequest{AssistantID: "loop"}}
		if err := st.PutRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		if r.Seq == 0 || i > 0 && r.Seq <= runs[i-1].Seq {
			t.Fatalf("run %d got seq %d after %v", i, r.Seq, runs)
		}
		runs = append(runs, r)
	}
	seq := runs[0].Seq
	runs[0].Error = "boom"
	if err := st.PutRun(ctx, runs[0]); err != nil || runs[0].Seq != seq {
		t.Fatalf("update kept seq %d → %d: %v", seq, runs[0].Seq, err)
	}
	got, err := st.Run(ctx, "ra")
	if err != nil || got.Error != "boom" || got.Request.AssistantID != "loop" {
		t.Fatalf("run ra = %+v, %v", got, err)
	}
	list, err := st.Runs(ctx, "t1")
	if err != nil || len(list) != 3 || list[0].ID != "rc" || list[2].ID != "ra" {
		t.Fatalf("runs of t1 = %v, %v (want newest first)", list, err)
	}
	unf, err := st.Unfinished(ctx)
	if err != nil || len(unf) != 2 || unf[0].ID != "rb" || unf[1].ID != "rc" {
		t.Fatalf("unfinished = %v, %v (want rb, rc)", unf, err)
	}

	for i := 0; i < 3; i++ {
		if err := st.AppendEvent(ctx, "rb", server.StoredEvent{ID: i, Event: "values", Data: json.RawMessage(`{"i":` + string(rune('0'+i)) + `}`)}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := st.Events(ctx, "rb", 0)
	if err != nil || len(evs) != 2 || evs[0].ID != 1 || string(evs[1].Data) != `{"i":2}` {
		t.Fatalf("events after 0 = %v, %v", evs, err)
	}
	if err := st.DeleteRun(ctx, "rb"); err != nil {
		t.Fatal(err)
	}
	if evs, _ := st.Events(ctx, "rb", -1); len(evs) != 0 {
		t.Fatalf("events of a deleted run: %v", evs)
	}
	if err := st.AppendEvent(ctx, "rc", server.StoredEvent{ID: 0, Event: "metadata", Data: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteThread(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Run(ctx, "rc"); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("run of a deleted thread: %v", err)
	}
	if evs, _ := st.Events(ctx, "rc", -1); len(evs) != 0 {
		t.Fatalf("events of a deleted thread's run: %v", evs)
	}
	if _, err := st.Thread(ctx, "t2"); err != nil {
		t.Fatalf("the other thread: %v", err)
	}

	for v := 1; v <= 2; v++ {
		a := &server.Assistant{ID: "a1", GraphID: "loop", Name: "v" + string(rune('0'+v)), Version: v, Metadata: map[string]any{}, Updated: t0.Add(time.Duration(v) * time.Second)}
		if err := st.PutAssistant(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	a, err := st.Assistant(ctx, "a1")
	if err != nil || a.Version != 2 || a.Name != "v2" {
		t.Fatalf("assistant = %+v, %v", a, err)
	}
	vs, err := st.AssistantVersions(ctx, "a1")
	if err != nil || len(vs) != 2 || vs[0].Version != 2 {
		t.Fatalf("versions = %v, %v", vs, err)
	}
	as, err := st.Assistants(ctx)
	if err != nil || len(as) != 1 {
		t.Fatalf("assistants = %v, %v", as, err)
	}
	if err := st.DeleteAssistant(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	if vs, _ := st.AssistantVersions(ctx, "a1"); len(vs) != 0 {
		t.Fatalf("versions after delete: %v", vs)
	}
}

// TestMigrateConcurrently opens the store from several pools at once on
// a fresh schema: the advisory lock serialises them and every one
// succeeds, with the migration applied once.
func TestMigrateConcurrently(t *testing.T) {
	_, u := pgtest.Schema(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pool, err := pgxpool.New(context.Background(), u)
			if err != nil {
				errs[i] = err
				return
			}
			defer pool.Close()
			_, errs[i] = pgstore.New(context.Background(), pool)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("opener %d: %v", i, err)
		}
	}
	pool, err := pgxpool.New(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM lgrun_server_migrations`).Scan(&n); err != nil || n != pgstore.SchemaVersion {
		t.Fatalf("migrations recorded: %d, %v (want %d)", n, err, pgstore.SchemaVersion)
	}
}

// TestOkReportsDatabase checks GET /ok answers 200 while the store's
// database answers and 503, naming the database, once it does not.
func TestOkReportsDatabase(t *testing.T) {
	st, pool := openPG(t)
	srv, err := server.New(server.Options{Saver: checkpoint.NewMemory(), Store: st, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	ok := func() (int, string) {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/ok", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := ok(); code != 200 || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("/ok with the database up: %d %s", code, body)
	}
	pool.Close()
	if code, body := ok(); code != 503 || !strings.Contains(body, `"ok":false`) || !strings.Contains(body, "database") {
		t.Fatalf("/ok with the database gone: %d %s", code, body)
	}
}
