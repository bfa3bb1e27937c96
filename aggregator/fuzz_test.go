package aggregator

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzHTTPBodies sends arbitrary bodies to every endpoint that reads one.
// A body is answered with a 2xx or a 4xx, never a 5xx nor a panic, and the
// server goes on answering. (Allocation is bounded by jsonhttp.Decode's
// size limit, which every body goes through.)
func FuzzHTTPBodies(f *testing.F) {
	routes := []struct{ method, path string }{
		{"PUT", "/v1/tenants/fz/plan"},
		{"POST", "/v1/plans"},
		{"PUT", "/v1/plans/fz"},
		{"POST", "/v1/tokens"},
		{"PUT", "/v1/snapshot"},
	}
	for i, body := range []string{
		`{"plan":"starter"}`, `{"plan":"growth","at":"period-end"}`, `{"plan":"payg","at":"2027-01-01T00:00:00Z"}`,
		`{"name":"fz","fee_monthly":1,"ceiling":10,"mode":"strict","class_ceilings":[{"class":"ai","ceiling":2}]}`,
		`{"role":"tenant","tenant":"acme"}`, `null`, `[]`, `{"plan":`, "\x00\xff", `{"plan":"starter","extra":1}`,
	} {
		f.Add(uint8(i), []byte(body))
	}
	clock := &fakeClock{t: time.Date(2026, 11, 3, 8, 0, 0, 0, time.UTC)}
	s := newTestServer(f, clock)
	h := s.api.Handler()
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := routes[int(route)%len(routes)]
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(r.method, r.path, strings.NewReader(string(body))))
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", r.method, r.path, body, rec.Code, rec.Body)
		}
		ok := httptest.NewRecorder()
		h.ServeHTTP(ok, httptest.NewRequest("GET", "/healthz", nil))
		if ok.Code != http.StatusOK {
			t.Fatalf("after %s %s %q the server is unhealthy: %d", r.method, r.path, body, ok.Code)
		}
	})
}
