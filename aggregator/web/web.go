package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
)

// The web dashboard: a page and its script and style, embedded in the
// binary, served at / on every aggregator. It reads the same JSON API as
// any other client (and /v1/events for live updates), so a follower serves
// it as well as the leader. Nothing is loaded from elsewhere: the Content
// Security Policy below lets the page fetch only from this server.

//go:embed *.html *.css *.js
var webFiles embed.FS

// webAsset is one embedded file, read once at start.
type webAsset struct {
	body  []byte
	ctype string
	etag  string
}

// webAssets maps a file name of this folder to its asset; built at init, read
// only afterwards.
var webAssets = loadWebAssets()

func loadWebAssets() map[string]webAsset {
	out := map[string]webAsset{}
	err := fs.WalkDir(webFiles, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := webFiles.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		out[p] = webAsset{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("aggregator: embedded dashboard: " + err.Error()) // the embed is checked at build time
	}
	return out
}

// webCSP lets the page load and fetch from its own server only.
const webCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Routes serves the dashboard on mux: the page at exactly / ("/{$}", so
// unknown paths still get the API's JSON 404) and its files under /ui/.
// Both are public with ACLs on (the API's routeAccess): the page asks for a
// token itself.
func Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { serveWebAsset(w, r, "index.html") })
	mux.HandleFunc("GET /ui/", func(w http.ResponseWriter, r *http.Request) {
		serveWebAsset(w, r, strings.TrimPrefix(r.URL.Path, "/ui/"))
	})
}

func serveWebAsset(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := webAssets[name]
	if !ok || name == "index.html" && r.URL.Path != "/" {
		jsonhttp.Error(w, http.StatusNotFound, "no such file: "+r.URL.Path)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Content-Security-Policy", webCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Revalidate every time: the ETag makes that a 304 until the binary
	// changes, so an upgraded server never serves a stale script.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}
