package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/types"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

func (c *checker) decodeModels(n *yaml.Node) {
	m := asMapping(n)
	for _, k := range m.keys {
		mm := asMapping(m.get(k.Value))
		md := &Model{Name: k.Value, Pos: c.pos(k), Provider: "openai"}
		if v := mm.get("provider"); v != nil {
			md.Provider = v.Value
		}
		md.BaseURL = scalar(mm.get("base_url"))
		md.Model = scalar(mm.get("model"))
		md.APIKeyEnv = scalar(mm.get("api_key_env"))
		if v := mm.get("temperature"); v != nil {
			var t float64
			_ = v.Decode(&t)
			md.Temperature = &t
		}
		if v := mm.get("max_tokens"); v != nil {
			_ = v.Decode(&md.MaxTokens)
		}
		md.Timeout = c.duration(mm.get("timeout"), "models."+k.Value+".timeout")
		pm := asMapping(mm.get("price"))
		if v := pm.get("input_per_million"); v != nil {
			_ = v.Decode(&md.PriceIn)
		}
		if v := pm.get("output_per_million"); v != nil {
			_ = v.Decode(&md.PriceOut)
		}
		if v := mm.get("rpm"); v != nil {
			_ = v.Decode(&md.RPM)
		}
		if v := mm.get("stream"); v != nil {
			var b bool
			_ = v.Decode(&b)
			md.Stream = &b
		}
		md.Retry = c.retry(mm.get("retry"), "models."+k.Value+".retry")
		md.Fallbacks = nameRefs(c.file, mm.get("fallbacks"))
		if v := mm.get("fixtures"); v != nil {
			md.Fixtures = c.resolve(v.Value)
		}
		switch md.Provider {
		case "mock":
			if md.Fixtures == "" {
				c.errs.Add(md.Pos, "models.%s: provider mock needs fixtures (a file of scripted replies)", k.Value)
			} else if src, err := c.loader.read(md.Fixtures); err != nil {
				c.errs.Add(c.pos(mm.get("fixtures")), "models.%s.fixtures: cannot read %q: %v", k.Value, mm.get("fixtures").Value, unwrapPathErr(err))
			} else {
				c.loader.checkFixtures(md.Fixtures, src, c.errs)
			}
		case "openai":
			if md.Model == "" {
				c.errs.Add(md.Pos, "models.%s: missing model id (key model)", k.Value)
			}
		case "azure":
			if md.Model == "" {
				c.errs.Add(md.Pos, "models.%s: provider azure needs model (the deployment name)", k.Value)
			}
			if md.BaseURL == "" {
				c.errs.Add(md.Pos, "models.%s: provider azure needs base_url (the resource endpoint, e.g. https://NAME.openai.azure.com)", k.Value)
			}
		}
		if v := mm.get("api_version"); v != nil {
			if md.Provider != "azure" {
				c.errs.Add(c.pos(mm.kpos["api_version"]), "models.%s: api_version is only for provider azure", k.Value)
			}
			md.APIVersion = v.Value
		}
		c.g.Models[k.Value] = md
	}
	for _, md := range c.g.Models {
		for _, f := range md.Fallbacks {
			if f.Name == md.Name {
				c.errs.Add(f.Pos, "models.%s: a model cannot be its own fallback", md.Name)
			} else if c.g.Models[f.Name] == nil {
				c.unknownRef(f, "model", SortedKeys(c.g.Models))
			}
		}
	}
}

