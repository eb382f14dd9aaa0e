package spec_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/lgrun/lgrun/spec"
)

func mustLoad(t *testing.T, file string) *spec.Graph {
	t.Helper()
	g, errs := spec.LoadFile(file, repoOptions())
	if g == nil {
		t.Fatalf("%s:\n%s", file, render(errs))
	}
	return g
}

func TestDecodeEdges(t *testing.T) {
	g := mustLoad(t, "testdata/valid/edges_all_forms.yaml")
	if got := g.NodeOrder; !reflect.DeepEqual(got, []string{"begin", "left", "right", "joined", "pick", "fast", "slow", "chooser", "jumper"}) {
		t.Errorf("node order %v", got)
	}
	joins := g.Joins()
	if len(joins) != 1 || joins[0].Target != "joined" || !reflect.DeepEqual(joins[0].Sources, []string{"left", "right"}) {
		t.Errorf("joins %+v", joins)
	}
	if out := g.Outgoing("left"); len(out) != 0 {
		t.Errorf("a join source has outgoing edges %+v", out)
	}
	fan := g.Outgoing("begin")
	if len(fan) != 1 || fan[0].Conditional() || len(fan[0].To) != 2 {
		t.Errorf("fan-out %+v", fan)
	}
	when := g.Outgoing("joined")[0]
	if when.When == nil || when.To[0].Name != "pick" || when.Else[0].Name != "END" {
		t.Errorf("when/else %+v", when)
	}
	routes := g.Outgoing("pick")[0]
	if len(routes.Routes) != 2 || len(routes.Default) != 2 || routes.Routes[1].To[0].Name != "slow" {
		t.Errorf("routes %+v", routes)
	}
	if got := targetNames(routes.Targets()); !reflect.DeepEqual(got, []string{"fast", "slow"}) {
		t.Errorf("routes targets %v", got)
	}
	route := g.Outgoing("chooser")[0]
	if route.Route == nil || targetNames(route.Paths)[0] != "jumper" {
		t.Errorf("route %+v", route)
	}
	jumper := g.Nodes["jumper"]
	if jumper.Goto == nil || !reflect.DeepEqual(targetNames(jumper.GotoPaths), []string{"END", "chooser"}) {
		t.Errorf("goto %+v", jumper)
	}
	// Positions point at the name key, and edge targets at the name.
	if p := g.Nodes["pick"].Pos; p.Line != 24 || p.Col != 3 {
		t.Errorf("pick at %v", p)
	}
	if p := fan[0].To[1].Pos; p.Line != 40 || p.Col != 30 {
		t.Errorf("right target at %v", p)
	}
}

func targetNames(refs []spec.NameRef) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.Name)
	}
	return out
}

func TestDecodeState(t *testing.T) {
	g := mustLoad(t, "testdata/valid/reducers.yaml")
	tests := []struct {
		field   string
		typ     string
		reducer spec.ReducerKind
		def     any
	}{
		{"title", "string", spec.ReduceReplace, "draft"},
		{"tags", "list of string", spec.ReduceAppend, []any{}},
		{"total", "int", spec.ReduceAdd, 0},
		{"ratio", "float", spec.ReduceAdd, 0.5},
		{"meta", "object", spec.ReduceMerge, map[string]any{"a": 1}},
		{"messages", "messages", spec.ReduceMessages, []any{}},
		{"history", "messages", spec.ReduceMessages, []any{map[string]any{"id": "", "role": "system", "content": "be brief"}}},
		{"best", "int", spec.ReduceCustom, 0},
		{"anything", "any", spec.ReduceReplace, nil},
		{"flag", "bool", spec.ReduceReplace, true},
		{"level", "int", spec.ReduceReplace, 2},
	}
	for _, tt := range tests {
		f := g.Field(tt.field)
		if f == nil {
			t.Errorf("no field %s", tt.field)
			continue
		}
		if f.Type.String() != tt.typ || f.Reducer.Kind != tt.reducer || !reflect.DeepEqual(f.Default, tt.def) {
			t.Errorf("field %s: %s %s %#v, want %s %s %#v", tt.field, f.Type, f.Reducer.Kind, f.Default, tt.typ, tt.reducer, tt.def)
		}
	}
	if got := g.Field("level").Enum; !reflect.DeepEqual(got, []any{1, 2, 3}) {
		t.Errorf("enum %#v", got)
	}
	// Defaults are copies: changing one state does not change the next.
	s := g.Defaults()
	s["meta"].(map[string]any)["a"] = 99
	if g.Defaults()["meta"].(map[string]any)["a"] != 1 {
		t.Error("Defaults shares maps with the graph")
	}
	if w := g.Nodes["first"].Writes; len(w) != 14 {
		t.Errorf("first writes %v", w)
	}
}

