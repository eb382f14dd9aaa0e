// Package ui is the web page of lgrun serve: threads, runs, checkpoints and
// time travel, drawn from the server's own Agent Server API. Every asset is
// embedded in the binary, so the page works on a closed network. See
// docs/ui.md.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Handler serves the page and its assets under prefix (e.g. "/ui/"). The
// assets hold no data, so they need no API key; the page sends the key the
// user enters with each API call.
func Handler(prefix string) http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.StripPrefix(prefix, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:")
		files.ServeHTTP(w, r)
	}))
}
