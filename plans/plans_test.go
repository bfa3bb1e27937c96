package plans

import (
	"strings"
	"testing"
)

func TestClassNamesRoundTrip(t *testing.T) {
	want := []string{"audio", "video-hd", "video-fhd", "video-2k", "video-2k+", "ai", "device"}
	if len(AllClasses) != len(want) {
		t.Fatalf("%d classes, want %d", len(AllClasses), len(want))
	}
	for i, c := range AllClasses {
		if c.String() != want[i] {
			t.Errorf("class %d is %q, want %q", i, c, want[i])
		}
		back, err := ParseClass(want[i])
		if err != nil || back != c {
			t.Errorf("ParseClass(%q) = %v, %v", want[i], back, err)
		}
	}
	for _, bad := range []string{"", "Audio", "video", "laser", "video-2k++"} {
		if _, err := ParseClass(bad); err == nil {
			t.Errorf("ParseClass(%q) accepted", bad)
		}
	}
}

func TestWeights(t *testing.T) {
	want := map[Class]uint32{Audio: 1, VideoHD: 4, VideoFHD: 9, Video2K: 16, Video2KP: 36, AI: 7, Device: DefaultDeviceWeight}
	for c, w := range want {
		if got := c.Weight(7); got != w {
			t.Errorf("%s weight %d, want %d", c, got, w)
		}
	}
	// A plan's device weight prices devices; 0 is the default.
	p := Plan{Name: "d", AIWeight: 7, DeviceWeight: 3}
	if got := p.Weight(Device); got != 3 {
		t.Errorf("plan device weight %d, want 3", got)
	}
	if got := (Plan{}).Weight(Device); got != DefaultDeviceWeight {
		t.Errorf("default device weight %d, want %d", got, DefaultDeviceWeight)
	}
	if got := p.Weight(AI); got != 7 {
		t.Errorf("ai weight %d beside a device weight, want 7", got)
	}
}

// A plan written before the device class lists rates for the six classes
// it knew: it stays valid and bills devices at their default rate.
func TestRatesWithoutDevice(t *testing.T) {
	p := Plan{Name: "old", Billing: PayAsYouGo, Mode: Meter, Rates: DefaultRates()[:NumClasses-1]}
	if err := p.Validate(); err != nil {
		t.Fatalf("a plan of six rates: %v", err)
	}
	if got := p.Rate(Device); got != 990_000 {
		t.Errorf("device rate %d, want the default 990000", got)
	}
	p.Rates = DefaultRates()[:NumClasses-2]
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "class ai missing") {
		t.Errorf("a plan without the ai rate: %v", err)
	}
	p.DeviceWeight = MaxAIWeight + 1
	p.Rates = nil
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "device_weight") {
		t.Errorf("device_weight over the bound: %v", err)
	}
}

func TestVideoClassForPixels(t *testing.T) {
	cases := []struct {
		px   uint64
		want Class
	}{
		{0, Audio},
		{1280 * 720, VideoHD},
		{1280*720 + 1, VideoFHD},
		{1920 * 1080, VideoFHD},
		{1280*720 + 1920*1080, Video2K}, // 720p and 1080p subscribed together
		{3_686_400, Video2K},
		{3_686_401, Video2KP},
		{3840 * 2160, Video2KP},
	}
	for _, tc := range cases {
		if got := VideoClassForPixels(tc.px); got != tc.want {
			t.Errorf("%d px: %s, want %s", tc.px, got, tc.want)
		}
	}
}

func TestDefaultsAreValid(t *testing.T) {
	ps := Defaults()
	names := []string{"growth", "payg", "scale", "starter"}
	if len(ps) != len(names) {
		t.Fatalf("%d plans", len(ps))
	}
	for i, p := range ps {
		if p.Name != names[i] {
			t.Errorf("plan %d is %s, want %s (sorted)", i, p.Name, names[i])
		}
		if err := p.Validate(); err != nil {
			t.Error(err)
		}
	}
	scale := ps[2]
	if scale.AdmitLimit() != 12_000 {
		t.Errorf("scale admits up to %d, want 12000 (20%% burst)", scale.AdmitLimit())
	}
}

