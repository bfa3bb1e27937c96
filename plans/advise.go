package plans

import (
	"math"
	"strconv"
	"time"
)

// DefaultHeadroomPct is the headroom above the peak a plan's ceiling should
// leave when AdviceInput.HeadroomPct is 0.
const DefaultHeadroomPct = 20

// DayUsage is one UTC day of a tenant's measured usage.
type DayUsage struct {
	// Peak is the day's peak global concurrency (sessions).
	Peak uint64 `json:"peak"`
	// RegionalPeak is the sum of each region's own peak that day; 0 means
	// not measured (plans with peak_basis regional then use Peak).
	RegionalPeak uint64 `json:"regional_peak,omitempty"`
	// Minutes are the day's session-minutes by class (index class-1), in
	// whole minutes as the caller rounded them.
	Minutes [NumClasses]uint64 `json:"minutes"`
	// Refused is the number of sessions refused that day.
	Refused uint64 `json:"refused"`
}

// AdviceInput is what Advise judges a tenant's plan from.
type AdviceInput struct {
	// Current is the plan the tenant holds.
	Current Plan
	// Period is the billing period measured.
	Period Period
	// AsOf is how far into the period the measurement goes; the zero time
	// means the days given are complete (len(Days) days elapsed), and a
	// time at or after the period's end means the period is over.
	AsOf time.Time
	// Days are the period's days from its first, up to AsOf (the last may
	// be partial). Days beyond the period's length are ignored.
	Days []DayUsage
	// HeadroomPct is how far above the peak a ceiling should reach to fit
	// (0 means DefaultHeadroomPct).
	HeadroomPct uint32
	// ObservedFrom is when the tenant's measurement began: when it was
	// first on a plan or first had usage in the period. The zero time, or
	// a time before the period, means its start. Days before it are absent
	// (the tenant did not exist), not days without usage.
	ObservedFrom time.Time
	// Previous is the previous period's usage, when the tenant had one: its
	// peak and minutes are used for the month-over-month comparison, and
	// its peak counts toward the projected one.
	Previous *PeriodUsage
	// MAU is the period's distinct users so far and PeakDAU the most of one
	// day (0: no users known); plans that price users are costed on MAU.
	MAU, PeakDAU uint64
}

// PeriodUsage is what a tenant used in a whole period.
type PeriodUsage struct {
	Period Period
	// Peak is the period's PCU; Minutes its session-minutes by class; MAU
	// its distinct users.
	Peak    uint64
	Minutes [NumClasses]uint64
	MAU     uint64
}

// MinObserved is how much of a tenant's usage Advise needs before it
// projects a trend or advises a move.
const MinObserved = 24 * time.Hour

// Move is what a recommendation asks of the tenant.
type Move string

const (
	MoveStay      Move = "stay"      // keep the current plan
	MoveUpgrade   Move = "upgrade"   // to a plan with a higher monthly fee
	MoveDowngrade Move = "downgrade" // to a plan with a lower monthly fee
	MoveLateral   Move = "lateral"   // to another plan of the same fee
)

// Option is one plan as Advise judged it for the tenant.
type Option struct {
	Plan    string  `json:"plan"`
	Billing Billing `json:"billing"`
	Current bool    `json:"current,omitempty"`
	// Ceiling is the plan's ceiling (0: meter, none).
	Ceiling uint64 `json:"ceiling"`
	// Peak is the measured peak on the plan's peak basis; Need the ceiling
	// the projected peak calls for with the headroom: ⌈peak × (100+h)/100⌉.
	Peak uint64 `json:"peak"`
	Need uint64 `json:"need"`
	// Fits: a meter plan always fits, other plans when Ceiling ≥ Need.
	Fits bool `json:"fits"`
	// UtilizationPct is Peak / Ceiling × 100 (0 for a meter plan).
	UtilizationPct float64 `json:"utilization_pct"`
	// Cost is what the measured usage costs under the plan held all period
	// (whole fee, whole allowance), in micro-units; Projected is the same for
	// the usage projected to the period's end.
	Cost      Micro `json:"cost_micros"`
	Projected Micro `json:"projected_micros"`
}

