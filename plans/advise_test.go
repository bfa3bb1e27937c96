package plans

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

var tScale = Plan{Name: "scale", Billing: Package, FeeMonthly: 9_999_000_000, Ceiling: 10_000, Mode: Soft, BurstPct: 20, IncludedUnitMinutes: 25_000_000, OveragePer1000: 690_000}

// tCatalogue is the DESIGN.md catalogue in name order, as written in this
// package's tests.
var tCatalogue = []Plan{tGrowth, tPayg, tScale, tStarter}

// flatDays is n days of the same peak and minutes of one class.
func flatDays(n int, peak uint64, c Class, minutes uint64) []DayUsage {
	ds := make([]DayUsage, n)
	for i := range ds {
		ds[i].Peak = peak
		ds[i].Minutes[c-1] = minutes
	}
	return ds
}

type wantOption struct {
	plan      string
	need      uint64
	fits      bool
	util      float64
	cost      Micro
	projected Micro
}

func checkOptions(t *testing.T, a Advice, want []wantOption) {
	t.Helper()
	if len(a.Options) != len(want) {
		t.Fatalf("%d options, want %d: %+v", len(a.Options), len(want), a.Options)
	}
	for i, w := range want {
		o := a.Options[i]
		got := wantOption{o.Plan, o.Need, o.Fits, o.UtilizationPct, o.Cost, o.Projected}
		if got != w {
			t.Errorf("option %d\n got %+v\nwant %+v", i, got, w)
		}
	}
}

func checkReasons(t *testing.T, a Advice, want []string) {
	t.Helper()
	if !reflect.DeepEqual(a.Reasons, want) {
		t.Errorf("reasons\n got %q\nwant %q", a.Reasons, want)
	}
}

func TestAdvisePicksTheCheapestFittingPlan(t *testing.T) {
	// A whole November on growth: peak 80 every day, 10,000 audio minutes a
	// day = 300,000 minutes = 300,000 unit-minutes.
	a := Advise(AdviceInput{Current: tGrowth, Period: nov, Days: flatDays(30, 80, Audio, 10_000)}, tCatalogue)
	// need = ⌈80 × 1.2⌉ = 96.
	checkOptions(t, a, []wantOption{
		{"growth", 96, true, 8, 1_499_000_000, 1_499_000_000},  // 300,000 ≤ 3,000,000 included; 80/1,000
		{"payg", 96, true, 8, 287_100_000, 287_100_000},        // (300,000 − 10,000) × 990
		{"scale", 96, true, 0.8, 9_999_000_000, 9_999_000_000}, // 80/10,000
		{"starter", 96, true, 80, 199_000_000, 199_000_000},    // 300,000 ≤ 300,000 included; 96 ≤ 100
	})
	if a.Recommended != "starter" || a.Move != MoveDowngrade || a.Effective != PeriodEnd {
		t.Errorf("recommended %s, %s, %s; want starter, downgrade at period-end", a.Recommended, a.Move, a.Effective)
	}
	if a.Peak != 80 || a.ProjectedPeak != 80 || a.Minutes[0] != 300_000 || a.ProjectedMinutes[0] != 300_000 || a.UnitMinutes != 300_000 || a.ElapsedDays != 30 {
		t.Errorf("figures: %+v", a)
	}
	checkReasons(t, a, []string{
		"peak 80 used 8% of growth's ceiling of 1,000",
		"peak used 8% of the ceiling: growth costs 1,300.00 more than starter would have", // 1,499 − 199
		"move to starter at the end of 2026-11 (downgrade)",
		"starter is cheaper than payg above 211,011 minutes a month of this class mix (300,000 projected)",
	})
	// Break-even at an audio-only mix (1 minute = 1 unit-minute, 990 µ a
	// minute on payg beyond 10,000 free); every package here is crossed
	// within its included minutes, where it costs just its fee:
	//   growth:  10,000 + 1,499,000,000/990 = 1,524,141.4 → 1,524,142
	//   scale:   10,000 + 9,999,000,000/990 = 10,110,000 exactly: equal, so 10,110,001
	//   starter: 10,000 +   199,000,000/990 =   211,010.1 → 211,011
	want := []BreakEven{
		{Package: "growth", Payg: "payg", Minutes: 1_524_142, UnitMinutes: 1_524_142},
		{Package: "scale", Payg: "payg", Minutes: 10_110_001, UnitMinutes: 10_110_001},
		{Package: "starter", Payg: "payg", Minutes: 211_011, UnitMinutes: 211_011},
	}
	if !reflect.DeepEqual(a.BreakEven, want) {
		t.Errorf("break-even\n got %+v\nwant %+v", a.BreakEven, want)
	}
}

