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
	var errs []error
	for _, node := range spec.SortedKeys(fx.Replies) {
		for i, r := range fx.Replies[node] {
			if err := r.check(); err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: replies.%s[%d]: %w", path, r.line, node, i, err))
			}
		}
	}
	for i, r := range fx.Match {
		if r.Reply == nil {
			errs = append(errs, fmt.Errorf("%s:%d: match[%d]: a rule needs a reply", path, r.line, i))
		} else if err := r.Reply.check(); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: match[%d].reply: %w", path, r.line, i, err))
		}
	}
	return fx, errors.Join(errs...)
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
