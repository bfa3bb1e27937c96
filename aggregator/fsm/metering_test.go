package fsm

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

var nov1 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func dec1(h, m, s int) time.Time { return time.Date(2026, 12, 1, h, m, s, 0, time.UTC) }

// cutAt stamps a batch with the agent's time of its cut.
func cutAt(b *wire.DeltaBatch, at time.Time) *wire.DeltaBatch {
	b.AgentTime = at.UnixMilli()
	return b
}

// usageOf copies a tenant's usage of a period (nil if none), deep enough to
// compare before and after.
func usageOf(t *testing.T, h *Harness, tenant, period string) *Usage {
	t.Helper()
	var b []byte
	h.F.Read(func(view View) {
		s := view.s
		if tn := s.Tenants[tenant]; tn != nil && tn.Usage[period] != nil {
			var err error
			if b, err = msgpack.Marshal(tn.Usage[period]); err != nil {
				t.Fatal(err)
			}
		}
	})
	if b == nil {
		return nil
	}
	var u Usage
	if err := msgpack.Unmarshal(b, &u); err != nil {
		t.Fatal(err)
	}
	return &u
}

// TestBatchBookedToItsPeriodUntilItCloses: a batch goes to the period it was
// cut in while that period is open (until its end plus the grace), else to
// the entry's period, counted late; a closed period never changes again.
func TestBatchBookedToItsPeriodUntilItCloses(t *testing.T) {
	cut := time.Date(2026, 11, 30, 23, 59, 50, 0, time.UTC)
	cases := []struct {
		name    string
		grace   time.Duration // 0: the default, 1 h
		cut     time.Time     // zero: no agent time
		applied time.Time
		want    string // period booked to
		late    bool
	}{
		{"in its period", 0, cut, cut.Add(5 * time.Second), "2026-11", false},
		{"after its end, within the grace", 0, cut, dec1(0, 0, 5), "2026-11", false},
		{"the last second of the grace", 0, cut, dec1(0, 59, 59), "2026-11", false},
		{"at its end plus the grace: closed", 0, cut, dec1(1, 0, 0), "2026-12", true},
		{"hours after", 0, cut, dec1(5, 0, 0), "2026-12", true},
		{"a longer grace", 2 * time.Hour, cut, dec1(1, 30, 0), "2026-11", false},
		{"a shorter grace", 10 * time.Minute, cut, dec1(0, 10, 0), "2026-12", true},
		{"no agent time: the entry's period", 0, time.Time{}, dec1(0, 0, 5), "2026-12", false},
		{"agent clock ahead: the entry's period", 0, dec1(0, 0, 30), cut.Add(5 * time.Second), "2026-11", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHarness(t)
			if tc.grace != 0 {
				h.OK(CmdUsageGrace, &UsageGraceCmd{Time: nov1.UnixNano(), Grace: int64(tc.grace)})
			}
			h.OK(CmdSetPlan, &SetPlanCmd{Time: nov1.UnixNano(), Tenant: "t1", Plan: "starter"})
			early := time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)
			h.Items(early, "", Full("a1", 1, 0), cutAt(Batch("a1", 1, 1, wire.DeltaEntry{Tenant: "t1", Class: "audio", Opened: 1, Peak: 1, SessionMicros: 1_000_000}), early))
			before := usageOf(t, h, "t1", "2026-11")

			b := Batch("a1", 1, 2, wire.DeltaEntry{Tenant: "t1", Class: "audio", Closed: 1, SessionMicros: 7_000_000, ClosedMinutes: 1, Refused: 2, Peak: 1})
			if !tc.cut.IsZero() {
				cutAt(b, tc.cut)
			}
			if r := h.Items(tc.applied, "", b); r[0].Status != StatusApplied {
				t.Fatalf("batch: %+v", r[0])
			}
			nov, dec := usageOf(t, h, "t1", "2026-11"), usageOf(t, h, "t1", "2026-12")
			if dec == nil {
				dec = &Usage{}
			}
			a := ClassIndex("audio")
			booked, wantMicros := dec, uint64(7_000_000)
			if tc.want == "2026-11" {
				booked, wantMicros = nov, 8_000_000 // with the earlier batch's second
			}
			if booked.Micros[a] != wantMicros || booked.Refused[a] != 2 || booked.ClosedMinutes[a] != 1 {
				t.Errorf("%s: %d µs, %d refused, %d minutes; want %d, 2, 1", tc.want, booked.Micros[a], booked.Refused[a], booked.ClosedMinutes[a], wantMicros)
			}
			if tc.want == "2026-12" && !reflect.DeepEqual(nov, before) {
				t.Errorf("2026-11 changed:\n%+v\nwas\n%+v", nov, before)
			}
			if tc.want == "2026-11" && dec.Micros[a] != 0 {
				t.Errorf("2026-12 took %d µs", dec.Micros[a])
			}
			wantLate, wantLateMicros := uint64(0), uint64(0)
			if tc.late {
				wantLate, wantLateMicros = 1, 7_000_000
			}
			if dec.Late != wantLate || dec.LateMicros != wantLateMicros || nov.Late != 0 {
				t.Errorf("late: 2026-12 %d batches %d µs, 2026-11 %d; want %d, %d, 0", dec.Late, dec.LateMicros, nov.Late, wantLate, wantLateMicros)
			}
			// A batch booked to November in its grace lands in its day's bucket.
			if tc.want == "2026-11" {
				last := nov.Buckets[len(nov.Buckets)-1]
				if day := time.Unix(0, last.From).UTC().Day(); day != 30 || last.Micros[a] == 0 {
					t.Errorf("november buckets %+v: want the batch on the 30th", nov.Buckets)
				}
			}
			grace := tc.grace
			if grace == 0 {
				grace = DefaultUsageGrace
			}
			closed := !tc.applied.Before(dec1(0, 0, 0).Add(grace))
			h.F.Read(func(view View) {
				s := view.s
				if got := s.PeriodClosed("2026-11"); got != closed {
					t.Errorf("2026-11 closed %v, want %v", got, closed)
				}
				if j := meteringJSON(s, s.Tenants["t1"], "2026-11"); j.Closed != closed {
					t.Errorf("usage report closed %v, want %v", j.Closed, closed)
				}
			})
		})
	}
}

