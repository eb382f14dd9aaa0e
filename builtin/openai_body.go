package builtin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	openai "github.com/sashabaranov/go-openai"
)

// serverError is an error the server reported: an HTTP error status, an
// error body in a 200 answer, or an error event inside a stream.
type serverError struct {
	Code   int    // the HTTP status of an error status, else 0
	Status string // its status line ("429 Too Many Requests")
	Where  string // in200 or inStream when the status was 200
	Msg    string
	Retry  bool
}

// Where a 200 answer carried the error.
const (
	in200    = "the server answered 200 with an error"
	inStream = "the server sent an error in the stream"
)

func (e *serverError) Error() string {
	if e.Status != "" {
		return fmt.Sprintf("HTTP %s: %s", e.Status, e.Msg)
	}
	return e.Where + ": " + e.Msg
}

// errIncomplete is a stream that ended with neither a finish_reason nor
// [DONE]: the reply may be cut anywhere, so it is retried, never stored.
var errIncomplete = errors.New("the stream ended before the reply was complete (no finish_reason, no [DONE])")

// errPlainJSON is a JSON reply to a streaming request: a proxy or server
// that ignored "stream": true. Retried like a cut stream.
var errPlainJSON = errors.New("the server answered the streaming request with a plain JSON reply, not a stream (set stream: false for it)")

// retryStatus reports whether an HTTP status is worth a retry.
func retryStatus(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500
}

// fromHTTPError turns go-openai's error for a failed HTTP status into a
// *serverError with the server's own message. go-openai reads a body like
// {"error": "<a string>"} (vLLM, Ollama) into a RequestError wrapping an
// empty APIError, so the body is read again here.
func fromHTTPError(err error) error {
	var re *openai.RequestError
	var ae *openai.APIError
	switch {
	case errors.As(err, &re) && re.HTTPStatusCode > 0:
		msg := errorMessage(re.Body)
		if msg == "" && re.Err != nil {
			msg = re.Err.Error()
		}
		return &serverError{Code: re.HTTPStatusCode, Status: re.HTTPStatus, Msg: msg, Retry: retryStatus(re.HTTPStatusCode)}
	case errors.As(err, &ae) && ae.HTTPStatusCode > 0:
		return &serverError{Code: ae.HTTPStatusCode, Status: ae.HTTPStatus, Msg: ae.Message, Retry: retryStatus(ae.HTTPStatusCode)}
	}
	return err
}

// errorMessage finds the message of an error body: {"error": "…"},
// {"error": {"message": "…"}}, {"message": "…"} or {"detail": "…"}; else
// the body's text, clipped.
func errorMessage(body []byte) string {
	var v struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Detail  any             `json:"detail"`
	}
	if json.Unmarshal(body, &v) == nil {
		if msg, _ := inner(v.Error); msg != "" {
			return msg
		}
		if v.Message != "" {
			return v.Message
		}
		if s, ok := v.Detail.(string); ok && s != "" {
			return s
		}
	}
	return clip(strings.TrimSpace(string(body)), 500)
}

// inner reads the value of an "error" key: a string, or an object with a
// message and maybe a numeric code (vLLM puts the HTTP status there).
func inner(raw json.RawMessage) (msg string, code int) {
	if len(raw) == 0 {
		return "", 0
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, 0
	}
	var o struct {
		Message any `json:"message"`
		Code    any `json:"code"`
	}
	if json.Unmarshal(raw, &o) != nil {
		return string(raw), 0
	}
	switch m := o.Message.(type) {
	case string:
		msg = m
	case nil:
		msg = string(raw)
	default:
		b, _ := json.Marshal(m)
		msg = string(b)
	}
	if c, ok := o.Code.(float64); ok {
		code = int(c)
	}
	return msg, code
}

