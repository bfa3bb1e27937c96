package plans

import (
	"math"
	"strings"
	"testing"
	"time"
)

// Plans of the tests, written out here (not taken from Defaults) so that the
// expected figures below follow from what is on this page.
var (
	tPayg    = Plan{Name: "payg", Billing: PayAsYouGo, Ceiling: 1_000, Mode: Soft, IncludedUnitMinutes: 10_000, OveragePer1000: 990_000}
	tStarter = Plan{Name: "starter", Billing: Package, FeeMonthly: 199_000_000, Ceiling: 100, Mode: Strict, IncludedUnitMinutes: 300_000, OveragePer1000: 890_000}
	tGrowth  = Plan{Name: "growth", Billing: Package, FeeMonthly: 1_499_000_000, Ceiling: 1_000, Mode: Strict, IncludedUnitMinutes: 3_000_000, OveragePer1000: 790_000}
)

func utc(y int, m time.Month, d, h, min, s int) time.Time {
	return time.Date(y, m, d, h, min, s, 0, time.UTC)
}

// mins is n minutes in microseconds.
func mins(n uint64) uint64 { return n * 60_000_000 }

func slice(at time.Time, c Class, minutes uint64) UsageSlice {
	return UsageSlice{At: at, Class: c, Micros: mins(minutes), Minutes: minutes}
}

type wantLine struct {
	kind   LineKind
	plan   string
	class  string
	qty    uint64
	amount Micro
}

var (
	nov   = Period{2026, time.November} // 30 days, 2,592,000 s
	dec   = Period{2026, time.December} // 31 days, 2,678,400 s
	feb27 = Period{2027, time.February} // 28 days, 2,419,200 s
	feb28 = Period{2028, time.February} // 29 days, 2,505,600 s
)

func whole(p Plan, per Period) []Holding {
	return []Holding{{Plan: p, From: per.Start(), To: per.End()}}
}

