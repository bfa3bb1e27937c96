package aggregator

import (
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/plans"
)

func TestPlansFileCreatesMissingPlansOnly(t *testing.T) {
	gold := plans.Plan{Name: "gold", FeeMonthly: 5_000_000_000, Ceiling: 5000, Mode: plans.Strict}
	payg := plans.Defaults()[1]
	if payg.Name != "payg" {
		t.Fatalf("defaults changed order: %s", payg.Name)
	}
	payg.Ceiling = 5 // differs from the catalogue's: must not overwrite it
	s := newTestServer(t, &fakeClock{t: t0}, func(c *Config) { c.Plans = []plans.Plan{gold, payg} })
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got map[string]plans.Plan
		s.fsm.Read(func(st *fsm.State) {
			got = map[string]plans.Plan{"gold": st.Plans["gold"], "payg": st.Plans["payg"]}
		})
		if got["gold"].Name == "gold" {
			if got["payg"].Ceiling != 1000 {
				t.Fatalf("payg overwritten from the file: ceiling %d", got["payg"].Ceiling)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("plan from the file never created")
		}
		time.Sleep(20 * time.Millisecond)
	}
	bad := gold
	bad.Mode = "hard"
	if _, err := New(Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", WireAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", Plans: []plans.Plan{bad}}); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Fatalf("invalid plan in the file: %v", err)
	}
}

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
