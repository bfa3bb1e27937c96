package plans

import (
	"errors"
	"fmt"
	"time"
)

// Holding is a plan held over [From, To) within a period.
type Holding struct {
	Plan     Plan
	From, To time.Time
}

// UsageSlice is usage of one class accrued at instant At (a delta, a day,
// a session end...), given in time order.
type UsageSlice struct {
	At    time.Time
	Class Class
	// Micros is session-time in microseconds (session-seconds × 10⁶): all
	// the time accrued, by sessions that ended and by sessions still open.
	Micros uint64
	// Minutes is, over the sessions that ended in the slice, the sum of each
	// one's whole duration rounded up to a whole minute (what agents report
	// as ClosedMinutes); used by plans with rounding "session" only.
	Minutes uint64
}

// LineKind is what a line of an invoice bills.
type LineKind string

const (
	// LineFee is a plan's monthly fee, held for the whole period.
	LineFee LineKind = "fee"
	// LineProration is a plan's monthly fee prorated by the seconds held.
	LineProration LineKind = "proration"
	// LineIncluded reports a holding's allowance (amount 0): Quantity is
	// the allowance in unit-minutes, Detail what was used of it.
	LineIncluded LineKind = "included"
	// LineOverage bills a class's unit-minutes beyond a package's allowance.
	LineOverage LineKind = "overage"
	// LineUsage bills a class's pay-as-you-go minutes at its list rate.
	LineUsage LineKind = "usage"
	// LineActiveUsers bills the period's active users (MAU) beyond the
	// included ones, per user.
	LineActiveUsers LineKind = "active-users"
)

// Line is one line of an invoice.
type Line struct {
	Kind LineKind `json:"kind"`
	Plan string   `json:"plan"`
	// Class is the class name of overage and usage lines.
	Class string `json:"class,omitempty"`
	// From, To is the holding the line belongs to.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Quantity is in Unit: seconds held ("s") for fee and proration,
	// "unit-minutes" for included and overage, "minutes" for usage, "users"
	// for active users.
	Quantity uint64 `json:"quantity"`
	Unit     string `json:"unit"`
	// Rate is the price applied, in micro-units: the monthly fee, per
	// 1,000 of Unit for overage and usage, per user for active users.
	Rate Micro `json:"rate_micros"`
	// Amount is the line's charge in micro-units, rounded half up once.
	Amount Micro  `json:"amount_micros"`
	Detail string `json:"detail,omitempty"`
}

// Invoice is a period's bill.
type Invoice struct {
	Period string `json:"period"`
	Lines  []Line `json:"lines"`
	// Total is the sum of the lines' amounts, in micro-units.
	Total Micro `json:"total_micros"`
}

const microsPerMinute = 60_000_000

// Bill computes the invoice of one period for the plans held (in time
// order, tiling a contiguous part of the period without gap or overlap)
// and the usage (in time order, each slice within the held time). Lines
// come holding by holding: the fee, the allowance, then one line per class
// with something to bill, in class order. It refuses invalid plans,
// holdings or usage, and amounts beyond a Micro, with an error naming the
// offending element. The rules:
//
//   - A period is a UTC calendar month (Period). A tenant holds one plan at
//     a time; its Holdings tile a contiguous part of the period.
//   - Fees are prorated by the whole seconds held: FeeMonthly × held ÷
//     Period.Seconds, where held = To.Unix() − From.Unix() (instants are
//     counted at the second they fall in, so holdings that tile a range
//     add up to its seconds exactly).
//   - The included allowance is prorated the same way and rounded down to a
//     whole unit-minute: ⌊IncludedUnitMinutes × held ÷ Period.Seconds⌋.
//     Each holding has its own allowance; what one leaves unused is not
//     carried to the next.
//   - A usage slice is billed under the plan held at its instant At (the
//     holding with From ≤ At < To).
//   - Minutes: a plan with rounding "period" bills each class's total within
//     a holding rounded up to a whole minute; a minute is counted in the
//     slice during which it begins (slice minutes = ⌈cum/60 s⌉ − ⌈prev/60 s⌉
//     over the class's running total), so the slices' whole minutes add up
//     to the rounded total and can be consumed in time order.
//   - A plan with rounding "session" bills each class within a holding the
//     greater of S, the running sum of UsageSlice.Minutes (every session
//     that ended, billed whole and rounded up in the holding it ends in),
//     and ⌈T/60 s⌉, T the running total of Micros (the exact time rounded
//     once); a minute is counted in the slice during which it begins (slice
//     minutes = max(S, ⌈T/60 s⌉) − the same before the slice). When every
//     session ends within the holding S ≥ ⌈T/60 s⌉ and S is billed: each
//     session rounded up. The exact time binds only when sessions still
//     open at the holding's end (or whose end was never reported) hold more
//     time than the rounding of those that ended: they are then billed by
//     their exact time, rounded once, so no metered time goes unbilled.
//   - The allowance is consumed in time order, slice by slice.
//   - Package: a minute of class c is Weight(c) unit-minutes; the allowance
//     covers unit-minutes exactly (a slice may be covered in part) and the
//     rest, per class, is overage billed at OveragePer1000 per 1,000
//     unit-minutes.
//   - Pay-as-you-go: the free allowance (IncludedUnitMinutes) covers whole
//     minutes, each taking Weight(c) unit-minutes of it; a minute that no
//     longer fits whole is billed, and what is left of the allowance stays
//     for later, lighter minutes. Every other minute of class c is billed
//     at Rate(c) per 1,000 minutes.
//   - Every line's amount is computed exactly in integers and rounded half
//     up to the micro-unit once, at the end; the invoice total is the sum
//     of the lines.
func Bill(period Period, held []Holding, usage []UsageSlice) (Invoice, error) {
	return BillUsers(period, held, usage, 0)
}

