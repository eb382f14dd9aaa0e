package builtin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/lgrun/lgrun/spec"
)

// fixtures is a mock model's script, read from a YAML file:
//
//	replies:            # per node: the reply for each of its turns, in order
//	  agent:
//	    - tool_calls: [{name: get_weather, arguments: {city: Paris}}]
//	      usage: {in: 50, out: 12}
//	    - text: It is sunny in Paris.
//	match:              # tried first, in order; the first rule that holds answers
//	  - node: chat                  # optional: any node when omitted
//	    contains: [editor]          # all in the last user message (case-insensitive)
//	    history_contains: vim       # all in an earlier message
//	    turn: 1                     # optional: only at this turn
//	    reply: {text: You like vim.}
//
// A reply is the object `lgrun test` scripts use too: text, json
// (structured output, sent as its JSON text) and/or tool_calls, optional
// usage, or error (the call fails with that message). Turn N of a node is
// the reply after N replies of that node in its messages field, so a script
// is a pure function of the conversation: deterministic across processes,
// resumes and replays.
type fixtures struct {
	file    string
	Replies map[string][]*mockReply `yaml:"replies"`
	Match   []*mockRule             `yaml:"match"`
}

type mockRule struct {
	Node            string     `yaml:"node"`
	Contains        stringList `yaml:"contains"`
	HistoryContains stringList `yaml:"history_contains"`
	Turn            *int       `yaml:"turn"`
	Reply           *mockReply `yaml:"reply"`
	line            int
}

type mockReply struct {
	Text      *string        `yaml:"text"`
	JSON      any            `yaml:"json"`
	ToolCalls []mockToolCall `yaml:"tool_calls"`
	Usage     *struct {
		In  int `yaml:"in"`
		Out int `yaml:"out"`
	} `yaml:"usage"`
	Error string `yaml:"error"`
	line  int
}

type mockToolCall struct {
	Name string `yaml:"name"`
	// Arguments is an object, or a string sent verbatim (to script
	// malformed JSON).
	Arguments any `yaml:"arguments"`
}

// stringList is a string or a list of strings.
type stringList []string

func (s *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*s = stringList{n.Value}
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*s = l
	return nil
}

func readFixtures(path string) (*fixtures, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mock fixtures: %w", err)
	}
	// The same check lgrun validate runs: nothing below can then fail on
	// the file's shape.
	if errs := CheckFixtures(path, b); errs.HasErrors() {
		return nil, fmt.Errorf("mock fixtures:\n%w", errs.Errors())
	}
	fx := &fixtures{file: path}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(fx); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("mock fixtures %s: %s", path, yamlTypes.Replace(err.Error()))
	}
	// A second pass over the node tree gives the lines of replies and rules.
	var root yaml.Node
	_ = yaml.Unmarshal(b, &root)
	lines := func(key string) []*yaml.Node {
		if len(root.Content) == 0 {
			return nil
		}
		m := root.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == key {
				return m.Content[i+1].Content
			}
		}
		return nil
	}
	for _, kv := range pairs(lines("replies")) {
		for i, r := range fx.Replies[kv[0].Value] {
			if i < len(kv[1].Content) {
				r.line = kv[1].Content[i].Line
			}
		}
	}
	for i, n := range lines("match") {
		if i < len(fx.Match) {
			fx.Match[i].line = n.Line
			if fx.Match[i].Reply != nil {
				fx.Match[i].Reply.line = n.Line
			}
		}
	}
	return fx, nil
}

// yamlTypes names the Go types of yaml.v3's errors as the file's parts.
var yamlTypes = strings.NewReplacer(
	"in type builtin.fixtures", "at the top level (want replies and match)",
	"in type builtin.mockReply", "in a reply (want text, json, tool_calls, usage or error)",
	"in type builtin.mockRule", "in a match rule (want node, contains, history_contains, turn and reply)",
	"in type builtin.mockToolCall", "in a tool call (want name and arguments)",
	"into builtin.fixtures", "into the fixtures",
)

// pairs returns the key/value pairs of a mapping's content.
func pairs(content []*yaml.Node) [][2]*yaml.Node {
	var out [][2]*yaml.Node
	for i := 0; i+1 < len(content); i += 2 {
		out = append(out, [2]*yaml.Node{content[i], content[i+1]})
	}
	return out
}

