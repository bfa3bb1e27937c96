package agent

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

func entryOf(es []wire.DeltaEntry, tenant, class string) (wire.DeltaEntry, bool) {
	for _, e := range es {
		if e.Tenant == tenant && e.Class == class {
			return e, true
		}
	}
	return wire.DeltaEntry{}, false
}

func peakOf(ps []wire.TenantPeak, tenant string) uint64 {
	for _, p := range ps {
		if p.Tenant == tenant {
			return p.Peak
		}
	}
	return 0
}

// TestIntegratorExactWithCarry opens and closes sessions at odd nanosecond
// times and cuts at odd intervals; the shipped micros must equal the exact
// integral (sum of durations) within 1 µs.
func TestIntegratorExactWithCarry(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tab := newTable()
	te := tab.tenant("t1", true)
	var now, exactNanos int64
	var shipped uint64
	open := map[string]int64{}
	id := 0
	for step := 0; step < 20000; step++ {
		now += 1 + rng.Int64N(777_777) // odd sub-microsecond steps
		switch r := rng.IntN(10); {
		case r < 4:
			id++
			sid := "s" + itoa(id)
			tab.open(te, sid, plans.Audio, 0, now)
			open[sid] = now
		case r < 7 && len(open) > 0:
			for sid, at := range open {
				tab.close(tab.sessions[sid], now)
				exactNanos += now - at
				delete(open, sid)
				break
			}
		default:
			es, _ := tab.cut(now)
			if e, ok := entryOf(es, "t1", "audio"); ok {
				shipped += e.SessionMicros
			}
		}
	}
	now += 12345
	for sid, at := range open {
		tab.close(tab.sessions[sid], now)
		exactNanos += now - at
	}
	es, _ := tab.cut(now)
	if e, ok := entryOf(es, "t1", "audio"); ok {
		shipped += e.SessionMicros
	}
	want := uint64(exactNanos / 1000)
	if shipped != want && shipped+1 != want {
		t.Fatalf("shipped %d µs, exact integral %d ns", shipped, exactNanos)
	}
	if c := te.cells[0]; c.acc < 0 || c.acc >= 1000 {
		t.Fatalf("carry %d", c.acc)
	}
}

func TestIntegratorPeaks(t *testing.T) {
	tab := newTable()
	te := tab.tenant("t1", true)
	a := tab.open(te, "a", plans.Audio, 0, 0)
	tab.cut(1 * sec) // interval 1: a open
	// Interval 2: a spike of two video sessions opened and closed between cuts.
	v1 := tab.open(te, "v1", plans.VideoHD, 0, 1*sec+10)
	v2 := tab.open(te, "v2", plans.VideoHD, 0, 1*sec+20)
	tab.close(v1, 1*sec+30)
	tab.close(v2, 1*sec+40)
	es, ps := tab.cut(2 * sec)
	v, ok := entryOf(es, "t1", "video-hd")
	if !ok || v.Peak != 2 || v.Opened != 2 || v.Closed != 2 || v.SessionMicros != 0 {
		t.Fatalf("video entry %+v (ok %v)", v, ok)
	}
	au, _ := entryOf(es, "t1", "audio")
	if au.Peak != 1 || au.SessionMicros != 1_000_000 || au.Opened != 0 {
		t.Fatalf("audio entry %+v", au)
	}
	if p := peakOf(ps, "t1"); p != 3 {
		t.Fatalf("tenant peak %d, want 3", p)
	}
	// Interval 3: the peak starts at the count at the cut (1), nothing else.
	tab.close(a, 2*sec+500)
	es, ps = tab.cut(3 * sec)
	au, _ = entryOf(es, "t1", "audio")
	if au.Peak != 1 || au.Closed != 1 || au.SessionMicros != 0 { // 500 ns: carried
		t.Fatalf("interval 3 audio %+v", au)
	}
	if _, ok := entryOf(es, "t1", "video-hd"); ok {
		t.Fatal("idle video cell emitted")
	}
	if p := peakOf(ps, "t1"); p != 1 {
		t.Fatalf("interval 3 tenant peak %d", p)
	}
	// Interval 4: nothing open, nothing happened: nothing emitted, the idle
	// unknown-to-admission tenant kept only because it has a carry.
	es, ps = tab.cut(4 * sec)
	if len(es) != 0 || len(ps) != 0 {
		t.Fatalf("idle interval emitted %v %v", es, ps)
	}
	if tab.tenants["t1"] == nil {
		t.Fatal("tenant with a carry forgotten")
	}
}

