package jsonhttp

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestErrorsAreJSON(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/thing", func(w http.ResponseWriter, r *http.Request) { Write(w, 200, map[string]int{"n": 1}) })
	h := Errors(mux)
	cases := []struct {
		method, path string
		code         int
		contains     string
	}{
		{"GET", "/v1/thing", 200, ""},
		{"GET", "/nowhere", 404, "no such endpoint"},
		{"DELETE", "/v1/thing", 405, "allowed: GET"},
	}
	for _, tc := range cases {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, rec.Code, tc.code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: content type %q", tc.method, tc.path, ct)
		}
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Errorf("%s %s: body %q is not JSON", tc.method, tc.path, rec.Body.String())
		}
		if tc.contains != "" && !strings.Contains(body["error"].(string), tc.contains) {
			t.Errorf("%s %s: error %q lacks %q", tc.method, tc.path, body["error"], tc.contains)
		}
	}
}

func TestDecode(t *testing.T) {
	cases := []struct {
		body string
		ok   bool
		code int
	}{
		{`{"a":"x"}`, true, 200},
		{`{"a":`, false, 400},
		{`{"a":"x","b":1}`, false, 400},
		{`{"a":"x"} {"a":"y"}`, false, 400},
		{`{"a":"` + strings.Repeat("x", 100) + `"}`, false, 413},
	}
	for _, tc := range cases {
		rec := httptest.NewRecorder()
		var v struct {
			A string `json:"a"`
		}
		ok := Decode(rec, httptest.NewRequest("POST", "/", strings.NewReader(tc.body)), 64, &v)
		if ok != tc.ok || (!ok && rec.Code != tc.code) {
			t.Errorf("%q: ok=%v code=%d, want ok=%v code=%d", tc.body, ok, rec.Code, tc.ok, tc.code)
		}
	}
}
