package plans

import (
	"fmt"
	"regexp"
	"sort"
)

// Mode is how a plan's ceiling is enforced at admission.
type Mode string

const (
	// Strict: agents admit only within the share of the ceiling leased to them.
	Strict Mode = "strict"
	// Soft: agents admit while the global figure is under ceiling × (1+burst).
	Soft Mode = "soft"
	// Meter: no ceiling; everything is admitted and billed.
	Meter Mode = "meter"
)

// Billing is how a plan charges for usage.
type Billing string

const (
	// PayAsYouGo bills every minute of a class at the class's list rate
	// (Plan.Rates, per 1,000 minutes) once the plan's free allowance
	// (IncludedUnitMinutes) is used up.
	PayAsYouGo Billing = "payg"
	// Package bills the monthly fee, counts weighted unit-minutes against
	// IncludedUnitMinutes and bills what lies beyond at OveragePer1000.
	Package Billing = "package"
)

// Cycle is the length of a plan's billing period.
type Cycle string

// Monthly is the only cycle so far: the UTC calendar month (see Period).
const Monthly Cycle = "month"

// Rounding says how session time becomes billable whole minutes.
type Rounding string

const (
	// RoundPeriod rounds each class's total over a holding (the whole period
	// when the plan is held all period) up to a whole minute.
	RoundPeriod Rounding = "period"
	// RoundSession rounds every session up to a whole minute, billed in the
	// holding it ends in; the caller supplies the rounded minutes of the
	// sessions that ended (UsageSlice.Minutes). Time of sessions still open
	// is billed exactly, rounded once, where it exceeds them (see Bill).
	RoundSession Rounding = "session"
)

// PeakBasis says which peak concurrency (PCU) a plan is judged on.
type PeakBasis string

const (
	// PeakGlobal is the peak of the global (fleet-wide) concurrency.
	PeakGlobal PeakBasis = "global"
	// PeakRegional is the sum of each region's own peak, which is at least
	// the global peak (regions peak at different times).
	PeakRegional PeakBasis = "regional"
)

// Micro is an amount of money in millionths of the currency unit.
type Micro int64

// ClassLimit is a per-class ceiling: at most Ceiling concurrent sessions of
// Class (a class name, e.g. "video-2k+").
type ClassLimit struct {
	Class   string `json:"class" msgpack:"class"`
	Ceiling uint64 `json:"ceiling" msgpack:"ceiling"`
}

// ClassRate is a pay-as-you-go list rate: Per1000 micro-units per 1,000
// minutes of Class (a class name).
type ClassRate struct {
	Class   string `json:"class" msgpack:"class"`
	Per1000 Micro  `json:"per_1000_micros" msgpack:"per1000"`
}

// Plan is one named offer of the catalogue. The zero value of every field
// added after the first version means its default (see Normalized), so a
// plan written with only the original fields keeps its meaning.
type Plan struct {
	Name string `json:"name" msgpack:"name"`
	// Billing is payg or package ("" means package).
	Billing Billing `json:"billing,omitempty" msgpack:"billing,omitempty"`
	// FeeMonthly is the fee for a whole period, in micro-units; a plan held
	// for part of a period pays it prorated by the seconds held.
	FeeMonthly Micro `json:"fee_monthly_micros" msgpack:"fee"`
	// Ceiling is the most concurrent sessions admitted (0 with Meter: none).
	Ceiling uint64 `json:"ceiling" msgpack:"ceiling"`
	// ClassCeilings optionally caps single classes below Ceiling, one entry
	// per class at most, sorted in class order by Normalized.
	ClassCeilings []ClassLimit `json:"class_ceilings,omitempty" msgpack:"class_ceilings,omitempty"`
	Mode          Mode         `json:"mode" msgpack:"mode"`
	// BurstPct lets a soft plan admit up to Ceiling × (1 + BurstPct/100).
	BurstPct uint32 `json:"burst_pct" msgpack:"burst"`
	// IncludedUnitMinutes are included in the fee (for payg: free) per
	// period, in unit-minutes (minutes × class weight).
	IncludedUnitMinutes uint64 `json:"included_unit_minutes" msgpack:"included"`
	// Rates are the pay-as-you-go list rates per 1,000 minutes by class;
	// empty means DefaultRates. When set, every class must be listed once.
	// Package billing does not use them.
	Rates []ClassRate `json:"rates,omitempty" msgpack:"rates,omitempty"`
	// OveragePer1000 is charged per 1,000 unit-minutes beyond the included
	// ones (package billing). Pay-as-you-go bills by Rates instead and keeps
	// this figure only as the reference price of an audio-minute.
	OveragePer1000 Micro `json:"overage_per_1000_micros" msgpack:"overage"`
	// Period is the billing cycle ("" means month).
	Period Cycle `json:"period,omitempty" msgpack:"period,omitempty"`
	// Rounding is how session time becomes whole minutes ("" means period).
	Rounding Rounding `json:"rounding,omitempty" msgpack:"rounding,omitempty"`
	// PeakBasis is which PCU the plan is judged on ("" means global): the
	// peak that must fit its ceiling in Advise, and that PCU reports use.
	// Bill charges nothing on peaks.
	PeakBasis PeakBasis `json:"peak_basis,omitempty" msgpack:"peak_basis,omitempty"`
	// AIWeight is the weight of the ai class (0 means DefaultAIWeight).
	AIWeight uint32 `json:"ai_weight,omitempty" msgpack:"ai_weight,omitempty"`
	// DeviceWeight is the weight of the device class (0 means
	// DefaultDeviceWeight). Unlike AIWeight, Normalized leaves 0 as it is,
	// so the plans stored before the device class encode as they did.
	DeviceWeight uint32 `json:"device_weight,omitempty" msgpack:"device_weight,omitempty"`
	// IncludedMAU is how many monthly active users (distinct users in the
	// period) the fee includes, prorated like the other allowances;
	// OveragePerMAU is charged for each one beyond, in micro-units. An
	// IM-style plan prices by these (and caps concurrent connections with
	// its ceiling); a plan without them bills as before.
	IncludedMAU   uint64 `json:"included_mau,omitempty" msgpack:"included_mau,omitempty"`
	OveragePerMAU Micro  `json:"overage_per_mau_micros,omitempty" msgpack:"overage_mau,omitempty"`
}