func TestAdviseFlagsACeilingTooSmall(t *testing.T) {
	// A whole November on starter: peak 60, but 100 (the ceiling) on days
	// 11-16 with 230 sessions refused; 60,000 audio minutes a day.
	days := flatDays(30, 60, Audio, 60_000)
	for i, r := range []uint64{40, 40, 40, 40, 40, 30} {
		days[10+i].Peak, days[10+i].Refused = 100, r
	}
	a := Advise(AdviceInput{Current: tStarter, Period: nov, Days: days}, tCatalogue)
	// 1,800,000 minutes; need = ⌈100 × 1.2⌉ = 120.
	checkOptions(t, a, []wantOption{
		{"growth", 120, true, 10, 1_499_000_000, 1_499_000_000},    // within 3,000,000
		{"payg", 120, true, 10, 1_772_100_000, 1_772_100_000},      // 1,790,000 × 990
		{"scale", 120, true, 1, 9_999_000_000, 9_999_000_000},      //
		{"starter", 120, false, 100, 1_534_000_000, 1_534_000_000}, // 199,000,000 + 1,500,000 × 890
	})
	if a.Recommended != "growth" || a.Move != MoveUpgrade || a.Effective != Now || a.Refused != 230 || a.RefusedDays != 6 {
		t.Errorf("%s %s %s refused %d on %d days", a.Recommended, a.Move, a.Effective, a.Refused, a.RefusedDays)
	}
	checkReasons(t, a, []string{
		"peak 100 needs a ceiling of 120 with 20% headroom: starter's ceiling is 100",
		"refused 230 sessions on 6 days: upgrade",
		"starter costs 35.00 more than growth would have", // 1,534 − 1,499
		"move to growth now (upgrade)",
		"growth is cheaper than payg above 1,524,142 minutes a month of this class mix (1,800,000 projected)",
	})
}

