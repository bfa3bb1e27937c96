package connect

import (
	"errors"
	"strings"
	"testing"

	"github.com/headroom-rtc/headroom/plans"
)

func TestRules(t *testing.T) {
	in := Input{Args: map[string]string{"tenant": "acme", "org": "bad id"}, App: "globex", Name: "initech_cam1"}
	cases := []struct {
		rules, want, why string
	}{
		{"arg", "acme", ""},
		{"arg:tenant", "acme", ""},
		{"app", "globex", ""},
		{"name-prefix:_", "initech", ""},
		{"fixed:umbrella", "umbrella", ""},
		{"arg:org", "", "not a tenant id"},
		{"arg:missing,app", "globex", ""},
		{"name-prefix:-", "", `has no "-"`},
		{"arg:missing,name-prefix:/", "", `no argument "missing"; name "initech_cam1" has no "/"`},
	}
	for _, tc := range cases {
		rs, err := ParseRules(tc.rules, "tenant")
		if err != nil {
			t.Fatalf("%s: %v", tc.rules, err)
		}
		got, err := rs.Tenant(in)
		if tc.why == "" && (err != nil || got != tc.want) {
			t.Errorf("%s: %q %v, want %q", tc.rules, got, err, tc.want)
		}
		if tc.why != "" && (!errors.Is(err, ErrUnmapped) || !strings.Contains(err.Error(), tc.why) || got != "") {
			t.Errorf("%s: %q %v, want unmapped: %s", tc.rules, got, err, tc.why)
		}
		if rs.String() != strings.ReplaceAll(tc.rules, "arg,", "arg:tenant,") && tc.rules != "arg" {
			t.Errorf("%s written back as %s", tc.rules, rs)
		}
	}
	for _, bad := range []string{"", "app:x", "name-prefix", "fixed:a b", "query:x", "arg:"} {
		if _, err := ParseRules(bad, ""); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestClassRule(t *testing.T) {
	apps, err := ParseAppClasses([]string{"radio=audio,live=video-fhd", "bots=ai"})
	if err != nil {
		t.Fatal(err)
	}
	cr := ClassRule{Arg: "class", PerApp: apps, Default: plans.VideoHD}
	for _, tc := range []struct {
		in   Input
		want plans.Class
	}{
		{Input{App: "radio"}, plans.Audio},
		{Input{App: "other"}, plans.VideoHD},
		{Input{App: "radio", Args: map[string]string{"class": "video-2k"}}, plans.Video2K},
	} {
		if got, err := cr.Class(tc.in); err != nil || got != tc.want {
			t.Errorf("%+v: %v %v, want %v", tc.in, got, err, tc.want)
		}
	}
	if _, err := cr.Class(Input{Args: map[string]string{"class": "8k"}}); !errors.Is(err, ErrBadClass) {
		t.Errorf("bad class: %v", err)
	}
	for _, bad := range []string{"radio", "=audio", "radio=8k"} {
		if _, err := ParseAppClasses([]string{bad}); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
