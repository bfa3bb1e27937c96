package plans

import (
	"fmt"
	"time"
)

// Period is a billing period: one calendar month in UTC, from its first
// instant (Start, inclusive) to the next month's first instant (End,
// exclusive). The zero value is not a valid period.
type Period struct {
	Year  int
	Month time.Month
}

// PeriodOf returns the period holding instant t, whatever t's location: a
// period rolls over at 00:00 UTC on the first of the month.
func PeriodOf(t time.Time) Period {
	u := t.UTC()
	return Period{Year: u.Year(), Month: u.Month()}
}

// ParsePeriod parses "YYYY-MM" (e.g. "2026-11"), year 0001 to 9999.
func ParsePeriod(s string) (Period, error) {
	bad := fmt.Errorf("period %q: want YYYY-MM", s)
	if len(s) != 7 || s[4] != '-' {
		return Period{}, bad
	}
	n := 0
	for i, c := range []byte(s) {
		if i == 4 {
			continue
		}
		if c < '0' || c > '9' {
			return Period{}, bad
		}
		if i < 4 {
			n = n*10 + int(c-'0')
		}
	}
	p := Period{Year: n, Month: time.Month(int(s[5]-'0')*10 + int(s[6]-'0'))}
	if err := p.Validate(); err != nil {
		return Period{}, fmt.Errorf("period %q: %v", s, err)
	}
	return p, nil
}

// Validate reports whether p is a month of a year 1 to 9999.
func (p Period) Validate() error {
	switch {
	case p.Year < 1 || p.Year > 9999:
		return fmt.Errorf("year %d: want 1 to 9999", p.Year)
	case p.Month < time.January || p.Month > time.December:
		return fmt.Errorf("month %d: want 1 to 12", int(p.Month))
	}
	return nil
}

// Start is the period's first instant, 00:00 UTC on the first of the month.
func (p Period) Start() time.Time { return time.Date(p.Year, p.Month, 1, 0, 0, 0, 0, time.UTC) }

// End is the first instant after the period: the next period's Start.
func (p Period) End() time.Time { return p.Next().Start() }

// Seconds is the period's length in seconds: 86,400 × the month's days
// (2,419,200 for February, 2,505,600 in a leap year, 2,592,000 for a
// 30-day month, 2,678,400 for a 31-day month). UTC has no leap seconds
// here, as in Go's time package.
func (p Period) Seconds() int64 { return p.End().Unix() - p.Start().Unix() }

// Days is the number of days in the period.
func (p Period) Days() int { return int(p.Seconds() / 86_400) }

// Contains reports whether Start ≤ t < End.
func (p Period) Contains(t time.Time) bool { return !t.Before(p.Start()) && t.Before(p.End()) }

// Next is the following period.
func (p Period) Next() Period {
	if p.Month == time.December {
		return Period{Year: p.Year + 1, Month: time.January}
	}
	return Period{Year: p.Year, Month: p.Month + 1}
}

// Prev is the preceding period.
func (p Period) Prev() Period {
	if p.Month == time.January {
		return Period{Year: p.Year - 1, Month: time.December}
	}
	return Period{Year: p.Year, Month: p.Month - 1}
}

// String formats p as "YYYY-MM", e.g. "2026-11".
func (p Period) String() string {
	if p.Year < 0 || p.Year > 9999 {
		return fmt.Sprintf("%04d-%02d", p.Year, int(p.Month))
	}
	m := int(p.Month)
	if m < 0 || m > 99 {
		return fmt.Sprintf("%04d-%02d", p.Year, m)
	}
	y := p.Year
	return string([]byte{byte('0' + y/1000), byte('0' + y/100%10), byte('0' + y/10%10), byte('0' + y%10), '-', byte('0' + m/10), byte('0' + m%10)})
}

// MarshalText encodes p as its String.
func (p Period) MarshalText() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("period: %v", err)
	}
	return []byte(p.String()), nil
}

// UnmarshalText decodes "YYYY-MM".
func (p *Period) UnmarshalText(b []byte) error {
	q, err := ParsePeriod(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}
