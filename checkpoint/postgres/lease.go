package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/lgrun/lgrun/runtime"
)

// owner names this process in the leases it holds.
var owner = func() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("pid %d on %s", os.Getpid(), host)
}()

// Lock implements runtime.Locker with a row in the leases table. A lease
// is taken when there is none or the one there has expired, by the
// database's clock, in one statement (an upsert whose update only applies
// to an expired row), so two processes never both get it. The holder
// renews it every third of the TTL; one that died loses it when the TTL
// runs out. (A host-local check that the holder's process still exists,
// as SQLite's saver does, means nothing across machines, so there is
// none.) The lease only keeps a second runner from starting: the head's
// compare-and-swap is what stops a runner that lost its lease from
// committing over another's work.
func (s *Postgres) Lock(ctx context.Context, thread string) (func(), error) {
	token := randToken()
	for {
		ok, err := s.takeLease(ctx, thread, token)
		if err != nil || ok {
			if err != nil {
				return nil, err
			}
			break
		}
		var who string
		var since time.Time
		err = s.pool.QueryRow(ctx, `SELECT owner, acquired FROM leases WHERE thread = $1 AND expires > now()`, thread).Scan(&who, &since)
		if err == nil {
			return nil, &runtime.BusyError{Thread: thread, Owner: who, Since: since}
		}
		if !isNoRows(err) {
			return nil, fmt.Errorf("take lease: %w", s.describe(err))
		}
		// Released or expired in between: try again.
	}
	stop := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(s.leaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				// A failed renewal is not fatal: the head's compare-and-swap
				// still protects the thread if another process takes over.
				ctx, cancel := context.WithTimeout(context.Background(), s.leaseTTL/3)
				_, _ = s.pool.Exec(ctx, `UPDATE leases SET expires = now() + $3 * interval '1 microsecond' WHERE thread = $1 AND token = $2`, thread, token, s.leaseTTL.Microseconds())
				cancel()
			}
		}
	}()
	return func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _ = s.pool.Exec(ctx, `DELETE FROM leases WHERE thread = $1 AND token = $2`, thread, token)
		})
	}, nil
}

// takeLease takes thread's lease for token unless a live one is held.
func (s *Postgres) takeLease(ctx context.Context, thread, token string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO leases (thread, token, owner, acquired, expires)
		VALUES ($1, $2, $3, now(), now() + $4 * interval '1 microsecond')
		ON CONFLICT (thread) DO UPDATE SET token = excluded.token, owner = excluded.owner, acquired = excluded.acquired, expires = excluded.expires
		WHERE leases.expires <= now()`, thread, token, owner, s.leaseTTL.Microseconds())
	if err != nil {
		return false, fmt.Errorf("take lease: %w", s.describe(err))
	}
	return tag.RowsAffected() == 1, nil
}

func randToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