// PricesUsers reports whether p bills monthly active users.
func (p Plan) PricesUsers() bool { return p.IncludedMAU > 0 || p.OveragePerMAU > 0 }

// MaxAIWeight bounds Plan.AIWeight and Plan.DeviceWeight.
const MaxAIWeight = 1000

// defaultRates are the list rates per 1,000 minutes in micro-units, indexed
// by class-1: audio 0.99, video-hd 3.99, video-fhd 8.99, video-2k 15.99,
// video-2k+ 35.99, ai 3.99 — an AI agent session is weighted like an HD
// video minute (DefaultAIWeight 4), so it is priced like one — and device
// 0.99, weighted like an audio minute (DefaultDeviceWeight 1).
var defaultRates = [NumClasses]Micro{990_000, 3_990_000, 8_990_000, 15_990_000, 35_990_000, 3_990_000, 990_000}

// DefaultRates returns the default pay-as-you-go list rates, in class order.
func DefaultRates() []ClassRate {
	out := make([]ClassRate, NumClasses)
	for i, c := range AllClasses {
		out[i] = ClassRate{Class: c.String(), Per1000: defaultRates[i]}
	}
	return out
}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Validate reports the first problem with p, naming the field by its JSON
// name. Zero values of the optional fields are valid (they mean defaults).
func (p Plan) Validate() error {
	switch {
	case !namePattern.MatchString(p.Name):
		return fmt.Errorf("plan name %q: want 1-63 of a-z 0-9 . _ - starting with a letter or digit", p.Name)
	case p.FeeMonthly < 0:
		return fmt.Errorf("plan %s: fee_monthly_micros must not be negative", p.Name)
	case p.OveragePer1000 < 0:
		return fmt.Errorf("plan %s: overage_per_1000_micros must not be negative", p.Name)
	case p.OveragePerMAU < 0:
		return fmt.Errorf("plan %s: overage_per_mau_micros must not be negative", p.Name)
	}
	switch p.Mode {
	case Strict, Soft:
		if p.Ceiling == 0 {
			return fmt.Errorf("plan %s: ceiling must be above 0 in mode %s", p.Name, p.Mode)
		}
	case Meter:
	default:
		return fmt.Errorf("plan %s: mode %q: want strict, soft or meter", p.Name, p.Mode)
	}
	if p.BurstPct > 1000 {
		return fmt.Errorf("plan %s: burst_pct %d: at most 1000", p.Name, p.BurstPct)
	}
	switch p.Billing {
	case "", PayAsYouGo, Package:
	default:
		return fmt.Errorf("plan %s: billing %q: want payg or package", p.Name, p.Billing)
	}
	switch p.Period {
	case "", Monthly:
	default:
		return fmt.Errorf("plan %s: period %q: want month", p.Name, p.Period)
	}
	switch p.Rounding {
	case "", RoundPeriod, RoundSession:
	default:
		return fmt.Errorf("plan %s: rounding %q: want period or session", p.Name, p.Rounding)
	}
	switch p.PeakBasis {
	case "", PeakGlobal, PeakRegional:
	default:
		return fmt.Errorf("plan %s: peak_basis %q: want global or regional", p.Name, p.PeakBasis)
	}
	if p.AIWeight > MaxAIWeight {
		return fmt.Errorf("plan %s: ai_weight %d: at most %d", p.Name, p.AIWeight, MaxAIWeight)
	}
	if p.DeviceWeight > MaxAIWeight {
		return fmt.Errorf("plan %s: device_weight %d: at most %d", p.Name, p.DeviceWeight, MaxAIWeight)
	}
	var seen [NumClasses + 1]bool
	for _, cl := range p.ClassCeilings {
		c, err := ParseClass(cl.Class)
		switch {
		case err != nil:
			return fmt.Errorf("plan %s: class_ceilings: %v", p.Name, err)
		case seen[c]:
			return fmt.Errorf("plan %s: class_ceilings: class %s listed twice", p.Name, c)
		case p.Mode == Meter:
			return fmt.Errorf("plan %s: class_ceilings[%s]: a meter plan has no ceilings", p.Name, c)
		case cl.Ceiling == 0:
			return fmt.Errorf("plan %s: class_ceilings[%s]: ceiling must be above 0", p.Name, c)
		case cl.Ceiling > p.Ceiling:
			return fmt.Errorf("plan %s: class_ceilings[%s]: ceiling %d is above the plan's ceiling %d", p.Name, c, cl.Ceiling, p.Ceiling)
		}
		seen[c] = true
	}
	seen = [NumClasses + 1]bool{}
	for _, r := range p.Rates {
		c, err := ParseClass(r.Class)
		switch {
		case err != nil:
			return fmt.Errorf("plan %s: rates: %v", p.Name, err)
		case seen[c]:
			return fmt.Errorf("plan %s: rates: class %s listed twice", p.Name, c)
		case r.Per1000 < 0:
			return fmt.Errorf("plan %s: rates[%s]: per_1000_micros must not be negative", p.Name, c)
		}
		seen[c] = true
	}
	if len(p.Rates) > 0 {
		for _, c := range AllClasses {
			// device came after rates were written: a list without it
			// (every plan of before) bills it at its default rate.
			if !seen[c] && c != Device {
				return fmt.Errorf("plan %s: rates: class %s missing (list every class, or none for the defaults)", p.Name, c)
			}
		}
	}
	return nil
}

