// The reads of the state the servers answer with: the JSON views of a
// tenant, its usage, metering and pending change, and what billing and
// advice gather of a tenant and period. Each takes the state of one
// FSM.Read and keeps nothing of it.

package fsm

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/headroom-rtc/headroom/plans"
)

// ConcurrencyJSON is a tenant's open sessions.
type ConcurrencyJSON struct {
	Total   uint64            `json:"total"`
	ByClass map[string]uint64 `json:"by_class"`
}

// TenantJSON is one element of GET /v1/tenants.
type TenantJSON struct {
	Tenant      string          `json:"tenant"`
	Plan        string          `json:"plan"`
	Ceiling     uint64          `json:"ceiling"`
	Mode        string          `json:"mode"`
	Suspended   bool            `json:"suspended"`
	Concurrency ConcurrencyJSON `json:"concurrency"`
	// Utilization is concurrency / ceiling (0.8 is 80%); 0 for a tenant
	// without a ceiling (no plan, or a meter plan).
	Utilization float64        `json:"utilization"`
	Scheduled   *ScheduledJSON `json:"scheduled,omitempty"`
	Usage       *UsageJSON     `json:"usage,omitempty"`
	// Grants are the pools of a strict plan and the shares leased of them
	// (single-tenant reads only).
	Grants []GrantPoolJSON `json:"grants,omitempty"`
	// AdmittedOverCeiling counts the sessions admitted into a strict pool
	// while it stood over its ceiling (single-tenant reads; it should stay 0).
	AdmittedOverCeiling uint64 `json:"admitted_over_ceiling,omitempty"`
}

// UsageJSON is a tenant's usage in one period.
type UsageJSON struct {
	Period         string             `json:"period"`
	SecondsByClass map[string]float64 `json:"seconds_by_class"`
	UnitMinutes    float64            `json:"unit_minutes"`
	PCU            uint64             `json:"pcu"`
	PCUByClass     map[string]uint64  `json:"pcu_by_class"`
	RefusedByClass map[string]uint64  `json:"refused_by_class"`
	// Active users: MAU the period's distinct users, DAU today's (UTC, by
	// the state's clock; the current period only), PeakDAU the most of one
	// day in the period. Exact below 1,000; estimates (about 1 % off)
	// beyond.
	MAU     uint64 `json:"mau"`
	DAU     uint64 `json:"dau"`
	PeakDAU uint64 `json:"peak_dau"`
	MeteringJSON
}

// ByClass names the counts of c by class.
func ByClass(c *ClassCounts) map[string]uint64 {
	m := make(map[string]uint64, NumClasses)
	for i, v := range c {
		m[plans.Class(i+1).String()] = v
	}
	return m
}

// TenantJSONOf is t as the tenant list shows it; under the read lock.
func TenantJSONOf(v View, t *Tenant) TenantJSON {
	s := v.s
	j := TenantJSON{Tenant: t.Name, Plan: t.Plan, Suspended: t.Suspended, Concurrency: ConcurrencyJSON{Total: t.Open.Total(), ByClass: ByClass(&t.Open)}}
	if p, ok := s.Plans[t.Plan]; ok {
		j.Ceiling, j.Mode = p.Ceiling, string(p.Mode)
	}
	j.Utilization = Utilization(j.Concurrency.Total, CeilingOf(View{s}, t.Plan))
	if sc := s.Scheduled[t.Name]; sc != nil {
		j.Scheduled = ScheduledJSONOf(sc)
	}
	return j
}

// UsageJSONOf is t's usage of period; under the read lock.
func UsageJSONOf(t *Tenant, period string) *UsageJSON {
	u := t.Usage[period]
	if u == nil {
		u = &Usage{}
	}
	j := &UsageJSON{Period: period, SecondsByClass: make(map[string]float64, NumClasses), PCU: u.PCU,
		PCUByClass: ByClass(&u.PCUByClass), RefusedByClass: ByClass(&u.Refused)}
	for i, m := range u.Micros {
		j.SecondsByClass[plans.Class(i+1).String()] = float64(m) / 1e6
	}
	j.UnitMinutes = UnitMinutes(u)
	j.MAU, j.PeakDAU = u.MAU, u.PeakDAU
	return j
}