func TestAdviseBreakEvenAtTheTenantsMix(t *testing.T) {
	// Between: 100.00 a month, 10,000 unit-minutes included, 0.50 per 1,000 beyond.
	mid := Plan{Name: "mid", Billing: Package, FeeMonthly: 100_000_000, Ceiling: 100, Mode: Strict, IncludedUnitMinutes: 10_000, OveragePer1000: 500_000}
	// Pricey: overage dearer than pay-as-you-go.
	pricey := Plan{Name: "pricey", Billing: Package, FeeMonthly: 1, Ceiling: 100, Mode: Strict, OveragePer1000: 2_000_000}
	cat := []Plan{tPayg, tStarter, tGrowth, tScale, mid, pricey}
	// video-hd only: 4 unit-minutes and 3,990 µ a minute on payg, whose
	// 10,000 free unit-minutes are 2,500 minutes.
	a := Advise(AdviceInput{Current: tPayg, Period: nov, Days: flatDays(30, 5, VideoHD, 1_000)}, cat)
	want := []BreakEven{
		// 2,500 + 199,000,000/3,990 = 52,374.69 (< 75,000 included minutes) → 52,375; × 4
		{Package: "starter", Payg: "payg", Minutes: 52_375, UnitMinutes: 209_500},
		// 2,500 + 1,499,000,000/3,990 = 378,189.22 → 378,190; × 4
		{Package: "growth", Payg: "payg", Minutes: 378_190, UnitMinutes: 1_512_760},
		// 2,500 + 9,999,000,000/3,990 = 2,508,515.04 → 2,508,516; × 4
		{Package: "scale", Payg: "payg", Minutes: 2_508_516, UnitMinutes: 10_034_064},
		// mid includes 2,500 minutes, then 0.50 × 4 = 2,000 µ a minute:
		// 3,990(M − 2,500) = 100,000,000 + 2,000(M − 2,500)
		// → M = 2,500 + 100,000,000/1,990 = 52,751.26 → 52,752; × 4
		{Package: "mid", Payg: "payg", Minutes: 52_752, UnitMinutes: 211_008},
		// pricey: 8,000 µ a minute beyond nothing, dearer than 3,990: never
		{Package: "pricey", Payg: "payg", Never: true},
	}
	if !reflect.DeepEqual(a.BreakEven, want) {
		t.Errorf("break-even (video-hd)\n got %+v\nwant %+v", a.BreakEven, want)
	}
	// Audio only: mid costs 100,000,000 + 500(M − 10,000) against
	// 990(M − 10,000): M = 10,000 + 100,000,000/490 = 214,081.63 → 214,082.
	a = Advise(AdviceInput{Current: tPayg, Period: nov, Days: flatDays(30, 5, Audio, 1_000)}, []Plan{tPayg, mid})
	if want := []BreakEven{{Package: "mid", Payg: "payg", Minutes: 214_082, UnitMinutes: 214_082}}; !reflect.DeepEqual(a.BreakEven, want) {
		t.Errorf("break-even (audio)\n got %+v\nwant %+v", a.BreakEven, want)
	}
	// No usage at all: an audio mix is assumed.
	a = Advise(AdviceInput{Current: tPayg, Period: nov, Days: flatDays(30, 0, Audio, 0)}, []Plan{tPayg, tStarter})
	if len(a.BreakEven) != 1 || a.BreakEven[0].Minutes != 211_011 {
		t.Errorf("break-even without usage: %+v", a.BreakEven)
	}
}