// Normalized returns p with every default made explicit (billing package,
// period month, rounding period, peak_basis global, ai_weight
// DefaultAIWeight, and for pay-as-you-go the DefaultRates when none are
// set) and ClassCeilings and Rates copied and sorted in class order, so two
// plans that mean the same compare and encode the same. It does not
// validate; entries with unknown classes sort last.
func (p Plan) Normalized() Plan {
	if p.Billing == "" {
		p.Billing = Package
	}
	if p.Period == "" {
		p.Period = Monthly
	}
	if p.Rounding == "" {
		p.Rounding = RoundPeriod
	}
	if p.PeakBasis == "" {
		p.PeakBasis = PeakGlobal
	}
	if p.AIWeight == 0 {
		p.AIWeight = DefaultAIWeight
	}
	if len(p.ClassCeilings) > 0 {
		cc := append([]ClassLimit(nil), p.ClassCeilings...)
		sort.SliceStable(cc, func(i, j int) bool { return classOrder(cc[i].Class) < classOrder(cc[j].Class) })
		p.ClassCeilings = cc
	} else {
		p.ClassCeilings = nil
	}
	switch {
	case len(p.Rates) > 0:
		rs := append([]ClassRate(nil), p.Rates...)
		sort.SliceStable(rs, func(i, j int) bool { return classOrder(rs[i].Class) < classOrder(rs[j].Class) })
		p.Rates = rs
	case p.Billing == PayAsYouGo:
		p.Rates = DefaultRates()
	default:
		p.Rates = nil
	}
	return p
}

// classOrder is the sort key of a class name: its position, unknown last.
func classOrder(name string) int {
	c, err := ParseClass(name)
	if err != nil {
		return NumClasses + 1
	}
	return int(c)
}

// IsPayAsYouGo reports whether p bills by per-class list rates.
func (p Plan) IsPayAsYouGo() bool { return p.Billing == PayAsYouGo }

