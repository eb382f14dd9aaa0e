package builtin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// provider azure speaks Azure OpenAI's dialect of the API: deployment
// paths, an api-version query and the api-key header.
func TestAzureProvider(t *testing.T) {
	var mu sync.Mutex
	var paths, versions, keys, auths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		versions = append(versions, r.URL.Query().Get("api-version"))
		keys = append(keys, r.Header.Get("api-key"))
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello from azure"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`)
	}))
	defer srv.Close()
	src := `
version: 1
name: az
state:
  messages: {type: messages}
models:
  gpt:
    provider: azure
    base_url: ` + srv.URL + `
    model: my-gpt4o-deployment
    api_key_env: AZURE_OPENAI_KEY
    api_version: 2024-10-21
    stream: false
nodes:
  chat: {kind: llm, model: gpt, prompt: hi}
edges:
  - {from: START, to: chat}
  - {from: chat, to: END}
`
	g := mustGraph(t, src, nil)
	res, _, err := callNode(t, g, Options{Getenv: envOf("AZURE_OPENAI_KEY", "sekret")}, "chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res.Writes)
	if !strings.Contains(string(b), "hello from azure") {
		t.Fatalf("writes %s", b)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(paths) != 1 || paths[0] != "/openai/deployments/my-gpt4o-deployment/chat/completions" {
		t.Fatalf("paths %q", paths)
	}
	if versions[0] != "2024-10-21" || keys[0] != "sekret" || auths[0] != "" {
		t.Fatalf("api-version %q, api-key %q, Authorization %q", versions[0], keys[0], auths[0])
	}
	// Without the key, the call is refused before any request.
	if _, _, err := callNode(t, g, Options{Getenv: envOf()}, "chat", nil); err == nil || !strings.Contains(err.Error(), "AZURE_OPENAI_KEY") {
		t.Fatalf("missing key: %v", err)
	}
}
