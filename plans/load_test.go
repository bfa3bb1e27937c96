package plans

import (
	"reflect"
	"strings"
	"testing"
)

const catJSON = `{
  "plans": [
    {"name": "starter", "billing": "package", "fee_monthly_micros": 199000000, "ceiling": 100,
     "class_ceilings": [{"class": "video-2k+", "ceiling": 5}, {"class": "video-fhd", "ceiling": 50}],
     "mode": "strict", "burst_pct": 0, "included_unit_minutes": 300000, "overage_per_1000_micros": 890000,
     "rounding": "session", "peak_basis": "regional", "ai_weight": 6},
    {"name": "payg", "billing": "payg", "fee_monthly_micros": 0, "ceiling": 1000, "mode": "soft",
     "included_unit_minutes": 10000, "overage_per_1000_micros": 990000, "period": "month"}
  ]
}`

const catYAML = `# the same catalogue in YAML
plans:
  - name: starter
    billing: package
    fee_monthly_micros: 199000000
    ceiling: 100
    class_ceilings:
      - {class: video-2k+, ceiling: 5}
      - class: video-fhd
        ceiling: 50
    mode: strict
    burst_pct: 0
    included_unit_minutes: 300000
    overage_per_1000_micros: 890000
    rounding: session
    peak_basis: regional
    ai_weight: 6
  - name: payg
    billing: payg
    fee_monthly_micros: 0
    ceiling: 1000
    mode: soft
    included_unit_minutes: 10000
    overage_per_1000_micros: 990000
    period: month
`

func TestLoadCatalogueJSONAndYAML(t *testing.T) {
	js, err := LoadCatalogue([]byte(catJSON))
	if err != nil {
		t.Fatal(err)
	}
	ys, err := LoadCatalogue([]byte(catYAML))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(js, ys) {
		t.Errorf("JSON and YAML differ:\n%+v\n%+v", js, ys)
	}
	if len(js) != 2 || js[0].Name != "payg" || js[1].Name != "starter" {
		t.Fatalf("want payg, starter sorted by name: %+v", js)
	}
	payg, starter := js[0], js[1]
	// Defaults made explicit; payg gets the list rates.
	if payg.Rounding != RoundPeriod || payg.PeakBasis != PeakGlobal || payg.AIWeight != DefaultAIWeight || len(payg.Rates) != NumClasses || payg.Rate(Video2KP) != 35_990_000 {
		t.Errorf("payg normalized to %+v", payg)
	}
	if starter.FeeMonthly != 199_000_000 || starter.Rounding != RoundSession || starter.PeakBasis != PeakRegional || starter.Weight(AI) != 6 || starter.Period != Monthly {
		t.Errorf("starter decoded as %+v", starter)
	}
	// Class ceilings sorted in class order: video-fhd before video-2k+.
	if want := []ClassLimit{{"video-fhd", 50}, {"video-2k+", 5}}; !reflect.DeepEqual(starter.ClassCeilings, want) {
		t.Errorf("class ceilings %v, want %v", starter.ClassCeilings, want)
	}
	c, err := ParseCatalogue([]byte("\ufeff" + catJSON)) // a byte-order mark is fine
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := c.Lookup("starter"); !ok || p.Ceiling != 100 {
		t.Errorf("lookup: %+v %v", p, ok)
	}
	rs, err := ReadCatalogue(strings.NewReader(catYAML))
	if err != nil || !reflect.DeepEqual(rs, js) {
		t.Errorf("ReadCatalogue: %v", err)
	}
}

