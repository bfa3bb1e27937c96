package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestBenchCommand points `headroom bench` at a real agent: a strict tenant
// with a ceiling of 10 and 8 workers holding 3 sessions each (24 wanted). It
// reports what it did, the clients never saw more than 10 open at once, and
// nothing is left open on the agent.
func TestBenchCommand(t *testing.T) {
	s := newStack(t)
	s.startAggregator()
	if code, body, err := call("POST", "http://"+s.http+"/v1/plans", map[string]any{"name": "ten", "fee_monthly_micros": 1_000_000, "ceiling": 10, "mode": "strict"}); err != nil || code != 201 {
		t.Fatalf("plan: %d %s %v", code, body, err)
	}
	if code, body, err := call("PUT", "http://"+s.http+"/v1/tenants/lt/plan", map[string]string{"plan": "ten"}); err != nil || code != 200 {
		t.Fatalf("set plan: %d %s %v", code, body, err)
	}
	s.startAgent()
	waitFor(t, 30*time.Second, "the agent admits for lt", func() error {
		code, body, err := call("POST", "http://"+s.api+"/v1/sessions", map[string]string{"tenant": "lt", "class": "audio", "session": "warm"})
		if err != nil || code != 201 {
			return &benchErr{code, string(body), err}
		}
		return nil
	})
	if code, _, err := call("DELETE", "http://"+s.api+"/v1/sessions/warm", nil); err != nil || code != 200 {
		t.Fatalf("close warm: %d %v", code, err)
	}
	out, err := exec.Command(binPath, "bench", "--agent", s.api, "--tenant", "lt", "--workers", "8", "--sessions", "3",
		"--ops", "300", "--hold", "200us", "--progress", "0", "-o", "json").Output()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	var r benchJSON
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if r.Sessions < 300 || r.Errors != 0 || r.Workers != 8 {
		t.Errorf("bench says %+v, want ≥ 300 sessions, 8 workers, no errors", r)
	}
	if r.MostOpen < 1 || r.MostOpen > 10 {
		t.Errorf("most open at once %d: want 1 to 10 (ceiling 10)", r.MostOpen)
	}
	if r.AdmitP50Micros <= 0 || r.AdmitP99Micros < r.AdmitP50Micros {
		t.Errorf("latencies p50 %v p99 %v", r.AdmitP50Micros, r.AdmitP99Micros)
	}
	if n := ownSessions(t, s.api, "lt"); n != 0 {
		t.Errorf("%d sessions left open on the agent", n)
	}

	for _, bad := range [][]string{
		{"--ops", "1", "--workers", "0"},
		{"--duration", "0s"},
		{"--ops", "-1"},
		{"--ops", "1", "--agent", "ftp://x"},
		{"--ops", "1", "-o", "yaml"},
		{"--ops", "1", "extra-arg"},
	} {
		args := append([]string{"bench", "--agent", s.api, "--tenant", "lt"}, bad...)
		out, err := exec.Command(binPath, args...).CombinedOutput()
		if err == nil {
			t.Errorf("bench %v: no error\n%s", bad, out)
		}
	}
	// Nothing listening is an error saying so, after --max-errors.
	out, err = exec.Command(binPath, "bench", "--agent", "127.0.0.1:1", "--tenant", "lt", "--ops", "5", "--max-errors", "2").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "connection refused") {
		t.Errorf("bench against nothing: %v\n%s", err, out)
	}
}

type benchErr struct {
	code int
	body string
	err  error
}

func (e *benchErr) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return e.body
}
