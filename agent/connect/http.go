package connect

import (
	"errors"
	"fmt"
	"io"
	"net/http"
)

// ErrTooLarge: a hook body over its limit.
var ErrTooLarge = errors.New("hook body too large")

// ReadBody reads r's body, at most limit bytes: beyond that it stops
// reading and returns an error wrapping ErrTooLarge (answer 413).
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, limit)
	}
	return b, err
}

// Truncate shortens what a client sent for a log line or an error.
func Truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