// BreakEven is the monthly volume above which a package costs less than a
// pay-as-you-go plan, for the tenant's class mix.
type BreakEven struct {
	Package string `json:"package"`
	Payg    string `json:"payg"`
	// Minutes is the least whole number of minutes a month, in the tenant's
	// class mix, at which Package is strictly cheaper than Payg (0: always);
	// UnitMinutes is that volume in Package's unit-minutes, rounded up.
	Minutes     uint64 `json:"minutes"`
	UnitMinutes uint64 `json:"unit_minutes"`
	// Never: the package is never cheaper at this mix.
	Never bool `json:"never,omitempty"`
}

// Advice is the judgement of a tenant's plan.
type Advice struct {
	Period      string `json:"period"`
	Current     string `json:"current"`
	Recommended string `json:"recommended"`
	Move        Move   `json:"move"`
	// Effective is when the move takes effect: DefaultEffective, except
	// now whenever the current plan does not fit and the recommended one
	// does; empty when staying.
	Effective   Effective `json:"effective,omitempty"`
	HeadroomPct uint32    `json:"headroom_pct"`
	// ElapsedDays is how many days of the period have passed; ObservedDays
	// how many of them the tenant was measured for (from ObservedFrom), and
	// TrendDays how many complete days the trend is fitted over. With less
	// than MinObserved observed, TooLittleData is set: nothing is
	// projected and no move is advised.
	ElapsedDays   float64 `json:"elapsed_days"`
	ObservedDays  float64 `json:"observed_days"`
	TrendDays     int     `json:"trend_days"`
	TooLittleData bool    `json:"too_little_data,omitempty"`
	// Peak is the measured PCU (global) so far; ProjectedPeak the larger of
	// it and the trend of the daily peaks up to the period's end. The
	// regional figures are the same on the sum of regional peaks.
	Peak                  uint64 `json:"peak"`
	ProjectedPeak         uint64 `json:"projected_peak"`
	RegionalPeak          uint64 `json:"regional_peak,omitempty"`
	ProjectedRegionalPeak uint64 `json:"projected_regional_peak,omitempty"`
	// Minutes so far and projected to the period's end, by class.
	Minutes          [NumClasses]uint64 `json:"minutes"`
	ProjectedMinutes [NumClasses]uint64 `json:"projected_minutes"`
	// UnitMinutes so far and projected, at the current plan's weights.
	UnitMinutes          uint64 `json:"unit_minutes"`
	ProjectedUnitMinutes uint64 `json:"projected_unit_minutes"`
	Refused              uint64 `json:"refused"`
	RefusedDays          int    `json:"refused_days"`
	// The previous period's peak and unit-minutes (at the current plan's
	// weights), and the projected unit-minutes' growth over them in percent.
	PreviousPeriod      string   `json:"previous_period,omitempty"`
	PreviousPeak        uint64   `json:"previous_peak,omitempty"`
	PreviousUnitMinutes uint64   `json:"previous_unit_minutes,omitempty"`
	GrowthPct           *float64 `json:"month_over_month_pct,omitempty"`
	// The funnel: MAU, the most daily active users, and the peak of those
	// in a session at once (Peak) per daily and per monthly active user.
	// ProjectedMAU is what plans that price users are costed on: the MAU
	// so far, or last period's when more.
	MAU          uint64  `json:"mau,omitempty"`
	PeakDAU      uint64  `json:"peak_dau,omitempty"`
	ProjectedMAU uint64  `json:"projected_mau,omitempty"`
	PeakPerDAU   float64 `json:"concurrency_per_dau,omitempty"`
	PeakPerMAU   float64 `json:"concurrency_per_mau,omitempty"`
	// Options are the catalogue's plans in catalogue order, then the
	// current plan if the catalogue lacks it.
	Options   []Option    `json:"options"`
	BreakEven []BreakEven `json:"break_even,omitempty"`
	// Reasons say in plain words why.
	Reasons []string `json:"reasons"`
}