func TestValidateNamesTheField(t *testing.T) {
	ok := Plan{Name: "x", Ceiling: 10, Mode: Soft}
	cases := []struct {
		mut  func(p *Plan)
		want string
	}{
		{func(p *Plan) { p.Name = "" }, "plan name"},
		{func(p *Plan) { p.Name = "Has Space" }, "plan name"},
		{func(p *Plan) { p.FeeMonthly = -1 }, "fee_monthly_micros"},
		{func(p *Plan) { p.OveragePer1000 = -1 }, "overage_per_1000_micros"},
		{func(p *Plan) { p.Ceiling = 0 }, "ceiling"},
		{func(p *Plan) { p.Mode = "hard" }, "mode"},
		{func(p *Plan) { p.BurstPct = 5000 }, "burst_pct"},
	}
	for _, tc := range cases {
		p := ok
		tc.mut(&p)
		err := p.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one naming %s", p, err, tc.want)
		}
	}
	meter := Plan{Name: "m", Mode: Meter}
	if err := meter.Validate(); err != nil || meter.AdmitLimit() != 0 {
		t.Errorf("meter plan without ceiling: %v, limit %d", err, meter.AdmitLimit())
	}
}

func TestValidateID(t *testing.T) {
	for _, good := range []string{"t1", "acme.eu-west_2", strings.Repeat("a", MaxTenantIDLen)} {
		if err := ValidateTenantID(good); err != nil {
			t.Errorf("%q refused: %v", good, err)
		}
	}
	for _, bad := range []string{"", "a b", "tab\there", "é", strings.Repeat("a", MaxTenantIDLen+1), "nul\x00"} {
		if err := ValidateTenantID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestDefaultsMatchDesign(t *testing.T) {
	// DESIGN.md, "Plans": fee / ceiling / mode / included / overage per 1,000.
	want := map[string]Plan{
		"payg":    {Billing: PayAsYouGo, FeeMonthly: 0, Ceiling: 1_000, Mode: Soft, IncludedUnitMinutes: 10_000, OveragePer1000: 990_000},
		"starter": {Billing: Package, FeeMonthly: 199_000_000, Ceiling: 100, Mode: Strict, IncludedUnitMinutes: 300_000, OveragePer1000: 890_000},
		"growth":  {Billing: Package, FeeMonthly: 1_499_000_000, Ceiling: 1_000, Mode: Strict, IncludedUnitMinutes: 3_000_000, OveragePer1000: 790_000},
		"scale":   {Billing: Package, FeeMonthly: 9_999_000_000, Ceiling: 10_000, Mode: Soft, BurstPct: 20, IncludedUnitMinutes: 25_000_000, OveragePer1000: 690_000},
	}
	for _, p := range Defaults() {
		w, ok := want[p.Name]
		if !ok {
			t.Errorf("unexpected plan %s", p.Name)
			continue
		}
		if p.Billing != w.Billing || p.FeeMonthly != w.FeeMonthly || p.Ceiling != w.Ceiling || p.Mode != w.Mode ||
			p.BurstPct != w.BurstPct || p.IncludedUnitMinutes != w.IncludedUnitMinutes || p.OveragePer1000 != w.OveragePer1000 {
			t.Errorf("%s = %+v, want %+v", p.Name, p, w)
		}
		if p.Period != Monthly || p.Rounding != RoundPeriod || p.PeakBasis != PeakGlobal || p.AIWeight != DefaultAIWeight {
			t.Errorf("%s defaults not explicit: %+v", p.Name, p)
		}
	}
	// The list rates per 1,000 minutes (DESIGN.md), ai priced like HD.
	rates := map[Class]Micro{Audio: 990_000, VideoHD: 3_990_000, VideoFHD: 8_990_000, Video2K: 15_990_000, Video2KP: 35_990_000, AI: 3_990_000, Device: 990_000}
	payg := Defaults()[1]
	if len(payg.Rates) != NumClasses {
		t.Fatalf("payg rates %v", payg.Rates)
	}
	for i, c := range AllClasses {
		if payg.Rates[i].Class != c.String() || payg.Rates[i].Per1000 != rates[c] || payg.Rate(c) != rates[c] {
			t.Errorf("payg rate %s: %+v / %d, want %d", c, payg.Rates[i], payg.Rate(c), rates[c])
		}
	}
}

func TestValidateNewFieldsNamed(t *testing.T) {
	ok := Plan{Name: "x", Ceiling: 10, Mode: Soft}
	allRates := DefaultRates()
	cases := []struct {
		mut  func(p *Plan)
		want string
	}{
		{func(p *Plan) { p.Billing = "prepaid" }, "billing"},
		{func(p *Plan) { p.Period = "week" }, "period"},
		{func(p *Plan) { p.Rounding = "second" }, "rounding"},
		{func(p *Plan) { p.PeakBasis = "local" }, "peak_basis"},
		{func(p *Plan) { p.AIWeight = MaxAIWeight + 1 }, "ai_weight"},
		{func(p *Plan) { p.ClassCeilings = []ClassLimit{{"laser", 1}} }, "class_ceilings"},
		{func(p *Plan) { p.ClassCeilings = []ClassLimit{{"audio", 0}} }, "class_ceilings[audio]"},
		{func(p *Plan) { p.ClassCeilings = []ClassLimit{{"audio", 11}} }, "class_ceilings[audio]"},
		{func(p *Plan) { p.ClassCeilings = []ClassLimit{{"audio", 1}, {"audio", 2}} }, "class_ceilings"},
		{func(p *Plan) { p.Mode, p.ClassCeilings = Meter, []ClassLimit{{"audio", 1}} }, "class_ceilings"},
		{func(p *Plan) { p.Rates = allRates[:5] }, "rates: class ai missing"},
		{func(p *Plan) { p.Rates = append(append([]ClassRate{}, allRates...), ClassRate{"audio", 1}) }, "rates: class audio listed twice"},
		{func(p *Plan) { p.Rates = []ClassRate{{"laser", 1}} }, "rates"},
		{func(p *Plan) {
			p.Rates = append([]ClassRate{}, allRates...)
			p.Rates[2].Per1000 = -1
		}, "rates[video-fhd]: per_1000_micros"},
	}
	for _, tc := range cases {
		p := ok
		tc.mut(&p)
		err := p.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one naming %s", p, err, tc.want)
		}
	}
	good := ok
	good.Billing, good.Period, good.Rounding, good.PeakBasis, good.AIWeight = PayAsYouGo, Monthly, RoundSession, PeakRegional, 7
	good.ClassCeilings = []ClassLimit{{"video-2k+", 2}, {"audio", 10}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	n := good.Normalized()
	if n.ClassCeilings[0].Class != "audio" || n.ClassCeilings[1].Class != "video-2k+" || good.ClassCeilings[0].Class != "video-2k+" {
		t.Errorf("class ceilings not sorted in class order on a copy: %v / %v", n.ClassCeilings, good.ClassCeilings)
	}
	if len(n.Rates) != NumClasses || n.Weight(AI) != 7 || n.Weight(VideoFHD) != 9 {
		t.Errorf("normalized payg: rates %v, ai weight %d", n.Rates, n.Weight(AI))
	}
	// Soft burst 0 here: the class admit limit is the class ceiling; none set is 0.
	if l := n.ClassAdmitLimit(Video2KP); l != 2 {
		t.Errorf("video-2k+ admit limit %d, want 2", l)
	}
	if l := n.ClassAdmitLimit(VideoHD); l != 0 {
		t.Errorf("video-hd admit limit %d, want 0 (no class ceiling)", l)
	}
	n.BurstPct = 50 // 10 + 10×50/100 = 15
	if l := n.ClassAdmitLimit(Audio); l != 15 {
		t.Errorf("audio admit limit with 50%% burst %d, want 15", l)
	}
	// A plan written with only the first version's fields is a package.
	if old := (Plan{Name: "old", Ceiling: 5, Mode: Strict}).Normalized(); old.Billing != Package || old.Rates != nil || old.Weight(AI) != DefaultAIWeight {
		t.Errorf("old plan normalized to %+v", old)
	}
}

func TestUpgradeDowngrade(t *testing.T) {
	starter := Plan{Name: "starter", FeeMonthly: 199_000_000}
	growth := Plan{Name: "growth", FeeMonthly: 1_499_000_000}
	twin := Plan{Name: "twin", FeeMonthly: 199_000_000}
	if !growth.UpgradeOf(starter) || growth.DowngradeOf(starter) {
		t.Error("starter → growth is an upgrade")
	}
	if !starter.DowngradeOf(growth) || starter.UpgradeOf(growth) {
		t.Error("growth → starter is a downgrade")
	}
	if twin.UpgradeOf(starter) || twin.DowngradeOf(starter) {
		t.Error("equal fees: neither")
	}
	if DefaultEffective(starter, growth) != Now || DefaultEffective(growth, starter) != PeriodEnd || DefaultEffective(starter, twin) != Now {
		t.Error("upgrade now, downgrade at the period's end, lateral now")
	}
}

func TestCatalogue(t *testing.T) {
	c, err := NewCatalogue([]Plan{{Name: "b", Ceiling: 1, Mode: Strict}, {Name: "a", Mode: Meter, Billing: PayAsYouGo}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Len() != 2 || c.Plans()[0].Name != "a" {
		t.Errorf("plans %v", c.Plans())
	}
	if p, ok := c.Lookup("a"); !ok || len(p.Rates) != NumClasses {
		t.Errorf("lookup a: %+v %v", p, ok)
	}
	if _, ok := c.Lookup("z"); ok {
		t.Error("found z")
	}
	if _, err := NewCatalogue([]Plan{{Name: "a", Mode: Meter}, {Name: "a", Mode: Meter}}); err == nil || !strings.Contains(err.Error(), "plans[1]") {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := NewCatalogue([]Plan{{Name: "a", Mode: "x"}}); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Errorf("invalid: %v", err)
	}
}

func TestFormatMicro(t *testing.T) {
	cases := []struct {
		m    Micro
		want string
	}{
		{0, "0.00"},
		{1_300_000_000, "1,300.00"},
		{1_234_567_890_000, "1,234,567.89"},
		{4_994_999, "4.99"}, // 4.994999 → 4.99
		{4_995_000, "5.00"}, // half up at the cent
		{999_995_000, "1,000.00"},
		{-5_000, "-0.01"},
		{-4_999, "0.00"},
		{-1_300_000_000, "-1,300.00"},
	}
	for _, tc := range cases {
		if got := FormatMicro(tc.m); got != tc.want {
			t.Errorf("FormatMicro(%d) = %q, want %q", tc.m, got, tc.want)
		}
	}
}

func TestParseMicro(t *testing.T) {
	cases := []struct {
		in   string
		want Micro
		err  bool
	}{
		{"1499", 1_499_000_000, false},
		{"0.89", 890_000, false},
		{"1,499.00", 1_499_000_000, false},
		{".5", 500_000, false},
		{"0.000001", 1, false},
		{"0.0000001", 0, true},
		{"-1", 0, true},
		{"1e3", 0, true},
		{"", 0, true},
		{".", 0, true},
		{"99999999999999999999", 0, true},
	}
	for _, tc := range cases {
		got, err := ParseMicro(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseMicro(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}
