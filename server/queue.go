package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"time"
)

// Queue is a run queue shared by every process on one database
// (pgstore.Store on PostgreSQL). With one in [Options], runs are not
// executed by the process that accepted them but claimed by the workers
// of any process ([Options.Workers] per process); stream events go
// through the store and its notifications, so a stream or a /wait on one
// process follows a run executing on another, and a cancel reaches the
// run's worker wherever it is.
type Queue interface {
	// Claim takes the oldest runnable pending run for worker under the
	// fencing token token, with the cancel action recorded on it ("" if
	// none); nil when there is none.
	Claim(ctx context.Context, worker, token string) (*Run, string, error)
	// Heartbeat renews worker's claims (run id → token) and returns the
	// runs it lost.
	Heartbeat(ctx context.Context, worker string, runs map[string]string) ([]string, error)
	// Sweep requeues running runs whose claims were not renewed for after.
	Sweep(ctx context.Context, after time.Duration) (int, error)
	// Release requeues the runs worker holds.
	Release(ctx context.Context, worker string) error
	// Cancel records a cancel of run and tells its worker.
	Cancel(ctx context.Context, run, action string) error
	// Busy reports whether thread has an unfinished run besides except.
	Busy(ctx context.Context, thread, except string) (bool, error)
	// Notify wakes the processes: kind runs (claim), events (payload: a
	// run id), cancel (payload: "run action").
	Notify(ctx context.Context, kind, payload string) error
	// Listen calls f for each notification until ctx is done.
	Listen(ctx context.Context, f func(kind, payload string)) error
	// Fence returns a context whose writes (the Store's and the Saver's)
	// apply only while the claim of run under token holds, checked in
	// their own transactions; once it is lost they fail with an error
	// wrapping [runtime.ErrFenced] and write nothing.
	Fence(ctx context.Context, run, token string) context.Context
	// Depth counts the pending runs of every process.
	Depth(ctx context.Context) (int, error)
}

// errLostClaim stops a run whose worker no longer holds its claim (its
// heartbeat found it gone, or a write was fenced off): it writes nothing
// more, every write of a claimed run being fenced by its token
// ([Queue.Fence]), and the run's new worker takes over.
var errLostClaim = errors.New("the run's claim was lost")

// startQueue starts this process's claim loops, heartbeats, sweeper and
// listener.
func (s *Server) startQueue() {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	s.worker = hex.EncodeToString(b)
	s.claims = map[string]string{}
	s.wake = make(chan struct{})
	ctx := s.qctx
	q := s.opts.Queue
	go func() {
		_ = q.Listen(ctx, func(kind, payload string) {
			switch kind {
			case "runs":
				s.wakeWorkers()
			case "events":
				s.syncRemote(payload)
			case "cancel":
				id, action, _ := strings.Cut(payload, " ")
				s.mu.Lock()
				e := s.runs[id]
				local := e != nil && s.active[e.run.ThreadID] == e
				s.mu.Unlock()
				if local {
					e.requestCancel(action)
				}
			}
		})
	}()
	go func() {
		t := time.NewTicker(s.opts.ClaimTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			s.mu.Lock()
			mine := make(map[string]string, len(s.claims))
			for id, tok := range s.claims {
				mine[id] = tok
			}
			s.mu.Unlock()
			lost, err := q.Heartbeat(ctx, s.worker, mine)
			if err != nil {
				s.opts.Logf("lgrun serve: %v", err)
			}
			for _, id := range lost {
				s.mu.Lock()
				e := s.runs[id]
				s.mu.Unlock()
				if e != nil {
					e.mu.Lock()
					if e.cancel != nil {
						e.cancel(errLostClaim)
					}
					e.mu.Unlock()
				}
			}
			if _, err := q.Sweep(ctx, s.opts.ClaimTTL); err != nil && ctx.Err() == nil {
				s.opts.Logf("lgrun serve: %v", err)
			}
			s.syncRemote("")  // a fallback for missed notifications
			s.syncQueued(ctx) // for metrics pushed by OTLP
		}
	}()
	for i := 0; i < s.opts.Workers; i++ {
		s.qwg.Add(1)
		go s.claimLoop()
	}
}

// wakeWorkers wakes the claim loops.
func (s *Server) wakeWorkers() {
	s.mu.Lock()
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
}

func (s *Server) claimLoop() {
	defer s.qwg.Done()
	ctx := s.qctx
	for ctx.Err() == nil {
		s.mu.Lock()
		wake := s.wake
		s.mu.Unlock()
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		token := hex.EncodeToString(b)
		run, cancel, err := s.opts.Queue.Claim(ctx, s.worker, token)
		if err != nil && ctx.Err() == nil {
			s.opts.Logf("lgrun serve: %v", err)
		}
		if run == nil {
			select {
			case <-ctx.Done():
			case <-wake:
			case <-time.After(time.Second):
			}
			continue
		}
		s.runClaimed(run, cancel, token)
	}
}