// BillUsers is Bill for a tenant that had mau monthly active users (the
// period's distinct users). Plans that price users (PricesUsers) include
// IncludedMAU each, prorated by the seconds held like the other
// allowances (⌊IncludedMAU × held ÷ Period.Seconds⌋, summed over the
// holdings); MAU is a figure of the whole period, not of a holding, so the
// users beyond that sum are billed on one line, at the OveragePerMAU of the
// last plan held that prices users.
func BillUsers(period Period, held []Holding, usage []UsageSlice, mau uint64) (Invoice, error) {
	if err := period.Validate(); err != nil {
		return Invoice{}, fmt.Errorf("bill: period: %v", err)
	}
	if len(held) == 0 {
		return Invoice{}, errors.New("bill: no plan held")
	}
	start, end := period.Start(), period.End()
	norm := make([]Plan, len(held))
	for i, h := range held {
		if err := h.Plan.Validate(); err != nil {
			return Invoice{}, fmt.Errorf("bill: held[%d]: %w", i, err)
		}
		norm[i] = h.Plan.Normalized()
		switch {
		case !h.From.Before(h.To):
			return Invoice{}, fmt.Errorf("bill: held[%d] (%s): from %s is not before to %s", i, h.Plan.Name, stamp(h.From), stamp(h.To))
		case h.From.Before(start) || h.To.After(end):
			return Invoice{}, fmt.Errorf("bill: held[%d] (%s): [%s, %s) is not within period %s [%s, %s)",
				i, h.Plan.Name, stamp(h.From), stamp(h.To), period, stamp(start), stamp(end))
		case i > 0 && h.From.Before(held[i-1].To):
			return Invoice{}, fmt.Errorf("bill: held[%d] (%s): from %s overlaps held[%d], held until %s", i, h.Plan.Name, stamp(h.From), i-1, stamp(held[i-1].To))
		case i > 0 && h.From.After(held[i-1].To):
			return Invoice{}, fmt.Errorf("bill: held[%d] (%s): from %s leaves a gap after held[%d], held until %s", i, h.Plan.Name, stamp(h.From), i-1, stamp(held[i-1].To))
		}
	}
	first, last := held[0].From, held[len(held)-1].To
	for i, u := range usage {
		switch {
		case !u.Class.Valid():
			return Invoice{}, fmt.Errorf("bill: usage[%d]: unknown %s", i, u.Class)
		case u.At.Before(first) || !u.At.Before(last):
			return Invoice{}, fmt.Errorf("bill: usage[%d]: at %s is outside the held time [%s, %s)", i, stamp(u.At), stamp(first), stamp(last))
		case i > 0 && u.At.Before(usage[i-1].At):
			return Invoice{}, fmt.Errorf("bill: usage[%d]: at %s is before usage[%d] at %s: usage must be in time order", i, stamp(u.At), i-1, stamp(usage[i-1].At))
		}
	}

	periodSecs := uint64(period.Seconds())
	inv := Invoice{Period: period.String()}
	var total uint64
	addLine := func(l Line) error {
		var ok bool
		if total, ok = add64(total, uint64(l.Amount)); !ok || total > 1<<63-1 {
			return errors.New("bill: total overflows")
		}
		inv.Lines = append(inv.Lines, l)
		return nil
	}
	ui := 0
	for hi, h := range held {
		p := &norm[hi]
		secs := uint64(h.To.Unix() - h.From.Unix())
		allowance, ok := mulDivFloor(p.IncludedUnitMinutes, secs, periodSecs)
		if !ok {
			return Invoice{}, fmt.Errorf("bill: held[%d] (%s): included_unit_minutes overflows", hi, p.Name)
		}
		var acc account
		acc.init(p, allowance)
		var cum, cumMin [NumClasses]uint64
		for ; ui < len(usage) && usage[ui].At.Before(h.To); ui++ {
			u := &usage[ui]
			i := u.Class - 1
			next, ok := add64(cum[i], u.Micros)
			if !ok {
				return Invoice{}, fmt.Errorf("bill: usage[%d]: %s micros overflow", ui, u.Class)
			}
			var m uint64
			if p.Rounding == RoundSession {
				nextMin, ok := add64(cumMin[i], u.Minutes)
				if !ok {
					return Invoice{}, fmt.Errorf("bill: usage[%d]: %s minutes overflow", ui, u.Class)
				}
				m = max(nextMin, ceilDiv(next, microsPerMinute)) - max(cumMin[i], ceilDiv(cum[i], microsPerMinute))
				cumMin[i] = nextMin
			} else {
				m = ceilDiv(next, microsPerMinute) - ceilDiv(cum[i], microsPerMinute)
			}
			cum[i] = next
			acc.add(u.Class, m)
		}
		if acc.overflow {
			return Invoice{}, fmt.Errorf("bill: held[%d] (%s): usage overflows", hi, p.Name)
		}
		if p.FeeMonthly > 0 {
			fee, ok := mulDivHalfUp(uint64(p.FeeMonthly), secs, periodSecs)
			if !ok {
				return Invoice{}, fmt.Errorf("bill: held[%d] (%s): fee overflows", hi, p.Name)
			}
			l := Line{Kind: LineFee, Plan: p.Name, From: h.From, To: h.To, Quantity: secs, Unit: "s", Rate: p.FeeMonthly, Amount: Micro(fee), Detail: period.String()}
			if secs != periodSecs {
				l.Kind = LineProration
				l.Detail = fmt.Sprintf("held %s of %s s", groupThousands(secs), groupThousands(periodSecs))
			}
			if err := addLine(l); err != nil {
				return Invoice{}, err
			}
		}
		if p.IncludedUnitMinutes > 0 {
			d := fmt.Sprintf("used %s of %s unit-minutes", groupThousands(allowance-acc.left), groupThousands(allowance))
			if p.IsPayAsYouGo() {
				d = "free allowance: " + d
			}
			if allowance != p.IncludedUnitMinutes {
				d += fmt.Sprintf(" (%s a month, prorated)", groupThousands(p.IncludedUnitMinutes))
			}
			if err := addLine(Line{Kind: LineIncluded, Plan: p.Name, From: h.From, To: h.To, Quantity: allowance, Unit: "unit-minutes", Detail: d}); err != nil {
				return Invoice{}, err
			}
		}
		for i, c := range AllClasses {
			if acc.billed[i] == 0 {
				continue
			}
			amt, ok := acc.amount(i)
			if !ok {
				return Invoice{}, fmt.Errorf("bill: held[%d] (%s): %s amount overflows", hi, p.Name, c)
			}
			l := Line{Plan: p.Name, Class: c.String(), From: h.From, To: h.To, Quantity: acc.billed[i], Rate: Micro(acc.rate[i]), Amount: Micro(amt)}
			if acc.payg {
				l.Kind, l.Unit = LineUsage, "minutes"
				l.Detail = fmt.Sprintf("%s minutes, %s free", groupThousands(acc.minutes[i]), groupThousands(acc.covered[i]))
			} else {
				l.Kind, l.Unit = LineOverage, "unit-minutes"
				l.Detail = fmt.Sprintf("%s minutes × %d, %s unit-minutes included", groupThousands(acc.minutes[i]), acc.weight[i], groupThousands(acc.covered[i]))
			}
			if err := addLine(l); err != nil {
				return Invoice{}, err
			}
		}
	}
	var included uint64
	lastUsers := -1
	for hi, h := range held {
		if p := &norm[hi]; p.PricesUsers() {
			n, ok := mulDivFloor(p.IncludedMAU, uint64(h.To.Unix()-h.From.Unix()), periodSecs)
			if !ok {
				return Invoice{}, fmt.Errorf("bill: held[%d] (%s): included_mau overflows", hi, p.Name)
			}
			included += n
			lastUsers = hi
		}
	}
	if lastUsers >= 0 {
		p, h := &norm[lastUsers], held[lastUsers]
		over := mau - min(mau, included)
		amt, ok := mul64(over, uint64(p.OveragePerMAU))
		if !ok || amt > 1<<63-1 {
			return Invoice{}, fmt.Errorf("bill: held[%d] (%s): active users overflow", lastUsers, p.Name)
		}
		d := fmt.Sprintf("%s active users, %s included", groupThousands(mau), groupThousands(included))
		if included != p.IncludedMAU {
			d += fmt.Sprintf(" (%s a month, prorated)", groupThousands(p.IncludedMAU))
		}
		if err := addLine(Line{Kind: LineActiveUsers, Plan: p.Name, From: h.From, To: h.To, Quantity: over, Unit: "users",
			Rate: p.OveragePerMAU, Amount: Micro(amt), Detail: d}); err != nil {
			return Invoice{}, err
		}
	}
	inv.Total = Micro(total)
	return inv, nil
}

