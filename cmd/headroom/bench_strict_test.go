package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkStrictRestart measures, for an agent holding 20 sessions of a
// strict tenant (ceiling 100) that is killed with -9 and restarted on its
// data directory, the time from starting the new process to (a) its first
// admission and (b) its share being booked: the first answer to an ask of
// the new process, which carried the sessions it restored. Run with
// -benchtime 10x.
func BenchmarkStrictRestart(b *testing.B) {
	s := newStack(b)
	s.startAggregator()
	code, body, err := call("POST", "http://"+s.http+"/v1/plans", map[string]any{"name": "hundred", "fee_monthly_micros": 100_000_000, "ceiling": 100, "mode": "strict"})
	if err != nil || code != 201 {
		b.Fatalf("plan: %d %s %v", code, body, err)
	}
	if code, body, err := call("PUT", "http://"+s.http+"/v1/tenants/t/plan", map[string]string{"plan": "hundred"}); err != nil || code != 200 {
		b.Fatalf("set plan: %d %s %v", code, body, err)
	}
	a := s.startFleetAgent("a")
	admitOnce := func(id string) bool {
		code, _, err := call("POST", "http://"+a.api+"/v1/sessions", map[string]string{"tenant": "t", "class": "audio", "session": id})
		return err == nil && (code == 201 || code == 200)
	}
	for i := range 20 {
		waitFor(b, 20*time.Second, "fill", func() error {
			if !admitOnce(fmt.Sprintf("base-%d", i)) {
				return fmt.Errorf("refused")
			}
			return nil
		})
	}
	// booked: the restarted agent has read the answer to an ask, which
	// carried the sessions it restored (GrantWant.Open): the leader booked
	// them.
	booked := func() bool {
		_, body, err := call("GET", "http://"+a.api+"/v1/status", nil)
		if err != nil {
			return false
		}
		var st struct {
			Grants struct {
				Answered uint64 `json:"answered"`
			} `json:"grants"`
		}
		json.Unmarshal(body, &st)
		return st.Grants.Answered > 0
	}
	var toAdmit, toBooked []time.Duration
	for round := 0; round < b.N; round++ {
		time.Sleep(300 * time.Millisecond) // everything persisted
		a.proc.kill()
		start := time.Now()
		a.proc.restart()
		id := fmt.Sprintf("new-%d", round)
		var gotAdmit, gotBooked time.Duration
		for gotAdmit == 0 || gotBooked == 0 {
			if time.Since(start) > 30*time.Second {
				b.Fatalf("round %d: admitted after %v, booked after %v, within 30 s", round, gotAdmit, gotBooked)
			}
			if gotAdmit == 0 && admitOnce(id) {
				gotAdmit = time.Since(start)
			}
			if gotBooked == 0 && booked() {
				gotBooked = time.Since(start)
			}
			time.Sleep(time.Millisecond)
		}
		toAdmit, toBooked = append(toAdmit, gotAdmit), append(toBooked, gotBooked)
		call("DELETE", "http://"+a.api+"/v1/sessions/"+id, nil)
	}
	slices.Sort(toAdmit)
	slices.Sort(toBooked)
	p := func(ds []time.Duration, q int) float64 { return float64(ds[(len(ds)-1)*q/100].Microseconds()) / 1000 }
	b.ReportMetric(p(toAdmit, 50), "admit-p50-ms")
	b.ReportMetric(p(toAdmit, 99), "admit-p99-ms")
	b.ReportMetric(p(toBooked, 50), "booked-p50-ms")
	b.ReportMetric(p(toBooked, 99), "booked-p99-ms")
}
