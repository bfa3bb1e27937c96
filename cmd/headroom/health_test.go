package main

import (
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runHealth runs `headroom health` with args and returns its exit code and
// what it printed.
func runHealth(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(binPath, append([]string{"health"}, args...)...).CombinedOutput()
	if err == nil {
		return 0, string(out)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("running headroom health: %v", err)
	return -1, ""
}

// TestHealthCommand checks the exit codes and messages of `headroom health`
// against a stand-in server for each answer it can meet, then against a
// real aggregator before and after it is ready.
func TestHealthCommand(t *testing.T) {
	t.Run("answers", func(t *testing.T) {
		ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			w.Write([]byte(`{"status":"ok"}`))
		}))
		defer ready.Close()
		notReady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":"no leader known"}`))
		}))
		defer notReady.Close()
		hang := make(chan struct{})
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		}))
		defer slow.Close()
		defer close(hang)
		closed := freeAddr(t) // nothing listens there

		host := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
		for _, tc := range []struct {
			name string
			args []string
			code int
			want string
		}{
			{"ready", []string{"--addr", host(ready)}, 0, "ok: " + host(ready) + " is ready"},
			{"ready by URL", []string{"--addr", ready.URL}, 0, "is ready"},
			{"quiet", []string{"-q", "--addr", host(ready)}, 0, ""},
			{"not ready", []string{"--addr", host(notReady)}, 1, "not ready: " + host(notReady) + " answered 503: no leader known"},
			{"nothing listening", []string{"--addr", closed}, 1, "nothing listens on " + closed},
			{"no answer", []string{"--addr", host(slow), "--timeout", "200ms"}, 1, "no answer from " + host(slow) + " in time"},
			{"argument", []string{"--addr", host(ready), "extra"}, 1, "want 0 argument(s)"},
		} {
			code, out := runHealth(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) || (tc.want == "" && out != "") {
				t.Errorf("%s: exit %d, printed %q; want exit %d and %q", tc.name, code, out, tc.code, tc.want)
			}
		}
		// The image's HEALTHCHECK names no address: the environment steers it
		// to an agent or a simulator.
		cmd := exec.Command(binPath, "health")
		cmd.Env = append(cmd.Environ(), "HEADROOM_HEALTH_ADDR="+host(ready))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("health with HEADROOM_HEALTH_ADDR: %v: %s", err, out)
		}
	})

	t.Run("aggregator", func(t *testing.T) {
		s := newStack(t)
		// Not ready before the server listens; ready once it elected itself
		// and applied its log.
		if code, out := runHealth(t, "--addr", s.http); code == 0 {
			t.Fatalf("health succeeded with no server: %s", out)
		}
		s.startAggregator()
		var out string
		waitFor(t, 30*time.Second, "headroom health succeeds", func() error {
			var code int
			code, out = runHealth(t, "--addr", s.http)
			if code != 0 {
				return &healthErr{out}
			}
			return nil
		})
		if !strings.Contains(out, "is ready") {
			t.Errorf("health printed %q", out)
		}
		s.agg.kill()
		if code, out := runHealth(t, "--addr", s.http); code != 1 || !strings.Contains(out, "not ready") {
			t.Errorf("after the server stopped: exit %d, %q", code, out)
		}
	})
}

type healthErr struct{ out string }

func (e *healthErr) Error() string { return strings.TrimSpace(e.out) }
