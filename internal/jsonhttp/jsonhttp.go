// Package jsonhttp holds the JSON conventions shared by headroom's HTTP
// APIs (the aggregator's and the agent's): every answer is JSON, every
// error is {"error":"..."} with a 4xx or 5xx code, and request bodies are
// bounded and strict. It imports nothing of headroom's.
package jsonhttp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// Write answers v as JSON with the given status code.
func Write(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		body = []byte(`{"error":"cannot encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(body, '\n'))
}

// Error answers {"error": msg} with the given status code.
func Error(w http.ResponseWriter, code int, msg string) {
	Write(w, code, ErrorBody{msg})
}

// Decode decodes exactly one JSON value from r's body (at most limit bytes,
// no unknown fields, nothing after it) into v, or answers the error (400, or
// 413 for a body over the limit) and returns false.
func Decode(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, e := dec.Token(); e != io.EOF {
			err = errors.New("trailing data after the JSON value")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", limit))
		} else {
			Error(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		}
		return false
	}
	return true
}

// Errors wraps mux so that its own answers for unknown paths (404) and
// wrong methods (405, with its Allow header) are JSON errors too.
func Errors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			mux.ServeHTTP(&errorRewriter{ResponseWriter: w, path: r.URL.Path}, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// errorRewriter replaces the body of the mux's plain-text errors.
type errorRewriter struct {
	http.ResponseWriter
	path  string
	wrote bool
}

func (e *errorRewriter) WriteHeader(code int) {
	if e.wrote {
		return
	}
	e.wrote = true
	e.Header().Del("X-Content-Type-Options")
	msg := http.StatusText(code)
	switch code {
	case http.StatusNotFound:
		msg = "no such endpoint: " + e.path
	case http.StatusMethodNotAllowed:
		msg = "method not allowed on " + e.path + "; allowed: " + e.Header().Get("Allow")
	}
	Error(e.ResponseWriter, code, msg)
}

func (e *errorRewriter) Write(b []byte) (int, error) {
	if !e.wrote {
		e.WriteHeader(http.StatusOK)
	}
	return len(b), nil
}
