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

// self identifies this process as a lease owner. It is made on first use:
// a process that takes no lease (lgrun run --no-db) does not seed
// crypto/rand's generator in its package init.
var self = sync.OnceValue(func() leaseOwner {
	host, _ := os.Hostname()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return leaseOwner{host, os.Getpid(), hex.EncodeToString(b)}
})

// leaseOwner is this process as a lease owner: its host, its pid and a
// random token that tells it from an earlier process with the same pid.
type leaseOwner struct {
	host  string
	pid   int
	token string
}

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

var _ runtime.LockingCommitter = (*SQLite)(nil)

// Lock implements runtime.Locker with a row in the leases table.
func (s *SQLite) Lock(ctx context.Context, thread string) (func(), error) {
	token := newLeaseToken()
	if err := s.takeLease(ctx, thread, token); err != nil {
		return nil, err
	}
	return s.hold(thread, token), nil
}

// CommitLocked implements runtime.LockingCommitter: the lease row is
// checked and inserted, as [SQLite.Lock] does, in the transaction of the
// commit, before its head's compare-and-swap. A run of a new thread then
// takes no transaction of its own for its lease.
func (s *SQLite) CommitLocked(ctx context.Context, c *runtime.Commit) (func(), error) {
	token := newLeaseToken()
	if err := s.commit(ctx, c, token); err != nil {
		return nil, err
	}
	return s.hold(c.Thread.ID, token), nil
}

func newLeaseToken() string { return self().token + "-" + randToken() }

// hold renews the lease (thread, token), taken in a committed transaction,
// every third of the TTL until the returned unlock releases it. The
// renewal is a timer, not a goroutine: a run shorter than a third of the
// TTL (most) starts none.
func (s *SQLite) hold(thread, token string) func() {
	h := &heldLease{s: s, thread: thread, token: token}
	h.mu.Lock()
	h.timer = time.AfterFunc(s.leaseTTL/3, h.renew)
	h.mu.Unlock()
	return h.unlock
}

// heldLease is a lease this process holds (see [SQLite.hold]).
type heldLease struct {
	s             *SQLite
	thread, token string
	mu            sync.Mutex // held by a renewal in progress
	timer         *time.Timer
	released      bool
}

func (h *heldLease) renew() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return
	}
	// A failed renewal is not fatal: the head's compare-and-swap still
	// protects the thread if another process takes over.
	_ = h.s.leaseExec(context.Background(), `UPDATE leases SET expires = ? WHERE thread = ? AND token = ?`, time.Now().Add(h.s.leaseTTL).UnixNano(), h.thread, h.token)
	h.timer.Reset(h.s.leaseTTL / 3)
}

// unlock stops the renewals, waiting for one in progress, and releases
// the lease; calls after the first do nothing.
func (h *heldLease) unlock() {
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return
	}
	h.released = true
	h.timer.Stop()
	h.mu.Unlock()
	h.s.release(h.thread, h.token)
}

// Releasing a lease deletes its row in the next write transaction of the
// handle (the next run's lease or commit, typically microseconds later),
// or within [releaseDelay] when no transaction comes, or when the handle
// closes: a run then costs one transaction less. Meanwhile the lease's
// token is listed in released, so that this process (through any handle)
// treats the row as free at once; another process sees it go within about
// releaseDelay.
const releaseDelay = time.Millisecond

// released holds the tokens of this process's leases that were released
// but whose rows may not have been deleted yet.
var released sync.Map // token → struct{}

// leaseRef names a lease row, queued for deletion at time at.
type leaseRef struct {
	thread, token string
	at            time.Time
}

// release queues the deletion of a lease's row (see releaseDelay).
func (s *SQLite) release(thread, token string) {
	released.Store(token, struct{}{})
	s.mu.Lock()
	s.releases = append(s.releases, leaseRef{thread, token, time.Now()})
	arm := s.releaseTimer == nil
	if arm {
		s.releaseTimer = time.AfterFunc(releaseDelay, s.flushReleases)
	}
	s.mu.Unlock()
}

