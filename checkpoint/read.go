package checkpoint

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lgrun/lgrun/runtime"
)

// Get implements runtime.Saver. It reads the checkpoint's chain back to the
// nearest snapshot in one query and applies the deltas forward.
func (s *SQLite) Get(ctx context.Context, thread, id string) (*runtime.Checkpoint, error) {
	if id == "" {
		if err := s.db.QueryRowContext(ctx, `SELECT head FROM threads WHERE id = ?`, thread).Scan(&id); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil, fmt.Errorf("thread %q: %w", thread, runtime.ErrNotFound)
			}
			return nil, fmt.Errorf("read thread: %w", s.describe(err))
		}
	}
	values, _, err := s.values(ctx, thread, id)
	if err != nil {
		return nil, err
	}
	cps, err := s.query(ctx, `WHERE thread = ? AND id = ?`, thread, id)
	if err != nil {
		return nil, err
	}
	if len(cps) == 0 {
		return nil, fmt.Errorf("checkpoint %q of thread %q: %w", id, thread, runtime.ErrNotFound)
	}
	cp := cps[0]
	cp.Values = values
	if cp.Pending, err = s.pending(ctx, thread, id); err != nil {
		return nil, err
	}
	return cp, nil
}

// chainStats describes what rebuilding a checkpoint's values read.
type chainStats struct {
	Rows      int // checkpoint rows
	Snapshots int // rows with a snapshot (1 unless damaged)
	Bytes     int // snapshot and delta bytes
}