func TestBill(t *testing.T) {
	odd := Plan{Name: "odd", Billing: Package, Ceiling: 10, Mode: Strict, OveragePer1000: 1_234_567}
	half := Plan{Name: "half", Billing: PayAsYouGo, Mode: Meter, Rates: []ClassRate{
		{"audio", 2_500}, {"video-hd", 2_500}, {"video-fhd", 2_500}, {"video-2k", 2_500}, {"video-2k+", 2_500}, {"ai", 2_500}}}
	tiny := Plan{Name: "tiny", Billing: Package, FeeMonthly: 5, Ceiling: 10, Mode: Strict}
	perMin := Plan{Name: "permin", Billing: Package, Ceiling: 10, Mode: Strict, OveragePer1000: 1_000_000} // 1,000 µ per unit-minute
	perSession := perMin
	perSession.Name, perSession.Rounding = "persession", RoundSession

	cases := []struct {
		name   string
		period Period
		held   []Holding
		usage  []UsageSlice
		lines  []wantLine
		total  Micro
	}{
		{
			name:   "payg bills each class at its list rate after the free allowance",
			period: nov, held: whole(tPayg, nov),
			usage: []UsageSlice{
				slice(utc(2026, 11, 1, 10, 0, 0), Audio, 6_000),    // free: 6,000 um, 4,000 left
				slice(utc(2026, 11, 2, 10, 0, 0), VideoHD, 2_000),  // ⌊4,000/4⌋ = 1,000 free, 1,000 billed, 0 left
				slice(utc(2026, 11, 3, 10, 0, 0), VideoFHD, 1_000), // all billed
				slice(utc(2026, 11, 4, 10, 0, 0), Audio, 500),      // all billed
			},
			lines: []wantLine{
				{LineIncluded, "payg", "", 10_000, 0},
				{LineUsage, "payg", "audio", 500, 495_000},         // 500 × 990,000 / 1,000
				{LineUsage, "payg", "video-hd", 1_000, 3_990_000},  // 1,000 × 3,990,000 / 1,000
				{LineUsage, "payg", "video-fhd", 1_000, 8_990_000}, // 1,000 × 8,990,000 / 1,000
			},
			total: 13_475_000, // 495,000 + 3,990,000 + 8,990,000
		},
		{
			name:   "payg free allowance covers whole minutes; the rest stays for lighter ones",
			period: nov, held: whole(tPayg, nov),
			usage: []UsageSlice{
				slice(utc(2026, 11, 1, 0, 0, 0), Audio, 9_998), // 2 um left
				slice(utc(2026, 11, 2, 0, 0, 0), VideoHD, 1),   // needs 4 um: billed, 2 left
				slice(utc(2026, 11, 3, 0, 0, 0), Audio, 5),     // 2 free, 3 billed
				slice(utc(2026, 11, 4, 0, 0, 0), AI, 1),        // billed at the ai rate 3.99
			},
			lines: []wantLine{
				{LineIncluded, "payg", "", 10_000, 0},
				{LineUsage, "payg", "audio", 3, 2_970},    // 3 × 990
				{LineUsage, "payg", "video-hd", 1, 3_990}, // 1 × 3,990
				{LineUsage, "payg", "ai", 1, 3_990},       // 1 × 3,990
			},
			total: 10_950,
		},
		{
			name:   "package within its allowance",
			period: nov, held: whole(tStarter, nov),
			usage: []UsageSlice{
				slice(utc(2026, 11, 3, 0, 0, 0), Audio, 100_000),  // 100,000 um
				slice(utc(2026, 11, 9, 0, 0, 0), VideoHD, 20_000), // 80,000 um; 180,000 ≤ 300,000
			},
			lines: []wantLine{
				{LineFee, "starter", "", 2_592_000, 199_000_000},
				{LineIncluded, "starter", "", 300_000, 0},
			},
			total: 199_000_000,
		},
		{
			name:   "package overage: allowance consumed in time order across weights",
			period: nov, held: whole(tStarter, nov),
			usage: []UsageSlice{
				slice(utc(2026, 11, 1, 0, 0, 0), VideoFHD, 20_000), // 180,000 um; 120,000 left
				slice(utc(2026, 11, 2, 0, 0, 0), Audio, 100_000),   // 100,000 um; 20,000 left
				slice(utc(2026, 11, 3, 0, 0, 0), Video2K, 5_000),   // 80,000 um: 20,000 covered, 60,000 over
				slice(utc(2026, 11, 4, 0, 0, 0), Audio, 10_000),    // 10,000 over
			},
			lines: []wantLine{
				{LineFee, "starter", "", 2_592_000, 199_000_000},
				{LineIncluded, "starter", "", 300_000, 0},
				{LineOverage, "starter", "audio", 10_000, 8_900_000},     // 10,000 × 890,000 / 1,000
				{LineOverage, "starter", "video-2k", 60_000, 53_400_000}, // 60,000 × 890
			},
			total: 261_300_000, // 199,000,000 + 8,900,000 + 53,400,000
		},
		{
			name:   "package overage: the same usage in another order charges other classes",
			period: nov, held: whole(tStarter, nov),
			usage: []UsageSlice{
				slice(utc(2026, 11, 1, 0, 0, 0), Audio, 10_000),    // 290,000 left
				slice(utc(2026, 11, 2, 0, 0, 0), VideoFHD, 20_000), // 110,000 left
				slice(utc(2026, 11, 3, 0, 0, 0), Audio, 100_000),   // 10,000 left
				slice(utc(2026, 11, 4, 0, 0, 0), Video2K, 5_000),   // 80,000 um: 10,000 covered, 70,000 over
			},
			lines: []wantLine{
				{LineFee, "starter", "", 2_592_000, 199_000_000},
				{LineIncluded, "starter", "", 300_000, 0},
				{LineOverage, "starter", "video-2k", 70_000, 62_300_000}, // 70,000 × 890
			},
			total: 261_300_000,
		},
		{
			name:   "each line is rounded once, not each slice",
			period: nov, held: whole(odd, nov),
			usage: []UsageSlice{
				slice(utc(2026, 11, 1, 0, 0, 0), Audio, 1),
				slice(utc(2026, 11, 2, 0, 0, 0), Audio, 1),
				slice(utc(2026, 11, 3, 0, 0, 0), Audio, 1),
			},
			// 3 × 1,234,567 / 1,000 = 3,703.701 → 3,704; per slice
			// 1,234.567 → 1,235, × 3 = 3,705.
			lines: []wantLine{{LineOverage, "odd", "audio", 3, 3_704}},
			total: 3_704,
		},
		{
			name:   "half up, not to even",
			period: nov, held: whole(half, nov),
			usage: []UsageSlice{
				slice(utc(2026, 11, 1, 0, 0, 0), Audio, 1),   // 1 × 2,500 / 1,000 = 2.5 → 3 (to even: 2)
				slice(utc(2026, 11, 1, 0, 0, 0), VideoHD, 3), // 3 × 2,500 / 1,000 = 7.5 → 8
			},
			lines: []wantLine{
				{LineUsage, "half", "audio", 1, 3},
				{LineUsage, "half", "video-hd", 3, 8},
			},
			total: 11,
		},
		{
			name:   "prorated fee half up",
			period: nov, held: []Holding{{Plan: tiny, From: utc(2026, 11, 16, 0, 0, 0), To: nov.End()}},
			// 5 × 1,296,000 / 2,592,000 = 2.5 → 3
			lines: []wantLine{{LineProration, "tiny", "", 1_296_000, 3}},
			total: 3,
		},
		{
			name:   "upgrade then downgrade mid-period",
			period: nov,
			held: []Holding{
				// 9.5 days = 820,800 s = 19/60 of the period
				{Plan: tStarter, From: nov.Start(), To: utc(2026, 11, 10, 12, 0, 0)},
				// 9.75 days = 842,400 s = 13/40
				{Plan: tGrowth, From: utc(2026, 11, 10, 12, 0, 0), To: utc(2026, 11, 20, 6, 0, 0)},
				// 10.75 days = 928,800 s = 43/120
				{Plan: tStarter, From: utc(2026, 11, 20, 6, 0, 0), To: nov.End()},
			},
			usage: []UsageSlice{
				slice(utc(2026, 11, 5, 0, 0, 0), Audio, 100_000),    // starter: 95,000 included, 5,000 over
				slice(utc(2026, 11, 15, 0, 0, 0), VideoHD, 250_000), // growth: 1,000,000 um, 975,000 included, 25,000 over
				slice(utc(2026, 11, 20, 5, 59, 59), Audio, 1_000),   // still growth: 1,000 over
				slice(utc(2026, 11, 20, 6, 0, 0), Audio, 107_501),   // starter again: 107,500 included, 1 over
			},
			lines: []wantLine{
				{LineProration, "starter", "", 820_800, 63_016_667}, // 199,000,000 × 19/60 = 63,016,666.67
				{LineIncluded, "starter", "", 95_000, 0},            // 300,000 × 19/60
				{LineOverage, "starter", "audio", 5_000, 4_450_000}, // 5,000 × 890
				{LineProration, "growth", "", 842_400, 487_175_000}, // 1,499,000,000 × 13/40
				{LineIncluded, "growth", "", 975_000, 0},            // 3,000,000 × 13/40
				{LineOverage, "growth", "audio", 1_000, 790_000},    // 1,000 × 790
				{LineOverage, "growth", "video-hd", 25_000, 19_750_000},
				{LineProration, "starter", "", 928_800, 71_308_333}, // 199,000,000 × 43/120 = 71,308,333.33
				{LineIncluded, "starter", "", 107_500, 0},           // 300,000 × 43/120
				{LineOverage, "starter", "audio", 1, 890},
			},
			// 63,016,667 + 4,450,000 + 487,175,000 + 790,000 + 19,750,000 + 71,308,333 + 890
			total: 646_490_890,
		},
		{
			name:   "leap February: payg then starter",
			period: feb28,
			held: []Holding{
				{Plan: tPayg, From: feb28.Start(), To: utc(2028, 2, 15, 0, 0, 0)},  // 14 days = 1,209,600 s
				{Plan: tStarter, From: utc(2028, 2, 15, 0, 0, 0), To: feb28.End()}, // 15 days = 1,296,000 s
			},
			usage: []UsageSlice{slice(utc(2028, 2, 3, 0, 0, 0), Audio, 5_000)},
			lines: []wantLine{
				{LineIncluded, "payg", "", 4_827, 0},                   // ⌊10,000 × 1,209,600 / 2,505,600⌋ = ⌊4,827.59⌋
				{LineUsage, "payg", "audio", 173, 171_270},             // 5,000 − 4,827 = 173, × 990
				{LineProration, "starter", "", 1_296_000, 102_931_034}, // 199,000,000 × 15/29 = 102,931,034.48
				{LineIncluded, "starter", "", 155_172, 0},              // ⌊300,000 × 15/29⌋ = ⌊155,172.41⌋
			},
			total: 103_102_304, // 171,270 + 102,931,034
		},
		{
			name:   "non-leap February",
			period: feb27,
			held:   []Holding{{Plan: tStarter, From: utc(2027, 2, 15, 0, 0, 0), To: feb27.End()}}, // 14 of 28 days
			lines: []wantLine{
				{LineProration, "starter", "", 1_209_600, 99_500_000}, // 199,000,000 / 2
				{LineIncluded, "starter", "", 150_000, 0},
			},
			total: 99_500_000,
		},
		{
			name:   "no usage: fees only (31-day month, held whole)",
			period: dec, held: whole(tGrowth, dec),
			lines: []wantLine{
				{LineFee, "growth", "", 2_678_400, 1_499_000_000},
				{LineIncluded, "growth", "", 3_000_000, 0},
			},
			total: 1_499_000_000,
		},
		{
			name:   "10 days of a 31-day month",
			period: dec, held: []Holding{{Plan: tStarter, From: utc(2026, 12, 22, 0, 0, 0), To: dec.End()}},
			lines: []wantLine{
				{LineProration, "starter", "", 864_000, 64_193_548}, // 199,000,000 × 10/31 = 64,193,548.39
				{LineIncluded, "starter", "", 96_774, 0},            // ⌊300,000 × 10/31⌋ = ⌊96,774.19⌋
			},
			total: 64_193_548,
		},
		{
			name:   "10 days of a 30-day month",
			period: nov, held: []Holding{{Plan: tStarter, From: utc(2026, 11, 21, 0, 0, 0), To: nov.End()}},
			lines: []wantLine{
				{LineProration, "starter", "", 864_000, 66_333_333}, // 199,000,000 / 3 = 66,333,333.33
				{LineIncluded, "starter", "", 100_000, 0},
			},
			total: 66_333_333,
		},
		{
			name:   "period rounding: each class's total rounded up once",
			period: nov, held: whole(perMin, nov),
			usage: []UsageSlice{
				{At: utc(2026, 11, 1, 0, 0, 0), Class: Audio, Micros: 30_000_000, Minutes: 1},   // running 30 s → minute 1 begins
				{At: utc(2026, 11, 2, 0, 0, 0), Class: Audio, Micros: 30_000_000, Minutes: 1},   // 60 s: still 1
				{At: utc(2026, 11, 3, 0, 0, 0), Class: Audio, Micros: 30_000_000, Minutes: 1},   // 90 s → 2
				{At: utc(2026, 11, 4, 0, 0, 0), Class: VideoHD, Micros: 10_000_000, Minutes: 1}, // 10 s → 1 minute × 4
			},
			lines: []wantLine{
				{LineOverage, "permin", "audio", 2, 2_000},    // ⌈90/60⌉ = 2 um × 1,000
				{LineOverage, "permin", "video-hd", 4, 4_000}, // ⌈10/60⌉ = 1 minute × 4 um × 1,000
			},
			total: 6_000,
		},
		{
			name:   "session rounding: the caller's rounded minutes",
			period: nov, held: whole(perSession, nov),
			usage: []UsageSlice{
				{At: utc(2026, 11, 1, 0, 0, 0), Class: Audio, Micros: 30_000_000, Minutes: 1},
				{At: utc(2026, 11, 2, 0, 0, 0), Class: Audio, Micros: 30_000_000, Minutes: 1},
				{At: utc(2026, 11, 3, 0, 0, 0), Class: Audio, Micros: 30_000_000, Minutes: 1},
				{At: utc(2026, 11, 4, 0, 0, 0), Class: VideoHD, Micros: 10_000_000, Minutes: 1},
			},
			lines: []wantLine{
				{LineOverage, "persession", "audio", 3, 3_000},    // 3 sessions of 30 s, 1 minute each
				{LineOverage, "persession", "video-hd", 4, 4_000}, // 1 minute × 4
			},
			total: 7_000,
		},
		{
			name:   "session rounding: a session still open at the end is billed by its exact time rounded once",
			period: nov, held: whole(perSession, nov),
			usage: []UsageSlice{
				{At: utc(2026, 11, 30, 0, 0, 0), Class: Audio, Micros: 90_000_000}, // 90 s, no session ended
			},
			lines: []wantLine{
				{LineOverage, "persession", "audio", 2, 2_000}, // ⌈90/60⌉ = 2
			},
			total: 2_000,
		},
		{
			name:   "session rounding: the greater of the ended sessions' minutes and the exact time, running",
			period: nov, held: whole(perSession, nov),
			usage: []UsageSlice{
				{At: utc(2026, 11, 1, 0, 0, 0), Class: Audio, Micros: 20_000_000, Minutes: 2},   // 2 sessions of 10 s ended: S 2, ⌈20 s⌉ 1 → 2
				{At: utc(2026, 11, 2, 0, 0, 0), Class: VideoHD, Micros: 30_000_000, Minutes: 3}, // a 150 s session, 120 s of it in an earlier holding: billed whole, 3
				{At: utc(2026, 11, 3, 0, 0, 0), Class: Audio, Micros: 100_000_000},              // one open for 100 s: S 2, ⌈120 s⌉ 2 → 2, no more
				{At: utc(2026, 11, 4, 0, 0, 0), Class: Audio, Micros: 230_000_000},              // still open, 330 s: S 2, ⌈350 s⌉ 6 → 6, 4 more
				{At: utc(2026, 11, 5, 0, 0, 0), Class: Audio, Micros: 5_000_000, Minutes: 6},    // it ended after 335 s, 6 minutes: S 8, ⌈355 s⌉ 6 → 8, 2 more
			},
			lines: []wantLine{
				{LineOverage, "persession", "audio", 8, 8_000},      // 1 + 1 + 6: each session rounded up
				{LineOverage, "persession", "video-hd", 12, 12_000}, // 3 minutes × 4
			},
			total: 20_000,
		},
		{
			name:   "session rounding restarts with each holding",
			period: nov, held: []Holding{{Plan: perSession, From: nov.Start(), To: utc(2026, 11, 16, 0, 0, 0)}, {Plan: perSession, From: utc(2026, 11, 16, 0, 0, 0), To: nov.End()}},
			usage: []UsageSlice{
				{At: utc(2026, 11, 15, 0, 0, 0), Class: Audio, Micros: 30_000_000},             // open at the change: ⌈30 s⌉ = 1 in the first holding
				{At: utc(2026, 11, 16, 0, 0, 0), Class: Audio, Micros: 20_000_000, Minutes: 1}, // it ended after 50 s: 1 in the second
			},
			lines: []wantLine{
				{LineOverage, "persession", "audio", 1, 1_000},
				{LineOverage, "persession", "audio", 1, 1_000},
			},
			total: 2_000,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := Bill(tc.period, tc.held, tc.usage)
			if err != nil {
				t.Fatal(err)
			}
			if inv.Period != tc.period.String() {
				t.Errorf("period %q", inv.Period)
			}
			got := make([]wantLine, len(inv.Lines))
			for i, l := range inv.Lines {
				got[i] = wantLine{l.Kind, l.Plan, l.Class, l.Quantity, l.Amount}
			}
			if len(got) != len(tc.lines) {
				t.Fatalf("lines\n got %+v\nwant %+v", got, tc.lines)
			}
			for i := range got {
				if got[i] != tc.lines[i] {
					t.Errorf("line %d: got %+v, want %+v (%s)", i, got[i], tc.lines[i], inv.Lines[i].Detail)
				}
			}
			if inv.Total != tc.total {
				t.Errorf("total %d, want %d", inv.Total, tc.total)
			}
		})
	}
}