func (r *mockReply) check() error {
	if r == nil {
		return errors.New("empty reply")
	}
	if r.Error != "" {
		if r.Text != nil || r.JSON != nil || len(r.ToolCalls) > 0 {
			return errors.New("a reply with error has nothing else")
		}
		return nil
	}
	if r.Text == nil && r.JSON == nil && len(r.ToolCalls) == 0 {
		return errors.New("a reply needs text, json, tool_calls or error")
	}
	if r.Text != nil && r.JSON != nil {
		return errors.New("a reply has text or json, not both")
	}
	for i, c := range r.ToolCalls {
		if c.Name == "" {
			return fmt.Errorf("tool_calls[%d] needs a name", i)
		}
	}
	return nil
}

// pick returns the reply for req: the first match rule that holds, else
// the node's scripted reply for its turn.
func (fx *fixtures) pick(req *chatRequest) (*mockReply, error) {
	last, history := splitLastUser(req.Messages)
	for _, r := range fx.Match {
		if (r.Node != "" && r.Node != req.Node) || (r.Turn != nil && *r.Turn != req.Turn) {
			continue
		}
		if containsAll(last, r.Contains) && containsAll(history, r.HistoryContains) {
			return r.Reply, nil
		}
	}
	script := fx.Replies[req.Node]
	if req.Turn < len(script) {
		return script[req.Turn], nil
	}
	return nil, fmt.Errorf("mock script exhausted: node %q asked for reply %d (turn %d) but %s has %d under replies.%s and no match rule applies; add a reply or a match rule",
		req.Node, req.Turn+1, req.Turn, fx.file, len(script), req.Node)
}

// splitLastUser returns the content of the last user message and the text
// of every message before it.
func splitLastUser(msgs []map[string]any) (string, string) {
	last := -1
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i]["role"] == "user" {
			last = i
			break
		}
	}
	var hist strings.Builder
	end := len(msgs)
	if last >= 0 {
		end = last
	}
	for _, m := range msgs[:end] {
		c, _ := m["content"].(string)
		hist.WriteString(c)
		hist.WriteByte('\n')
	}
	if last < 0 {
		return "", hist.String()
	}
	c, _ := msgs[last]["content"].(string)
	return c, hist.String()
}

func containsAll(text string, subs []string) bool {
	text = strings.ToLower(text)
	for _, s := range subs {
		if !strings.Contains(text, strings.ToLower(s)) {
			return false
		}
	}
	return true
}

// mockClient is the mock provider: scripted replies from a fixtures file,
// through the same node code as a real model.
type mockClient struct {
	model *spec.Model
	fx    *fixtures
}

func (c *mockClient) chat(ctx context.Context, req *chatRequest, onToken func(string)) (*chatReply, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, err := c.fx.pick(req)
	if err != nil {
		return nil, err
	}
	return r.reply(req, onToken, fmt.Sprintf("%s line %d", c.fx.file, r.line))
}

// reply turns a scripted reply into a model reply: tool calls get
// deterministic ids, the text is streamed word by word, and usage not
// given is estimated. where names the reply's source for errors.
func (r *mockReply) reply(req *chatRequest, onToken func(string), where string) (*chatReply, error) {
	if r.Error != "" {
		return nil, fmt.Errorf("scripted failure (%s): %s", where, r.Error)
	}
	reply := &chatReply{}
	switch {
	case r.Text != nil:
		reply.Content = *r.Text
	case r.JSON != nil:
		s, err := jsonText(spec.Normalize(r.JSON))
		if err != nil {
			return nil, fmt.Errorf("%s: json: %w", where, err)
		}
		reply.Content = s
	}
	for i, tc := range r.ToolCalls {
		args, ok := tc.Arguments.(string)
		if !ok {
			v := tc.Arguments
			if v == nil {
				v = map[string]any{}
			}
			s, err := jsonText(spec.Normalize(v))
			if err != nil {
				return nil, fmt.Errorf("%s: arguments: %w", where, err)
			}
			args = s
		}
		id := fmt.Sprintf("call_%d_%s_%d_%d", req.Step, req.Node, req.Turn, i)
		reply.ToolCalls = append(reply.ToolCalls, toolCall{ID: id, Name: tc.Name, Arguments: args})
	}
	if onToken != nil && reply.Content != "" {
		for _, w := range strings.SplitAfter(reply.Content, " ") {
			onToken(w)
		}
	}
	if r.Usage != nil {
		reply.In, reply.Out = r.Usage.In, r.Usage.Out
	} else {
		reply.In, reply.Out, reply.Estimated = estimateTokens(requestText(req)), estimateTokens(replyText(reply)), true
	}
	return reply, nil
}

