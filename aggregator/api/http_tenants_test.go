package api

import (
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/plans"
)

func TestResolveAt(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	end := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	ps := map[string]plans.Plan{}
	for _, p := range plans.Defaults() {
		ps[p.Name] = p
	}
	starter, growth := ps["starter"], ps["growth"]
	cases := []struct {
		at       string
		from, to *plans.Plan
		want     int64
		err      bool
	}{
		{"", nil, &growth, 0, false},         // a new tenant: now
		{"", &starter, &growth, 0, false},    // upgrade: now
		{"", &growth, &starter, end, false},  // downgrade: period end
		{"now", &growth, &starter, 0, false}, // downgrade asked for now
		{"period-end", &starter, &growth, end, false},
		{"2026-11-28T00:00:00Z", &starter, &growth, time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC).UnixNano(), false},
		{"2026-11-01T00:00:00Z", &starter, &growth, 0, false}, // in the past: now
		{"tomorrow", &starter, &growth, 0, true},
	}
	for _, tc := range cases {
		got, err := resolveAt(tc.at, now, tc.from, tc.to)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("at %q: %d, %v; want %d (error %v)", tc.at, got, err, tc.want, tc.err)
		}
	}
}