// UnitMinutes is a period's usage in unit-minutes: session minutes times
// class weight, summed over the classes (the usage report's figure, which
// alerts compare with a plan's included unit-minutes).
func UnitMinutes(u *Usage) float64 {
	var unitMicros float64
	for i, m := range u.Micros {
		unitMicros += float64(m) * float64(plans.Class(i+1).Weight(plans.DefaultAIWeight))
	}
	return unitMicros / 60e6
}

// DayJSON is one day of a tenant's usage.
type DayJSON struct {
	Date string `json:"date"`
	Peak uint64 `json:"peak"`
	// RegionalPeak is the sum of each region's own peak that day.
	RegionalPeak   uint64             `json:"regional_peak"`
	SecondsByClass map[string]float64 `json:"seconds_by_class"`
	Refused        uint64             `json:"refused"`
	// DAU is the day's distinct users (kept while its period is open).
	DAU uint64 `json:"dau"`
}

// MeteringJSON is the part of a period's usage about its closing, the
// ceiling, rounding and regions.
type MeteringJSON struct {
	// Closed: the period ended more than the grace for late batches ago;
	// its figures never change again. ClosesAt is its end plus the grace
	// in effect.
	Closed   bool   `json:"closed"`
	ClosesAt string `json:"closes_at"`
	// LateBatches were cut in a period already closed and booked to this
	// one instead (counted once per tenant they carry); LateSeconds is
	// their session time.
	LateBatches uint64  `json:"late_batches"`
	LateSeconds float64 `json:"late_seconds"`
	// SecondsOverCeiling is the time the global open count stood at or
	// over the plan's ceiling, from entry to entry.
	SecondsOverCeiling float64 `json:"seconds_over_ceiling"`
	// SessionMinutesByClass are the sessions that ended, each rounded up
	// to a whole minute (what a plan rounding per session bills).
	SessionMinutesByClass map[string]uint64 `json:"session_minutes_by_class"`
	// PeakBasis is the plan's: PlanPCU is PCU when it is global, else
	// RegionalPCU, the sum of each region's own peak in the period.
	PeakBasis   string       `json:"peak_basis"`
	RegionalPCU uint64       `json:"regional_pcu"`
	PlanPCU     uint64       `json:"plan_pcu"`
	Regions     []RegionJSON `json:"regions"`
}

// RegionJSON is a period's usage through one region's agents.
type RegionJSON struct {
	// Region is the agents' region label ("" for agents without one).
	Region         string             `json:"region"`
	SecondsByClass map[string]float64 `json:"seconds_by_class"`
	UnitMinutes    float64            `json:"unit_minutes"`
	PCU            uint64             `json:"pcu"`
}

// tenantUsageJSON is a tenant's usage of a period with its metering.
func TenantUsageJSONOf(v View, t *Tenant, period string) *UsageJSON {
	st := v.s
	j := UsageJSONOf(t, period)
	j.MeteringJSON = meteringJSON(st, t, period)
	if today := DayOf(st.Time); PeriodOfDay(today) == period {
		j.DAU = t.DAU(today)
	}
	return j
}

