package agent

import (
	"errors"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/wire"
)

func TestAdmissionRules(t *testing.T) {
	tests := []struct {
		name       string
		info       *wire.TenantInfo // nil: unknown
		localOpen  int              // this agent's sessions opened after the push
		wantOK     bool
		wantReason string
	}{
		{"unknown tenant", nil, 0, false, ReasonUnknownTenant},
		{"suspended", &wire.TenantInfo{Mode: "meter", Suspended: true}, 0, false, ReasonSuspended},
		{"meter admits everything", &wire.TenantInfo{Mode: "meter", Concurrency: 1 << 40}, 0, true, ""},
		{"soft under ceiling", &wire.TenantInfo{Mode: "soft", Ceiling: 10, Concurrency: 9}, 0, true, ""},
		{"soft at ceiling", &wire.TenantInfo{Mode: "soft", Ceiling: 10, Concurrency: 10}, 0, false, ReasonCeiling},
		{"soft local opens count", &wire.TenantInfo{Mode: "soft", Ceiling: 10, Concurrency: 8}, 2, false, ReasonCeiling},
		{"burst 20%", &wire.TenantInfo{Mode: "soft", Ceiling: 10, BurstPct: 20, Concurrency: 11}, 0, true, ""},
		{"burst 20% full", &wire.TenantInfo{Mode: "soft", Ceiling: 10, BurstPct: 20, Concurrency: 11}, 1, false, ReasonCeiling},
		{"strict without a share nor a stream", &wire.TenantInfo{Mode: "strict", Ceiling: 5, Concurrency: 4}, 0, false, ReasonClusterUnreachable},
		{"strict full", &wire.TenantInfo{Mode: "strict", Ceiling: 5, Concurrency: 5}, 0, false, ReasonCeiling},
		{"soft class ceiling", &wire.TenantInfo{Mode: "soft", Ceiling: 10, ClassLimits: []wire.ClassLimit{{Class: "audio", Ceiling: 2, Concurrency: 2}}}, 0, false, ReasonClassCeiling},
		{"soft class ceiling with burst", &wire.TenantInfo{Mode: "soft", Ceiling: 10, BurstPct: 50, ClassLimits: []wire.ClassLimit{{Class: "audio", Ceiling: 2, Concurrency: 2}}}, 0, true, ""},
		{"soft other class limited", &wire.TenantInfo{Mode: "soft", Ceiling: 10, ClassLimits: []wire.ClassLimit{{Class: "ai", Ceiling: 1, Concurrency: 1}}}, 0, true, ""},
		{"soft ceiling 0", &wire.TenantInfo{Mode: "soft"}, 0, false, ReasonCeiling},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := newTestAgent(t, Config{})
			if tc.info != nil {
				// The tenant is meter while the local sessions open, then
				// the state under test is pushed before them.
				info := *tc.info
				info.Tenant = "t1"
				pushTenants(t, a, true, info)
				a.mu.Lock()
				for i := 0; i < tc.localOpen; i++ {
					a.tab.open(a.tab.tenants["t1"], "pre"+itoa(i), 1, 0, a.now())
				}
				a.mu.Unlock()
			}
			res, err := a.Open("t1", "audio", "s", 0)
			if err != nil {
				t.Fatal(err)
			}
			if res.Admitted != tc.wantOK || res.Reason != tc.wantReason {
				t.Fatalf("got %+v, want admitted=%v reason=%q", res, tc.wantOK, tc.wantReason)
			}
		})
	}
}

// TestAdmissionEstimate: the estimate is the pushed concurrency plus this
// agent's change since the push (opens and closes).
func TestAdmissionEstimate(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, soft("t1", 3, 0))
	for i := 0; i < 3; i++ {
		if res, _ := a.Open("t1", "audio", "s"+itoa(i), 0); !res.Admitted {
			t.Fatalf("open %d refused: %+v", i, res)
		}
	}
	if res, _ := a.Open("t1", "audio", "s3", 0); res.Admitted || res.Reason != ReasonCeiling {
		t.Fatalf("4th open: %+v", res)
	}
	// The cluster now reports 3 (our own 3): the base moves with the push.
	pushTenants(t, a, false, soft("t1", 3, 3))
	if res, _ := a.Open("t1", "audio", "s3", 0); res.Admitted {
		t.Fatalf("open over ceiling after push: %+v", res)
	}
	if _, err := a.Close("s0"); err != nil {
		t.Fatal(err)
	}
	if res, _ := a.Open("t1", "audio", "s3", 0); !res.Admitted {
		t.Fatalf("open after a local close refused: %+v", res)
	}
	// Refusals are counted per tenant/class.
	a.Open("t1", "video-hd", "s9", 0)
	a.mu.Lock()
	es, _ := a.tab.cut(a.now())
	a.mu.Unlock()
	if e, _ := entryOf(es, "t1", "audio"); e.Refused != 2 {
		t.Fatalf("audio refusals %+v", e)
	}
	if e, _ := entryOf(es, "t1", "video-hd"); e.Refused != 1 {
		t.Fatalf("video refusals %+v", e)
	}
	// A full state without t1 makes it unknown.
	pushTenants(t, a, true, soft("t2", 3, 0))
	if res, _ := a.Open("t1", "audio", "s10", 0); res.Reason != ReasonUnknownTenant {
		t.Fatalf("after removal: %+v", res)
	}
}

func TestOpenSemantics(t *testing.T) {
	a, clk := newTestAgent(t, Config{})
	pushTenants(t, a, true, meter("t1"), meter("t2"))
	if res, err := a.Open("t1", "audio", "s1", 0); err != nil || !res.Admitted || res.Existing {
		t.Fatalf("open: %+v %v", res, err)
	}
	if res, err := a.Open("t1", "audio", "s1", 0); err != nil || !res.Admitted || !res.Existing {
		t.Fatalf("retried open: %+v %v", res, err)
	}
	if _, err := a.Open("t2", "audio", "s1", 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("other tenant: %v", err)
	}
	if _, err := a.Open("t1", "video-hd", "s1", 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("other class: %v", err)
	}
	for _, bad := range [][4]string{{"", "audio", "x"}, {"t1", "video", "x"}, {"t1", "audio", ""}, {"t 1", "audio", "x"}} {
		if _, err := a.Open(bad[0], bad[1], bad[2], 0); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Open%q: %v", bad[:3], err)
		}
	}
	if _, err := a.Open("t1", "audio", "x", -time.Second); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative ttl: %v", err)
	}
	clk.advance(1500 * time.Millisecond)
	if d, err := a.Close("s1"); err != nil || d != 1500*time.Millisecond {
		t.Fatalf("close: %v %v", d, err)
	}
	if _, err := a.Close("s1"); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("second close: %v", err)
	}
	// TTL: keepalive keeps it, silence expires it.
	a.Open("t1", "audio", "ttl", 2*time.Second)
	clk.advance(time.Second)
	if err := a.Keepalive("ttl"); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Second)
	if err := a.Keepalive("ttl"); err != nil {
		t.Fatalf("keepalive within ttl: %v", err)
	}
	clk.advance(2*time.Second + 1)
	if err := a.Keepalive("ttl"); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("keepalive after ttl: %v", err)
	}
	if st := a.Status(); st.OpenSessions != 0 {
		t.Fatalf("status %+v", st)
	}
}
