package plans

import (
	"encoding/json"
	"testing"
	"time"
)

func TestPeriodSeconds(t *testing.T) {
	cases := []struct {
		p    Period
		secs int64 // days × 86,400
		days int
	}{
		{Period{2026, time.November}, 2_592_000, 30}, // 30 × 86,400
		{Period{2026, time.December}, 2_678_400, 31}, // 31 × 86,400
		{Period{2027, time.February}, 2_419_200, 28}, // 28 × 86,400
		{Period{2028, time.February}, 2_505_600, 29}, // 29 × 86,400 (leap year)
		{Period{2100, time.February}, 2_419_200, 28}, // divisible by 100, not by 400: not leap
		{Period{2000, time.February}, 2_505_600, 29}, // divisible by 400: leap
		{Period{2026, time.January}, 2_678_400, 31},
		{Period{2026, time.April}, 2_592_000, 30},
	}
	for _, tc := range cases {
		if got := tc.p.Seconds(); got != tc.secs {
			t.Errorf("%s: %d s, want %d", tc.p, got, tc.secs)
		}
		if got := tc.p.Days(); got != tc.days {
			t.Errorf("%s: %d days, want %d", tc.p, got, tc.days)
		}
	}
}

func TestPeriodOfRollover(t *testing.T) {
	tokyo := time.FixedZone("UTC+9", 9*3600)
	newYork := time.FixedZone("UTC-5", -5*3600)
	cases := []struct {
		t    time.Time
		want string
	}{
		{time.Date(2026, 11, 30, 23, 59, 59, 999_000_000, time.UTC), "2026-11"},
		{time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), "2026-12"},
		// 08:59:59.999 on Dec 1 in UTC+9 is 23:59:59.999 on Nov 30 UTC.
		{time.Date(2026, 12, 1, 8, 59, 59, 999_000_000, tokyo), "2026-11"},
		{time.Date(2026, 12, 1, 9, 0, 0, 0, tokyo), "2026-12"},
		// 19:00 on Nov 30 in UTC-5 is already 00:00 on Dec 1 UTC.
		{time.Date(2026, 11, 30, 18, 59, 59, 999_999_999, newYork), "2026-11"},
		{time.Date(2026, 11, 30, 19, 0, 0, 0, newYork), "2026-12"},
		// Year rollover.
		{time.Date(2026, 12, 31, 23, 59, 59, 999_000_000, time.UTC), "2026-12"},
		{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), "2027-01"},
	}
	for _, tc := range cases {
		p := PeriodOf(tc.t)
		if p.String() != tc.want {
			t.Errorf("PeriodOf(%s) = %s, want %s", tc.t, p, tc.want)
		}
		if !p.Contains(tc.t) {
			t.Errorf("%s does not contain %s", p, tc.t)
		}
	}
	p := Period{2026, time.November}
	if !p.Start().Equal(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)) || !p.End().Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("start %s end %s", p.Start(), p.End())
	}
	if p.Start().Location() != time.UTC {
		t.Error("start not in UTC")
	}
	if p.Contains(p.End()) || !p.Contains(p.Start()) || p.Contains(p.Start().Add(-1)) {
		t.Error("Contains is not [Start, End)")
	}
	if d := (Period{2026, time.December}); d.Next() != (Period{2027, time.January}) || d.Next().Prev() != d || p.Next() != d {
		t.Error("Next/Prev")
	}
}

func TestParsePeriod(t *testing.T) {
	for _, s := range []string{"2026-11", "0001-01", "9999-12", "2028-02"} {
		p, err := ParsePeriod(s)
		if err != nil || p.String() != s {
			t.Errorf("ParsePeriod(%q) = %v, %v", s, p, err)
		}
	}
	if p, _ := ParsePeriod("2026-11"); p != (Period{2026, time.November}) {
		t.Errorf("2026-11 parsed as %+v", p)
	}
	for _, s := range []string{"", "2026-13", "2026-00", "2026-1", "26-11", "2026/11", "0000-01", " 2026-11", "2026-11x", "2026-1a", "+026-11", "２026-11"} {
		if p, err := ParsePeriod(s); err == nil {
			t.Errorf("ParsePeriod(%q) accepted: %v", s, p)
		}
	}
	var got struct{ P Period }
	if err := json.Unmarshal([]byte(`{"P":"2028-02"}`), &got); err != nil || got.P != (Period{2028, time.February}) {
		t.Errorf("json: %v %v", got, err)
	}
	if b, err := json.Marshal(got); err != nil || string(b) != `{"P":"2028-02"}` {
		t.Errorf("json: %s %v", b, err)
	}
	if err := json.Unmarshal([]byte(`{"P":"2028-2"}`), &got); err == nil {
		t.Error("json accepted 2028-2")
	}
	if (Period{}).Validate() == nil || (Period{2026, 13}).Validate() == nil {
		t.Error("invalid periods validated")
	}
}