func meteringJSON(st *State, t *Tenant, period string) MeteringJSON {
	u := t.Usage[period]
	if u == nil {
		u = &Usage{}
	}
	j := MeteringJSON{
		Closed: st.PeriodClosed(period), LateBatches: u.Late, LateSeconds: float64(u.LateMicros) / 1e6,
		SecondsOverCeiling: float64(u.OverNanos) / 1e9, SessionMinutesByClass: ByClass(&u.ClosedMinutes),
		PeakBasis: string(plans.PeakGlobal), Regions: []RegionJSON{},
	}
	if p, err := plans.ParsePeriod(period); err == nil {
		j.ClosesAt = p.End().Add(time.Duration(st.Grace())).Format(time.RFC3339)
	}
	for _, kv := range u.Regions {
		r := kv.Val
		rj := RegionJSON{Region: kv.Key, SecondsByClass: make(map[string]float64, NumClasses), PCU: r.PCU}
		var unitMicros float64
		for i, m := range r.Micros {
			c := plans.Class(i + 1)
			rj.SecondsByClass[c.String()] = float64(m) / 1e6
			unitMicros += float64(m) * float64(c.Weight(plans.DefaultAIWeight))
		}
		rj.UnitMinutes = unitMicros / 60e6
		j.Regions = append(j.Regions, rj)
		j.RegionalPCU += r.PCU
	}
	sort.Slice(j.Regions, func(a, b int) bool { return j.Regions[a].Region < j.Regions[b].Region })
	j.PlanPCU = u.PCU
	if p, ok := st.Plans[t.Plan]; ok && p.PeakBasis == plans.PeakRegional {
		j.PeakBasis, j.PlanPCU = string(plans.PeakRegional), j.RegionalPCU
	}
	return j
}

// UsageReportJSON is the body of GET /v1/tenants/{id}/usage.
type UsageReportJSON struct {
	Tenant string `json:"tenant"`
	UsageJSON
	Days         []DayJSON      `json:"days"`
	Invoice      *plans.Invoice `json:"invoice,omitempty"`
	InvoiceError string         `json:"invoice_error,omitempty"`
}

// TenantUsage gathers what billing and advice need of one tenant and
// period, under the read lock: the plans held, the usage in time order and
// the days.
type TenantUsage struct {
	Found   bool
	Current plans.Plan
	held    []plans.Holding
	Slices  []plans.UsageSlice
	Days    []plans.DayUsage
	Report  UsageReportJSON
	heldErr error
	// ObservedFrom is when the tenant was first on a plan or first had
	// usage in the period (zero: from its start); previous is the previous
	// period's usage, if any.
	ObservedFrom time.Time
	Previous     *plans.PeriodUsage
}

// GatherUsage gathers tenant id's usage of period p from st; under the
// read lock (FSM.Read).
func GatherUsage(v View, id string, p plans.Period) TenantUsage {
	st := v.s
	var tu TenantUsage
	t := st.Tenants[id]
	if t == nil {
		return tu
	}
	tu.Found = true
	tu.Current = st.Plans[t.Plan]
	tu.Report = UsageReportJSON{Tenant: id, UsageJSON: *TenantUsageJSONOf(View{st}, t, p.String()), Days: []DayJSON{}}
	tu.held, tu.heldErr = holdings(st, t, p)
	tu.Previous = previousUsage(t, p.Prev())
	u := t.Usage[p.String()]
	tu.ObservedFrom = observedFrom(t, u, p)
	if u == nil {
		return tu
	}
	var micros []ClassCounts            // per day
	var regionPeaks []map[string]uint64 // per day
	for _, b := range u.Buckets {
		at := time.Unix(0, b.From).UTC()
		day := int(at.Sub(p.Start()) / (24 * time.Hour))
		for len(tu.Days) <= day {
			tu.Days = append(tu.Days, plans.DayUsage{})
			micros = append(micros, ClassCounts{})
			regionPeaks = append(regionPeaks, nil)
		}
		d := &tu.Days[day]
		d.Peak = max(d.Peak, b.Peak)
		d.Refused += b.Refused
		for _, rp := range b.RegionPeaks {
			if regionPeaks[day] == nil {
				regionPeaks[day] = make(map[string]uint64)
			}
			regionPeaks[day][rp.Key] = max(regionPeaks[day][rp.Key], rp.Val)
		}
		for c, m := range b.Micros {
			micros[day][c] += m
			if m > 0 || b.Minutes[c] > 0 {
				tu.Slices = append(tu.Slices, plans.UsageSlice{At: at, Class: plans.Class(c + 1), Micros: m, Minutes: b.Minutes[c]})
			}
		}
	}
	for i := range tu.Days {
		d := &tu.Days[i]
		for _, peak := range regionPeaks[i] {
			d.RegionalPeak += peak
		}
		date := p.Start().AddDate(0, 0, i)
		dj := DayJSON{Date: date.Format("2006-01-02"), Peak: d.Peak, RegionalPeak: d.RegionalPeak, Refused: d.Refused,
			SecondsByClass: map[string]float64{}, DAU: t.DAU(DayOf(date.UnixNano()))}
		for c, m := range micros[i] {
			d.Minutes[c] = m / 60_000_000
			dj.SecondsByClass[plans.Class(c+1).String()] = float64(m) / 1e6
		}
		tu.Report.Days = append(tu.Report.Days, dj)
	}
	return tu
}