// CheckFixtures checks a mock model's fixtures file: its structure, the
// types of its values and the shape of each reply and tool call, every
// problem positioned in the file. It implements [spec.Options]
// CheckFixtures, so `lgrun validate` reports what the mock provider's
// loader would refuse, and the loader itself uses it: the two cannot
// disagree.
func CheckFixtures(file string, src []byte) spec.ErrorList {
	root, errs := spec.ParseYAML(file, src)
	if root == nil {
		return errs
	}
	fc := &fixturesChecker{file: file, errs: &errs}
	m := fc.mapping(root, "fixtures", "the fixtures")
	for _, kv := range m {
		k, v := kv[0], kv[1]
		switch k.Value {
		case "replies":
			for _, nr := range fc.mapping(v, "replies", "replies (node: [reply, ...])") {
				path := "replies." + nr[0].Value
				for i, r := range fc.list(nr[1], path) {
					fc.reply(r, fmt.Sprintf("%s[%d]", path, i))
				}
			}
		case "match":
			for i, r := range fc.list(v, "match") {
				fc.rule(r, fmt.Sprintf("match[%d]", i))
			}
		default:
			fc.unknownKey(k, "fixtures", []string{"replies", "match"})
		}
	}
	errs.Sort()
	return errs
}

// fixturesChecker walks a fixtures file's node tree.
type fixturesChecker struct {
	file string
	errs *spec.ErrorList
}

func (fc *fixturesChecker) pos(n *yaml.Node) spec.Pos {
	return spec.Pos{File: fc.file, Line: n.Line, Col: n.Column}
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// what names a node's kind for messages.
func what(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "null"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		}
		return "a string"
	}
	return "nothing"
}

// mapping returns the key/value pairs of n, which must be a mapping (null
// counts as empty); desc says what it should hold.
func (fc *fixturesChecker) mapping(n *yaml.Node, path, desc string) [][2]*yaml.Node {
	n = resolveAlias(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		fc.errs.Add(fc.pos(n), "%s: want %s as a mapping, got %s", path, desc, what(n))
		return nil
	}
	out := pairs(n.Content)
	seen := map[string]bool{}
	for _, kv := range out {
		if seen[kv[0].Value] {
			fc.errs.Add(fc.pos(kv[0]), "%s: key %q appears twice", path, kv[0].Value)
		}
		seen[kv[0].Value] = true
	}
	return out
}

func (fc *fixturesChecker) list(n *yaml.Node, path string) []*yaml.Node {
	n = resolveAlias(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		fc.errs.Add(fc.pos(n), "%s: want a list, got %s", path, what(n))
		return nil
	}
	return n.Content
}

func (fc *fixturesChecker) unknownKey(k *yaml.Node, path string, known []string) {
	fc.errs.Add(fc.pos(k), "%s: unknown key %q (want %s)", path, k.Value, strings.Join(known, ", "))
}

// str checks that n is a string (a number or boolean is read as its text).
func (fc *fixturesChecker) str(n *yaml.Node, path string) bool {
	n = resolveAlias(n)
	if n.Kind != yaml.ScalarNode || isNull(n) {
		fc.errs.Add(fc.pos(n), "%s: want a string, got %s", path, what(n))
		return false
	}
	return true
}

// count checks that n is a whole number of at least 0.
func (fc *fixturesChecker) count(n *yaml.Node, path string) {
	n = resolveAlias(n)
	var v int
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil || v < 0 {
		fc.errs.Add(fc.pos(n), "%s: want a whole number of at least 0, got %s", path, describe(n))
	}
}

func describe(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return fmt.Sprintf("%s %s", what(n), n.Value)
	}
	return what(n)
}

// strings checks a string or a list of strings.
func (fc *fixturesChecker) strings(n *yaml.Node, path string) {
	n = resolveAlias(n)
	if n.Kind == yaml.SequenceNode {
		for i, it := range n.Content {
			fc.str(it, fmt.Sprintf("%s[%d]", path, i))
		}
		return
	}
	fc.str(n, path)
}