func TestIntegratorForgetsIdleUnknownTenants(t *testing.T) {
	tab := newTable()
	te := tab.tenant("ghost", true)
	tab.refuse(te, plans.Audio)
	es, _ := tab.cut(sec)
	if e, ok := entryOf(es, "ghost", "audio"); !ok || e.Refused != 1 || e.Peak != 0 {
		t.Fatalf("refusal entry %+v", e)
	}
	if tab.tenants["ghost"] != nil {
		t.Fatal("idle unknown tenant kept")
	}
	known := tab.tenant("k", true)
	tab.setTenant(meter("k"), 0)
	tab.refuse(known, plans.AI)
	tab.cut(2 * sec)
	if tab.tenants["k"] == nil {
		t.Fatal("known tenant forgotten")
	}
}

// TestIntegratorTTLOvercount: a TTL session that lapses is closed at its last
// keepalive; the time the integrator counted between that keepalive and the
// expiry must not be shipped, across many cuts.
func TestIntegratorTTLOvercount(t *testing.T) {
	tab := newTable()
	te := tab.tenant("t1", true)
	plain := tab.open(te, "plain", plans.Audio, 0, 0)
	tab.open(te, "ttl", plans.Audio, 10*time.Second, 0)
	var shipped uint64
	cut := func(now int64) {
		es, _ := tab.cut(now)
		if e, ok := entryOf(es, "t1", "audio"); ok {
			shipped += e.SessionMicros
		}
	}
	for now := int64(0); now <= 30*sec; now += sec/10 + 7 {
		if now == 30*(sec/10+7) { // 3 s + 210 ns
			tab.keepalive(tab.sessions["ttl"], now)
		}
		tab.expireDue(now)
		cut(now)
	}
	now := 30*sec + 7
	tab.expireDue(now)
	if tab.sessions["ttl"] != nil {
		t.Fatal("ttl session not expired")
	}
	tab.close(plain, now)
	cut(now)
	// plain: 30 s + 7 ns; ttl: open 0 → last keepalive 3 s + 210 ns.
	want := uint64((now + 3*sec + 210) / 1000)
	if shipped != want {
		t.Fatalf("shipped %d µs, want %d", shipped, want)
	}
}

// TestIntegratorTTLConfirmedByKeepalive: provisional time is shipped once a
// keepalive confirms it; nothing is lost.
func TestIntegratorTTLConfirmedByKeepalive(t *testing.T) {
	tab := newTable()
	te := tab.tenant("t1", true)
	s := tab.open(te, "s", plans.Audio, 10*time.Second, 0)
	var shipped uint64
	for now := int64(0); now <= 60*sec; now += sec / 10 {
		if now%(5*sec) == 0 {
			tab.keepalive(s, now)
		}
		es, _ := tab.cut(now)
		if e, ok := entryOf(es, "t1", "audio"); ok {
			shipped += e.SessionMicros
			if e.Peak != 1 {
				t.Fatalf("peak %d at %d", e.Peak, now)
			}
		}
	}
	// Keepalive at 60 s confirmed everything up to 60 s.
	if shipped != 60_000_000 {
		t.Fatalf("shipped %d µs, want 60 s", shipped)
	}
	d := tab.close(s, 61*sec)
	es, _ := tab.cut(61 * sec)
	e, _ := entryOf(es, "t1", "audio")
	if d != 61*time.Second || e.SessionMicros != 1_000_000 || e.Closed != 1 {
		t.Fatalf("close: %v %+v", d, e)
	}
}

func TestCountsSorted(t *testing.T) {
	tab := newTable()
	for _, x := range []struct {
		t string
		c plans.Class
	}{{"b", plans.AI}, {"a", plans.VideoHD}, {"b", plans.Audio}, {"a", plans.Audio}, {"a", plans.Audio}} {
		tab.open(tab.tenant(x.t, true), "s"+itoa(tab.openCount()), x.c, 0, 0)
	}
	got := tab.counts()
	want := []wire.CountEntry{
		{Tenant: "a", Class: "audio", Open: 2}, {Tenant: "a", Class: "video-hd", Open: 1},
		{Tenant: "b", Class: "audio", Open: 1}, {Tenant: "b", Class: "ai", Open: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("counts %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("counts %v, want %v", got, want)
		}
	}
}