func TestAdviseProjectsAGrowingTrend(t *testing.T) {
	// 10 complete days of November (AsOf Nov 11 00:00): day i (from 0) has
	// peak 30 + 5i and 1,000 + 100i audio minutes.
	days := make([]DayUsage, 10)
	for i := range days {
		days[i].Peak = 30 + 5*uint64(i)
		days[i].Minutes[0] = 1_000 + 100*uint64(i)
	}
	a := Advise(AdviceInput{Current: tStarter, Period: nov, AsOf: utc(2026, 11, 11, 0, 0, 0), Days: days}, tCatalogue)
	// So far: Σ(1,000 + 100i), i < 10 = 10,000 + 4,500 = 14,500.
	// The exact line continues to day 29: Σ(1,000 + 100d), 10 ≤ d < 30
	// = 20,000 + 100 × (435 − 45) = 59,000; projected 73,500.
	// Peak: 30 + 5 × 29 = 175 on the last day; need ⌈175 × 1.2⌉ = 210.
	if a.ElapsedDays != 10 || a.Peak != 75 || a.ProjectedPeak != 175 || a.Minutes[0] != 14_500 || a.ProjectedMinutes[0] != 73_500 || a.ProjectedUnitMinutes != 73_500 {
		t.Errorf("elapsed %v peak %d→%d minutes %d→%d", a.ElapsedDays, a.Peak, a.ProjectedPeak, a.Minutes[0], a.ProjectedMinutes[0])
	}
	checkOptions(t, a, []wantOption{
		{"growth", 210, true, 7.5, 1_499_000_000, 1_499_000_000},
		{"payg", 210, true, 7.5, 4_455_000, 62_865_000}, // (14,500 − 10,000) × 990; (73,500 − 10,000) × 990
		{"scale", 210, true, 0.75, 9_999_000_000, 9_999_000_000},
		{"starter", 210, false, 75, 199_000_000, 199_000_000}, // the measured 75 would fit (90); the trend does not
	})
	if a.Recommended != "payg" || a.Move != MoveDowngrade || a.Effective != Now {
		t.Errorf("%s %s %s", a.Recommended, a.Move, a.Effective)
	}
	checkReasons(t, a, []string{
		"peak 75 (projected 175) needs a ceiling of 210 with 20% headroom: starter's ceiling is 100",
		"usage growing: 14,500 unit-minutes in 10 days observed, 73,500 projected for 2026-11 (trend over 10 days)", // flat would be 43,500
		"starter is projected to cost 136.14 more than payg for 2026-11",                                            // 199 − 62.865 = 136.135
		"move to payg now (downgrade)",
		"starter is cheaper than payg above 211,011 minutes a month of this class mix (73,500 projected)",
	})

	// Half-way through day 11 (AsOf Nov 11 12:00) with 900 minutes so far
	// that day: the fit still uses the 10 complete days; the rest of day 11
	// counts half: 0.5 × 2,000 + Σ(1,000 + 100d), 11 ≤ d < 30
	// = 1,000 + 19,000 + 100 × (435 − 55) = 58,000; + 14,500 + 900 = 73,400.
	partial := append(append([]DayUsage{}, days...), DayUsage{Peak: 20, Minutes: [NumClasses]uint64{900}})
	a = Advise(AdviceInput{Current: tStarter, Period: nov, AsOf: utc(2026, 11, 11, 12, 0, 0), Days: partial}, tCatalogue)
	if a.ElapsedDays != 10.5 || a.Minutes[0] != 15_400 || a.ProjectedMinutes[0] != 73_400 || a.ProjectedPeak != 175 {
		t.Errorf("partial day: elapsed %v minutes %d→%d peak %d", a.ElapsedDays, a.Minutes[0], a.ProjectedMinutes[0], a.ProjectedPeak)
	}

	// A shrinking trend never projects below zero: 1,000 − 100i reaches 0
	// on day 10, so nothing more is projected; peaks 50 − 5i keep 50.
	for i := range days {
		days[i].Peak = 50 - 5*uint64(i)
		days[i].Minutes[0] = 1_000 - 100*uint64(i)
	}
	a = Advise(AdviceInput{Current: tStarter, Period: nov, AsOf: utc(2026, 11, 11, 0, 0, 0), Days: days}, tCatalogue)
	if a.Minutes[0] != 5_500 || a.ProjectedMinutes[0] != 5_500 || a.ProjectedPeak != 50 {
		t.Errorf("shrinking: minutes %d→%d peak %d", a.Minutes[0], a.ProjectedMinutes[0], a.ProjectedPeak)
	}
	if !strings.HasPrefix(a.Reasons[1], "usage shrinking: 5,500 unit-minutes in 10 days observed, 5,500 projected") {
		t.Errorf("reason %q", a.Reasons[1])
	}
}

