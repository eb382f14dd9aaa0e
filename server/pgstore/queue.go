package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lgrun/lgrun/server"
)

// The channels of LISTEN/NOTIFY; payloads are run ids.
const (
	chanRuns   = "lgrun_runs"   // a run was queued or a thread freed: workers claim
	chanEvents = "lgrun_events" // a run stored new stream events
	chanCancel = "lgrun_cancel" // a run was cancelled: its worker stops it
)

var _ server.Queue = (*Store)(nil)

// Claim takes the oldest pending run whose thread has no earlier
// unfinished run and no running one, skipping rows other workers are
// claiming (FOR UPDATE SKIP LOCKED). The partial unique index
// server_runs_one_running makes a second running run of a thread
// impossible whatever the query does: such a claim fails and finds
// nothing.
func (s *Store) Claim(ctx context.Context, worker, token string) (*server.Run, string, error) {
	var data, cancel string
	err := s.pool.QueryRow(ctx, `UPDATE server_runs SET status = 'running', worker = $1, token = $2, heartbeat = now()
WHERE id = (SELECT r.id FROM server_runs r
	WHERE r.status = 'pending'
	  AND NOT EXISTS (SELECT 1 FROM server_runs o WHERE o.thread_id = r.thread_id
	      AND (o.status = 'running' OR o.status = 'pending' AND o.seq < r.seq))
	ORDER BY r.seq LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING data, cancel`, worker, token).Scan(&data, &cancel)
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, "", nil
	case errors.As(err, &pe) && pe.Code == "23505": // another worker won the thread
		return nil, "", nil
	case err != nil:
		return nil, "", fmt.Errorf("claim a run: %w", err)
	}
	r := &server.Run{}
	if err := json.Unmarshal([]byte(data), r); err != nil {
		return nil, "", fmt.Errorf("decode claimed run: %w", err)
	}
	r.Status = "running"
	return r, cancel, nil
}

// Heartbeat renews the claims of worker on runs and returns those of them
// it no longer holds (swept and maybe claimed by another worker, or
// finished or deleted by someone else).
func (s *Store) Heartbeat(ctx context.Context, worker string, runs map[string]string) ([]string, error) {
	if len(runs) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(runs))
	tokens := make([]string, 0, len(runs))
	for id, tok := range runs {
		ids = append(ids, id)
		tokens = append(tokens, tok)
	}
	rows, err := s.pool.Query(ctx, `WITH mine AS (SELECT * FROM unnest($2::text[], $3::text[]) AS m (id, token)),
renewed AS (UPDATE server_runs r SET heartbeat = now() FROM mine
	WHERE r.id = mine.id AND r.token = mine.token AND r.worker = $1 AND r.status = 'running' RETURNING r.id)
SELECT id FROM mine WHERE id NOT IN (SELECT id FROM renewed)`, worker, ids, tokens)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	lost, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	return lost, nil
}

// Sweep puts back to pending the running runs whose worker has not
// renewed its claim for after, and wakes the workers.
func (s *Store) Sweep(ctx context.Context, after time.Duration) (int, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE server_runs SET status = 'pending', worker = NULL, token = NULL,
	data = jsonb_set(data::jsonb, '{status}', '"pending"')::text
WHERE status = 'running' AND heartbeat < now() - $1 * interval '1 microsecond'`, after.Microseconds())
	if err != nil {
		return 0, fmt.Errorf("sweep: %w", err)
	}
	n := int(tag.RowsAffected())
	if n > 0 {
		err = s.Notify(ctx, "runs", "")
	}
	return n, err
}

// Release puts the runs worker holds back to pending (a worker shutting
// down), as the sweeper would after its heartbeats stop.
func (s *Store) Release(ctx context.Context, worker string) error {
	_, err := s.pool.Exec(ctx, `UPDATE server_runs SET status = 'pending', worker = NULL, token = NULL,
	data = jsonb_set(data::jsonb, '{status}', '"pending"')::text
WHERE status = 'running' AND worker = $1`, worker)
	if err == nil {
		err = s.Notify(ctx, "runs", "")
	}
	return err
}

// Cancel records a cancel of run with action and tells its worker.
func (s *Store) Cancel(ctx context.Context, run, action string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE server_runs SET cancel = $2 WHERE id = $1 AND cancel = ''`, run, action); err != nil {
		return fmt.Errorf("cancel run %q: %w", run, err)
	}
	return s.Notify(ctx, "cancel", run+" "+action)
}

// Busy reports whether thread has an unfinished run besides except.
func (s *Store) Busy(ctx context.Context, thread, except string) (bool, error) {
	var busy bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM server_runs WHERE thread_id = $1 AND id <> $2 AND status IN ('pending', 'running'))`, thread, except).Scan(&busy)
	if err != nil {
		return false, fmt.Errorf("is thread %q busy: %w", thread, err)
	}
	return busy, nil
}

func channel(kind string) string {
	switch kind {
	case "events":
		return chanEvents
	case "cancel":
		return chanCancel
	}
	return chanRuns
}

// Notify sends payload on the channel of kind (runs, events, cancel).
func (s *Store) Notify(ctx context.Context, kind, payload string) error {
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, channel(kind), payload); err != nil {
		return fmt.Errorf("notify %s: %w", kind, err)
	}
	return nil
}

// Listen calls f(kind, payload) for each notification until ctx is done,
// holding one connection of the pool; after a lost connection it
// reconnects, calling f("runs", "") and f("events", "") so the caller
// rechecks what it may have missed.
func (s *Store) Listen(ctx context.Context, f func(kind, payload string)) error {
	for ctx.Err() == nil {
		err := s.listen(ctx, f)
		if ctx.Err() != nil {
			return nil
		}
		_ = err
		f("runs", "")
		f("events", "")
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (s *Store) listen(ctx context.Context, f func(kind, payload string)) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	for _, c := range []string{chanRuns, chanEvents, chanCancel} {
		if _, err := conn.Exec(ctx, "LISTEN "+c); err != nil {
			return err
		}
	}
	defer func() {
		// The connection goes back to the pool: stop listening on it.
		uctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "UNLISTEN *"); err != nil {
			conn.Conn().Close(uctx)
		}
	}()
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case chanEvents:
			f("events", n.Payload)
		case chanCancel:
			f("cancel", n.Payload)
		default:
			f("runs", n.Payload)
		}
	}
}