// account meters the usage of one holding: what its allowance covers and
// what is billed, by class (index class-1).
type account struct {
	payg   bool
	weight [NumClasses]uint64
	// rate is per 1,000 minutes (payg) or per 1,000 unit-minutes (package).
	rate    [NumClasses]uint64
	left    uint64             // allowance left, unit-minutes
	minutes [NumClasses]uint64 // all minutes
	// covered is minutes (payg) or unit-minutes (package) the allowance
	// covered; billed is minutes (payg) or unit-minutes (package) billed.
	covered, billed [NumClasses]uint64
	overflow        bool
}

// init prepares a for plan p (normalized or not) with allowance unit-minutes.
func (a *account) init(p *Plan, allowance uint64) {
	*a = account{payg: p.IsPayAsYouGo(), left: allowance}
	for i, c := range AllClasses {
		a.weight[i] = uint64(p.Weight(c))
		if a.payg {
			a.rate[i] = uint64(p.Rate(c))
		} else {
			a.rate[i] = uint64(p.OveragePer1000)
		}
	}
}

// add meters m whole minutes of class c, consuming the allowance first.
func (a *account) add(c Class, m uint64) {
	if m == 0 {
		return
	}
	i := c - 1
	w := a.weight[i]
	var ok bool
	if a.minutes[i], ok = add64(a.minutes[i], m); !ok {
		a.overflow = true
	}
	if a.payg {
		cov := m
		if w > 0 {
			cov = min(m, a.left/w)
		}
		a.left -= cov * w
		a.covered[i] += cov
		a.billed[i] += m - cov
		return
	}
	u, ok := mul64(m, w)
	if !ok {
		a.overflow = true
	}
	cov := min(u, a.left)
	a.left -= cov
	a.covered[i] += cov
	if a.billed[i], ok = add64(a.billed[i], u-cov); !ok {
		a.overflow = true
	}
}