func TestAdviseCases(t *testing.T) {
	global := Plan{Name: "g", Billing: Package, FeeMonthly: 10, Ceiling: 100, Mode: Strict}
	regional := Plan{Name: "r", Billing: Package, FeeMonthly: 5, Ceiling: 100, Mode: Strict, PeakBasis: PeakRegional}
	meter := Plan{Name: "meter", Billing: PayAsYouGo, Mode: Meter}

	t.Run("regional peak basis", func(t *testing.T) {
		days := flatDays(30, 80, Audio, 0)
		for i := range days {
			days[i].RegionalPeak = 90
		}
		a := Advise(AdviceInput{Current: global, Period: nov, Days: days}, []Plan{global, regional})
		// g: ⌈80 × 1.2⌉ = 96 fits; r: ⌈90 × 1.2⌉ = 108 does not.
		checkOptions(t, a, []wantOption{{"g", 96, true, 80, 10, 10}, {"r", 108, false, 90, 5, 5}})
		if a.Recommended != "g" || a.Move != MoveStay || a.RegionalPeak != 90 || a.Effective != "" {
			t.Errorf("%+v", a)
		}
		checkReasons(t, a, []string{"peak 80 used 80% of g's ceiling of 100", "g is the cheapest plan that fits"})
	})
	t.Run("a meter plan always fits", func(t *testing.T) {
		a := Advise(AdviceInput{Current: tStarter, Period: nov, Days: flatDays(30, 5_000, Audio, 0)}, []Plan{tStarter, tGrowth, meter})
		if !a.Options[2].Fits || a.Options[0].Fits || a.Options[1].Fits || a.Recommended != "meter" || a.Effective != Now {
			t.Errorf("%+v", a)
		}
	})
	t.Run("nothing fits: the most capacity", func(t *testing.T) {
		a := Advise(AdviceInput{Current: tStarter, Period: nov, Days: flatDays(30, 5_000, Audio, 0)}, []Plan{tStarter, tGrowth})
		if a.Recommended != "growth" || a.Move != MoveUpgrade {
			t.Errorf("%s %s", a.Recommended, a.Move)
		}
		checkReasons(t, a, []string{
			"peak 5,000 needs a ceiling of 6,000 with 20% headroom: starter's ceiling is 100",
			"no plan fits the peak with 20% headroom: growth admits the most (1,000)",
			"move to growth now (upgrade)",
		})
	})
	t.Run("headroom", func(t *testing.T) {
		// 50%: ⌈80 × 1.5⌉ = 120 > 100.
		a := Advise(AdviceInput{Current: tStarter, Period: nov, HeadroomPct: 50, Days: flatDays(30, 80, Audio, 0)}, tCatalogue)
		if a.Options[3].Need != 120 || a.Options[3].Fits || a.HeadroomPct != 50 {
			t.Errorf("%+v", a.Options[3])
		}
	})
	t.Run("burst does not count as ceiling", func(t *testing.T) {
		// scale admits 12,000 with its 20% burst, but fit is judged on the
		// ceiling: ⌈9,000 × 1.2⌉ = 10,800 > 10,000.
		a := Advise(AdviceInput{Current: tScale, Period: nov, Days: flatDays(30, 9_000, Audio, 0)}, []Plan{tScale})
		if o := a.Options[0]; o.Need != 10_800 || o.Fits || o.UtilizationPct != 90 {
			t.Errorf("%+v", o)
		}
	})
	t.Run("current plan outside the catalogue", func(t *testing.T) {
		legacy := Plan{Name: "legacy", Billing: Package, FeeMonthly: 50_000_000, Ceiling: 50, Mode: Strict}
		a := Advise(AdviceInput{Current: legacy, Period: nov, Days: flatDays(30, 10, Audio, 100)}, tCatalogue)
		if len(a.Options) != 5 || a.Options[4].Plan != "legacy" || !a.Options[4].Current || a.Options[4].Cost != 50_000_000 {
			t.Errorf("%+v", a.Options)
		}
		if a.Recommended != "payg" { // 3,000 minutes within payg's 10,000 free
			t.Errorf("recommended %s", a.Recommended)
		}
	})
	t.Run("invalid period", func(t *testing.T) {
		a := Advise(AdviceInput{Current: tStarter}, tCatalogue)
		if a.Move != MoveStay || len(a.Reasons) != 1 || !strings.HasPrefix(a.Reasons[0], "period: ") {
			t.Errorf("%+v", a)
		}
	})
}

// The cost Advise gives for a whole period equals Bill's total for the same
// usage sliced by day (a cross-check of the two paths, not a hand figure).
func TestAdviseCostMatchesBill(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	scales := []int{3, 30, 300, 3_000, 30_000}
	for trial := 0; trial < 200; trial++ {
		days := make([]DayUsage, 30)
		var usage []UsageSlice
		scale := scales[trial%len(scales)]
		for d := range days {
			for c := range days[d].Minutes {
				if r.IntN(3) == 0 {
					continue
				}
				m := uint64(r.IntN(scale))
				days[d].Minutes[c] = m
				usage = append(usage, UsageSlice{At: nov.Start().Add(time.Duration(d) * day), Class: Class(c + 1), Micros: mins(m), Minutes: m})
			}
		}
		a := Advise(AdviceInput{Current: tPayg, Period: nov, Days: days}, tCatalogue)
		for i, p := range tCatalogue {
			inv, err := Bill(nov, whole(p, nov), usage)
			if err != nil {
				t.Fatal(err)
			}
			if inv.Total != a.Options[i].Cost {
				t.Fatalf("trial %d %s: Bill %d, Advise %d", trial, p.Name, inv.Total, a.Options[i].Cost)
			}
		}
	}
}

