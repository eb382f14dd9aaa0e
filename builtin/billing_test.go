package builtin

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// billGraph is a one-node chat graph with model m (and extra models)
// under the given limits (a YAML flow map).
func billGraph(t *testing.T, limits, model string, extra ...string) *spec.Graph {
	t.Helper()
	src := "version: 1\nname: bill\nstate:\n  messages: {type: messages}\n  answer: {type: string}\nmodels:\n  m:\n" +
		model + strings.Join(extra, "") + `
nodes:
  chat: {kind: llm, model: m, prompt: Say hello to the world., store: answer}
limits: ` + limits + `
edges:
  - {from: START, to: chat}
  - {from: chat, to: END}
`
	return mustGraph(t, src, nil)
}

// committedUsage is the usage of the thread's committed checkpoints.
func committedUsage(t *testing.T, r *runtime.Runner, thread string) []runtime.Usage {
	t.Helper()
	cps, err := r.Saver.List(context.Background(), thread, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []runtime.Usage
	for i := len(cps) - 1; i >= 0; i-- {
		out = append(out, cps[i].Metadata.Usage...)
	}
	return out
}

// pendingUsage is the usage a stopped step kept pending.
func pendingUsage(t *testing.T, r *runtime.Runner, thread string) []runtime.Usage {
	t.Helper()
	cp, err := r.Saver.Get(context.Background(), thread, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []runtime.Usage
	for _, p := range cp.Pending {
		if p.Kind == runtime.PendingUsage && p.Result != nil {
			out = append(out, p.Result.Usage...)
		}
	}
	return out
}

// The ways a 200 answer fails after the server worked: each is billed.
var billedFailures = []struct {
	name  string
	model []string // model settings
	first fakeReply
}{
	{"stream cut after tokens", []string{"stream: true"}, fakeReply{Content: "Hello wor", Cut: true}},
	{"error event mid-stream", []string{"stream: true"}, fakeReply{Content: "Hello", StreamErr: "engine overloaded"}},
	{"stream stalls past the timeout", []string{"stream: true", "timeout: 300ms"}, fakeReply{Content: "Hello", Stall: true}},
	{"JSON body cut in half", []string{"stream: false"}, fakeReply{Content: "Hello world", Cut: true}},
}

// A first attempt that got a 200 answer and then failed was billed by the
// server: with llm_calls: 2, the call and its retry count as two calls,
// the cut one with estimated tokens, the whole one with the server's.
func TestFailedAnsweredAttemptIsBilled(t *testing.T) {
	for _, tc := range billedFailures {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, tc.first, fakeReply{Content: "Hello world", In: 4, Out: 2})
			r, _ := newRunner(t, billGraph(t, "{llm_calls: 2}", modelAt(srv.URL(), tc.model...)), Options{Getenv: keyEnv()})
			res := runGraph(t, r, "t", nil)
			if res.Status != runtime.StatusDone || res.Checkpoint.Values["answer"] != "Hello world" {
				t.Fatalf("status %s, values %v", res.Status, res.Checkpoint.Values)
			}
			if n := len(srv.requests()); n != 2 {
				t.Fatalf("%d requests, want 2", n)
			}
			if got := res.Checkpoint.Metadata.Totals.LLMCalls; got != 2 {
				t.Fatalf("totals count %d calls, the server billed 2", got)
			}
			u := committedUsage(t, r, "t")
			if len(u) != 2 || !u[0].Estimated || u[0].InputTokens == 0 || u[0].Model != "m" ||
				u[1].Estimated || u[1].InputTokens != 4 || u[1].OutputTokens != 2 {
				t.Fatalf("usage %+v\nwant the failed attempt estimated, then the reply's 4+2", u)
			}
			if u[0].CostUSD <= 0 {
				t.Fatalf("the billed failed attempt costs nothing: %+v", u[0])
			}
		})
	}
}