// errorEvent reads an error object sent with a 200 status (as the body or
// as a stream event). It is retried like a 5xx unless its code says the
// request itself was wrong.
func errorEvent(payload []byte, where string) *serverError {
	var v struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(payload, &v) != nil || len(v.Error) == 0 || string(v.Error) == "null" {
		return nil
	}
	msg, code := inner(v.Error)
	if msg == "" {
		msg = string(v.Error)
	}
	client := code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests
	return &serverError{Where: where, Msg: msg, Retry: !client}
}

// maxTapped bounds what a bodyTap keeps of a body and of one line.
const maxTapped = 64 << 10

// bodyTap watches the body of one successful response while go-openai
// reads it, for what go-openai does not tell: the start of the body (an
// error object in a 200 answer, or a plain JSON reply to a streaming
// request) and, for a stream, whether [DONE] or an error event arrived.
type bodyTap struct {
	mu      sync.Mutex
	status  int // the 2xx status of the response
	head    []byte
	line    []byte // the current line, cut at maxTapped
	sawData bool   // a "data:" event arrived
	sawDone bool   // "data: [DONE]" arrived
	errData []byte // the payload of the first `data: {"error": …}` event
}

type tapKey struct{}

// withTap makes the request of ctx report its response body to tap.
func withTap(ctx context.Context, tap *bodyTap) context.Context {
	return context.WithValue(ctx, tapKey{}, tap)
}

// tapResponse puts the request's tap, if any, on a successful (2xx)
// response.
func tapResponse(req *http.Request, resp *http.Response) {
	if tap, _ := req.Context().Value(tapKey{}).(*bodyTap); tap != nil && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		tap.mu.Lock()
		tap.status = resp.StatusCode
		tap.mu.Unlock()
		resp.Body = &tappedBody{ReadCloser: resp.Body, tap: tap}
	}
}

// answered reports whether the server answered the request with a 2xx
// status: it billed the request, whatever its body then held.
func (t *bodyTap) answered() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status != 0
}

type tappedBody struct {
	io.ReadCloser
	tap *bodyTap
}

func (b *tappedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.tap.write(p[:n])
	if err != nil {
		b.tap.write([]byte("\n")) // the last line ends with the body
	}
	return n, err
}

func (t *bodyTap) write(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if room := maxTapped - len(t.head); room > 0 {
		t.head = append(t.head, p[:min(len(p), room)]...)
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.addLine(p)
			return
		}
		t.addLine(p[:i])
		t.endLine()
		p = p[i+1:]
	}
}

func (t *bodyTap) addLine(p []byte) {
	if room := maxTapped - len(t.line); room > 0 {
		t.line = append(t.line, p[:min(len(p), room)]...)
	}
}

func (t *bodyTap) endLine() {
	line := bytes.TrimSpace(t.line)
	t.line = t.line[:0]
	data, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return
	}
	t.sawData = true
	data = bytes.TrimSpace(data)
	switch {
	case string(data) == "[DONE]":
		t.sawDone = true
	case t.errData == nil && bytes.HasPrefix(data, []byte(`{"error"`)):
		t.errData = append([]byte(nil), data...)
	}
}

// done reports whether the stream sent [DONE].
func (t *bodyTap) done() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sawDone
}

// bodyError is the error object of a 200 answer that is not a stream.
func (t *bodyTap) bodyError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sawData {
		return nil
	}
	if e := errorEvent(t.head, in200); e != nil {
		return e
	}
	return nil
}

// streamError explains why a stream failed, from what the server sent:
// an error event, an error body, or a plain JSON reply; nil when it sent
// none of these.
func (t *bodyTap) streamError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.errData != nil {
		if e := errorEvent(t.errData, inStream); e != nil {
			return e
		}
	}
	if t.sawData {
		return nil
	}
	if e := errorEvent(t.head, in200); e != nil {
		return e
	}
	if bytes.HasPrefix(bytes.TrimSpace(t.head), []byte("{")) {
		return errPlainJSON
	}
	return nil
}