func TestBillLineDetails(t *testing.T) {
	inv, err := Bill(nov, []Holding{
		{Plan: tStarter, From: nov.Start(), To: utc(2026, 11, 10, 12, 0, 0)},
		{Plan: tGrowth, From: utc(2026, 11, 10, 12, 0, 0), To: nov.End()},
	}, []UsageSlice{slice(utc(2026, 11, 5, 0, 0, 0), VideoHD, 30_000)})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"held 820,800 of 2,592,000 s",
		"used 95,000 of 95,000 unit-minutes (300,000 a month, prorated)",
		"30,000 minutes × 4, 95,000 unit-minutes included", // 120,000 um − 95,000 = 25,000 over
		"held 1,771,200 of 2,592,000 s",
		"used 0 of 2,050,000 unit-minutes (3,000,000 a month, prorated)", // 3,000,000 × 1,771,200 / 2,592,000
	}
	if len(inv.Lines) != len(want) {
		t.Fatalf("%d lines: %+v", len(inv.Lines), inv.Lines)
	}
	for i, w := range want {
		if inv.Lines[i].Detail != w {
			t.Errorf("line %d detail %q, want %q", i, inv.Lines[i].Detail, w)
		}
	}
	if l := inv.Lines[2]; l.Quantity != 25_000 || l.Unit != "unit-minutes" || l.Rate != 890_000 || !l.From.Equal(nov.Start()) {
		t.Errorf("overage line %+v", l)
	}
	if l := inv.Lines[3]; l.Unit != "s" || l.Rate != 1_499_000_000 {
		t.Errorf("proration line %+v", l)
	}
}