const day = 24 * time.Hour

// Advise judges the tenant's plan against the catalogue.
//
// Projection: each class's daily minutes and the daily peaks are fitted by
// least squares over the complete days so far (a single day, or a partial
// first day scaled to a whole one, gives a flat line); the line, never
// below zero, is summed over the rest of the period (the rest of the
// current day pro rata) and added to the usage so far. The projected peak
// is the larger of the measured peak and the line's highest value over the
// rest of the period.
//
// For every plan it computes the cost of the measured usage and of the
// projected usage, each as if the plan were held for the whole period
// (whole fee, whole allowance, the days' minutes consumed in day order,
// classes in class order within a day), by the arithmetic of Bill; and
// whether its ceiling fits the projected peak (on the plan's peak basis)
// with the headroom. It recommends the fitting plan of least projected
// cost (ties: the current plan, then the lower fee, then catalogue order);
// when none fits, the one admitting the most. Break-even volumes compare
// every pay-as-you-go plan with every package at the tenant's projected
// class mix (audio only when there is no usage yet); they are volume
// estimates computed in float64, while every amount of money is integer.
//
// The catalogue's plans are taken as valid (load them with LoadCatalogue or
// NewCatalogue). Advise never fails: days beyond the period are ignored and
// AsOf is clamped into the period; an invalid period yields only a reason.
// It allocates only its result.
func Advise(in AdviceInput, catalogue []Plan) Advice {
	out := Advice{Period: in.Period.String(), Current: in.Current.Name, HeadroomPct: in.HeadroomPct}
	if err := in.Period.Validate(); err != nil {
		out.Move = MoveStay
		out.Recommended = in.Current.Name
		out.Reasons = []string{"period: " + err.Error()}
		return out
	}
	if out.HeadroomPct == 0 {
		out.HeadroomPct = DefaultHeadroomPct
	}
	D := in.Period.Days()
	days := in.Days
	if len(days) > D {
		days = days[:D]
	}
	e := float64(len(days))
	if !in.AsOf.IsZero() {
		e = float64(in.AsOf.Sub(in.Period.Start())) / float64(day)
	}
	e = math.Max(0, math.Min(e, float64(D)))
	out.ElapsedDays = e
	// The observed part of the period: from ObservedFrom (o, in days from
	// the period's start) to e. The trend is fitted over the complete days
	// inside it, days f0 ≤ i < f1.
	o := 0.0
	if !in.ObservedFrom.IsZero() {
		o = math.Max(0, math.Min(float64(in.ObservedFrom.Sub(in.Period.Start()))/float64(day), e))
	}
	observed := e - o
	out.ObservedDays = math.Round(observed*1000) / 1000
	out.TooLittleData = observed*float64(day) < float64(MinObserved)
	f0, f1 := int(math.Ceil(o-1e-9)), min(len(days), int(e))
	n := max(0, f1-f0)
	if out.TooLittleData {
		n = 0
	}
	out.TrendDays = n

	// Measured figures and least-squares sums over the fitted days, x
	// counted from f0.
	const nSeries = NumClasses + 2 // classes, peak, regional peak
	var sumY, sumXY [nSeries]float64
	regional := false
	for i := range days {
		d := &days[i]
		rp := d.RegionalPeak
		if rp > 0 {
			regional = true
		} else {
			rp = d.Peak
		}
		out.Peak = max(out.Peak, d.Peak)
		out.RegionalPeak = max(out.RegionalPeak, rp)
		for c := range d.Minutes {
			out.Minutes[c] = satAdd(out.Minutes[c], d.Minutes[c])
		}
		out.Refused = satAdd(out.Refused, d.Refused)
		if d.Refused > 0 {
			out.RefusedDays++
		}
		if i >= f0 && i < f0+n {
			x := float64(i - f0)
			for c := range d.Minutes {
				y := float64(d.Minutes[c])
				sumY[c] += y
				sumXY[c] += x * y
			}
			sumY[NumClasses] += float64(d.Peak)
			sumXY[NumClasses] += x * float64(d.Peak)
			sumY[NumClasses+1] += float64(rp)
			sumXY[NumClasses+1] += x * float64(rp)
		}
	}
	if !regional {
		out.RegionalPeak = 0
	}
	// line returns the fitted series s: f(d) = a + b·(d − f0).
	line := func(s int) (a, b float64) {
		switch {
		case n >= 2:
			fn := float64(n)
			sx := fn * (fn - 1) / 2
			sxx := (fn - 1) * fn * (2*fn - 1) / 6
			b = (fn*sumXY[s] - sx*sumY[s]) / (fn*sxx - sx*sx)
			a = (sumY[s] - b*sx) / fn
		case n == 1:
			a = sumY[s]
		case !out.TooLittleData && s < NumClasses: // no complete day: the observed rate
			a = float64(out.Minutes[s]) / observed
		}
		return a, b
	}
	first := int(e) // first day (partly) remaining
	for c := 0; c < NumClasses; c++ {
		if out.TooLittleData {
			out.ProjectedMinutes[c] = out.Minutes[c] // no projection
			continue
		}
		a, b := line(c)
		rest := 0.0
		for d := first; d < D; d++ {
			w := 1.0
			if d == first {
				w = float64(d+1) - e
			}
			rest += w * math.Max(0, a+b*float64(d-f0))
		}
		out.ProjectedMinutes[c] = satAdd(out.Minutes[c], floatToUint(math.Round(rest)))
	}
	out.ProjectedPeak = out.Peak
	if regional {
		out.ProjectedRegionalPeak = out.RegionalPeak
	}
	if n >= 2 && first < D {
		a, b := line(NumClasses)
		out.ProjectedPeak = max(out.Peak, peakUp(math.Max(a+b*float64(first-f0), a+b*float64(D-1-f0))))
		if regional {
			a, b = line(NumClasses + 1)
			out.ProjectedRegionalPeak = max(out.RegionalPeak, peakUp(math.Max(a+b*float64(first-f0), a+b*float64(D-1-f0))))
		}
	}
	trendPeak := out.ProjectedPeak
	if pv := in.Previous; pv != nil {
		out.PreviousPeriod, out.PreviousPeak = pv.Period.String(), pv.Peak
		for c, cl := range AllClasses {
			out.PreviousUnitMinutes = satAdd(out.PreviousUnitMinutes, satMul(pv.Minutes[c], uint64(in.Current.Weight(cl))))
		}
		if !out.TooLittleData {
			// Last period's peak is a floor for this one's: a tenant that
			// peaked at it may well do so again.
			out.ProjectedPeak = max(out.ProjectedPeak, pv.Peak)
			if regional {
				out.ProjectedRegionalPeak = max(out.ProjectedRegionalPeak, pv.Peak)
			}
		}
	}
	out.MAU, out.PeakDAU, out.ProjectedMAU = in.MAU, in.PeakDAU, in.MAU
	if pv := in.Previous; pv != nil && !out.TooLittleData {
		out.ProjectedMAU = max(out.ProjectedMAU, pv.MAU)
	}
	if in.PeakDAU > 0 {
		out.PeakPerDAU = math.Round(float64(out.Peak)/float64(in.PeakDAU)*10000) / 10000
	}
	if in.MAU > 0 {
		out.PeakPerMAU = math.Round(float64(out.Peak)/float64(in.MAU)*10000) / 10000
	}
	for c, cl := range AllClasses {
		w := uint64(in.Current.Weight(cl))
		out.UnitMinutes = satAdd(out.UnitMinutes, satMul(out.Minutes[c], w))
		out.ProjectedUnitMinutes = satAdd(out.ProjectedUnitMinutes, satMul(out.ProjectedMinutes[c], w))
	}
	if out.PreviousUnitMinutes > 0 && !out.TooLittleData {
		g := math.Round((float64(out.ProjectedUnitMinutes)/float64(out.PreviousUnitMinutes)-1)*1000) / 10
		out.GrowthPct = &g
	}

	// Options.
	all := catalogue
	curIdx := -1
	for i := range catalogue {
		if catalogue[i].Name == in.Current.Name {
			curIdx = i
			break
		}
	}
	if curIdx < 0 {
		all = make([]Plan, len(catalogue), len(catalogue)+1)
		copy(all, catalogue)
		all = append(all, in.Current)
		curIdx = len(all) - 1
	}
	out.Options = make([]Option, len(all))
	for i := range all {
		out.Options[i] = judge(&all[i], &out, days, i == curIdx)
	}

	// Recommendation.
	best := -1
	for i := range out.Options {
		o := &out.Options[i]
		if !o.Fits {
			continue
		}
		if best < 0 || better(o, &out.Options[best], &all[i], &all[best]) {
			best = i
		}
	}
	if out.TooLittleData {
		best = curIdx // no move on less than MinObserved of data
	}
	if best < 0 { // nothing fits: the most capacity, then the cheapest
		for i := range all {
			if best < 0 || all[i].AdmitLimit() > all[best].AdmitLimit() ||
				(all[i].AdmitLimit() == all[best].AdmitLimit() && out.Options[i].Projected < out.Options[best].Projected) {
				best = i
			}
		}
	}
	cur, rec := &all[curIdx], &all[best]
	co, ro := &out.Options[curIdx], &out.Options[best]
	out.Recommended = rec.Name
	switch {
	case best == curIdx:
		out.Move = MoveStay
	case rec.UpgradeOf(*cur):
		out.Move = MoveUpgrade
	case rec.DowngradeOf(*cur):
		out.Move = MoveDowngrade
	default:
		out.Move = MoveLateral
	}
	if out.Move != MoveStay {
		out.Effective = DefaultEffective(*cur, *rec)
		if !co.Fits && ro.Fits { // the current ceiling is too small: don't wait
			out.Effective = Now
		}
	}

	// Break-even volumes at the tenant's class mix.
	var mix [NumClasses]float64
	var tot float64
	for c, m := range out.ProjectedMinutes {
		tot += float64(m)
		mix[c] = float64(m)
	}
	if tot == 0 {
		mix[0], tot = 1, 1
	}
	for c := range mix {
		mix[c] /= tot
	}
	npayg := 0
	for i := range all {
		if all[i].IsPayAsYouGo() {
			npayg++
		}
	}
	out.BreakEven = make([]BreakEven, 0, npayg*(len(all)-npayg))
	for i := range all {
		if !all[i].IsPayAsYouGo() {
			continue
		}
		for j := range all {
			if all[j].IsPayAsYouGo() {
				continue
			}
			out.BreakEven = append(out.BreakEven, breakEven(&all[i], &all[j], &mix))
		}
	}

	// Reasons, each built in one buffer (Advise runs for every tenant).
	out.Reasons = make([]string, 0, 6)
	var buf [256]byte
	w := words{b: buf[:0]}
	say := func() { out.Reasons = append(out.Reasons, string(w.b)); w.b = w.b[:0] }
	complete := e >= float64(D)
	if out.TooLittleData {
		w.s("too little data: ").hours(observed).s(" h observed, ").n(uint64(MinObserved / time.Hour)).
			s(" h are needed to project usage or advise a move; plans are judged on the measured peak only")
		say()
	}
	peakWord := "peak "
	if cur.PeakBasis == PeakRegional && regional {
		peakWord = "regional peak "
	}
	switch {
	case cur.Mode == Meter:
		w.s(peakWord).n(co.Peak).s(": ").s(cur.Name).s(" has no ceiling")
	case !co.Fits:
		w.s(peakWord).n(co.Peak)
		if pp := projectedOn(&out, cur); pp != co.Peak {
			w.s(" (projected ").n(pp).s(")")
		}
		w.s(" needs a ceiling of ").n(co.Need).s(" with ").n(uint64(out.HeadroomPct)).s("% headroom: ").
			s(cur.Name).s("'s ceiling is ").n(cur.Ceiling)
	default:
		w.s(peakWord).n(co.Peak).s(" used ").pct(co.UtilizationPct).s("% of ").s(cur.Name).s("'s ceiling of ").n(cur.Ceiling)
	}
	say()
	if out.Refused > 0 {
		w.s("refused ").n(out.Refused).s(" sessions on ").n(uint64(out.RefusedDays))
		if out.RefusedDays == 1 {
			w.s(" day")
		} else {
			w.s(" days")
		}
		if out.Move == MoveUpgrade {
			w.s(": upgrade")
		}
		say()
	}
	if !complete && observed > 0 && !out.TooLittleData {
		// Against the observed rate held for the rest of the period.
		flat := float64(out.UnitMinutes) * (1 + (float64(D)-e)/observed)
		trend := "steady"
		switch p := float64(out.ProjectedUnitMinutes); {
		case p > flat*1.05:
			trend = "growing"
		case p < flat*0.95:
			trend = "shrinking"
		}
		w.s("usage ").s(trend).s(": ").n(out.UnitMinutes).s(" unit-minutes in ").days(observed).s(" days observed, ").
			n(out.ProjectedUnitMinutes).s(" projected for ").s(out.Period)
		switch n {
		case 0:
			w.s(" at the observed rate")
		case 1:
			w.s(" (trend over 1 day)")
		default:
			w.s(" (trend over ").n(uint64(n)).s(" days)")
		}
		say()
	}
	if pv := in.Previous; pv != nil {
		w.s("last period ").s(out.PreviousPeriod).s(": peak ").n(pv.Peak).s(", ").n(out.PreviousUnitMinutes).s(" unit-minutes")
		if out.GrowthPct != nil {
			w.s("; this period projected ").n(out.ProjectedUnitMinutes).s(" (")
			if *out.GrowthPct >= 0 {
				w.s("+")
			}
			w.b = strconv.AppendFloat(w.b, *out.GrowthPct, 'f', -1, 64)
			w.s("% month over month)")
		}
		if !out.TooLittleData && pv.Peak > trendPeak {
			w.s("; its peak counts toward the projected peak")
		}
		say()
	}
	if out.MAU > 0 {
		w.s("active users: MAU ").n(out.MAU).s(", peak DAU ").n(out.PeakDAU).s(", peak ").n(out.Peak).s(" at once")
		if out.PeakDAU > 0 {
			w.s(" (").ratio(out.PeakPerDAU).s(" per daily, ").ratio(out.PeakPerMAU).s(" per monthly active user)")
		}
		say()
	}
	if out.TooLittleData {
		w.s(cur.Name).s(" stays until a day is observed")
		say()
		return out
	}
	if best != curIdx {
		diff := co.Projected - ro.Projected // the measured cost when complete
		switch {
		case diff > 0 && complete && co.Fits && cur.Mode != Meter:
			w.s("peak used ").pct(co.UtilizationPct).s("% of the ceiling: ").s(cur.Name).s(" costs ").money(diff).
				s(" more than ").s(rec.Name).s(" would have")
		case diff > 0 && complete:
			w.s(cur.Name).s(" costs ").money(diff).s(" more than ").s(rec.Name).s(" would have")
		case diff > 0:
			w.s(cur.Name).s(" is projected to cost ").money(diff).s(" more than ").s(rec.Name).s(" for ").s(out.Period)
		case ro.Fits:
			w.s(rec.Name).s(" costs ").money(-diff).s(" more than ").s(cur.Name).s(" but fits the peak with ").
				n(uint64(out.HeadroomPct)).s("% headroom")
		default:
			w.s("no plan fits the peak with ").n(uint64(out.HeadroomPct)).s("% headroom: ").s(rec.Name).
				s(" admits the most (").n(rec.AdmitLimit()).s(")")
		}
		say()
		w.s("move to ").s(rec.Name)
		if out.Effective == PeriodEnd {
			w.s(" at the end of ").s(out.Period)
		} else {
			w.s(" now")
		}
		w.s(" (").s(string(out.Move)).s(")")
		say()
	} else {
		w.s(cur.Name).s(" is the cheapest plan that fits")
		say()
	}
	// One break-even sentence: the recommended package, else the current
	// one, against pay-as-you-go.
	for _, name := range [2]string{rec.Name, cur.Name} {
		k := -1
		for i, be := range out.BreakEven {
			if be.Package == name && !be.Never {
				k = i
				break
			}
		}
		if k >= 0 {
			be := &out.BreakEven[k]
			w.s(be.Package).s(" is cheaper than ").s(be.Payg).s(" above ").n(be.Minutes).
				s(" minutes a month of this class mix (").n(sumMinutes(&out.ProjectedMinutes)).s(" projected)")
			say()
			break
		}
	}
	return out
}

