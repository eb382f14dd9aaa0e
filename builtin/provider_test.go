package builtin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// flaky is a custom model: its first answer is a retryable error, then
// it echoes the conversation's length.
type flaky struct {
	mu    sync.Mutex
	calls int
}

func (f *flaky) Chat(_ context.Context, req *ChatRequest) (*ChatReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls == 1 {
		return nil, fmt.Errorf("overloaded: %w", ErrRetryable)
	}
	return &ChatReply{Content: fmt.Sprintf("%d messages", len(req.Messages)), InputTokens: 7, OutputTokens: 2}, nil
}

// A model of a custom provider runs through the llm node like any model:
// retried under its retry policy on a retryable error, its usage counted.
func TestCustomProvider(t *testing.T) {
	env := NewEnvironment()
	f := &flaky{}
	if err := env.AddProvider("local", "an in-process model", func(m *spec.Model) (ChatModel, error) {
		if m.Model != "tiny" {
			return nil, errors.New("unknown model " + m.Model)
		}
		return f, nil
	}); err != nil {
		t.Fatal(err)
	}
	src := `version: 1
name: p
state:
  messages: {type: messages}
  answer: {type: string}
models:
  m: {provider: local, model: tiny, retry: {max_attempts: 2, initial_backoff: 1ms}}
nodes:
  chat: {kind: llm, model: m, prompt: "hi", store: answer}
edges:
  - {from: START, to: chat}
  - {from: chat, to: END}
`
	g, diags := spec.Parse("p.yaml", []byte(src), &spec.Options{Registry: env.Spec()})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	r, _ := newRunnerIn(t, env, g, Options{})
	res, err := r.Run(context.Background(), runtime.RunOptions{Thread: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Checkpoint.Values["answer"]; got != "1 messages" || f.calls != 2 {
		t.Fatalf("answer %v after %d calls", got, f.calls)
	}
	if tot := res.Checkpoint.Metadata.Totals; tot.InputTokens != 7 || tot.OutputTokens != 2 {
		t.Fatalf("totals %+v", tot)
	}
	// Without the provider, the graph does not load.
	if _, diags := spec.Parse("p.yaml", []byte(src), nil); !diags.HasErrors() {
		t.Fatal("a model of an unregistered provider loaded")
	}
}
