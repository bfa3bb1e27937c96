package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/agent"
)

// BenchmarkPlanChange measures, on one aggregator with five agents, how
// long a plan change takes to be enforced by every agent's admission: a
// strict tenant full at starter's 100 is moved to growth (measured: until
// every agent has admitted a new session) and back to starter, --at now
// (measured: until every agent refuses). 20 rounds; goal p99 ≤ 1 s. It
// also reports the agents' grant round trips (ask sent → Grant read,
// through the log) seen meanwhile. Run with -benchtime 1x.
func BenchmarkPlanChange(b *testing.B) {
	s := newStack(b)
	s.startAggregator()
	fleet := s.startFleet(5)
	setPlan := func(plan string) {
		code, body, err := call("PUT", "http://"+s.http+"/v1/tenants/acme/plan", map[string]string{"plan": plan, "at": "now"})
		if err != nil || code != 200 {
			b.Fatalf("set plan %s: %d %s %v", plan, code, body, err)
		}
	}
	open := func(fa *fleetAgent, id string) (int, string) {
		code, body, err := call("POST", "http://"+fa.api+"/v1/sessions", map[string]string{"tenant": "acme", "class": "audio", "session": id})
		if err != nil {
			b.Fatal(err)
		}
		var r struct{ Reason string }
		json.Unmarshal(body, &r)
		return code, r.Reason
	}
	setPlan("starter")
	// Fill the ceiling, 20 per agent.
	for ai, fa := range fleet {
		for i := 0; i < 20; i++ {
			deadline := time.Now().Add(20 * time.Second)
			for {
				code, reason := open(fa, fmt.Sprintf("base-%d-%d", ai, i))
				if code == 201 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("filling: %d %s", code, reason)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	// enforced polls every agent until pred holds for an admission there,
	// and returns when the last one did.
	var extra []string
	var mu sync.Mutex
	enforced := func(round int, what string, pred func(code int, reason string) bool) time.Duration {
		t0 := time.Now()
		var wg sync.WaitGroup
		for ai, fa := range fleet {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ; n++ {
					id := fmt.Sprintf("%s-%d-%d-%d", what, round, ai, n)
					code, reason := open(fa, id)
					if code == 201 {
						mu.Lock()
						extra = append(extra, fa.api+" "+id)
						mu.Unlock()
					}
					if pred(code, reason) {
						return
					}
					if time.Since(t0) > 30*time.Second {
						b.Errorf("%s round %d: agent %d not enforcing after 30 s (%d %s)", what, round, ai, code, reason)
						return
					}
					time.Sleep(2 * time.Millisecond)
				}
			}()
		}
		wg.Wait()
		return time.Since(t0)
	}
	var up, down []time.Duration
	b.ResetTimer()
	for round := 0; round < 20; round++ {
		for ai, fa := range fleet { // still full at starter: nobody admits
			if code, reason := open(fa, fmt.Sprintf("check-%d-%d", round, ai)); code == 201 {
				for _, fa := range fleet {
					_, body, _ := call("GET", "http://"+fa.api+"/v1/status", nil)
					n := ownSessions(b, fa.api, "acme")
					b.Logf("agent %s holds %d: %s", fa.api, n, body)
				}
				_, body, _ := call("GET", "http://"+s.http+"/v1/tenants/acme", nil)
				if i := strings.Index(string(body), `"grants"`); i >= 0 {
					b.Logf("leader: %s", body[i:])
				}
				b.Fatalf("round %d: agent %d answers %d %s at a full starter ceiling", round, ai, code, reason)
			}
		}
		setPlan("growth")
		up = append(up, enforced(round, "up", func(code int, _ string) bool { return code == 201 }))
		setPlan("starter")
		down = append(down, enforced(round, "down", func(code int, reason string) bool { return code == 429 && reason == "ceiling" }))
		// Close what was admitted beyond the 100, back to a full starter.
		for _, e := range extra {
			var api, id string
			fmt.Sscan(e, &api, &id)
			call("DELETE", "http://"+api+"/v1/sessions/"+id, nil)
		}
		extra = extra[:0]
	}
	b.StopTimer()
	var p99s []float64
	for _, fa := range fleet {
		_, body, _ := call("GET", "http://"+fa.api+"/v1/status", nil)
		var st agent.Status
		json.Unmarshal(body, &st)
		p99s = append(p99s, st.Grants.RoundTripP99Ms)
		b.Logf("agent %s grants: %+v", fa.api, st.Grants)
	}
	b.ReportMetric(float64(percentile(up, 50).Milliseconds()), "upgrade-p50-ms")
	b.ReportMetric(float64(percentile(up, 99).Milliseconds()), "upgrade-p99-ms")
	b.ReportMetric(float64(percentile(down, 50).Milliseconds()), "downgrade-p50-ms")
	b.ReportMetric(float64(percentile(down, 99).Milliseconds()), "downgrade-p99-ms")
	worst := 0.0
	for _, v := range p99s {
		worst = max(worst, v)
	}
	b.ReportMetric(worst, "grant-rtt-p99-ms")
}