// flushReleases deletes the rows of released leases still queued, in a
// transaction of their own, once the oldest has waited releaseDelay: when
// transactions come more often (runs one after the other), they take the
// rows and this one waits again instead of taking the write lock.
func (s *SQLite) flushReleases() {
	s.mu.Lock()
	s.releaseTimer = nil
	n := len(s.releases)
	if n > 0 {
		if wait := releaseDelay - time.Since(s.releases[0].at); wait > 0 {
			s.releaseTimer = time.AfterFunc(wait, s.flushReleases)
			s.mu.Unlock()
			return
		}
	}
	s.mu.Unlock()
	if n == 0 {
		return
	}
	s.deleteQueuedReleases()
}

// deleteQueuedReleases deletes the rows of the queued released leases now,
// in a transaction of their own.
func (s *SQLite) deleteQueuedReleases() {
	tx, err := s.begin(context.Background())
	if err != nil {
		return // the next transaction, or Close, tries again
	}
	defer s.end(tx)
	_ = tx.Commit()
}

// deleteReleased deletes the rows of the queued released leases in tx
// (called by begin); Commit dequeues them.
func (s *SQLite) deleteReleased(ctx context.Context, tx *wtx) {
	s.mu.Lock()
	refs := append([]leaseRef(nil), s.releases...)
	s.mu.Unlock()
	for _, r := range refs {
		if _, err := tx.ExecContext(ctx, `DELETE FROM leases WHERE thread = ? AND token = ?`, r.thread, r.token); err != nil {
			return // left queued
		}
		tx.released = append(tx.released, r)
	}
}

// releasedDone dequeues the released leases tx deleted, once committed.
func (s *SQLite) releasedDone(tx *wtx) {
	if len(tx.released) == 0 {
		return
	}
	done := map[string]bool{}
	for _, r := range tx.released {
		done[r.token] = true
		released.Delete(r.token)
	}
	s.mu.Lock()
	kept := s.releases[:0]
	for _, r := range s.releases {
		if !done[r.token] {
			kept = append(kept, r)
		}
	}
	s.releases = kept
	s.mu.Unlock()
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
	if err := s.putLease(ctx, tx, thread, token); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("take lease: %w", s.describe(err))
	}
	return nil
}

// putLease writes thread's lease row with token in tx, or returns a
// [runtime.BusyError] when a live owner holds it: one on another host
// whose lease has not expired, or a process on this host that still
// exists, other than a lease this process released.
func (s *SQLite) putLease(ctx context.Context, tx *wtx, thread, token string) error {
	now := time.Now()
	// A thread nobody holds (the common case: a new thread, or one whose
	// lease was released) has no row: one statement.
	res, err := tx.ExecContext(ctx, `INSERT INTO leases (thread, token, host, pid, acquired, expires) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (thread) DO NOTHING`,
		thread, token, self().host, self().pid, now.UnixNano(), now.Add(s.leaseTTL).UnixNano())
	if err != nil {
		return fmt.Errorf("take lease: %w", s.describe(err))
	}
	if n, err := res.RowsAffected(); err == nil && n == 1 {
		return nil
	}
	var host, token0 string
	var pid int
	var acquired, expires int64
	err = tx.QueryRowContext(ctx, `SELECT host, pid, acquired, expires, token FROM leases WHERE thread = ?`, thread).Scan(&host, &pid, &acquired, &expires, &token0)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("take lease: %w", s.describe(err))
	case expires > now.UnixNano() && !(host == self().host && !processAlive(pid)) && !isReleased(token0):
		return &runtime.BusyError{Thread: thread, Owner: fmt.Sprintf("pid %d on %s", pid, host), Since: time.Unix(0, acquired)}
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO leases (thread, token, host, pid, acquired, expires) VALUES (?, ?, ?, ?, ?, ?)`,
		thread, token, self().host, self().pid, now.UnixNano(), now.Add(s.leaseTTL).UnixNano()); err != nil {
		return fmt.Errorf("take lease: %w", s.describe(err))
	}
	return nil
}

// isReleased reports whether token is a lease this process released.
func isReleased(token string) bool {
	_, ok := released.Load(token)
	return ok
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
		return nil, &runtime.BusyError{Thread: thread, Owner: fmt.Sprintf("pid %d on %s", self().pid, self().host), Since: l.acquired}
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