// observedFrom is when the tenant's measurement in period p began: when it
// was first on a plan or first had usage (u: its usage of p, or nil),
// whichever came first; the zero time when that was before p, or is not
// known (a plan history trimmed to its last maxHistory changes).
func observedFrom(t *Tenant, u *Usage, p plans.Period) time.Time {
	from := int64(math.MaxInt64)
	if n := len(t.History); n > 0 && n < maxHistory {
		from = t.History[0].From
	}
	if u != nil {
		for _, b := range u.Buckets {
			if !b.Micros.isZero() {
				from = min(from, b.From)
				break
			}
		}
	}
	if from == math.MaxInt64 || from <= p.Start().UnixNano() {
		return time.Time{}
	}
	return time.Unix(0, from).UTC()
}

// previousUsage is the tenant's usage of period prev, if it had any.
func previousUsage(t *Tenant, prev plans.Period) *plans.PeriodUsage {
	u := t.Usage[prev.String()]
	if u == nil || (u.Micros.isZero() && u.PCU == 0) {
		return nil
	}
	pu := &plans.PeriodUsage{Period: prev, Peak: u.PCU, MAU: u.MAU}
	for c, m := range u.Micros {
		pu.Minutes[c] = m / 60_000_000
	}
	return pu
}

// holdings lists the plans a tenant held over the period, from its plan
// history (a tenant without history held its current plan all along).
func holdings(st *State, t *Tenant, p plans.Period) ([]plans.Holding, error) {
	start, end := p.Start(), p.End()
	var out []plans.Holding
	add := func(name string, from, to time.Time) error {
		if !from.Before(to) {
			return nil
		}
		pl, ok := st.Plans[name]
		if !ok {
			return fmt.Errorf("plan %q held from %s is no longer in the catalogue", name, from.Format(time.RFC3339))
		}
		out = append(out, plans.Holding{Plan: pl, From: from, To: to})
		return nil
	}
	if len(t.History) == 0 {
		if t.Plan == "" {
			return nil, fmt.Errorf("tenant %q is on no plan", t.Name)
		}
		return out, add(t.Plan, start, end)
	}
	for i, h := range t.History {
		from := time.Unix(0, h.From).UTC()
		to := end
		if i+1 < len(t.History) {
			to = time.Unix(0, t.History[i+1].From).UTC()
		}
		if err := add(h.Plan, maxTime(from, start), minTime(to, end)); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("tenant %q held no plan in %s", t.Name, p)
	}
	return out, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Invoice bills the gathered usage under the plans held.
func (tu *TenantUsage) Invoice(p plans.Period) (*plans.Invoice, error) {
	if tu.heldErr != nil {
		return nil, tu.heldErr
	}
	inv, err := plans.BillUsers(p, tu.held, tu.Slices, tu.Report.MAU)
	if err != nil {
		return nil, err
	}
	return &inv, nil
}

// ScheduledJSON is a pending plan change.
type ScheduledJSON struct {
	ID       uint64 `json:"id"`
	Plan     string `json:"plan"`
	At       string `json:"at"`
	Created  string `json:"created"`
	Operator string `json:"operator,omitempty"`
}

// ScheduledJSONOf is a pending plan change as the API shows it.
func ScheduledJSONOf(sc *Scheduled) *ScheduledJSON {
	return &ScheduledJSON{ID: sc.ID, Plan: sc.Plan, At: FormatTime(sc.At), Created: FormatTime(sc.Created), Operator: sc.Operator}
}
