package builtin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/lgrun/lgrun/spec"
)

const maxRedirects = 5

// httpTool runs an http tool: the URL is a template and the body an
// expression over the arguments, headers come from environment variables, and every URL the
// request reaches (redirects included) must be on allow_hosts. The result
// is the response body, cut at max_output_bytes.
func (e *engine) httpTool(ctx context.Context, t *spec.Tool, args map[string]any) (string, error) {
	env := map[string]any{"args": args}
	raw, err := t.URL.Render(env)
	if err != nil {
		return "", fmt.Errorf("url: %w", err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("url %q: %v", raw, err)
	}
	if err := allowed(u, t.AllowHosts); err != nil {
		return "", err
	}
	var body io.Reader
	ctype := ""
	if t.Body != nil {
		bv, err := t.Body.Eval(env)
		if err != nil {
			return "", fmt.Errorf("body: %w", err)
		}
		if s, ok := bv.(string); ok {
			body, ctype = strings.NewReader(s), "text/plain; charset=utf-8"
		} else {
			s, err := jsonText(bv)
			if err != nil {
				return "", fmt.Errorf("body: %w", err)
			}
			body, ctype = strings.NewReader(s), "application/json"
		}
	}
	req, err := http.NewRequestWithContext(ctx, t.Method, u.String(), body)
	if err != nil {
		return "", err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for _, h := range spec.SortedKeys(t.HeadersEnv) {
		name := t.HeadersEnv[h]
		v := e.opts.Getenv(name)
		if v == "" {
			return "", fmt.Errorf("header %s: environment variable %s is empty", h, name)
		}
		req.Header.Set(h, v)
	}
	hc := *e.opts.HTTPClient
	hc.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		if err := allowed(r.URL, t.AllowHosts); err != nil {
			return fmt.Errorf("redirect to %s refused: %w", r.URL.Redacted(), err)
		}
		return nil
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return "", fmt.Errorf("%s %s: %v", t.Method, u.Redacted(), ue.Err)
		}
		return "", err
	}
	defer resp.Body.Close()
	limit := t.MaxOutputBytes
	if limit <= 0 {
		limit = defaultMaxOutput
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	if err != nil {
		return "", fmt.Errorf("read response: %v", err)
	}
	out := capped(b, limit)
	if resp.StatusCode >= 400 {
		return "", fmt.Errorf("HTTP %s: %s", resp.Status, clip(out, 500))
	}
	return out, nil
}

// allowed checks u against allow_hosts. An entry matches the host name
// (any port), host:port exactly, or with a leading "*." any subdomain.
func allowed(u *url.URL, hosts []string) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("url %q: only http and https URLs are allowed", u.Redacted())
	}
	host := strings.ToLower(u.Hostname())
	hostPort := strings.ToLower(u.Host)
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSpace(h))
		switch {
		case h == host, h == hostPort:
			return nil
		case strings.HasPrefix(h, "*.") && strings.HasSuffix(host, h[1:]):
			return nil
		}
	}
	return fmt.Errorf("host %q is not in allow_hosts (%s)", u.Host, strings.Join(hosts, ", "))
}

// capped returns b as text, cut to limit bytes with a note when longer.
func capped(b []byte, limit int) string {
	if len(b) <= limit {
		return string(b)
	}
	return string(b[:limit]) + fmt.Sprintf("\n[output truncated at %d bytes]", limit)
}