// BenchmarkAdvise100k judges 100,000 synthetic tenants (30 days each,
// mixed classes, some growing) against the default catalogue; one op is
// all 100,000.
func BenchmarkAdvise100k(b *testing.B) {
	const tenants = 100_000
	r := rand.New(rand.NewPCG(7, 9))
	cat := Defaults()
	ins := make([]AdviceInput, tenants)
	for i := range ins {
		days := make([]DayUsage, 30)
		base := uint64(r.IntN(2_000) + 1)
		growth := uint64(r.IntN(40))
		for d := range days {
			days[d].Peak = base/10 + growth*uint64(d)/4 + uint64(r.IntN(10))
			if r.IntN(10) == 0 {
				days[d].Refused = uint64(r.IntN(50))
			}
			for c := range days[d].Minutes {
				if r.IntN(3) == 0 {
					days[d].Minutes[c] = (base + growth*uint64(d)) * uint64(r.IntN(200))
				}
			}
		}
		asOf := time.Time{}
		if i%2 == 1 { // half the tenants are mid-period
			asOf = nov.Start().Add(time.Duration(r.IntN(29*24)+24) * time.Hour)
			days = days[:int(asOf.Sub(nov.Start())/day)+1]
		}
		ins[i] = AdviceInput{Current: cat[i%len(cat)], Period: nov, AsOf: asOf, Days: days}
		if i%3 == 0 { // a third with the previous period, observed since it began, and active users
			prev := &PeriodUsage{Period: nov.Prev(), Peak: base/8 + uint64(r.IntN(50)), MAU: base * 20}
			for c := range prev.Minutes {
				prev.Minutes[c] = base * uint64(r.IntN(5_000))
			}
			ins[i].Previous, ins[i].ObservedFrom = prev, nov.Prev().Start()
			ins[i].MAU, ins[i].PeakDAU = base*25, base*4
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for i := range ins {
			a := Advise(ins[i], cat)
			if a.Recommended == "" {
				b.Fatal("no recommendation")
			}
		}
	}
}

// TestAdviseKnowsHowMuchItKnows: the observation window starts when the
// tenant was first on a plan or had usage, days before it are absent, less
// than a day observed projects nothing and moves nothing, the trend rests
// on the observed days (said in the reasons), and the previous period's
// peak and usage are used and named.
func TestAdviseKnowsHowMuchItKnows(t *testing.T) {
	noPayg := []Plan{tGrowth, tScale, tStarter}
	growingPeaks := []uint64{40, 42, 44, 46, 49, 51, 54, 56, 59, 62} // about 5 % a day
	growing := make([]DayUsage, len(growingPeaks))
	for i, p := range growingPeaks {
		growing[i].Peak = p
		growing[i].Minutes[0] = 100 * p
	}
	atCeiling := flatDays(15, 100, Audio, 6_000)
	for i := range atCeiling {
		atCeiling[i].Refused = 20
	}
	day20 := append(make([]DayUsage, 19), flatDays(5, 40, Audio, 3_000)...)
	oneMinute := make([]DayUsage, 25)
	oneMinute[24] = DayUsage{Peak: 2, Minutes: [NumClasses]uint64{1}}
	cases := []struct {
		name        string
		in          AdviceInput
		catalogue   []Plan
		recommended string
		move        Move
		effective   Effective
		observed    float64
		trendDays   int
		projectedUM uint64
		reasons     []string
	}{{
		// Days 1-19 are before the tenant existed: absent, not zero. 5
		// days of 3,000 minutes held for the 6 days left: 15,000 + 18,000.
		name: "a tenant starting on day 20",
		in: AdviceInput{Current: tStarter, Period: nov, ObservedFrom: utc(2026, 11, 20, 0, 0, 0),
			AsOf: utc(2026, 11, 25, 0, 0, 0), Days: day20},
		catalogue: tCatalogue, recommended: "payg", move: MoveDowngrade, effective: PeriodEnd,
		observed: 5, trendDays: 5, projectedUM: 33_000,
		reasons: []string{
			"peak 40 used 40% of starter's ceiling of 100",
			"usage steady: 15,000 unit-minutes in 5 days observed, 33,000 projected for 2026-11 (trend over 5 days)",
			"starter is projected to cost 176.23 more than payg for 2026-11", // 199 − (33,000 − 10,000) × 0.00099
			"move to payg at the end of 2026-11 (downgrade)",
			"starter is cheaper than payg above 211,011 minutes a month of this class mix (33,000 projected)",
		},
	}, {
		name: "one minute of data",
		in: AdviceInput{Current: tStarter, Period: nov, ObservedFrom: utc(2026, 11, 25, 12, 0, 0),
			AsOf: utc(2026, 11, 25, 12, 1, 0), Days: oneMinute},
		catalogue: tCatalogue, recommended: "starter", move: MoveStay,
		observed: 0.001, trendDays: 0, projectedUM: 1,
		reasons: []string{
			"too little data: 0.0 h observed, 24 h are needed to project usage or advise a move; plans are judged on the measured peak only",
			"peak 2 used 2% of starter's ceiling of 100",
			"starter stays until a day is observed",
		},
	}, {
		name:      "a flat month",
		in:        AdviceInput{Current: tStarter, Period: nov, AsOf: utc(2026, 11, 16, 0, 0, 0), Days: flatDays(15, 70, Audio, 9_000)},
		catalogue: tCatalogue, recommended: "starter", move: MoveStay,
		observed: 15, trendDays: 15, projectedUM: 270_000,
		reasons: []string{
			"peak 70 used 70% of starter's ceiling of 100",
			"usage steady: 135,000 unit-minutes in 15 days observed, 270,000 projected for 2026-11 (trend over 15 days)",
			"starter is the cheapest plan that fits",
			"starter is cheaper than payg above 211,011 minutes a month of this class mix (270,000 projected)",
		},
	}, {
		// Least squares over the 10 days: peak 39.31 + 2.442·d, 111 on day
		// 29 (need ⌈111 × 1.2⌉ = 134); minutes 3,930.9 + 244.24·d, 173,873
		// more over days 10-29 beside the 50,300 so far.
		name:      "growing 5 % a day",
		in:        AdviceInput{Current: tStarter, Period: nov, AsOf: utc(2026, 11, 11, 0, 0, 0), Days: growing},
		catalogue: noPayg, recommended: "growth", move: MoveUpgrade, effective: Now,
		observed: 10, trendDays: 10, projectedUM: 224_173,
		reasons: []string{
			"peak 62 (projected 111) needs a ceiling of 134 with 20% headroom: starter's ceiling is 100",
			"usage growing: 50,300 unit-minutes in 10 days observed, 224,173 projected for 2026-11 (trend over 10 days)",
			"growth costs 1,300.00 more than starter but fits the peak with 20% headroom",
			"move to growth now (upgrade)",
		},
	}, {
		name:      "at its ceiling, refused",
		in:        AdviceInput{Current: tStarter, Period: nov, AsOf: utc(2026, 11, 16, 0, 0, 0), Days: atCeiling},
		catalogue: tCatalogue, recommended: "payg", move: MoveDowngrade, effective: Now,
		observed: 15, trendDays: 15, projectedUM: 180_000,
		reasons: []string{
			"peak 100 needs a ceiling of 120 with 20% headroom: starter's ceiling is 100",
			"refused 300 sessions on 15 days",
			"usage steady: 90,000 unit-minutes in 15 days observed, 180,000 projected for 2026-11 (trend over 15 days)",
			"starter is projected to cost 30.70 more than payg for 2026-11", // 199 − 170,000 × 0.00099
			"move to payg now (downgrade)",
			"starter is cheaper than payg above 211,011 minutes a month of this class mix (180,000 projected)",
		},
	}, {
		// Alone, November's peak of 60 (need 72) would fit starter, the
		// cheaper plan; October's 300 counts toward the projected peak.
		name: "the previous period's peak",
		in: AdviceInput{Current: tGrowth, Period: nov, AsOf: utc(2026, 11, 11, 0, 0, 0), Days: flatDays(10, 60, Audio, 10_000),
			Previous: &PeriodUsage{Period: Period{2026, time.October}, Peak: 300, Minutes: [NumClasses]uint64{900_000}}},
		catalogue: noPayg, recommended: "growth", move: MoveStay,
		observed: 10, trendDays: 10, projectedUM: 300_000,
		reasons: []string{
			"peak 60 used 6% of growth's ceiling of 1,000",
			"usage steady: 100,000 unit-minutes in 10 days observed, 300,000 projected for 2026-11 (trend over 10 days)",
			"last period 2026-10: peak 300, 900,000 unit-minutes; this period projected 300,000 (-66.7% month over month); its peak counts toward the projected peak",
			"growth is the cheapest plan that fits",
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := Advise(c.in, c.catalogue)
			if a.Recommended != c.recommended || a.Move != c.move || a.Effective != c.effective {
				t.Errorf("recommended %s, %s, %q; want %s, %s, %q", a.Recommended, a.Move, a.Effective, c.recommended, c.move, c.effective)
			}
			if a.ObservedDays != c.observed || a.TrendDays != c.trendDays || a.ProjectedUnitMinutes != c.projectedUM {
				t.Errorf("observed %v days, trend over %d, %d unit-minutes projected; want %v, %d, %d",
					a.ObservedDays, a.TrendDays, a.ProjectedUnitMinutes, c.observed, c.trendDays, c.projectedUM)
			}
			if a.TooLittleData != (c.observed < 1) {
				t.Errorf("too little data: %v", a.TooLittleData)
			}
			checkReasons(t, a, c.reasons)
		})
	}
	// Without its previous period the last tenant would move to starter.
	prev := cases[len(cases)-1]
	prev.in.Previous = nil
	if a := Advise(prev.in, prev.catalogue); a.Recommended != "starter" || a.GrowthPct != nil {
		t.Errorf("without the previous period: %s, growth %v; want starter", a.Recommended, a.GrowthPct)
	}
}

// TestAdviseActiveUsers: the funnel from monthly to daily active users to
// those in a session at once, and a plan priced by active users compared
// with the plans priced by concurrency and minutes, on the same figures.
func TestAdviseActiveUsers(t *testing.T) {
	chat := Plan{Name: "chat-pro", Billing: Package, FeeMonthly: 299_000_000, Ceiling: 2_000, Mode: Strict,
		IncludedMAU: 10_000, OveragePerMAU: 20_000}
	cat := []Plan{chat, tGrowth, tStarter}
	in := AdviceInput{Current: tGrowth, Period: nov, Days: flatDays(30, 50, Audio, 20_000), MAU: 5_000, PeakDAU: 800}
	a := Advise(in, cat)
	checkOptions(t, a, []wantOption{
		{"chat-pro", 60, true, 2.5, 299_000_000, 299_000_000}, // 5,000 users within the 10,000 included
		{"growth", 60, true, 5, 1_499_000_000, 1_499_000_000},
		{"starter", 60, true, 50, 466_000_000, 466_000_000}, // 199 + 300,000 × 0.89 / 1,000
	})
	if a.Recommended != "chat-pro" || a.Move != MoveDowngrade || a.PeakPerDAU != 0.0625 || a.PeakPerMAU != 0.01 {
		t.Errorf("%s %s, %v per DAU, %v per MAU", a.Recommended, a.Move, a.PeakPerDAU, a.PeakPerMAU)
	}
	checkReasons(t, a, []string{
		"peak 50 used 5% of growth's ceiling of 1,000",
		"active users: MAU 5,000, peak DAU 800, peak 50 at once (0.0625 per daily, 0.01 per monthly active user)",
		"peak used 5% of the ceiling: growth costs 1,200.00 more than chat-pro would have",
		"move to chat-pro at the end of 2026-11 (downgrade)",
	})
	// With 30,000 active users the plan priced by them costs 299 + 20,000
	// × 0.02 = 699: starter is cheaper.
	in.MAU = 30_000
	if a := Advise(in, cat); a.Recommended != "starter" || a.Options[0].Cost != 699_000_000 {
		t.Errorf("with 30,000 MAU: %s, chat-pro costs %d", a.Recommended, a.Options[0].Cost)
	}
}