// Weight returns class c's weight in unit-minutes per minute under p
// (c.Weight with p's ai weight, or p's device weight for the device class).
func (p Plan) Weight(c Class) uint32 {
	if c == Device {
		if p.DeviceWeight == 0 {
			return DefaultDeviceWeight
		}
		return p.DeviceWeight
	}
	w := p.AIWeight
	if w == 0 {
		w = DefaultAIWeight
	}
	return c.Weight(w)
}

// Rate returns p's pay-as-you-go list rate for class c, in micro-units per
// 1,000 minutes: from Rates when set, else the default list rate.
func (p Plan) Rate(c Class) Micro {
	if !c.Valid() {
		return 0
	}
	name := c.String()
	for _, r := range p.Rates {
		if r.Class == name {
			return r.Per1000
		}
	}
	return defaultRates[c-1]
}

// ClassCeiling returns p's ceiling for class c and whether it has one.
func (p Plan) ClassCeiling(c Class) (uint64, bool) {
	name := c.String()
	for _, cl := range p.ClassCeilings {
		if cl.Class == name {
			return cl.Ceiling, true
		}
	}
	return 0, false
}

// AdmitLimit is the global concurrency up to which a soft plan admits
// (exclusive), or 0 when the plan has no ceiling.
func (p Plan) AdmitLimit() uint64 {
	if p.Mode == Meter || p.Ceiling == 0 {
		return 0
	}
	return p.Ceiling + p.Ceiling*uint64(p.BurstPct)/100
}

// ClassAdmitLimit is AdmitLimit for class c alone: its class ceiling plus
// the plan's burst, or 0 when c has no class ceiling (only the total limit
// applies).
func (p Plan) ClassAdmitLimit(c Class) uint64 {
	if p.Mode == Meter {
		return 0
	}
	n, ok := p.ClassCeiling(c)
	if !ok {
		return 0
	}
	return n + n*uint64(p.BurstPct)/100
}

// UpgradeOf reports whether a move from q to p is an upgrade: p's monthly
// fee is higher than q's.
func (p Plan) UpgradeOf(q Plan) bool { return p.FeeMonthly > q.FeeMonthly }

// DowngradeOf reports whether a move from q to p is a downgrade: p's
// monthly fee is lower than q's.
func (p Plan) DowngradeOf(q Plan) bool { return p.FeeMonthly < q.FeeMonthly }

// Effective is when a tier change takes effect.
type Effective string

const (
	// Now: at once; the period's fees are prorated by the seconds each plan
	// is held.
	Now Effective = "now"
	// PeriodEnd: at the start of the next period.
	PeriodEnd Effective = "period-end"
)

// DefaultEffective is when a change from one plan to another takes effect
// unless the operator says otherwise: a downgrade (lower monthly fee) waits
// for the period's end; an upgrade, or a move between plans of equal fee,
// takes effect now.
func DefaultEffective(from, to Plan) Effective {
	if to.DowngradeOf(from) {
		return PeriodEnd
	}
	return Now
}

// Defaults returns the catalogue of DESIGN.md, sorted by name, normalized:
//
//	plan     billing  fee/month  ceiling  mode            included     overage/1,000
//	payg     payg         0       1,000   soft            10,000 free  0.99 (list rates by class)
//	starter  package    199         100   strict         300,000       0.89
//	growth   package  1,499       1,000   strict       3,000,000       0.79
//	scale    package  9,999      10,000   soft, 20%   25,000,000       0.69
//
// payg bills each class at its list rate (DefaultRates) per 1,000 minutes
// after its 10,000 free unit-minutes a month.
func Defaults() []Plan {
	ps := []Plan{
		{Name: "payg", Billing: PayAsYouGo, FeeMonthly: 0, Ceiling: 1000, Mode: Soft, IncludedUnitMinutes: 10_000, OveragePer1000: 990_000},
		{Name: "starter", Billing: Package, FeeMonthly: 199_000_000, Ceiling: 100, Mode: Strict, IncludedUnitMinutes: 300_000, OveragePer1000: 890_000},
		{Name: "growth", Billing: Package, FeeMonthly: 1_499_000_000, Ceiling: 1000, Mode: Strict, IncludedUnitMinutes: 3_000_000, OveragePer1000: 790_000},
		{Name: "scale", Billing: Package, FeeMonthly: 9_999_000_000, Ceiling: 10_000, Mode: Soft, BurstPct: 20, IncludedUnitMinutes: 25_000_000, OveragePer1000: 690_000},
	}
	for i := range ps {
		ps[i] = ps[i].Normalized()
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	return ps
}