func TestLoadCatalogueRefuses(t *testing.T) {
	one := func(fields string) string {
		return `{"plans": [{"name": "a", "ceiling": 10, "mode": "strict"` + fields + `}]}`
	}
	cases := []struct {
		name string
		data string
		want []string // all must appear in the error
	}{
		{"unknown key (JSON)", one(`, "celing": 5`), []string{`plans[0]: unknown key "celing"`}},
		{"unknown key (YAML)", "plans:\n  - name: a\n    ceiling: 10\n    mode: strict\n    celing: 5\n", []string{`plans[0]: unknown key "celing"`}},
		{"unknown top-level key", `{"plans": [], "version": 2}`, []string{`unknown key "version"`}},
		{"unknown nested key", one(`, "rates": [{"class": "audio", "per_1000": 1}]`), []string{`plans[0].rates[0]: unknown key "per_1000"`}},
		{"key in another case", one(`, "Ceiling": 5`), []string{`unknown key "Ceiling"`}},
		{"key given twice (JSON)", one(`, "ceiling": 20`), []string{`plans[0]: key "ceiling" given twice`}},
		{"key given twice (YAML)", "plans:\n  - name: a\n    ceiling: 10\n    ceiling: 20\n    mode: strict\n", []string{"ceiling"}},
		{"duplicate plan names", `{"plans": [{"name": "a", "mode": "meter"}, {"name": "b", "mode": "meter"}, {"name": "a", "mode": "meter"}]}`,
			[]string{`plans[2]: plan name "a" already used by plans[0]`}},
		{"duplicate plan names (YAML)", "plans:\n  - {name: a, mode: meter}\n  - {name: a, mode: meter}\n", []string{"already used"}},
		{"mode given twice", one(`, "mode": "hard"`), []string{"given twice"}},
		{"invalid mode named", `{"plans": [{"name": "a", "ceiling": 10, "mode": "hard"}]}`, []string{"plans[0]", "plan a", "mode"}},
		{"invalid billing", one(`, "billing": "prepaid"`), []string{"plan a", "billing"}},
		{"invalid rounding (YAML)", "plans:\n  - {name: a, ceiling: 10, mode: strict, rounding: hour}\n", []string{"plan a", "rounding"}},
		{"invalid class ceiling", one(`, "class_ceilings": [{"class": "audio", "ceiling": 11}]`), []string{"plan a", "class_ceilings[audio]"}},
		{"partial rates", one(`, "rates": [{"class": "audio", "per_1000_micros": 1}]`), []string{"plan a", "rates: class video-hd missing"}},
		{"wrong type", one(`, "burst_pct": "ten"`), []string{"burst_pct"}},
		{"negative ceiling", `{"plans": [{"name": "a", "ceiling": -1, "mode": "strict"}]}`, []string{"ceiling"}},
		{"a bare list", `[{"name": "a", "mode": "meter"}]`, []string{`want an object {"plans": [...]}`}},
		{"no plans", `{"plans": []}`, []string{"no plans"}},
		{"empty document", ``, []string{"no plans"}},
		{"data after the document", `{"plans": [{"name": "a", "mode": "meter"}]} {}`, []string{"after the end"}},
		{"two YAML documents", "plans:\n  - {name: a, mode: meter}\n---\nplans:\n  - {name: b, mode: meter}\n", []string{"more than one document"}},
		{"broken JSON", `{"plans": [`, []string{"unexpected EOF"}},
		{"broken YAML", "plans:\n  - name: a\n   mode: [\n", nil},
		{"too deep", `{"plans": [{"name": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": {"l": {"m": {"n": {"o": {"p": {"q": 1}}}}}}}}}}}}}}}}}}]}`, []string{"nested too deep"}},
		{"too big", `{"plans": [` + strings.Repeat(" ", MaxCatalogueBytes) + `]}`, []string{"more than"}},
	}
	for _, tc := range cases {
		_, err := LoadCatalogue([]byte(tc.data))
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q, want it to contain %q", tc.name, err, w)
			}
		}
	}
	if _, err := ReadCatalogue(strings.NewReader(strings.Repeat("#", MaxCatalogueBytes+10))); err == nil {
		t.Error("ReadCatalogue read more than MaxCatalogueBytes")
	}
}