// values rebuilds a checkpoint's values: it reads the chain back to the
// nearest snapshot in one query and applies the deltas forward, composed
// (see [composer]).
func (s *SQLite) values(ctx context.Context, thread, id string) (map[string]any, chainStats, error) {
	rows, err := s.db.QueryContext(ctx, `
		WITH RECURSIVE chain (id, parent, snapshot, depth) AS (
			SELECT id, parent, snapshot IS NOT NULL, 0 FROM checkpoints WHERE thread = ?1 AND id = ?2
			UNION ALL
			SELECT c.id, c.parent, c.snapshot IS NOT NULL, chain.depth + 1
			FROM checkpoints c JOIN chain ON c.thread = ?1 AND c.id = chain.parent
			WHERE NOT chain.snapshot
		)
		SELECT c.delta, c.snapshot FROM chain JOIN checkpoints c ON c.thread = ?1 AND c.id = chain.id
		ORDER BY chain.depth DESC`, thread, id)
	var st chainStats
	if err != nil {
		return nil, st, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
	}
	defer rows.Close()
	var comp *composer
	for rows.Next() {
		var delta, snap []byte
		if err := rows.Scan(&delta, &snap); err != nil {
			return nil, st, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
		}
		st.Rows++
		st.Bytes += len(delta) + len(snap)
		if snap != nil {
			st.Snapshots++
			values, err := decodeMap(snap)
			if err != nil {
				return nil, st, fmt.Errorf("checkpoint %s of thread %q: corrupt snapshot: %w", id, thread, err)
			}
			comp = newComposer(values)
			continue
		}
		if comp == nil {
			return nil, st, fmt.Errorf("checkpoint %s of thread %q: delta chain has no snapshot (database %s damaged)", id, thread, s.path)
		}
		var d runtime.Delta
		if err := decodeJSON(delta, &d); err != nil {
			return nil, st, fmt.Errorf("checkpoint %s of thread %q: corrupt delta: %w", id, thread, err)
		}
		normalizeDelta(d)
		if err := comp.add(d); err != nil {
			return nil, st, fmt.Errorf("checkpoint %s of thread %q: %w", id, thread, err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, st, fmt.Errorf("read checkpoint chain: %w", s.describe(err))
	}
	if st.Rows == 0 {
		return nil, st, fmt.Errorf("checkpoint %q of thread %q: %w", id, thread, runtime.ErrNotFound)
	}
	values, err := comp.result()
	if err != nil {
		return nil, st, fmt.Errorf("checkpoint %s of thread %q: %w", id, thread, err)
	}
	return values, st, nil
}

func (s *SQLite) pending(ctx context.Context, thread, id string) ([]runtime.PendingWrite, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT data FROM writes WHERE thread = ? AND checkpoint = ? ORDER BY seq`, thread, id)
	if err != nil {
		return nil, fmt.Errorf("read pending writes: %w", s.describe(err))
	}
	defer rows.Close()
	var out []runtime.PendingWrite
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, err
		}
		var w runtime.PendingWrite
		if err := decodeJSON(data, &w); err != nil {
			return nil, fmt.Errorf("corrupt pending write: %w", err)
		}
		if w.Result != nil {
			for i := range w.Result.Writes {
				w.Result.Writes[i].Value = normalize(w.Result.Writes[i].Value)
			}
			for i := range w.Result.Records {
				w.Result.Records[i] = normalize(w.Result.Records[i])
			}
		}
		if w.Interrupt != nil {
			w.Interrupt.Payload = normalize(w.Interrupt.Payload)
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// List implements runtime.Saver.
func (s *SQLite) List(ctx context.Context, thread string, limit int) ([]*runtime.Checkpoint, error) {
	q := `WHERE thread = ? ORDER BY id DESC`
	args := []any{thread}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	cps, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	if len(cps) == 0 {
		if _, err := s.Thread(ctx, thread); err != nil {
			return nil, err
		}
	}
	return cps, nil
}

func (s *SQLite) query(ctx context.Context, where string, args ...any) ([]*runtime.Checkpoint, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT thread, id, parent, step, turn_step, next, waiting, source, writes, graph, time, usage, totals, records, delta FROM checkpoints `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
	}
	defer rows.Close()
	var out []*runtime.Checkpoint
	var gids []int64
	graphs := map[int64][3]string{}
	for rows.Next() {
		var cp runtime.Checkpoint
		var next, src string
		var waiting, writes, usage, totals, records sql.NullString
		var gid, t int64
		var delta []byte
		if err := rows.Scan(&cp.Thread, &cp.ID, &cp.ParentID, &cp.Step, &cp.TurnStep, &next, &waiting, &src, &writes, &gid, &t, &usage, &totals, &records, &delta); err != nil {
			return nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
		}
		m := &cp.Metadata
		m.Source = runtime.Source(src)
		m.Time = time.Unix(0, t).UTC()
		errs := []error{decodeJSON([]byte(next), &cp.Next), decodeJSON(delta, &cp.Delta)}
		if waiting.Valid {
			errs = append(errs, decodeJSON([]byte(waiting.String), &cp.Waiting))
		}
		if writes.Valid {
			errs = append(errs, decodeJSON([]byte(writes.String), &m.Writes))
		}
		if usage.Valid {
			errs = append(errs, decodeJSON([]byte(usage.String), &m.Usage))
		}
		if totals.Valid {
			errs = append(errs, decodeJSON([]byte(totals.String), &m.Totals))
		}
		if records.Valid {
			errs = append(errs, decodeJSON([]byte(records.String), &m.Records))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("checkpoint %s of thread %q is corrupt: %w", cp.ID, cp.Thread, err)
		}
		normalizeDelta(cp.Delta)
		for _, recs := range m.Records {
			for i := range recs {
				recs[i] = normalize(recs[i])
			}
		}
		out = append(out, &cp)
		gids = append(gids, gid)
		graphs[gid] = [3]string{}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", s.describe(err))
	}
	rows.Close()
	for gid := range graphs {
		var g [3]string
		if err := s.stmtGraphGet.QueryRowContext(ctx, gid).Scan(&g[0], &g[1], &g[2]); err != nil {
			return nil, fmt.Errorf("read graph record: %w", s.describe(err))
		}
		graphs[gid] = g
	}
	for i, cp := range out {
		g := graphs[gids[i]]
		cp.Metadata.Graph, cp.Metadata.GraphHash, cp.Metadata.Version = g[0], g[1], g[2]
	}
	return out, nil
}

// Thread implements runtime.Saver.
func (s *SQLite) Thread(ctx context.Context, id string) (*runtime.Thread, error) {
	ts, err := s.threads(ctx, `WHERE id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("thread %q: %w", id, runtime.ErrNotFound)
	}
	return ts[0], nil
}

// Threads implements runtime.Saver.
func (s *SQLite) Threads(ctx context.Context) ([]*runtime.Thread, error) {
	return s.threads(ctx, `ORDER BY updated DESC, id`)
}

func (s *SQLite) threads(ctx context.Context, where string, args ...any) ([]*runtime.Thread, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, head, status, error, graph, graph_hash, graph_file, config, created, updated FROM threads `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read threads: %w", s.describe(err))
	}
	defer rows.Close()
	var out []*runtime.Thread
	for rows.Next() {
		var t runtime.Thread
		var status, config string
		var created, updated int64
		if err := rows.Scan(&t.ID, &t.Head, &status, &t.Error, &t.Graph, &t.GraphHash, &t.GraphFile, &config, &created, &updated); err != nil {
			return nil, fmt.Errorf("read threads: %w", s.describe(err))
		}
		t.Status = runtime.Status(status)
		t.Created, t.Updated = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
		if err := json.Unmarshal([]byte(config), &t.Config); err != nil {
			return nil, fmt.Errorf("thread %q: corrupt config: %w", t.ID, err)
		}
		out = append(out, &t)
	}
	return out, rows.Err()
}