func TestBillRefuses(t *testing.T) {
	mid := utc(2026, 11, 15, 0, 0, 0)
	overflow := Plan{Name: "huge", FeeMonthly: math.MaxInt64, Ceiling: 1, Mode: Strict, OveragePer1000: 1_000}
	session := tStarter
	session.Rounding = RoundSession
	bad := tStarter
	bad.Mode = "hard"
	cases := []struct {
		name   string
		period Period
		held   []Holding
		usage  []UsageSlice
		want   string
	}{
		{"invalid period", Period{2026, 13}, whole(tStarter, nov), nil, "period"},
		{"no holding", nov, nil, nil, "no plan held"},
		{"invalid plan", nov, whole(bad, nov), nil, "held[0]: plan starter: mode"},
		{"empty holding", nov, []Holding{{Plan: tStarter, From: mid, To: mid}}, nil, "not before"},
		{"outside the period", nov, []Holding{{Plan: tStarter, From: nov.Start(), To: dec.End()}}, nil, "not within period 2026-11"},
		{"overlap", nov, []Holding{{Plan: tStarter, From: nov.Start(), To: mid}, {Plan: tGrowth, From: mid.Add(-time.Second), To: nov.End()}}, nil, "held[1] (growth): from 2026-11-14T23:59:59Z overlaps held[0]"},
		{"gap", nov, []Holding{{Plan: tStarter, From: nov.Start(), To: mid}, {Plan: tGrowth, From: mid.Add(time.Second), To: nov.End()}}, nil, "gap after held[0]"},
		{"usage out of order", nov, whole(tStarter, nov), []UsageSlice{slice(mid, Audio, 1), slice(mid.Add(-1), Audio, 1)}, "usage[1]: at 2026-11-14T23:59:59.999999999Z is before usage[0]"},
		{"usage before the holdings", nov, []Holding{{Plan: tStarter, From: mid, To: nov.End()}}, []UsageSlice{slice(nov.Start(), Audio, 1)}, "usage[0]: at 2026-11-01T00:00:00Z is outside the held time"},
		{"usage at the end", nov, whole(tStarter, nov), []UsageSlice{slice(nov.End(), Audio, 1)}, "outside the held time"},
		{"unknown class", nov, whole(tStarter, nov), []UsageSlice{{At: mid, Class: 9, Micros: 1}}, "usage[0]: unknown class(9)"},
		{"session minutes overflow", nov, whole(session, nov), []UsageSlice{{At: mid, Class: Audio, Minutes: math.MaxUint64}, {At: mid, Class: Audio, Minutes: 1}}, "usage[1]: audio minutes overflow"},
		{"total overflows", nov, whole(overflow, nov), []UsageSlice{slice(mid, Audio, 1)}, "overflows"},
	}
	for _, tc := range cases {
		if _, err := Bill(tc.period, tc.held, tc.usage); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// TestBillActiveUsers: plans that price monthly active users include some
// (prorated by the seconds held, summed over the holdings) and bill the
// rest per user, on one line at the last such plan's rate; plans without
// bill no such line.
func TestBillActiveUsers(t *testing.T) {
	chat := Plan{Name: "chat-pro", Billing: Package, FeeMonthly: 299_000_000, Ceiling: 2_000, Mode: Strict,
		IncludedMAU: 10_000, OveragePerMAU: 20_000}
	basic := Plan{Name: "chat-basic", Billing: Package, FeeMonthly: 49_000_000, Ceiling: 200, Mode: Strict,
		IncludedMAU: 1_000, OveragePerMAU: 50_000}
	half := nov.Start().Add(15 * day)
	cases := []struct {
		name     string
		held     []Holding
		mau      uint64
		quantity uint64 // the line's users over, -1: no line
		amount   Micro
		detail   string
	}{
		{"over the included", whole(chat, nov), 12_345, 2_345, 46_900_000, "12,345 active users, 10,000 included"},
		{"under the included", whole(chat, nov), 9_999, 0, 0, "9,999 active users, 10,000 included"},
		// 1,000 × ½ + 10,000 × ½ = 5,500 included; 2,500 over at chat-pro's 0.02.
		{"prorated over two plans", []Holding{{Plan: basic, From: nov.Start(), To: half}, {Plan: chat, From: half, To: nov.End()}},
			8_000, 2_500, 50_000_000, "8,000 active users, 5,500 included (10,000 a month, prorated)"},
		{"a plan that does not price users", whole(tStarter, nov), 50_000, 1<<64 - 1, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inv, err := BillUsers(nov, c.held, nil, c.mau)
			if err != nil {
				t.Fatal(err)
			}
			var line *Line
			var fees Micro
			for i := range inv.Lines {
				switch inv.Lines[i].Kind {
				case LineActiveUsers:
					line = &inv.Lines[i]
				case LineFee, LineProration:
					fees += inv.Lines[i].Amount
				}
			}
			if c.quantity == 1<<64-1 {
				if line != nil {
					t.Fatalf("an active users line for a plan without MAU pricing: %+v", line)
				}
				return
			}
			if line == nil || line.Quantity != c.quantity || line.Amount != c.amount || line.Unit != "users" || line.Detail != c.detail {
				t.Fatalf("line %+v, want %d users over, %d µ, %q", line, c.quantity, c.amount, c.detail)
			}
			if inv.Total != fees+c.amount {
				t.Errorf("total %d, want the fees %d and the users %d", inv.Total, fees, c.amount)
			}
		})
	}
}
