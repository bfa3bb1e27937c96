package web

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
)

func webMux() http.Handler {
	mux := http.NewServeMux()
	Routes(mux)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { jsonhttp.Write(w, 200, map[string]string{}) })
	return jsonhttp.Errors(mux)
}

func TestWebRoutes(t *testing.T) {
	h := webMux()
	cases := []struct {
		path  string
		code  int
		ctype string
	}{
		{"/", 200, "text/html"},
		{"/ui/app.js", 200, "text/javascript"},
		{"/ui/app.css", 200, "text/css"},
		{"/ui/index.html", 404, "application/json"}, // the page only at /
		{"/ui/nope.js", 404, "application/json"},
		{"/ui/", 404, "application/json"},
		{"/nope", 404, "application/json"}, // the API's own 404 still
		{"/v1/nope", 404, "application/json"},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", c.path, nil))
		if rec.Code != c.code || !strings.HasPrefix(rec.Header().Get("Content-Type"), c.ctype) {
			t.Errorf("GET %s: %d %q, want %d %s", c.path, rec.Code, rec.Header().Get("Content-Type"), c.code, c.ctype)
		}
		if c.code == 200 && !strings.Contains(rec.Header().Get("Content-Security-Policy"), "connect-src 'self'") {
			t.Errorf("GET %s: no Content-Security-Policy limiting the page to its server", c.path)
		}
	}
}

func TestWebRevalidates(t *testing.T) {
	h := webMux()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/app.js", nil))
	etag := rec.Header().Get("ETag")
	if etag == "" || rec.Header().Get("Cache-Control") != "no-cache" {
		t.Fatalf("app.js: ETag %q, Cache-Control %q", etag, rec.Header().Get("Cache-Control"))
	}
	req := httptest.NewRequest("GET", "/ui/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Fatalf("app.js with its ETag: %d, want 304", rec.Code)
	}
}

// TestWebNothingFromElsewhere: the dashboard works on a server without
// internet access, so no file names another host.
func TestWebNothingFromElsewhere(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href|action)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import|fetch\(\s*["'](https?:)?//`)
	for name, a := range webAssets {
		if m := external.Find(a.body); m != nil {
			t.Errorf("%s loads from elsewhere: %q", name, m)
		}
		for _, u := range regexp.MustCompile(`https?://[^\s'"]+`).FindAll(a.body, -1) {
			if string(u) != "http://www.w3.org/2000/svg" { // the SVG namespace: a name, never fetched
				t.Errorf("%s names %s", name, u)
			}
		}
	}
	if _, ok := webAssets["index.html"]; !ok {
		t.Fatal("no index.html embedded")
	}
}