// TestClosedPeriodStaysClosed: raising the grace after a period closed
// does not reopen it; its usage never changes again.
func TestClosedPeriodStaysClosed(t *testing.T) {
	h := NewHarness(t)
	h.OK(CmdSetPlan, &SetPlanCmd{Time: nov1.UnixNano(), Tenant: "t1", Plan: "starter"})
	cut := time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)
	h.Items(cut, "", Full("a1", 1, 0), cutAt(Batch("a1", 1, 1, wire.DeltaEntry{Tenant: "t1", Class: "audio", SessionMicros: 1_000_000}), cut))
	// An entry at 01:00 closes November (grace 1 h)...
	h.Items(dec1(1, 0, 0), "", cutAt(Batch("a1", 1, 2, wire.DeltaEntry{Tenant: "t1", Class: "audio", SessionMicros: 2_000_000}), cut))
	before := usageOf(t, h, "t1", "2026-11")
	// ...and a grace of 3 h set afterwards does not reopen it.
	h.OK(CmdUsageGrace, &UsageGraceCmd{Time: dec1(1, 0, 1).UnixNano(), Grace: int64(3 * time.Hour)})
	h.Items(dec1(1, 30, 0), "", cutAt(Batch("a1", 1, 3, wire.DeltaEntry{Tenant: "t1", Class: "audio", SessionMicros: 4_000_000}), cut))
	if nov := usageOf(t, h, "t1", "2026-11"); !reflect.DeepEqual(nov, before) || nov.Micros[ClassIndex("audio")] != 1_000_000 {
		t.Errorf("2026-11 changed after it closed: %+v", nov)
	}
	if dec := usageOf(t, h, "t1", "2026-12"); dec.Late != 2 || dec.LateMicros != 6_000_000 {
		t.Errorf("2026-12: %d late batches, %d µs; want 2 and 6000000", dec.Late, dec.LateMicros)
	}
	for _, g := range []time.Duration{-1, MaxUsageGrace + 1} {
		if res := h.Apply(CmdUsageGrace, &UsageGraceCmd{Time: dec1(2, 0, 0).UnixNano(), Grace: int64(g)}); !errors.Is(res.Err, ErrRefused) {
			t.Errorf("grace %v: %v, want refused", g, res.Err)
		}
	}
}

