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

// Micro is an amount of money in millionths of the currency unit.
type Micro int64

// Plan is one named offer of the catalogue.
type Plan struct {
	Name string `json:"name" msgpack:"name"`
	// FeeMonthly is the fee for a whole period.
	FeeMonthly Micro `json:"fee_monthly_micros" msgpack:"fee"`
	// Ceiling is the most concurrent sessions admitted (0 with Meter: none).
	Ceiling uint64 `json:"ceiling" msgpack:"ceiling"`
	Mode    Mode   `json:"mode" msgpack:"mode"`
	// BurstPct lets a soft plan admit up to Ceiling × (1 + BurstPct/100).
	BurstPct uint32 `json:"burst_pct" msgpack:"burst"`
	// IncludedUnitMinutes are included in the fee.
	IncludedUnitMinutes uint64 `json:"included_unit_minutes" msgpack:"included"`
	// OveragePer1000 is charged per 1,000 unit-minutes beyond the included ones.
	OveragePer1000 Micro `json:"overage_per_1000_micros" msgpack:"overage"`
}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Validate reports the first problem with p, naming the field.
func (p Plan) Validate() error {
	switch {
	case !namePattern.MatchString(p.Name):
		return fmt.Errorf("plan name %q: want 1-63 of a-z 0-9 . _ - starting with a letter or digit", p.Name)
	case p.FeeMonthly < 0:
		return fmt.Errorf("plan %s: fee_monthly_micros must not be negative", p.Name)
	case p.OveragePer1000 < 0:
		return fmt.Errorf("plan %s: overage_per_1000_micros must not be negative", p.Name)
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
	return nil
}

// AdmitLimit is the global concurrency up to which a soft plan admits
// (exclusive), or 0 when the plan has no ceiling.
func (p Plan) AdmitLimit() uint64 {
	if p.Mode == Meter || p.Ceiling == 0 {
		return 0
	}
	return p.Ceiling + p.Ceiling*uint64(p.BurstPct)/100
}

// Defaults returns the catalogue of DESIGN.md, sorted by name.
func Defaults() []Plan {
	ps := []Plan{
		{Name: "payg", FeeMonthly: 0, Ceiling: 1000, Mode: Soft, IncludedUnitMinutes: 10_000, OveragePer1000: 990_000},
		{Name: "starter", FeeMonthly: 199_000_000, Ceiling: 100, Mode: Strict, IncludedUnitMinutes: 300_000, OveragePer1000: 890_000},
		{Name: "growth", FeeMonthly: 1_499_000_000, Ceiling: 1000, Mode: Strict, IncludedUnitMinutes: 3_000_000, OveragePer1000: 790_000},
		{Name: "scale", FeeMonthly: 9_999_000_000, Ceiling: 10_000, Mode: Soft, BurstPct: 20, IncludedUnitMinutes: 25_000_000, OveragePer1000: 690_000},
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	return ps
}