// addDay meters a day of minutes by class (index class-1), in class order,
// with the same result for billed and left as add for each class in turn;
// minutes and covered are not kept up to date (Advise needs only the cost).
func (a *account) addDay(m *[NumClasses]uint64) {
	if a.left == 0 { // nothing covered any more: bill it all
		for i, n := range m {
			u := n
			if !a.payg {
				var ok bool
				if u, ok = mul64(n, a.weight[i]); !ok {
					a.overflow = true
				}
			}
			var ok bool
			if a.billed[i], ok = add64(a.billed[i], u); !ok {
				a.overflow = true
			}
		}
		return
	}
	var units uint64
	for i, n := range m {
		u, ok1 := mul64(n, a.weight[i])
		var ok2 bool
		if units, ok2 = add64(units, u); !ok1 || !ok2 {
			units = 1<<64 - 1 // more than any allowance: take the slow path
			break
		}
	}
	if units <= a.left { // all covered, whole minutes included
		a.left -= units
		return
	}
	for i, n := range m {
		a.add(Class(i+1), n)
	}
}

// amount is class index i's charge in micro-units, rounded half up once.
func (a *account) amount(i int) (uint64, bool) {
	return mulDivHalfUp(a.billed[i], a.rate[i], 1000)
}

// usageCost is the sum of the class amounts, and false on overflow.
func (a *account) usageCost() (uint64, bool) {
	if a.overflow {
		return 0, false
	}
	var sum uint64
	for i := range a.billed {
		if a.billed[i] == 0 {
			continue
		}
		amt, ok := a.amount(i)
		if !ok {
			return 0, false
		}
		if sum, ok = add64(sum, amt); !ok {
			return 0, false
		}
	}
	return sum, true
}

func ceilDiv(a, b uint64) uint64 {
	q := a / b
	if a%b != 0 {
		q++
	}
	return q
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