// TestSecondsOverCeiling: the time a tenant's global open count stands at
// or over its plan's ceiling, accounted from entry to entry with the
// entries' times.
func TestSecondsOverCeiling(t *testing.T) {
	base := time.Date(2026, 11, 10, 10, 0, 0, 0, time.UTC)
	s := time.Second
	touch := func() wire.DeltaEntry { return wire.DeltaEntry{Tenant: "t1", Class: "audio", SessionMicros: 1} }
	seq := uint64(0)
	next := func(e wire.DeltaEntry) *wire.DeltaBatch { seq++; return Batch("a1", 1, seq, e) }
	h := NewHarness(t)
	steps := []struct {
		at   time.Duration
		do   func(at time.Time)
		want time.Duration // November's time at or over the ceiling after the step
	}{
		{0, func(at time.Time) {
			h.OK(CmdSetPlan, &SetPlanCmd{Time: at.UnixNano(), Tenant: "t1", Plan: "starter"}) // strict, ceiling 100
			h.Items(at, "", Full("a1", 1, 0), next(Open("t1", "audio", 100)))
		}, 0},
		{10 * s, func(at time.Time) { h.Items(at, "", next(touch())) }, 10 * s},                  // at the ceiling counts
		{30 * s, func(at time.Time) { h.Items(at, "", next(Closed("t1", "audio", 1))) }, 30 * s}, // 99: stops
		{60 * s, func(at time.Time) { h.Items(at, "", next(touch())) }, 30 * s},
		{90 * s, func(at time.Time) { h.Items(at, "", next(Open("t1", "video-hd", 5))) }, 30 * s}, // 104, all classes: from 90 s
		{100 * s, func(at time.Time) {
			h.OK(CmdSetPlan, &SetPlanCmd{Time: at.UnixNano(), Tenant: "t1", Plan: "growth"}) // ceiling 1,000: stops
		}, 40 * s},
		{200 * s, func(at time.Time) { h.Items(at, "", next(touch())) }, 40 * s},
		{300 * s, func(at time.Time) { h.OK(CmdSetPlan, &SetPlanCmd{Time: at.UnixNano(), Tenant: "t1", Plan: "starter"}) }, 40 * s},
		{330 * s, func(at time.Time) {
			h.OK(CmdExpire, &AgentsCmd{Time: at.UnixNano(), Agents: []AgentRef{{ID: "a1", Epoch: 1}}})
		}, 70 * s}, // counts gone: stops
		{400 * s, func(at time.Time) {
			h.Items(at, "", Full("a1", 1, seq, wire.CountEntry{Tenant: "t1", Class: "audio", Open: 150}))
		}, 70 * s}, // 150 from 400 s
		{460 * s, func(at time.Time) { h.Items(at, "", next(touch())) }, 130 * s},
	}
	for i, st := range steps {
		at := base.Add(st.at)
		st.do(at)
		u := usageOf(t, h, "t1", "2026-11")
		if got := time.Duration(u.OverNanos); got != st.want {
			t.Fatalf("step %d (%v): %v at or over the ceiling, want %v", i, st.at, got, st.want)
		}
	}
}

// TestSecondsOverCeilingAcrossPeriods: time over the ceiling is split at the
// period's end; a part in a period already closed goes to the open one.
func TestSecondsOverCeilingAcrossPeriods(t *testing.T) {
	cases := []struct {
		name      string
		touch     time.Time
		nov, dec  time.Duration
		novClosed bool
	}{
		{"split at the end", dec1(0, 1, 0), 2 * time.Minute, time.Minute, false},
		{"the closed period's part goes to the open one", dec1(1, 30, 0), 0, 92 * time.Minute, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHarness(t)
			from := time.Date(2026, 11, 30, 23, 58, 0, 0, time.UTC)
			h.OK(CmdSetPlan, &SetPlanCmd{Time: nov1.UnixNano(), Tenant: "t1", Plan: "starter"})
			h.Items(from, "", Full("a1", 1, 0), Batch("a1", 1, 1, Open("t1", "audio", 100)))
			h.Items(tc.touch, "", Batch("a1", 1, 2, wire.DeltaEntry{Tenant: "t1", Class: "audio", SessionMicros: 1}))
			nov, dec := usageOf(t, h, "t1", "2026-11"), usageOf(t, h, "t1", "2026-12")
			if time.Duration(nov.OverNanos) != tc.nov || time.Duration(dec.OverNanos) != tc.dec {
				t.Errorf("over the ceiling: 2026-11 %v, 2026-12 %v; want %v and %v", time.Duration(nov.OverNanos), time.Duration(dec.OverNanos), tc.nov, tc.dec)
			}
		})
	}
}