// resolve makes a path in the graph file relative to the file's directory.
func (c *checker) resolve(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

func (c *checker) decodeTools(n *yaml.Node) {
	m := asMapping(n)
	for _, k := range m.keys {
		tm := asMapping(m.get(k.Value))
		path := "tools." + k.Value
		t := &Tool{Name: k.Value, Pos: c.pos(k), Kind: scalar(tm.get("kind")), Description: scalar(tm.get("description"))}
		if pn := tm.get("parameters"); pn != nil {
			var conv valueConv
			conv.file, conv.errs = c.file, c.errs
			t.Parameters, _ = conv.value(pn).(map[string]any)
			if err := CheckJSONSchema(t.Parameters); err != nil {
				c.errs.Add(c.pos(pn), "%s.parameters: not a valid JSON Schema: %v", path, err)
			}
		} else {
			t.Parameters = map[string]any{"type": "object", "properties": map[string]any{}}
		}
		decl, known := builtinToolDecl(t.Kind)
		if !known {
			decl, known = c.reg.toolKind(t.Kind)
		}
		var allowed []string
		for _, s := range decl.Settings {
			allowed = append(allowed, s.Name)
		}
		for _, key := range tm.keys {
			if contains(commonToolKeys, key.Value) || contains(allowed, key.Value) {
				continue
			}
			msg := fmt.Sprintf("%s: key %q is not used by tool kind %s", path, key.Value, t.Kind)
			if s := suggest(key.Value, append(slices.Clone(commonToolKeys), allowed...)); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			c.errs.Add(c.pos(key), "%s", msg)
		}
		switch {
		case decl.decode != nil:
			decl.decode(c, t, tm, path)
		case known:
			var ok bool
			t.Settings, ok = c.decodeSettings(t.Pos, path, decl.Name, decl.Settings, tm)
			if ok && decl.Check != nil {
				c.settingErrors(decl.Check(t.Settings), t.Pos, path, tm)
			}
		}
		t.Timeout = c.duration(tm.get("timeout"), path+".timeout")
		c.g.Tools[k.Value] = t
	}
	// Go tools of the registry are the graph's too, unless it declares a
	// tool of the same name itself.
	for _, t := range c.reg.goTools(c.g.Tools) {
		c.g.Tools[t.Name] = t
	}
	c.checkMCPNames()
}

// toolArgsEnv is what a tool's expressions see: the call's arguments.
var toolArgsEnv = types.Map{"args": types.TypeOf(map[string]any{})}

// needToolKey reports a tool of tm without the setting key.
func (c *checker) needToolKey(t *Tool, tm *mapping, path, key string) {
	if tm.get(key) == nil {
		c.errs.Add(t.Pos, "%s: kind %s needs %s", path, t.Kind, key)
	}
}

// decodeExprTool decodes an expr tool.
func (c *checker) decodeExprTool(t *Tool, tm *mapping, path string) {
	c.needToolKey(t, tm, path, "expr")
	t.Expr = c.ec.compile(tm.get("expr"), path+".expr", toolArgsEnv, nil)
}

// decodeHTTPTool decodes an http tool.
func (c *checker) decodeHTTPTool(t *Tool, tm *mapping, path string) {
	c.needToolKey(t, tm, path, "url")
	t.Method = "GET"
	if v := tm.get("method"); v != nil {
		t.Method = v.Value
	}
	t.URL = c.ec.compileTemplate(tm.get("url"), path+".url", "url", toolArgsEnv)
	t.Body = c.ec.compile(tm.get("body"), path+".body", toolArgsEnv, nil)
	if hn := tm.get("headers_env"); hn != nil {
		t.HeadersEnv = map[string]string{}
		_ = hn.Decode(&t.HeadersEnv)
	}
	for _, h := range nameRefs(c.file, tm.get("allow_hosts")) {
		t.AllowHosts = append(t.AllowHosts, h.Name)
	}
	if len(t.AllowHosts) == 0 {
		c.errs.Add(t.Pos, "%s: http tools need allow_hosts (the hosts the tool may call)", path)
	}
	c.maxOutput(t, tm)
}

// decodeExecTool decodes an exec tool.
func (c *checker) decodeExecTool(t *Tool, tm *mapping, path string) {
	c.needToolKey(t, tm, path, "command")
	if cn := tm.get("command"); cn != nil {
		_ = cn.Decode(&t.Command)
	}
	c.maxOutput(t, tm)
}

// decodeMCPTool decodes an mcp tool source: a server over stdio (command,
// env) or streamable HTTP (url on an allowed host, headers_env), the tools
// it imports and their prefix.
func (c *checker) decodeMCPTool(t *Tool, tm *mapping, path string) {
	t.MCP = &MCPSource{Prefix: scalar(tm.get("prefix"))}
	cn, un := tm.get("command"), tm.get("url")
	switch {
	case cn == nil && un == nil:
		c.errs.Add(t.Pos, "%s: kind mcp needs command (a stdio server) or url (a streamable HTTP server)", path)
	case cn != nil && un != nil:
		c.errs.Add(c.pos(un), "%s: kind mcp takes command (stdio) or url (streamable HTTP), not both", path)
	}
	if cn != nil {
		_ = cn.Decode(&t.Command)
		for _, k := range []string{"headers_env", "allow_hosts"} {
			if n := tm.get(k); n != nil {
				c.errs.Add(c.pos(n), "%s.%s: only for an mcp server reached by url", path, k)
			}
		}
	}
	if n := tm.get("env"); n != nil {
		_ = n.Decode(&t.MCP.Env)
		if un != nil {
			c.errs.Add(c.pos(n), "%s.env: only for an mcp server run by command", path)
		}
	}
	if un != nil {
		t.MCP.URL = un.Value
		if hn := tm.get("headers_env"); hn != nil {
			t.HeadersEnv = map[string]string{}
			_ = hn.Decode(&t.HeadersEnv)
		}
		for _, h := range nameRefs(c.file, tm.get("allow_hosts")) {
			t.AllowHosts = append(t.AllowHosts, h.Name)
		}
		u, err := url.Parse(un.Value)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			c.errs.Add(c.pos(un), "%s.url: %q is not an http or https URL", path, un.Value)
		case len(t.AllowHosts) == 0:
			c.errs.Add(t.Pos, "%s: mcp servers reached by url need allow_hosts (the hosts the tool may call)", path)
		case !slices.Contains(t.AllowHosts, u.Hostname()):
			c.errs.Add(c.pos(un), "%s.url: host %q is not in allow_hosts", path, u.Hostname())
		}
	}
	if n := tm.get("tools"); n != nil {
		_ = n.Decode(&t.MCP.Tools)
		seen := map[string]bool{}
		for i, name := range t.MCP.Tools {
			t.MCP.ToolPos = append(t.MCP.ToolPos, c.pos(n.Content[i]))
			if seen[name] {
				c.errs.Add(c.pos(n.Content[i]), "%s.tools: %q is listed twice", path, name)
			}
			seen[name] = true
		}
	}
}