// With llm_calls: 1, the retry after a billed failed attempt is refused:
// the run stops budget-exceeded after exactly one request, keeps the
// billed attempt, and a resume with a raised limit finishes it.
func TestRetryAfterBilledAttemptIsRefused(t *testing.T) {
	for _, tc := range billedFailures {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, tc.first, fakeReply{Content: "Hello world", In: 4, Out: 2})
			r, _ := newRunner(t, billGraph(t, "{llm_calls: 1}", modelAt(srv.URL(), tc.model...)), Options{Getenv: keyEnv()})
			ctx := context.Background()
			res, err := r.Run(ctx, runtime.RunOptions{Thread: "t"})
			var be *runtime.BudgetError
			if !errors.As(err, &be) || be.What != "llm_calls" || res == nil || res.Status != runtime.StatusBudget {
				t.Fatalf("want budget-exceeded on llm_calls, got %v (%+v)", err, res)
			}
			if !strings.Contains(err.Error(), "refuses a retry") {
				t.Errorf("error %q does not say the retry was refused", err)
			}
			if n := len(srv.requests()); n != 1 {
				t.Fatalf("the server saw %d requests under llm_calls: 1", n)
			}
			if u := pendingUsage(t, r, "t"); len(u) != 1 || !u[0].Estimated {
				t.Fatalf("usage kept with the stop %+v, want the one billed attempt, estimated", u)
			}
			res, err = r.Resume(ctx, runtime.ResumeOptions{Thread: "t", Config: runtime.Config{LLMCalls: 2}})
			if err != nil || res.Status != runtime.StatusDone {
				t.Fatalf("resume with a raised limit: %v (%+v)", err, res)
			}
			if n, got := len(srv.requests()), res.Checkpoint.Metadata.Totals.LLMCalls; n != 2 || got != 2 {
				t.Fatalf("%d requests, totals %d calls; want 2 and 2", n, got)
			}
		})
	}
}

// Attempts answered with an HTTP error status, or not answered at all,
// are not billed: they count no call and take nothing from llm_calls.
func TestUnansweredAttemptsAreNotBilled(t *testing.T) {
	whole := fakeReply{Content: "Hello world", In: 4, Out: 2}
	for _, tc := range []struct {
		name     string
		limits   string
		replies  []fakeReply
		calls    int // billed
		estimate int // of them estimated
	}{
		{"500 then 200", "{llm_calls: 1}", []fakeReply{{Status: 500, ErrMsg: "down"}, whole}, 1, 0},
		{"429, reset, timeout before headers, then 200", "{llm_calls: 1}",
			[]fakeReply{{Status: 429, ErrMsg: "slow down"}, {Reset: true}, {Delay: 3 * time.Second}, whole}, 1, 0},
		{"cut, 500, then 200", "{llm_calls: 2}", []fakeReply{{Content: "Hello", Cut: true}, {Status: 500, ErrMsg: "down"}, whole}, 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, tc.replies...)
			model := strings.Replace(modelAt(srv.URL(), "timeout: 300ms"), "max_attempts: 3", "max_attempts: 4", 1)
			r, _ := newRunner(t, billGraph(t, tc.limits, model), Options{Getenv: keyEnv()})
			res := runGraph(t, r, "t", nil)
			if res.Status != runtime.StatusDone {
				t.Fatalf("status %s", res.Status)
			}
			if n := len(srv.requests()); n != len(tc.replies) {
				t.Fatalf("%d requests, want %d", n, len(tc.replies))
			}
			u := committedUsage(t, r, "t")
			est := 0
			for _, x := range u {
				if x.Estimated {
					est++
				}
			}
			if len(u) != tc.calls || est != tc.estimate || res.Checkpoint.Metadata.Totals.LLMCalls != tc.calls {
				t.Fatalf("usage %+v (totals %d calls), want %d calls, %d estimated", u, res.Checkpoint.Metadata.Totals.LLMCalls, tc.calls, tc.estimate)
			}
		})
	}
}

