package plans

import (
	"strings"
	"testing"
)

func TestClassNamesRoundTrip(t *testing.T) {
	want := []string{"audio", "video-hd", "video-fhd", "video-2k", "video-2k+", "ai"}
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
	want := map[Class]uint32{Audio: 1, VideoHD: 4, VideoFHD: 9, Video2K: 16, Video2KP: 36, AI: 7}
	for c, w := range want {
		if got := c.Weight(7); got != w {
			t.Errorf("%s weight %d, want %d", c, got, w)
		}
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