func TestDecodeModelsAndTools(t *testing.T) {
	g := mustLoad(t, "testdata/valid/agent.yaml")
	gpt := g.Models["gpt"]
	temp := 0.2
	want := &spec.Model{
		Name: "gpt", Pos: gpt.Pos, Provider: "openai", BaseURL: "https://api.openai.com/v1",
		Model: "gpt-4o-mini", APIKeyEnv: "OPENAI_API_KEY", Temperature: &temp, MaxTokens: 512,
		Timeout: 30 * time.Second, PriceIn: 0.15, PriceOut: 0.6, RPM: 60,
		Retry:     spec.Retry{MaxAttempts: 3, InitialBackoff: time.Second, MaxBackoff: 10 * time.Second},
		Fallbacks: gpt.Fallbacks,
	}
	if !reflect.DeepEqual(gpt, want) || len(gpt.Fallbacks) != 1 || gpt.Fallbacks[0].Name != "mock" {
		t.Errorf("model gpt:\n%+v\nwant\n%+v", gpt, want)
	}
	if mock := g.Models["mock"]; mock.Provider != "mock" || mock.Fixtures != "testdata/valid/agent.fixtures.yaml" {
		t.Errorf("model mock: %+v", mock)
	}
	weather := g.Tools["weather"]
	if weather.Kind != "http" || weather.Method != "GET" || weather.URL == nil ||
		!reflect.DeepEqual(weather.AllowHosts, []string{"api.example.com"}) ||
		weather.HeadersEnv["Authorization"] != "WEATHER_TOKEN" || weather.MaxOutputBytes != 65536 {
		t.Errorf("tool weather: %+v", weather)
	}
	if clock := g.Tools["clock"]; !reflect.DeepEqual(clock.Command, []string{"date", "-u"}) || clock.Timeout != 5*time.Second {
		t.Errorf("tool clock: %+v", clock)
	}
	ask := g.Nodes["ask"].Config.(*spec.LLMConfig)
	if ask.Messages != "messages" || ask.Model.Name != "mock" || len(ask.Tools) != 3 || ask.TrimKeepLast != 20 || !ask.TrimSystem {
		t.Errorf("node ask: %+v", ask)
	}
	grade := g.Nodes["grade"].Config.(*spec.LLMConfig)
	if grade.Store != "answer" || len(grade.OutputFields) != 2 || !grade.OutputStrict || grade.OutputTries != 2 || grade.OutputSchema == nil {
		t.Errorf("node grade: %+v", grade)
	}
	if act, ok := g.Nodes["act"].Config.(*spec.ToolsConfig); !ok || !act.Parallel || g.Nodes["act"].Kind != "tools" {
		t.Errorf("node act: %+v", act)
	}
	if approve := g.Nodes["approve"].Config.(*spec.InterruptConfig); approve.Resume != "approved" || approve.Payload == nil {
		t.Errorf("node approve: %+v", approve)
	}
	if targetNames(g.Interrupts.Before)[0] != "act" || targetNames(g.Interrupts.After)[0] != "grade" {
		t.Errorf("interrupts %+v", g.Interrupts)
	}
	if l := g.Limits; l.Steps != 50 || l.Timeout != 5*time.Minute || l.LLMCalls != 20 || l.Tokens != 100000 || l.CostUSD != 1.5 || g.StepLimit() != 50 {
		t.Errorf("limits %+v", l)
	}
}

func TestDecodeSubgraphs(t *testing.T) {
	g := mustLoad(t, "testdata/valid/subgraphs.yaml")
	if len(g.Subgraphs) != 1 || g.Subgraphs["testdata/valid/sub/child.yaml"] == nil {
		t.Fatalf("subgraphs %v", g.Subgraphs)
	}
	research := g.Nodes["research"].Config.(*spec.SubgraphConfig)
	if !reflect.DeepEqual(research.OutputMap, map[string]string{"summary": "summary", "score": "score"}) || len(research.Input) != 1 {
		t.Errorf("research %+v", research)
	}
	each := g.Nodes["each"].Config.(*spec.MapConfig)
	if each.Over == nil || each.MapLimit != 4 || each.ItemAs != "summary" || each.GraphPath != "testdata/valid/sub/child.yaml" {
		t.Errorf("each %+v", each)
	}
	if sq := g.Nodes["square_all"].Config.(*spec.MapConfig); sq.MapNode.Name != "square" || sq.MapLimit != 8 {
		t.Errorf("square_all %+v", sq)
	}
}