// checkMCPNames reports an mcp source's listed function names (prefix +
// tool) that clash with another tool of the graph or another source's.
func (c *checker) checkMCPNames() {
	owner := map[string]string{}
	for _, name := range SortedKeys(c.g.Tools) {
		if c.g.Tools[name].MCP == nil {
			owner[name] = name
		}
	}
	for _, name := range SortedKeys(c.g.Tools) {
		t := c.g.Tools[name]
		if t.MCP == nil {
			continue
		}
		mine := map[string]bool{}
		for i, tool := range t.MCP.Tools {
			fn := t.MCP.Function(tool)
			if mine[fn] {
				continue // listed twice, reported by the decoder
			}
			mine[fn] = true
			if o, ok := owner[fn]; ok {
				c.errs.Add(t.MCP.ToolPos[i], "tools.%s: imported tool %q is the function %q, which %s already is; set prefix", name, tool, fn, describeOwner(o))
				continue
			}
			owner[fn] = "mcp source " + name
		}
	}
}

func describeOwner(o string) string {
	if strings.HasPrefix(o, "mcp source ") {
		return "a tool of " + o
	}
	return "tool " + strconv.Quote(o)
}

func (c *checker) maxOutput(t *Tool, tm *mapping) {
	if v := tm.get("max_output_bytes"); v != nil {
		_ = v.Decode(&t.MaxOutputBytes)
	}
}

// CheckJSONSchema reports whether s compiles as a JSON Schema.
func CheckJSONSchema(s map[string]any) error {
	_, err := compileJSONSchema(s)
	return err
}

func compileJSONSchema(s map[string]any) (*jsonschema.Schema, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	jc := jsonschema.NewCompiler()
	if err := jc.AddResource("mem:///schema.json", doc); err != nil {
		return nil, err
	}
	return jc.Compile("mem:///schema.json")
}

// matchesSchema reports whether v (a decoded setting) is valid against
// the JSON Schema s (nil accepts anything). A mismatch is reported by the
// validation of the whole file against the graph schema, where the
// setting's schema is.
func matchesSchema(s map[string]any, v any) bool {
	if s == nil {
		return true
	}
	sch, err := compileJSONSchema(s)
	if err != nil {
		return false
	}
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	jv, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	return err == nil && sch.Validate(jv) == nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