// judge computes plan p's option for the tenant.
func judge(p *Plan, out *Advice, days []DayUsage, current bool) Option {
	o := Option{Plan: p.Name, Billing: p.Billing, Current: current, Ceiling: p.Ceiling, Peak: out.Peak}
	if o.Billing == "" {
		o.Billing = Package
	}
	if p.PeakBasis == PeakRegional && out.RegionalPeak > 0 {
		o.Peak = out.RegionalPeak
	}
	pp := projectedOn(out, p)
	o.Need = satMul(pp, uint64(100+out.HeadroomPct))
	o.Need = o.Need/100 + boolU(o.Need%100 != 0)
	if p.Mode == Meter {
		o.Fits, o.Ceiling = true, 0
	} else {
		o.Fits = p.Ceiling >= o.Need
		if p.Ceiling > 0 {
			o.UtilizationPct = float64(o.Peak) * 100 / float64(p.Ceiling)
		}
	}
	var acc account
	acc.init(p, p.IncludedUnitMinutes)
	for i := range days {
		acc.addDay(&days[i].Minutes)
	}
	o.Cost = satAddMicro(total(p.FeeMonthly, &acc), usersCost(p, out.MAU))
	var rest [NumClasses]uint64
	for c := range rest {
		rest[c] = out.ProjectedMinutes[c] - out.Minutes[c]
	}
	acc.addDay(&rest)
	o.Projected = satAddMicro(total(p.FeeMonthly, &acc), usersCost(p, out.ProjectedMAU))
	return o
}