// runClaimed executes a run this worker claimed.
func (s *Server) runClaimed(run *Run, cancel, token string) {
	bg := context.Background()
	a := s.assistants[run.GraphID]
	var p *plan
	err := errors.New("graph " + run.GraphID + " is not served by this worker")
	if a != nil {
		p, err = planRun(a, run.Request)
	}
	if err != nil {
		run.Status, run.Error = runError, err.Error()
		if err := s.opts.Store.PutRun(bg, run); err != nil {
			s.opts.Logf("lgrun serve: %v", err)
		}
		s.notifyEvents(run.ID)
		return
	}
	events, err := s.opts.Store.Events(bg, run.ID, -1)
	if err != nil {
		s.opts.Logf("lgrun serve: %v", err)
	}
	s.mu.Lock()
	e := s.runs[run.ID]
	if e != nil {
		// This process may still execute the run under the claim it lost
		// (swept before a heartbeat): that execution stops, its writes
		// fenced off, before this one starts.
		e.mu.Lock()
		exited, cancel := e.exited, e.cancel
		e.mu.Unlock()
		if exited != nil {
			s.mu.Unlock()
			cancel(errLostClaim)
			<-exited
			s.mu.Lock()
			e = s.runs[run.ID]
		}
	}
	if e == nil || e.isFinished() {
		e = newExecution(s, run, a, p)
		s.runs[run.ID] = e
	} else {
		e.plan, e.a = p, a
		e.run.Attempt, e.run.Started, e.run.StartHead, e.run.Status = run.Attempt, run.Started, run.StartHead, run.Status
	}
	e.mu.Lock()
	if len(events) > len(e.events) {
		e.events = events
	}
	e.remote = false
	e.mu.Unlock()
	e.token = token
	s.active[run.ThreadID] = e
	s.claims[run.ID] = token
	s.wg.Add(1)
	s.mu.Unlock()
	if cancel != "" {
		e.requestCancel(cancel)
	}
	s.execute(e)
	s.mu.Lock()
	delete(s.claims, run.ID)
	s.mu.Unlock()
	s.notifyEvents(run.ID)
}

func (s *Server) notifyEvents(run string) {
	if err := s.opts.Queue.Notify(context.Background(), "events", run); err != nil {
		s.opts.Logf("lgrun serve: %v", err)
	}
}

// remoteExecution follows a run that executes elsewhere (or waits in the
// queue): its events come from the store.
func (s *Server) remoteExecution(run *Run) *execution {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.runs[run.ID]; e != nil {
		return e
	}
	a := s.assistants[run.GraphID]
	var p *plan
	if a != nil {
		p, _ = planRun(a, run.Request)
	}
	e := newExecution(s, run, a, p)
	e.remote = true
	s.runs[run.ID] = e
	go s.syncRemote(run.ID)
	return e
}

// syncRemote brings the remote executions (of run id, or all when "")
// up to date with the store: new events, and their end once the run's
// row is final.
func (s *Server) syncRemote(id string) {
	s.mu.Lock()
	var list []*execution
	for rid, e := range s.runs {
		if (id == "" || rid == id) && e.remote && !e.isFinished() {
			list = append(list, e)
		}
	}
	s.mu.Unlock()
	ctx := context.Background()
	for _, e := range list {
		// The run's row is read before its events: a worker stores every
		// event of a run before the row that makes it final, so once the
		// row read here is final the events read after it are all of them.
		// (Read the other way round, the last events could be stored
		// between the two reads and the stream end without them.)
		run, runErr := s.opts.Store.Run(ctx, e.run.ID)
		if runErr != nil && !errors.Is(runErr, ErrNotFound) {
			s.opts.Logf("lgrun serve: %v", runErr)
			continue
		}
		e.mu.Lock()
		after := len(e.events) - 1
		e.mu.Unlock()
		evs, err := s.opts.Store.Events(ctx, e.run.ID, after)
		if err != nil {
			s.opts.Logf("lgrun serve: %v", err)
			continue
		}
		e.mu.Lock()
		if !e.remote {
			e.mu.Unlock()
			continue
		}
		for _, ev := range evs {
			if ev.ID == len(e.events) {
				e.events = append(e.events, ev)
			}
		}
		if e.notify != nil && len(evs) > 0 {
			close(e.notify)
			e.notify = make(chan struct{})
		}
		e.mu.Unlock()
		err = runErr
		if err == nil && (run.Status == runPending || run.Status == runRunning) {
			continue
		}
		if err == nil {
			e.run.Status = run.Status // read by no one else while remote
		}
		final := map[string]any{}
		if err == nil && run.Status == runError {
			final = map[string]any{"__error__": map[string]any{"error": "Error", "message": run.Error}}
		} else if head, herr := s.head(ctx, e.run.ThreadID); herr == nil && head != nil {
			vals := map[string]any{}
			for k, v := range head.Values {
				vals[k] = v
			}
			if ints := interruptList(head); len(ints) > 0 {
				vals["__interrupt__"] = ints
			}
			final = outValues(s.graph(e.run.GraphID), vals)
		}
		e.mu.Lock()
		stillRemote := e.remote && !e.finished
		e.mu.Unlock()
		if stillRemote {
			s.finish(e, final)
		}
	}
}

// cancelQueued records a cancel in the queue, for the run's worker
// wherever it runs (or for whoever claims it next).
func (s *Server) cancelQueued(run, action string) {
	if err := s.opts.Queue.Cancel(context.Background(), run, action); err != nil {
		s.opts.Logf("lgrun serve: %v", err)
	}
}
