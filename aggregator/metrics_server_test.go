package aggregator

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/internal/metricstest"
	"github.com/headroom-rtc/headroom/wire"
)

func TestAggregatorMetrics(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	s := newTestServer(t, clock)
	h := s.api.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("PUT", "/v1/tenants/acme/plan", jsonBody(`{"plan":"starter"}`)))
	if rec.Code != 200 {
		t.Fatalf("set plan: %d %s", rec.Code, rec.Body)
	}
	commitItems(t, s, fsm.Full("a1", 1, 0), fsm.Batch("a1", 1, 1,
		wire.DeltaEntry{Tenant: "acme", Class: "audio", Opened: 7, Peak: 7, SessionMicros: 30e6, Refused: 2},
		wire.DeltaEntry{Tenant: "acme", Class: "video-hd", Opened: 3, Peak: 10}))
	if code := get(t, s, "/v1/tenants?limit=banana", nil); code != 400 {
		t.Fatalf("limit=banana: %d", code)
	}
	m, text := metricstest.Scrape(t, h)
	want := map[string]float64{
		`headroom_tenants`: 1,
		`headroom_tenant_concurrency{class="audio",tenant="acme"}`:                                      7,
		`headroom_tenant_concurrency{class="video-hd",tenant="acme"}`:                                   3,
		`headroom_tenant_concurrency{class="ai",tenant="acme"}`:                                         0,
		`headroom_tenant_ceiling{tenant="acme"}`:                                                        100,
		`headroom_concurrency{class="audio"}`:                                                           7,
		`headroom_usage_session_seconds_total{class="audio"}`:                                           30,
		`headroom_usage_unit_minutes_total`:                                                             0.5,
		`headroom_refused_sessions_total{class="audio"}`:                                                2,
		`headroom_metrics_other_tenants`:                                                                0,
		`headroom_raft_state{state="leader"}`:                                                           1,
		`headroom_raft_state{state="follower"}`:                                                         0,
		`headroom_raft_voters`:                                                                          1,
		`headroom_stream_agents_connected`:                                                              0,
		`headroom_events_clients`:                                                                       0,
		`headroom_alerts_total{stage="detected"}`:                                                       0,
		`headroom_http_request_duration_seconds_count{code="400",method="GET",route="GET /v1/tenants"}`: 1,
		`headroom_http_request_duration_seconds_count{code="200",method="PUT",route="PUT /v1/tenants/{id}/plan"}`: 1,
	}
	for series, v := range want {
		if got, ok := m[series]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, v)
		}
	}
	for _, name := range []string{
		"headroom_raft_term", "headroom_raft_commit_index", "headroom_raft_applied_index", "headroom_raft_last_index",
		"headroom_raft_last_snapshot_index", "headroom_raft_last_contact_seconds", "headroom_raft_fsm_apply_seconds_count",
		"headroom_raft_apply_seconds_count", "headroom_stream_connections_total", `headroom_stream_messages_total{kind="delta",result="applied"}`,
		`headroom_events_published_total{event="concurrency"}`, "headroom_events_dropped_clients_total", "go_goroutines", "process_resident_memory_bytes",
	} {
		if _, ok := m[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	if m["headroom_raft_applied_index"] < 3 || m["headroom_raft_fsm_apply_seconds_count"] < 2 || m["headroom_raft_term"] < 1 {
		t.Errorf("raft figures: applied %v, applies %v, term %v", m["headroom_raft_applied_index"], m["headroom_raft_fsm_apply_seconds_count"], m["headroom_raft_term"])
	}
	// Names follow the conventions: headroom_ prefix, counters end in
	// _total, histograms of durations in _seconds, of counts in the unit
	// they count (_messages).
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" && strings.HasPrefix(f[2], "headroom_") {
			if (f[3] == "counter") != strings.HasSuffix(f[2], "_total") {
				t.Errorf("%s is a %s", f[2], f[3])
			}
			if f[3] == "histogram" && !strings.HasSuffix(f[2], "_seconds") && !strings.HasSuffix(f[2], "_messages") {
				t.Errorf("histogram %s is neither in seconds nor in messages", f[2])
			}
		}
	}
}
