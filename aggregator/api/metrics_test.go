package api

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/internal/metricstest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/headroom-rtc/headroom/wire"
)

// TestMetricsTenantCap: beyond the cap, the busiest tenants keep their
// label and the others are summed under tenant="_other".
func TestMetricsTenantCap(t *testing.T) {
	h := fsm.NewHarness(t)
	for _, tn := range []string{"a", "b", "c", "d", "e"} {
		h.Apply(fsm.CmdSetPlan, &fsm.SetPlanCmd{Time: t0.UnixNano(), Tenant: tn, Plan: "starter"})
	}
	h.Items(t0, "", fsm.Full("a1", 1, 0,
		wire.CountEntry{Tenant: "a", Class: "audio", Open: 1},
		wire.CountEntry{Tenant: "b", Class: "audio", Open: 50}, wire.CountEntry{Tenant: "b", Class: "ai", Open: 5},
		wire.CountEntry{Tenant: "c", Class: "audio", Open: 3},
		wire.CountEntry{Tenant: "d", Class: "audio", Open: 20},
		wire.CountEntry{Tenant: "e", Class: "audio", Open: 3},
	))
	reg := prometheus.NewRegistry()
	reg.MustRegister(&stateCollector{s: &Server{fsm: h.F}, maxTenants: 3})
	m, _ := metricstest.Scrape(t, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// b (55), d (20), then c and e tie at 3: c by its id.
	for tenant, audio := range map[string]float64{"b": 50, "d": 20, "c": 3, otherTenant: 4} {
		if got := m[fmt.Sprintf(`headroom_tenant_concurrency{class="audio",tenant=%q}`, tenant)]; got != audio {
			t.Errorf("%s audio %v, want %v", tenant, got, audio)
		}
	}
	for _, tenant := range []string{"a", "e"} {
		if _, ok := m[fmt.Sprintf(`headroom_tenant_ceiling{tenant=%q}`, tenant)]; ok {
			t.Errorf("%s has its own label beyond the cap", tenant)
		}
	}
	if m[`headroom_tenant_ceiling{tenant="_other"}`] != 200 || m["headroom_metrics_other_tenants"] != 2 || m[`headroom_tenant_concurrency{class="ai",tenant="b"}`] != 5 {
		t.Errorf("other ceiling %v, others %v", m[`headroom_tenant_ceiling{tenant="_other"}`], m["headroom_metrics_other_tenants"])
	}
	series := 0
	for k := range m {
		if strings.HasPrefix(k, "headroom_tenant_concurrency{") {
			series++
		}
	}
	if series != 4*fsm.NumClasses {
		t.Errorf("%d concurrency series, want %d", series, 4*fsm.NumClasses)
	}
}

// TestMetricsActiveUsers: a tenant's MAU and today's DAU are served.
func TestMetricsActiveUsers(t *testing.T) {
	h := fsm.NewHarness(t)
	h.SetPlan(t0, "t", "payg")
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	h.Items(at, "", fsm.Full("a1", 1, 0))
	b := fsm.Batch("a1", 1, 1)
	b.Users = []wire.UserSet{userSet("t", fsm.DayOf(at.Add(-24*time.Hour).UnixNano()), "u1", "u2", "u3"), userSet("t", fsm.DayOf(at.UnixNano()), "u3", "u4")}
	h.Items(at, "", b)
	reg := prometheus.NewRegistry()
	reg.MustRegister(&stateCollector{s: &Server{fsm: h.F}, maxTenants: 10})
	m, _ := metricstest.Scrape(t, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if mau, dau := m[`headroom_tenant_mau{tenant="t"}`], m[`headroom_tenant_dau{tenant="t"}`]; mau != 4 || dau != 2 {
		t.Errorf("MAU %v, DAU %v; want 4 and 2", mau, dau)
	}
}
