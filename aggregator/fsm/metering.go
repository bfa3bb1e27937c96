package fsm

import (
	"sort"
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// This file holds the metering rules the state machine applies beside the
// open counts: which period an agent batch is booked to (closed periods and
// late batches), the time a tenant spends at or over its ceiling, and usage
// and peaks per agent region. Like the rest of Apply it reads no clock: time
// comes from the entry (applier.now) and from the batch (AgentTime).
//
// Periods. A period closes at its end plus the grace for late batches
// (State.UsageGrace, set by the leader through the log). A batch is booked to
// the period it was cut in (DeltaBatch.AgentTime) while that period is
// open; a batch cut in a closed period is booked to the entry's period and
// counted late. ClosedThrough only moves forward, so a period once closed
// stays closed whatever the grace becomes, and nothing is booked to it again.
//
// Over the ceiling. Between applied entries a tenant's global open count is
// what the last entry that changed it left. An entry that touches the tenant
// first books the time since OverSince (when it stood at or over its plan's
// ceiling) to the periods it falls in; once the entry is applied, settle
// notes whether the tenant now stands at or over the ceiling.
//
// Regions. An agent's region is its label "region" ("" when it has none). A
// tenant's regional open count is the sum of the counts of that region's
// agents (Tenant.RegionOpen); regional usage and peaks are booked like the
// global ones, with the agent's reported interval peak.

// DefaultUsageGrace is how long after its end a period still takes the
// batches cut in it, unless the leader set another grace.
const DefaultUsageGrace = time.Hour

// MaxUsageGrace bounds the grace: a period must be closed before the one
// after next begins (day buckets are kept for two periods only).
const MaxUsageGrace = 28 * 24 * time.Hour

// RegionUsage is what a tenant used in one period through one region's
// agents.
type RegionUsage struct {
	Micros ClassCounts // session time, µs
	PCU    uint64      // peak of the region's open count, all classes
	// Export is the usage export's cursor of this record (export.go).
	Export *ExportMark `msgpack:",omitempty"`
}

// IsZero reports whether every count is zero (msgpack's omitempty asks).
func (c ClassCounts) IsZero() bool { return c == ClassCounts{} }

// booking says where an agent message's usage goes.
type booking struct {
	period string // "2006-01"
	at     int64  // the instant (unix ns) whose day bucket and plan take it
	late   bool   // cut in a closed period: booked to the entry's period
	region string // the agent's region
}

// Grace is the grace for late batches in effect, ns.
func (s *State) Grace() int64 {
	if s.UsageGrace > 0 {
		return s.UsageGrace
	}
	return int64(DefaultUsageGrace)
}

// closePeriods closes every period whose end plus the grace is not after
// now: those before the period holding now − grace.
func (s *State) closePeriods(now int64) {
	p := plans.PeriodOf(time.Unix(0, now-s.Grace())).Prev().String()
	if p > s.ClosedThrough {
		s.ClosedThrough = p
	}
}

// PeriodClosed reports whether period p ("2006-01") is closed.
func (s *State) PeriodClosed(p string) bool { return p <= s.ClosedThrough }

// batchBooking is where the usage of a batch cut at agentMillis (unix ms;
// 0 when unknown) goes, before a tenant's own plan history is considered.
func (a *applier) batchBooking(agentMillis int64, region string) booking {
	bk := booking{period: a.period, at: a.now, region: region}
	if agentMillis <= 0 || agentMillis >= a.now/1e6 {
		return bk // unknown, or not before the entry: the entry's period
	}
	p := plans.PeriodOf(time.UnixMilli(agentMillis)).String()
	switch {
	case p >= a.period:
	case a.s.PeriodClosed(p):
		bk.late = true
	default:
		bk.period, bk.at = p, agentMillis*1e6
	}
	return bk
}

// tenantBooking adjusts a batch's booking for tenant t: usage cut in an
// earlier period before the tenant's first plan goes to its first plan's
// start, or to the entry's period when that start is not in the period.
func (a *applier) tenantBooking(t *Tenant, bk booking) booking {
	if bk.period == a.period || len(t.History) == 0 || bk.at >= t.History[0].From {
		return bk
	}
	p, _ := plans.ParsePeriod(bk.period)
	if first := t.History[0].From; first < p.End().UnixNano() {
		bk.at = first
		return bk
	}
	bk.period, bk.at = a.period, a.now
	return bk
}

// usageFor returns the tenant's usage of period p (which is open).
func (a *applier) usageFor(t *Tenant, p string) *Usage {
	if p == a.period {
		return a.usage(t)
	}
	return t.usage(p)
}

// bucketFor returns the bucket that takes a booking's usage.
func (a *applier) bucketFor(t *Tenant, u *Usage, bk booking) *Bucket {
	if bk.period == a.period && bk.at == a.now {
		return a.bucket(t, u)
	}
	return bucketAt(t, u, bk.at)
}

// bucketAt returns the bucket of instant at (within u's period): the one
// holding at when it is of at's UTC day and plan, else a new one inserted
// in time order.
func bucketAt(t *Tenant, u *Usage, at int64) *Bucket {
	plan, from := t.Plan, int64(0)
	for i := len(t.History) - 1; i >= 0; i-- {
		if h := t.History[i]; h.From <= at {
			plan, from = h.Plan, h.From
			break
		}
	}
	day := time.Unix(0, at).UTC().Truncate(24 * time.Hour).UnixNano()
	i := sort.Search(len(u.Buckets), func(i int) bool { return u.Buckets[i].From > at })
	if i > 0 {
		if b := &u.Buckets[i-1]; b.From >= day && b.Plan == plan {
			return b
		}
	}
	u.Buckets = append(u.Buckets, Bucket{})
	copy(u.Buckets[i+1:], u.Buckets[i:])
	u.Buckets[i] = Bucket{From: max(day, from), Plan: plan}
	return &u.Buckets[i]
}

// bookUsage adds an entry's session time, refusals and rounded minutes to
// the booking's period and bucket, globally and for the agent's region, and
// raises the class peak: the global figure with this agent at the peak it
// reported for the interval instead of where it ended.
func (a *applier) bookUsage(t *Tenant, c int, e *wire.DeltaEntry, agentNow uint64, bk booking) {
	bk = a.tenantBooking(t, bk)
	u := a.usageFor(t, bk.period)
	u.Micros[c] += e.SessionMicros
	u.Refused[c] += e.Refused
	u.ClosedMinutes[c] += e.ClosedMinutes
	if bk.late {
		u.LateMicros += e.SessionMicros
	}
	b := a.bucketFor(t, u, bk)
	b.Micros[c] += e.SessionMicros
	b.Minutes[c] += e.ClosedMinutes
	b.Refused += e.Refused
	peak := t.Open[c]
	if e.Peak > agentNow {
		peak += e.Peak - agentNow
	}
	if peak > u.PCUByClass[c] {
		u.PCUByClass[c] = peak
	}
	a.raisePeak(u, b, t.Open.Total())
	u.region(bk.region).Micros[c] += e.SessionMicros
	if b.RegionPeaks == nil {
		// A bucket without regional peaks yet (a new day or plan): every
		// region's count starts it, as the global peak does.
		for _, r := range t.RegionOpen {
			raiseRegionPeak(u, b, r.Key, r.Val)
		}
	} else {
		// Only this agent's region changed since the bucket had them.
		raiseRegionPeak(u, b, bk.region, t.RegionOpen.get(bk.region))
	}
	a.touch(t)
}

// region returns the usage of region r, creating it.
func (u *Usage) region(r string) *RegionUsage {
	p := u.Regions.ptr(r)
	if *p == nil {
		*p = &RegionUsage{}
	}
	return *p
}

// raiseRegionPeak raises region r's peak of the period and of the bucket.
func raiseRegionPeak(u *Usage, b *Bucket, r string, peak uint64) {
	if peak == 0 {
		return
	}
	ru := u.region(r)
	ru.PCU = max(ru.PCU, peak)
	if p := b.RegionPeaks.ptr(r); peak > *p {
		*p = peak
	}
}

// bookTenantPeaks raises each tenant's total PCU, and its region's, with the
// agent's reported interval peak over all classes.
func (a *applier) bookTenantPeaks(rec *AgentRec, peaks []wire.TenantPeak, bk booking) {
	for _, p := range peaks {
		t := a.s.Tenants[p.Tenant]
		if t == nil {
			continue
		}
		var mine uint64
		if c := rec.Counts[p.Tenant]; c != nil {
			mine = c.Total()
		}
		var over uint64
		if p.Peak > mine {
			over = p.Peak - mine
		}
		tb := a.tenantBooking(t, bk)
		u := a.usageFor(t, tb.period)
		b := a.bucketFor(t, u, tb)
		peak, regional := t.Open.Total()+over, t.RegionOpen.get(rec.Region)+over
		var regionPCU uint64
		if ru := u.Regions.get(rec.Region); ru != nil {
			regionPCU = ru.PCU
		}
		if peak > u.PCU || peak > b.Peak || regional > regionPCU || regional > b.RegionPeaks.get(rec.Region) {
			a.raisePeak(u, b, peak)
			raiseRegionPeak(u, b, rec.Region, regional)
			a.touch(t)
		}
	}
}

// countLate counts a late batch once for each tenant it carries.
func (a *applier) countLate(entries []wire.DeltaEntry) {
	seen := make(map[string]bool)
	for i := range entries {
		name := entries[i].Tenant
		if t := a.s.Tenants[name]; t != nil && !seen[name] {
			seen[name] = true
			a.usage(t).Late++
		}
	}
}

// addRegionOpen takes sub from and adds add to t's open count in region r
// (never below zero).
func (t *Tenant) addRegionOpen(r string, sub, add uint64) {
	i, ok := t.RegionOpen.find(r)
	if !ok {
		if add == 0 {
			return
		}
		t.RegionOpen.set(r, add)
		return
	}
	n := t.RegionOpen[i].Val
	if n = n - min(n, sub) + add; n == 0 {
		t.RegionOpen.del(r)
		return
	}
	t.RegionOpen[i].Val = n
}

// setRegion records an agent's region; an agent that comes back in another
// region takes its counts there.
func (a *applier) setRegion(rec *AgentRec, region string) {
	if region == "" || region == rec.Region {
		return
	}
	for name, counts := range rec.Counts {
		if t := a.s.Tenants[name]; t != nil {
			n := counts.Total()
			t.addRegionOpen(rec.Region, n, 0)
			t.addRegionOpen(region, 0, n)
			a.touch(t)
		}
	}
	rec.Region = region
}

// rebuildRegionOpen recomputes every tenant's regional open counts from the
// agents' counts (after a restore).
func (s *State) rebuildRegionOpen() {
	for _, t := range s.Tenants {
		t.RegionOpen = nil
	}
	for _, rec := range s.Agents {
		for name, counts := range rec.Counts {
			if t := s.Tenants[name]; t != nil {
				t.addRegionOpen(rec.Region, 0, counts.Total())
			}
		}
	}
}

// accountOver books the time t has stood at or over its ceiling since
// OverSince up to the entry's time, split at period boundaries (a part in a
// closed period goes to the entry's period). Called when an entry first
// touches t, before anything of the entry counts.
func (a *applier) accountOver(t *Tenant) {
	from := t.OverSince
	if from == 0 || from >= a.now {
		return
	}
	t.OverSince = a.now
	for from < a.now {
		p := plans.PeriodOf(time.Unix(0, from))
		to := min(a.now, p.End().UnixNano())
		name := p.String()
		if a.s.PeriodClosed(name) {
			name = a.period
		}
		a.usageFor(t, name).OverNanos += uint64(to - from)
		from = to
	}
}

// settle notes, for every tenant the entry changed, whether its global open
// count now stands at or over its plan's ceiling, and whether each pool of
// a strict plan stands over its ceiling (grants.go). Called once the
// entry's command is applied.
func (a *applier) settle() {
	var (
		lastPlan string
		plan     plans.Plan
		known    bool
		ceiling  uint64 // of lastPlan; 0: none (no such plan, or meter)
	)
	n := len(a.touched) // settling a pool touches only tenants already touched
	for _, t := range a.touched[:n] {
		if t.Plan != lastPlan || lastPlan == "" {
			lastPlan, ceiling = t.Plan, 0
			if plan, known = a.s.Plans[t.Plan]; known && plan.Mode != plans.Meter {
				ceiling = plan.Ceiling
			}
		}
		if ceiling > 0 && t.Open.Total() >= ceiling {
			if t.OverSince == 0 {
				t.OverSince = a.now
			}
		} else {
			t.OverSince = 0
		}
		if known && plan.Mode == plans.Strict {
			a.settlePools(t, plan)
		} else {
			t.Over = nil
		}
	}
}

// UsageGraceCmd sets how long after its end a period still takes the
// batches cut in it (0: DefaultUsageGrace). Periods already closed stay
// closed.
type UsageGraceCmd struct {
	Time  int64 `msgpack:"t"`
	Grace int64 `msgpack:"g,omitempty"` // ns
}

func (c *UsageGraceCmd) when() int64 { return c.Time }

func (c *UsageGraceCmd) apply(a *applier) *ApplyResult {
	if c.Grace < 0 || c.Grace > int64(MaxUsageGrace) {
		return refused("usage grace %v: want 0 to %v", time.Duration(c.Grace), MaxUsageGrace)
	}
	a.s.UsageGrace = c.Grace
	return &ApplyResult{}
}
