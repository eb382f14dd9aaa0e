package checkpoint

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/lgrun/lgrun/runtime"
)

// DefaultLeaseTTL is how long a run lease lasts without renewal unless
// [Options].LeaseTTL ([MemoryOptions].LeaseTTL) says otherwise. A running process renews its leases
// every third of the TTL, so only a process that died or hung lets one
// expire; a holder on this host that no longer exists is taken over at
// once. Each saver ([SQLite], [Memory]) keeps its own TTL: two savers in
// one process with different TTLs do not affect each other.
const DefaultLeaseTTL = 30 * time.Second

// self identifies this process as a lease owner.
var self = func() struct {
	host  string
	pid   int
	token string
} {
	host, _ := os.Hostname()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return struct {
		host  string
		pid   int
		token string
	}{host, os.Getpid(), hex.EncodeToString(b)}
}()

// leaseDDL is the leases table (layout version 3 creates it with the
// others; version 2 created it on first use, with a rowid).
const leaseDDL = `CREATE TABLE leases (
	thread TEXT PRIMARY KEY,
	token TEXT NOT NULL,
	host TEXT NOT NULL,
	pid INTEGER NOT NULL,
	acquired INTEGER NOT NULL,
	expires INTEGER NOT NULL
) WITHOUT ROWID`

var _ runtime.Locker = (*SQLite)(nil)

// Lock implements runtime.Locker with a row in the leases table.
func (s *SQLite) Lock(ctx context.Context, thread string) (func(), error) {
	token := self.token + "-" + randToken()
	if err := s.takeLease(ctx, thread, token); err != nil {
		return nil, err
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
				_ = s.leaseExec(context.Background(), `UPDATE leases SET expires = ? WHERE thread = ? AND token = ?`, time.Now().Add(s.leaseTTL).UnixNano(), thread, token)
			}
		}
	}()
	return func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			_ = s.leaseExec(context.Background(), `DELETE FROM leases WHERE thread = ? AND token = ?`, thread, token)
		})
	}, nil
}

func randToken() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *SQLite) leaseExec(ctx context.Context, q string, args ...any) error {
	tx, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer s.end(tx)
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return err
	}
	return tx.Commit()
}

// takeLease takes thread's lease unless a live owner holds it.
func (s *SQLite) takeLease(ctx context.Context, thread, token string) error {
	tx, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("take lease: %w", s.describe(err))
	}
	defer s.end(tx)
	var host string
	var pid int
	var acquired, expires int64
	err = tx.QueryRowContext(ctx, `SELECT host, pid, acquired, expires FROM leases WHERE thread = ?`, thread).Scan(&host, &pid, &acquired, &expires)
	now := time.Now()
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("take lease: %w", s.describe(err))
	case expires > now.UnixNano() && !(host == self.host && !processAlive(pid)):
		return &runtime.BusyError{Thread: thread, Owner: fmt.Sprintf("pid %d on %s", pid, host), Since: time.Unix(0, acquired)}
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO leases (thread, token, host, pid, acquired, expires) VALUES (?, ?, ?, ?, ?, ?)`,
		thread, token, self.host, self.pid, now.UnixNano(), now.Add(s.leaseTTL).UnixNano()); err != nil {
		return fmt.Errorf("take lease: %w", s.describe(err))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("take lease: %w", s.describe(err))
	}
	return nil
}

var _ runtime.Locker = (*Memory)(nil)

// Lock implements runtime.Locker within this process, with the lease
// semantics of [SQLite.Lock]: the lease lasts the saver's TTL
// ([MemoryOptions].LeaseTTL) and is renewed every third of it while held;
// an expired lease is taken over, and the old holder's unlock then leaves
// the new holder's lease alone.
func (m *Memory) Lock(_ context.Context, thread string) (func(), error) {
	token := randToken()
	m.mu.Lock()
	if m.leases == nil {
		m.leases = map[string]memLease{}
	}
	if m.leaseTTL <= 0 {
		m.leaseTTL = DefaultLeaseTTL
	}
	ttl := m.leaseTTL
	now := time.Now()
	if l, held := m.leases[thread]; held && l.expires.After(now) {
		m.mu.Unlock()
		return nil, &runtime.BusyError{Thread: thread, Owner: fmt.Sprintf("pid %d on %s", self.pid, self.host), Since: l.acquired}
	}
	m.leases[thread] = memLease{token: token, acquired: now, expires: now.Add(ttl)}
	m.mu.Unlock()
	stop := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				m.mu.Lock()
				if l, ok := m.leases[thread]; ok && l.token == token {
					l.expires = time.Now().Add(ttl)
					m.leases[thread] = l
				}
				m.mu.Unlock()
			}
		}
	}()
	return func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			m.mu.Lock()
			if l, ok := m.leases[thread]; ok && l.token == token {
				delete(m.leases, thread)
			}
			m.mu.Unlock()
		})
	}, nil
}
