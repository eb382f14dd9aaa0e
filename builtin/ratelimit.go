package builtin

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/lgrun/lgrun/spec"
)

// limiter spaces requests to one model evenly, rpm a minute. Callers wait
// for their slot (backpressure) instead of being answered 429 by the server.
// It is a token bucket of burst 1 (golang.org/x/time/rate): the first
// request goes at once, every later one an interval after the previous slot.
type limiter struct {
	rl *rate.Limiter
}

// limiters is the registry of an [Environment]: every run, graph and node
// of the environment that uses the same model on the same server shares
// one limiter. Two environments keep separate limiters.
type limiters struct {
	mu sync.Mutex
	m  map[string]*limiter
}

func newLimiters() *limiters { return &limiters{m: map[string]*limiter{}} }

// limiterKey identifies a model on a server.
func limiterKey(provider string, m *spec.Model, getenv func(string) string) string {
	if provider == "mock" {
		return "mock|" + m.Fixtures + "|" + m.Name
	}
	return baseURL(m, getenv) + "|" + m.Model
}

// limiterFor returns the shared limiter for key, or nil when rpm is not
// set. When two declarations of one model differ, the stricter rpm wins.
func (ls *limiters) limiterFor(key string, rpm int) *limiter {
	if rpm <= 0 {
		return nil
	}
	lim := rate.Every(time.Minute / time.Duration(rpm))
	ls.mu.Lock()
	defer ls.mu.Unlock()
	l := ls.m[key]
	if l == nil {
		l = &limiter{rl: rate.NewLimiter(lim, 1)}
		ls.m[key] = l
	}
	if lim < l.rl.Limit() {
		l.rl.SetLimit(lim)
	}
	return l
}

// interval is the time between two slots.
func (l *limiter) interval() time.Duration {
	return time.Duration(float64(time.Second) / float64(l.rl.Limit()))
}

// wait blocks until the caller's slot, or ctx ends (its cause is returned
// and the slot is given back). A nil limiter never waits. rate.Limiter's own
// Wait is not used: it fails at once when the slot lies past ctx's deadline,
// with an error that is not the context's.
func (l *limiter) wait(ctx context.Context) error {
	if l == nil {
		return nil
	}
	r := l.rl.Reserve()
	d := r.Delay()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return context.Cause(ctx)
	}
}

// hint carries what the server said about retrying (Retry-After) from the
// HTTP transport back to the retry loop of one attempt.
type hint struct {
	mu    sync.Mutex
	after time.Duration
}

func (h *hint) retryAfter() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.after
}

type hintKey struct{}

func withHint(ctx context.Context, h *hint) context.Context {
	return context.WithValue(ctx, hintKey{}, h)
}

// hintTransport records the Retry-After of failed responses into the
// request context's hint, and puts the request's [bodyTap] on its body.
type hintTransport struct{ base http.RoundTripper }

func (t *hintTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if resp != nil {
		tapResponse(req, resp)
	}
	if resp != nil && resp.StatusCode >= 400 {
		if h, _ := req.Context().Value(hintKey{}).(*hint); h != nil {
			if d := parseRetryAfter(resp.Header, time.Now()); d > 0 {
				h.mu.Lock()
				h.after = d
				h.mu.Unlock()
			}
		}
	}
	return resp, err
}

// parseRetryAfter reads retry-after-ms (OpenAI) or Retry-After (seconds or
// an HTTP date).
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