// TestOverCeilingByPlan: which plans have a ceiling to stand at.
func TestOverCeilingByPlan(t *testing.T) {
	meterPlan := plans.Plan{Name: "m", Billing: plans.PayAsYouGo, Mode: plans.Meter}
	cases := []struct {
		name string
		plan string // "" for none
		open uint64
		want time.Duration
	}{
		{"strict at its ceiling", "starter", 100, time.Minute},
		{"strict below", "starter", 99, 0},
		{"soft above its ceiling, within the burst", "payg", 1001, time.Minute},
		{"meter: no ceiling", "m", 5000, 0},
		{"no plan", "", 5000, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHarness(t)
			h.OK(CmdPutPlan, &PutPlanCmd{Time: nov1.UnixNano(), Plan: meterPlan, Create: true})
			at := time.Date(2026, 11, 10, 10, 0, 0, 0, time.UTC)
			if tc.plan != "" {
				h.OK(CmdSetPlan, &SetPlanCmd{Time: at.UnixNano(), Tenant: "t1", Plan: tc.plan})
			}
			h.Items(at, "", Full("a1", 1, 0), Batch("a1", 1, 1, Open("t1", "ai", tc.open)))
			h.Items(at.Add(time.Minute), "", Batch("a1", 1, 2, wire.DeltaEntry{Tenant: "t1", Class: "ai", SessionMicros: 1}))
			if got := time.Duration(usageOf(t, h, "t1", "2026-11").OverNanos); got != tc.want {
				t.Errorf("%v over the ceiling, want %v", got, tc.want)
			}
		})
	}
}

// region applies agent messages, each from an agent of the given region,
// as one entry; every one must apply.
func (h *Harness) region(at time.Time, region string, msgs ...wire.Message) {
	h.T.Helper()
	cmd := ItemsCmd(at.UnixNano(), "", msgs...)
	for i := range cmd.Items {
		cmd.Items[i].Region = region
	}
	res := h.Apply(CmdAgentItems, cmd)
	for i, r := range res.Items {
		if res.Err != nil || r.Status != StatusApplied {
			h.T.Fatalf("item %d: %+v %v", i, r, res.Err)
		}
	}
}