// usersCost is what plan p, held all period, bills for mau active users.
func usersCost(p *Plan, mau uint64) Micro {
	if !p.PricesUsers() || mau <= p.IncludedMAU {
		return 0
	}
	c := satMul(mau-p.IncludedMAU, uint64(p.OveragePerMAU))
	if c > math.MaxInt64 {
		return math.MaxInt64
	}
	return Micro(c)
}

func satAddMicro(a, b Micro) Micro {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// projectedOn is the projected peak on p's peak basis.
func projectedOn(out *Advice, p *Plan) uint64 {
	if p.PeakBasis == PeakRegional && out.RegionalPeak > 0 {
		return out.ProjectedRegionalPeak
	}
	return out.ProjectedPeak
}

// better reports whether option o (plan p) beats option q (plan r).
func better(o, q *Option, p, r *Plan) bool {
	switch {
	case o.Projected != q.Projected:
		return o.Projected < q.Projected
	case o.Current != q.Current:
		return o.Current
	default:
		return p.FeeMonthly < r.FeeMonthly
	}
}

// total is fee plus the account's usage cost, saturating at the largest
// Micro.
func total(fee Micro, acc *account) Micro {
	u, ok := acc.usageCost()
	if !ok || u > math.MaxInt64-uint64(fee) {
		return math.MaxInt64
	}
	return fee + Micro(u)
}

// breakEven finds the least monthly volume M (minutes of the class mix,
// shares summing to 1) at which package k is strictly cheaper than
// pay-as-you-go plan g, on the piecewise-linear costs
//
//	g(M) = fee_g + r̄ · max(0, M − free/w̄g)          r̄ = Σ mix·rate/1000 per minute
//	k(M) = fee_k + o/1000 · max(0, M·w̄k − included)  w̄ = Σ mix·weight
//
// by solving g − k = 0 segment by segment between the breakpoints.
func breakEven(g, k *Plan, mix *[NumClasses]float64) BreakEven {
	be := BreakEven{Package: k.Name, Payg: g.Name}
	var wg, wk, r float64
	for c, cl := range AllClasses {
		wg += mix[c] * float64(g.Weight(cl))
		wk += mix[c] * float64(k.Weight(cl))
		r += mix[c] * float64(g.Rate(cl)) / 1000
	}
	o := float64(k.OveragePer1000) / 1000 * wk // per minute of mix beyond the allowance
	b1 := float64(g.IncludedUnitMinutes) / wg
	b2 := float64(k.IncludedUnitMinutes) / wk
	d := func(m float64) float64 {
		return float64(g.FeeMonthly) + r*math.Max(0, m-b1) - float64(k.FeeMonthly) - o*math.Max(0, m-b2)
	}
	pts := [4]float64{0, math.Min(b1, b2), math.Max(b1, b2), math.Inf(1)}
	x := math.NaN()
	for s := 0; s+1 < len(pts); s++ {
		lo, hi := pts[s], pts[s+1]
		if lo >= hi {
			continue
		}
		dl := d(lo)
		if dl > 0 {
			x = lo
			break
		}
		slope := 0.0
		if lo >= b1 {
			slope += r
		}
		if lo >= b2 {
			slope -= o
		}
		if slope > 0 {
			if root := lo - dl/slope; root < hi {
				x = root
				break
			}
		}
	}
	switch {
	case math.IsNaN(x) || x > 1e18:
		be.Never = true
	case x == 0 && d(0) > 0:
		be.Minutes = 0
	default:
		be.Minutes = uint64(math.Floor(x)) + 1
	}
	if !be.Never {
		be.UnitMinutes = floatToUint(math.Ceil(float64(be.Minutes)*wk - 1e-9))
	}
	return be
}

// peakUp rounds a fitted peak up to a whole session, forgiving float noise.
func peakUp(x float64) uint64 { return floatToUint(math.Ceil(x - 1e-9)) }

func floatToUint(x float64) uint64 {
	switch {
	case !(x > 0):
		return 0
	case x >= 1.8e19:
		return math.MaxUint64
	}
	return uint64(x)
}

func satAdd(a, b uint64) uint64 {
	if s, ok := add64(a, b); ok {
		return s
	}
	return math.MaxUint64
}

func satMul(a, b uint64) uint64 {
	if p, ok := mul64(a, b); ok {
		return p
	}
	return math.MaxUint64
}

func boolU(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func sumMinutes(m *[NumClasses]uint64) uint64 {
	var s uint64
	for _, v := range m {
		s = satAdd(s, v)
	}
	return s
}

// words builds a sentence in one buffer.
type words struct{ b []byte }

func (w *words) s(s string) *words    { w.b = append(w.b, s...); return w }
func (w *words) n(n uint64) *words    { w.b = appendThousands(w.b, n); return w }
func (w *words) money(m Micro) *words { w.b = appendMicro(w.b, m); return w }

// pct appends a percentage as a whole number, rounded half up.
func (w *words) pct(p float64) *words { return w.n(floatToUint(math.Floor(p + 0.5))) }

// ratio appends a small ratio with at most three significant decimals.
func (w *words) ratio(r float64) *words {
	w.b = strconv.AppendFloat(w.b, r, 'g', 3, 64)
	return w
}

// hours appends days as hours with one decimal.
func (w *words) hours(days float64) *words {
	w.b = strconv.AppendFloat(w.b, math.Floor(days*24*10)/10, 'f', 1, 64)
	return w
}

// days appends a number of days with at most one decimal.
func (w *words) days(e float64) *words {
	if e == math.Trunc(e) {
		return w.n(uint64(e))
	}
	w.b = strconv.AppendFloat(w.b, e, 'f', 1, 64)
	return w
}
