package aggregator

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// TestUsageReportMetering: GET /v1/tenants/{id}/usage shows the period's
// closing, late batches, time over the ceiling, regions and session
// minutes, and bills a per-session plan from the agents' rounded minutes.
func TestUsageReportMetering(t *testing.T) {
	perMin := plans.Plan{Name: "permin", Billing: plans.Package, Ceiling: 10, Mode: plans.Strict, OveragePer1000: 1_000_000} // 1,000 µ a unit-minute
	perSession := perMin
	perSession.Name, perSession.Rounding = "persession", plans.RoundSession
	cases := []struct {
		plan    plans.Plan
		minutes uint64 // audio minutes billed
	}{
		// 5 sessions of 10 s ended (5 minutes rounded each) and one of 70 s
		// is still open: 120 s in all.
		{perMin, 2},     // ⌈120 s⌉
		{perSession, 5}, // max(5, ⌈120 s⌉)
	}
	for _, tc := range cases {
		t.Run(tc.plan.Name, func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)}
			s := newTestServer(t, clock, func(c *Config) { c.UsageGrace = 2 * time.Hour })
			deadline := time.Now().Add(10 * time.Second)
			for {
				var g int64
				s.fsm.Read(func(st fsm.View) { g = st.UsageGrace() })
				if g == int64(2*time.Hour) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the leader did not write its grace into the log (state has %v)", time.Duration(g))
				}
				time.Sleep(10 * time.Millisecond)
			}
			data, err := fsm.EncodeCmd(fsm.CmdPutPlan, &fsm.PutPlanCmd{Time: s.clock.Stamp(), Plan: tc.plan, Create: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.node.Raft.Apply(data, 5*time.Second).Error(); err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			s.api.Handler().ServeHTTP(rec, httptest.NewRequest("PUT", "/v1/tenants/app1/plan", jsonBody(`{"plan":"`+tc.plan.Name+`"}`)))
			if rec.Code != 200 {
				t.Fatalf("set plan: %d %s", rec.Code, rec.Body)
			}
			clock.Set(time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC))
			b := fsm.Batch("a1", 1, 1, wire.DeltaEntry{Tenant: "app1", Class: "audio", Opened: 6, Closed: 5, Peak: 6, SessionMicros: 50_000_000 + 10_000_000, ClosedMinutes: 5})
			b.Peaks = []wire.TenantPeak{{Tenant: "app1", Peak: 6}}
			commitItems(t, s, fsm.Full("a1", 1, 0), b)
			clock.Set(time.Date(2026, 11, 2, 10, 1, 0, 0, time.UTC))
			// The open session's next minute, and a batch cut in October
			// (closed since 2026-11-01 02:00): booked here, late.
			commitItems(t, s, cutAt(fsm.Batch("a1", 1, 2, wire.DeltaEntry{Tenant: "app1", Class: "audio", SessionMicros: 60_000_000, Peak: 1}),
				time.Date(2026, 10, 31, 23, 0, 0, 0, time.UTC)))

			var got fsm.UsageReportJSON
			if code := get(t, s, "/v1/tenants/app1/usage?period=2026-11", &got); code != 200 {
				t.Fatalf("usage: %d", code)
			}
			if got.Closed || got.ClosesAt != "2026-12-01T02:00:00Z" || got.LateBatches != 1 || got.LateSeconds != 60 {
				t.Errorf("closed %v closes %s, late %d (%v s); want open until 02:00, 1 late batch of 60 s", got.Closed, got.ClosesAt, got.LateBatches, got.LateSeconds)
			}
			if got.SessionMinutesByClass["audio"] != 5 || got.SecondsByClass["audio"] != 120 {
				t.Errorf("session minutes %v, seconds %v", got.SessionMinutesByClass, got.SecondsByClass)
			}
			if len(got.Regions) != 1 || got.Regions[0].Region != "eu" || got.Regions[0].PCU != 6 || got.Regions[0].SecondsByClass["audio"] != 120 {
				t.Errorf("regions %+v", got.Regions)
			}
			if got.SecondsOverCeiling != 0 || got.PeakBasis != "global" || got.PlanPCU != 6 || got.RegionalPCU != 6 {
				t.Errorf("over %v s, basis %s %d, regional %d", got.SecondsOverCeiling, got.PeakBasis, got.PlanPCU, got.RegionalPCU)
			}
			if got.Invoice == nil {
				t.Fatalf("no invoice: %s", got.InvoiceError)
			}
			if l := got.Invoice.Lines; len(l) != 1 || l[0].Kind != plans.LineOverage || l[0].Class != "audio" || l[0].Quantity != tc.minutes || int64(l[0].Amount) != int64(tc.minutes)*1000 {
				t.Errorf("lines %+v: want one audio overage line of %d unit-minutes", l, tc.minutes)
			}
			var october fsm.UsageReportJSON
			if code := get(t, s, "/v1/tenants/app1/usage?period=2026-10", &october); code != 200 || !october.Closed || october.SecondsByClass["audio"] != 0 {
				t.Errorf("october: %d %+v; want closed and empty", code, october.MeteringJSON)
			}
		})
	}
}

// TestUsageGraceConfig: the grace is checked when the server is made.
func TestUsageGraceConfig(t *testing.T) {
	for _, g := range []time.Duration{-time.Second, fsm.MaxUsageGrace + time.Second} {
		_, err := New(Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", WireAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", UsageGrace: g})
		if err == nil {
			t.Errorf("grace %v accepted", g)
		}
	}
}