// TestRegionalUsageAndPeaks: usage and peaks per agent region; the sum of
// regional peaks against the global peak; an agent that comes back in
// another region takes its counts there.
func TestRegionalUsageAndPeaks(t *testing.T) {
	h := NewHarness(t)
	regional := plans.Plan{Name: "regional", Billing: plans.Package, FeeMonthly: 1, Ceiling: 1000, Mode: plans.Soft, PeakBasis: plans.PeakRegional}
	h.OK(CmdPutPlan, &PutPlanCmd{Time: nov1.UnixNano(), Plan: regional, Create: true})
	h.OK(CmdSetPlan, &SetPlanCmd{Time: nov1.UnixNano(), Tenant: "t1", Plan: "growth"})
	day := time.Date(2026, 11, 10, 10, 0, 0, 0, time.UTC)
	h.region(day, "eu", Full("a1", 1, 0))
	h.region(day, "us", Full("a2", 1, 0))
	// eu peaks at 30 at 10:00 while us has none.
	h.region(day, "eu", Batch("a1", 1, 1, Open("t1", "audio", 30)))
	// At 11:00 eu is down to 5; us went up to 25 within the interval and
	// ended at 20: the global peak stays 30 (5 + 25), the regions' add up to 55.
	h.region(day.Add(time.Hour), "eu", Batch("a1", 1, 2, wire.DeltaEntry{Tenant: "t1", Class: "audio", Closed: 25, SessionMicros: 3_000_000, Peak: 30}))
	b := Batch("a2", 1, 1, wire.DeltaEntry{Tenant: "t1", Class: "video-hd", Opened: 20, Peak: 25, SessionMicros: 2_000_000})
	b.Peaks = []wire.TenantPeak{{Tenant: "t1", Peak: 25}}
	h.region(day.Add(time.Hour), "us", b)
	// Next day a1 comes back from "ap" with its 5 sessions.
	h.region(day.Add(24*time.Hour), "ap", Batch("a1", 1, 3, wire.DeltaEntry{Tenant: "t1", Class: "audio", SessionMicros: 4_000_000, Peak: 5}))

	tn := h.Tenant("t1")
	if want := map[string]uint64{"ap": 5, "us": 20}; !reflect.DeepEqual(asMap(tn.RegionOpen), want) {
		t.Errorf("regional open %v, want %v", tn.RegionOpen, want)
	}
	u := usageOf(t, h, "t1", "2026-11")
	micros := func(class string, v uint64) (c ClassCounts) { c[ClassIndex(class)] = v; return c }
	want := map[string]RegionUsage{
		"eu": {PCU: 30, Micros: micros("audio", 3_000_000)},
		"us": {PCU: 25, Micros: micros("video-hd", 2_000_000)},
		"ap": {PCU: 5, Micros: micros("audio", 4_000_000)},
	}
	for r, w := range want {
		if got := u.Regions.get(r); got == nil || *got != w {
			t.Errorf("region %s: %+v, want %+v", r, got, w)
		}
	}
	if len(u.Regions) != len(want) || u.PCU != 30 {
		t.Errorf("regions %v, global PCU %d: want 3 regions and 30", u.Regions, u.PCU)
	}
	for _, tc := range []struct {
		plan  string
		basis plans.PeakBasis
		pcu   uint64
	}{{"growth", plans.PeakGlobal, 30}, {"regional", plans.PeakRegional, 60}} {
		h.OK(CmdSetPlan, &SetPlanCmd{Time: day.Add(25 * time.Hour).UnixNano(), Tenant: "t1", Plan: tc.plan})
		h.F.Read(func(view View) {
			s := view.s
			j := meteringJSON(s, s.Tenants["t1"], "2026-11")
			if j.PeakBasis != string(tc.basis) || j.PlanPCU != tc.pcu || j.RegionalPCU != 60 || len(j.Regions) != 3 || j.Regions[0].Region != "ap" {
				t.Errorf("on %s: %+v; want basis %s, plan PCU %d, regional 60", tc.plan, j, tc.basis, tc.pcu)
			}
		})
	}
	// Daily peaks: the 10th has eu 30 + us 25, the 11th ap 5 + us 20.
	var tu TenantUsage
	h.F.Read(func(view View) {
		st := view.s
		tu = GatherUsage(View{st}, "t1", plans.Period{Year: 2026, Month: time.November})
	})
	if len(tu.Days) != 11 || tu.Days[9].RegionalPeak != 55 || tu.Days[9].Peak != 30 || tu.Days[10].RegionalPeak != 25 {
		t.Errorf("days %+v: want the 10th at 55 regional (30 global), the 11th at 25", tu.Days)
	}
}

// TestRestoreRebuildsRegionalCounts: a snapshot without regional open
// counts (written before they existed) restores them from the agents'.
func TestRestoreRebuildsRegionalCounts(t *testing.T) {
	h := NewHarness(t)
	at := time.Date(2026, 11, 10, 10, 0, 0, 0, time.UTC)
	h.region(at, "eu", Full("a1", 1, 0), Batch("a1", 1, 1, Open("t1", "audio", 3), Open("t2", "ai", 1)))
	h.region(at, "us", Full("a2", 1, 0), Batch("a2", 1, 1, Open("t1", "video-hd", 4)))
	h.F.mu.Lock()
	for _, tn := range h.F.s.Tenants {
		tn.RegionOpen = nil
	}
	h.F.mu.Unlock()
	snap, err := h.F.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink MemSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	g.Read(func(view View) {
		s := view.s
		if got, want := asMap(s.Tenants["t1"].RegionOpen), map[string]uint64{"eu": 3, "us": 4}; !reflect.DeepEqual(got, want) {
			t.Errorf("t1 regional open %v, want %v", got, want)
		}
		if got, want := asMap(s.Tenants["t2"].RegionOpen), map[string]uint64{"eu": 1}; !reflect.DeepEqual(got, want) {
			t.Errorf("t2 regional open %v, want %v", got, want)
		}
	})
}

// asMap is m as a Go map.
func asMap[V any](m smallMap[V]) map[string]V {
	out := make(map[string]V, len(m))
	for _, e := range m {
		out[e.Key] = e.Val
	}
	return out
}