var replyKeys = []string{"text", "json", "tool_calls", "usage", "error"}

// reply checks one scripted reply (see [fixtures]).
func (fc *fixturesChecker) reply(n *yaml.Node, path string) {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		fc.errs.Add(fc.pos(n), "%s: want a reply (a mapping of %s), got %s", path, strings.Join(replyKeys, ", "), what(n))
		return
	}
	has := map[string]*yaml.Node{}
	for _, kv := range fc.mapping(n, path, "a reply") {
		k, v := kv[0], kv[1]
		has[k.Value] = k
		p := path + "." + k.Value
		switch k.Value {
		case "text", "error":
			fc.str(v, p)
		case "json":
			if err := v.Decode(new(any)); err != nil {
				fc.errs.Add(fc.pos(v), "%s: %v", p, err)
			}
		case "tool_calls":
			for i, tc := range fc.list(v, p) {
				fc.toolCall(tc, fmt.Sprintf("%s[%d]", p, i))
			}
		case "usage":
			for _, u := range fc.mapping(v, p, "usage (in, out)") {
				switch u[0].Value {
				case "in", "out":
					fc.count(u[1], p+"."+u[0].Value)
				default:
					fc.unknownKey(u[0], p, []string{"in", "out"})
				}
			}
		default:
			fc.unknownKey(k, path, replyKeys)
		}
	}
	switch {
	case has["error"] != nil && (has["text"] != nil || has["json"] != nil || has["tool_calls"] != nil):
		fc.errs.Add(fc.pos(has["error"]), "%s: a reply with error has nothing else (no text, json or tool_calls)", path)
	case has["error"] == nil && has["text"] == nil && has["json"] == nil && has["tool_calls"] == nil:
		fc.errs.Add(fc.pos(n), "%s: a reply needs text, json, tool_calls or error", path)
	case has["text"] != nil && has["json"] != nil:
		fc.errs.Add(fc.pos(has["json"]), "%s: a reply has text or json, not both", path)
	}
}

// toolCall checks one scripted tool call: a name, and arguments that are
// an object (or a string, sent verbatim).
func (fc *fixturesChecker) toolCall(n *yaml.Node, path string) {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		fc.errs.Add(fc.pos(n), "%s: want a tool call {name, arguments}, got %s", path, what(n))
		return
	}
	named := false
	for _, kv := range fc.mapping(n, path, "a tool call") {
		k, v := kv[0], kv[1]
		switch k.Value {
		case "name":
			if fc.str(v, path+".name") && v.Value == "" {
				fc.errs.Add(fc.pos(v), "%s.name: empty tool name", path)
			}
			named = true
		case "arguments":
			v = resolveAlias(v)
			switch {
			case v.Kind == yaml.MappingNode:
				if err := v.Decode(new(map[string]any)); err != nil {
					fc.errs.Add(fc.pos(v), "%s.arguments: %v", path, err)
				}
			case isNull(v), v.Kind == yaml.ScalarNode && v.Tag == "!!str":
			default:
				fc.errs.Add(fc.pos(v), "%s.arguments: want an object (or a string sent as it is), got %s", path, what(v))
			}
		default:
			fc.unknownKey(k, path, []string{"name", "arguments"})
		}
	}
	if !named {
		fc.errs.Add(fc.pos(n), "%s: a tool call needs a name", path)
	}
}

// rule checks one match rule.
func (fc *fixturesChecker) rule(n *yaml.Node, path string) {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		fc.errs.Add(fc.pos(n), "%s: want a match rule (a mapping), got %s", path, what(n))
		return
	}
	replied := false
	for _, kv := range fc.mapping(n, path, "a match rule") {
		k, v := kv[0], kv[1]
		p := path + "." + k.Value
		switch k.Value {
		case "node":
			fc.str(v, p)
		case "contains", "history_contains":
			fc.strings(v, p)
		case "turn":
			fc.count(v, p)
		case "reply":
			fc.reply(v, p)
			replied = true
		default:
			fc.unknownKey(k, path, []string{"node", "contains", "history_contains", "turn", "reply"})
		}
	}
	if !replied {
		fc.errs.Add(fc.pos(n), "%s: a rule needs a reply", path)
	}
}
