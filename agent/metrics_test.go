package agent

import (
	"strings"
	"testing"

	"github.com/headroom-rtc/headroom/internal/metricstest"
	"github.com/headroom-rtc/headroom/wire"
)

// scrapeAgent reads the agent's /metrics into series → value.
func scrapeAgent(t *testing.T, a *Agent) (map[string]float64, string) {
	t.Helper()
	return metricstest.Scrape(t, a.Handler())
}

// TestAgentMetrics runs the resend scenario (three batches, a reconnect
// that resends them all, another that resends one) and reads the counts.
func TestAgentMetrics(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}})
	pushTenants(t, a, true, meter("t1"))
	if res, _ := a.Open("nobody", "audio", "x", 0); res.Admitted {
		t.Fatal("unknown tenant admitted")
	}
	startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{})
	for i := range 3 {
		a.Open("t1", "audio", "s"+itoa(i), 0)
		fc.recvBatch()
	}
	fc.c.Close()
	fc = srv.accept()
	fc.send(&wire.Welcome{LastSeq: 0})
	for range 3 {
		fc.recvBatch()
	}
	fc.c.Close()
	fc = srv.accept()
	fc.send(&wire.Welcome{LastSeq: 2})
	fc.recvBatch()
	fc.send(&wire.Ack{Seq: 3})

	// Sessions stay open, so batches go on being cut and sent: the
	// figures that grow are checked for at least what the scenario did.
	var m map[string]float64
	var text string
	waitFor(t, "the counts of the scenario", func() bool {
		m, text = scrapeAgent(t, a)
		return m["headroom_agent_batches_resent_total"] >= 3+1 && m["headroom_agent_last_ack_age_seconds"] >= 0
	})
	exact := map[string]float64{
		`headroom_agent_connects_total`:                         3,
		`headroom_agent_admitted_total`:                         3,
		`headroom_agent_refused_total{reason="unknown-tenant"}`: 1,
		`headroom_agent_refused_total{reason="ceiling"}`:        0,
		`headroom_agent_sessions_open`:                          3,
		`headroom_agent_grant_asks_total`:                       0,
		`headroom_agent_tenants_known`:                          1,
	}
	for k, v := range exact {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if m["headroom_agent_batches_total"] < 3 || m["headroom_agent_batches_sent_total"] < m["headroom_agent_batches_resent_total"]+3 ||
		m["headroom_agent_reconnects_total"] < 2 || m["headroom_agent_last_ack_age_seconds"] < 0 {
		t.Errorf("batches %v, sent %v, resent %v, reconnects %v, last ack age %v", m["headroom_agent_batches_total"],
			m["headroom_agent_batches_sent_total"], m["headroom_agent_batches_resent_total"], m["headroom_agent_reconnects_total"],
			m["headroom_agent_last_ack_age_seconds"])
	}
	for _, name := range []string{`headroom_agent_grant_round_trip_seconds{stat="p99"}`, "headroom_agent_grant_pending", "headroom_agent_tenants_known", "go_goroutines"} {
		if _, ok := m[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	if !strings.Contains(text, `headroom_agent_info{agent="`+a.ID()+`"} 1`) {
		t.Errorf("no info series for %s", a.ID())
	}
}
