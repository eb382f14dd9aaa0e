package server_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/server"
	"github.com/lgrun/lgrun/spec"
)

// benchChat adds one message of about 200 bytes of content per superstep
// until n reaches target (checkpoint/bench_test.go's chatGraph).
const benchChat = `
version: 1
name: chat
state:
  n: {type: int}
  target: {type: int, default: 100}
  messages: {type: messages}
limits: {steps: 1000000}
nodes:
  talk:
    kind: set
    set:
      n: state.n + 1
      messages: '{"role": "assistant", "content": "reply " + string(state.n) + ": " + repeat("lorem ipsum ", 16)}'
edges:
  - {from: START, to: talk}
  - {from: talk, when: state.n < state.target, to: talk, else: END}
`

// getOnly is a saver without a HistoryReader, so the server reads a
// history the way it did before the history walk: one Get per checkpoint.
type getOnly struct{ runtime.Saver }

// BenchmarkHistory500 is POST /threads/{id}/history of a 500-step messages
// thread (501 checkpoints, SQLite), the whole history ({"limit": 501}) and
// the default page ({}: 10 checkpoints), with the history walk (walk) and
// without (get: the saver hidden behind one that has no HistoryReader).
func BenchmarkHistory500(b *testing.B) {
	dir := b.TempDir()
	saver, err := checkpoint.OpenSQLite(filepath.Join(dir, "lgrun.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { saver.Close() })
	store, err := server.OpenSQLite(filepath.Join(dir, "lgrun-server.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	g, errs := spec.Parse("chat.yaml", []byte(benchChat), nil)
	if errs.HasErrors() {
		b.Fatal(errs)
	}
	urls := map[string]string{}
	for name, sv := range map[string]runtime.Saver{"walk": saver, "get": getOnly{saver}} {
		srv, err := server.New(server.Options{Graphs: []*spec.Graph{g}, Saver: sv, Store: store,
			Kinds: func(*spec.Graph) (map[string]runtime.NodeFunc, error) { return nil, nil }, Logf: b.Logf})
		if err != nil {
			b.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		b.Cleanup(hs.Close)
		urls[name] = hs.URL
	}
	c := &http.Client{}
	tid, err := threadID(c, urls["walk"])
	if err != nil {
		b.Fatal(err)
	}
	if _, err := post(c, urls["walk"]+"/threads/"+tid+"/runs/wait", `{"assistant_id": "chat", "input": {"target": 500}}`); err != nil {
		b.Fatal(err)
	}
	for _, page := range []struct{ name, body string }{{"all", `{"limit": 501}`}, {"default", `{}`}} {
		var first string
		for _, path := range []string{"get", "walk"} {
			b.Run(page.name+"/"+path, func(b *testing.B) {
				b.ReportAllocs()
				var out string
				for i := 0; i < b.N; i++ {
					if out, err = post(c, urls[path]+"/threads/"+tid+"/history", page.body); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				var states []any
				if err := json.Unmarshal([]byte(out), &states); err != nil || (page.name == "all" && len(states) != 501) {
					b.Fatalf("%d states, %v", len(states), err)
				}
				b.ReportMetric(float64(len(out))/1e6, "MB/response")
				// Both paths answer byte for byte the same.
				if first == "" {
					first = out
				} else if out != first {
					b.Fatalf("the %s path answers differently from the first", path)
				}
			})
		}
	}
}