// Fallback attempts are billed like retries, and a fallback the budget
// refuses is not tried.
func TestFallbackAttemptsAreBilled(t *testing.T) {
	graph := func(t *testing.T, limits string, primary, backup *fakeServer) *spec.Graph {
		return billGraph(t, limits,
			strings.Replace(modelAt(primary.URL(), "stream: true", "fallbacks: [backup]"), "max_attempts: 3", "max_attempts: 2", 1),
			"  backup:\n"+modelAt(backup.URL()))
	}
	cut := fakeReply{Content: "Hel", Cut: true}
	primary := newFakeServer(t, cut, cut)
	backup := newFakeServer(t, fakeReply{Content: "from backup", In: 5, Out: 2})
	r, _ := newRunner(t, graph(t, "{}", primary, backup), Options{Getenv: keyEnv()})
	res := runGraph(t, r, "t", nil)
	u := committedUsage(t, r, "t")
	if res.Status != runtime.StatusDone || len(u) != 3 || u[0].Model != "m" || u[1].Model != "m" || u[2].Model != "backup" {
		t.Fatalf("status %s, usage %+v; want m, m, backup", res.Status, u)
	}

	primary = newFakeServer(t, cut, cut)
	backup = newFakeServer(t, fakeReply{Content: "from backup", In: 5, Out: 2})
	r, _ = newRunner(t, graph(t, "{llm_calls: 2}", primary, backup), Options{Getenv: keyEnv()})
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t"})
	var be *runtime.BudgetError
	if !errors.As(err, &be) || res.Status != runtime.StatusBudget {
		t.Fatalf("want budget-exceeded, got %v (%+v)", err, res)
	}
	if len(primary.requests()) != 2 || len(backup.requests()) != 0 {
		t.Fatalf("requests: primary %d, backup %d; want 2 and 0", len(primary.requests()), len(backup.requests()))
	}
	if !strings.Contains(err.Error(), `fallback "backup"`) {
		t.Errorf("error %q does not name the refused fallback", err)
	}
	if u := pendingUsage(t, r, "t"); len(u) != 2 {
		t.Fatalf("usage kept with the stop %+v, want the 2 billed attempts", u)
	}
}

// A node whose every attempt was billed and failed fails, and the billed
// attempts are kept with the failed step: a resume under the same limit
// counts them and spends nothing more.
func TestFailedNodeKeepsItsBilledAttempts(t *testing.T) {
	cut := fakeReply{Content: "Hel", Cut: true}
	srv := newFakeServer(t, cut, cut, cut)
	r, _ := newRunner(t, billGraph(t, "{llm_calls: 3}", modelAt(srv.URL(), "stream: true")), Options{Getenv: keyEnv()})
	ctx := context.Background()
	res, err := r.Run(ctx, runtime.RunOptions{Thread: "t"})
	if err == nil || res.Status != runtime.StatusFailed || !strings.Contains(err.Error(), "failed after 3 attempts") {
		t.Fatalf("want the node to fail after 3 attempts, got %v (%+v)", err, res)
	}
	if u := pendingUsage(t, r, "t"); len(u) != 3 || !u[0].Estimated || !u[2].Estimated {
		t.Fatalf("usage kept with the failed step %+v, want 3 estimated calls", u)
	}
	res, err = r.Resume(ctx, runtime.ResumeOptions{Thread: "t"})
	var be *runtime.BudgetError
	if !errors.As(err, &be) || res.Status != runtime.StatusBudget || len(srv.requests()) != 3 {
		t.Fatalf("resume: want budget-exceeded with no new request, got %v after %d requests", err, len(srv.requests()))
	}
}

// A run that times out while the server streams a reply it answered with
// 200 keeps that attempt: the server worked, so it is billed.
func TestRunTimeoutKeepsTheAnsweredAttempt(t *testing.T) {
	srv := newFakeServer(t, fakeReply{Content: "Hello", Stall: true})
	r, _ := newRunner(t, billGraph(t, "{timeout: 300ms}", modelAt(srv.URL(), "stream: true")), Options{Getenv: keyEnv()})
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t"})
	var be *runtime.BudgetError
	if !errors.As(err, &be) || be.What != "timeout" || res.Status != runtime.StatusBudget {
		t.Fatalf("want a timeout, got %v (%+v)", err, res)
	}
	if u := pendingUsage(t, r, "t"); len(u) != 1 || !u[0].Estimated || len(srv.requests()) != 1 {
		t.Fatalf("usage kept with the stop %+v after %d requests, want the 1 answered attempt, estimated", u, len(srv.requests()))
	}
}
