package agent

import (
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/wire"
)

// Usage across an agent's crash: sessions its media server kept count on
// through the downtime from the agent's last persist; what the media server
// says afterwards decides (persist.go, table.go).

// crashed opens the sessions ids of tenant t1 on an agent, lets them run
// for before, persists, and returns a new agent restarted on the same
// directory after down (the crash: nothing after the persist survives).
func crashed(t *testing.T, ids []string, before, down time.Duration) (*Agent, *fakeClock, uint64) {
	t.Helper()
	dir := t.TempDir()
	a, clk := newTestAgentClock(t, Config{DataDir: dir}, nil)
	pushTenants(t, a, true, meter("t1"))
	for _, id := range ids {
		if res, err := a.Open("t1", "audio", id, 0); err != nil || !res.Admitted {
			t.Fatal(res, err)
		}
	}
	clk.advance(before)
	es, _ := cutEntries(a)
	e, _ := entryOf(es, "t1", "audio")
	mustPersist(t, a) // the last persist; then kill -9
	clk.advance(down)
	b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
	return b, clk, e.SessionMicros
}

// shippedAfter cuts and returns the micros and closed minutes shipped.
func shippedAfter(a *Agent) (micros, minutes uint64) {
	es, _ := cutEntries(a)
	e, _ := entryOf(es, "t1", "audio")
	return e.SessionMicros, e.ClosedMinutes
}

// TestReconcileOmittingARestoredSession: a reconcile that does not list a
// session restored after the crash closes it at the agent's last persisted
// instant (it may have ended while the agent was down: the customer gets
// the benefit of the doubt); one it lists counts through the downtime.
func TestReconcileOmittingARestoredSession(t *testing.T) {
	b, clk, before := crashed(t, []string{"kept", "gone"}, 90*time.Second, 4*time.Second)
	clk.advance(time.Second)
	res, err := b.ReconcileScoped(ReconcileScope{}, []SessionSpec{{Tenant: "t1", Class: "audio", Session: "kept"}})
	if err != nil || len(res.Closed) != 1 || res.Closed[0] != "gone" {
		t.Fatalf("reconcile: %+v %v", res, err)
	}
	micros, minutes := shippedAfter(b)
	// kept: the 5 s since the persist; gone: nothing since the persist.
	if before != 2*90_000_000 || micros != 5_000_000 || minutes != 2 {
		t.Fatalf("before the crash %d µs; after it %d µs and %d closed minutes; want 180,000,000, then 5,000,000 and 2 (gone closed at 90 s)", before, micros, minutes)
	}
	d, err := b.Close("kept")
	if err != nil || d != 95*time.Second {
		t.Fatalf("close kept: %v %v, want 95 s", d, err)
	}
}

// TestResetAfterCrash: a reset (the whole host crashed: the media server
// holds nothing) closes every restored session at the last persisted
// instant; nothing counts the downtime.
func TestResetAfterCrash(t *testing.T) {
	b, clk, before := crashed(t, []string{"s1", "s2", "s3"}, 30*time.Second, 10*time.Second)
	clk.advance(time.Second)
	if n := b.Reset(); n != 3 {
		t.Fatalf("reset closed %d", n)
	}
	if micros, minutes := shippedAfter(b); before != 90_000_000 || micros != 0 || minutes != 3 {
		t.Fatalf("before %d µs; after the reset %d µs and %d closed minutes; want 90,000,000, then 0 and 3", before, micros, minutes)
	}
}

// TestRestoredSessionHeardOf: a sign of life from the media server (a
// keepalive) settles the doubt: the downtime ships at the next cut, and a
// later reconcile that omits the session closes it then, not at the
// persist.
func TestRestoredSessionHeardOf(t *testing.T) {
	b, clk, _ := crashed(t, []string{"s1"}, 10*time.Second, 3*time.Second)
	if micros, _ := shippedAfter(b); micros != 0 {
		t.Fatalf("shipped %d µs of a session in doubt", micros)
	}
	clk.advance(time.Second)
	if err := b.Keepalive("s1"); err != nil {
		t.Fatal(err)
	}
	if micros, _ := shippedAfter(b); micros != 4_000_000 {
		t.Fatalf("after the keepalive %d µs, want the 4 s since the persist", micros)
	}
	clk.advance(2 * time.Second)
	if _, err := b.ReconcileScoped(ReconcileScope{}, nil); err != nil {
		t.Fatal(err)
	}
	if micros, minutes := shippedAfter(b); micros != 2_000_000 || minutes != 1 {
		t.Fatalf("after the reconcile: %d µs, %d minutes; want 2,000,000 and 1", micros, minutes)
	}
}

// TestDoubtSurvivesASecondCrash: a session still in doubt when the agent
// crashes again is in doubt from the first crash's persist.
func TestDoubtSurvivesASecondCrash(t *testing.T) {
	dir := t.TempDir()
	a, clk := newTestAgentClock(t, Config{DataDir: dir}, nil)
	pushTenants(t, a, true, meter("t1"))
	a.Open("t1", "audio", "s1", 0)
	clk.advance(10 * time.Second)
	cutEntries(a)
	mustPersist(t, a)
	clk.advance(3 * time.Second) // first crash
	b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
	clk.advance(2 * time.Second)
	cutEntries(b) // held back
	mustPersist(t, b)
	clk.advance(3 * time.Second) // second crash
	c, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
	clk.advance(time.Second)
	c.Reset()
	if micros, minutes := shippedAfter(c); micros != 0 || minutes != 1 {
		t.Fatalf("after the reset: %d µs and %d minutes; want nothing after the first crash's persist at 10 s (1 minute)", micros, minutes)
	}
}

// TestTTLSessionThroughDowntime: a session with a TTL counts through the
// downtime while its keepalives go on, and ends at its last keepalive when
// they stopped.
func TestTTLSessionThroughDowntime(t *testing.T) {
	dir := t.TempDir()
	a, clk := newTestAgentClock(t, Config{DataDir: dir}, nil)
	pushTenants(t, a, true, meter("t1"))
	a.Open("t1", "audio", "s", 30*time.Second)
	clk.advance(5 * time.Second)
	a.Keepalive("s")
	cutEntries(a)
	mustPersist(t, a)
	clk.advance(20 * time.Second)
	b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
	if err := b.Keepalive("s"); err != nil {
		t.Fatal(err)
	}
	es, _ := cutEntries(b)
	if e, _ := entryOf(es, "t1", "audio"); e != (wire.DeltaEntry{Tenant: "t1", Class: "audio", SessionMicros: 20_000_000, Peak: 1}) {
		t.Fatalf("entry %+v, want the 20 s down counted", e)
	}
}

// TestReconcileGivesBackALostOpen: an open admitted after the last persist
// is lost with the crash; the media server's reconcile lists it with when
// it began, and it counts from then, through the downtime. A start before
// the last persist counts from the persist (the agent had not missed it
// before), one in the future from now.
func TestReconcileGivesBackALostOpen(t *testing.T) {
	dir := t.TempDir()
	a, clk := newTestAgentClock(t, Config{DataDir: dir}, nil)
	pushTenants(t, a, true, meter("t1"))
	if res, err := a.Open("t1", "audio", "kept", 0); err != nil || !res.Admitted {
		t.Fatal(res, err)
	}
	clk.advance(10 * time.Second)
	cutEntries(a)
	mustPersist(t, a) // the last persist, at 10 s
	persisted := clk.now()
	clk.advance(time.Second)
	lostAt := clk.now()
	if res, err := a.Open("t1", "audio", "lost", 0); err != nil || !res.Admitted {
		t.Fatal(res, err)
	}
	clk.advance(500 * time.Millisecond) // kill -9 at 11.5 s: "lost" was never persisted
	clk.advance(4 * time.Second)
	b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
	clk.advance(time.Second) // the reconcile at 16.5 s
	res, err := b.ReconcileScoped(ReconcileScope{}, []SessionSpec{
		{Tenant: "t1", Class: "audio", Session: "kept"},
		{Tenant: "t1", Class: "audio", Session: "lost", StartedAt: lostAt},
		{Tenant: "t1", Class: "audio", Session: "early", StartedAt: persisted.Add(-5 * time.Second)},
		{Tenant: "t1", Class: "audio", Session: "future", StartedAt: clk.now().Add(time.Hour)},
	})
	if err != nil || len(res.Opened) != 3 || len(res.Closed) != 0 {
		t.Fatalf("reconcile: %+v %v", res, err)
	}
	// kept 6.5 s since the persist, lost 5.5 s since its open, early 6.5 s
	// since the persist, future nothing.
	if micros, _ := shippedAfter(b); micros != 18_500_000 {
		t.Fatalf("after the reconcile %d µs, want 18,500,000 (6.5 + 5.5 + 6.5 + 0 s)", micros)
	}
	for id, want := range map[string]time.Duration{"lost": 5500 * time.Millisecond, "early": 6500 * time.Millisecond, "future": 0} {
		if d, err := b.Close(id); err != nil || d != want {
			t.Errorf("close %s: %v %v, want %v", id, d, err, want)
		}
	}
}

// TestReconcileStartBoundedByThePreviousOne: on a running agent a session
// the reconcile opens counts from its start, but not from before the same
// source's previous reconcile (which did not list it), nor from before the
// agent began.
func TestReconcileStartBoundedByThePreviousOne(t *testing.T) {
	a, clk := newTestAgent(t, Config{})
	pushTenants(t, a, true, meter("t1"))
	began := clk.now()
	clk.advance(10 * time.Second)
	if _, err := a.ReconcileScoped(ReconcileScope{}, []SessionSpec{
		{Tenant: "t1", Class: "audio", Session: "old", StartedAt: began.Add(-time.Hour)},
	}); err != nil {
		t.Fatal(err)
	}
	if micros, _ := shippedAfter(a); micros != 10_000_000 {
		t.Fatalf("a session begun before the agent: %d µs, want the 10 s since the agent began", micros)
	}
	clk.advance(5 * time.Second)
	if _, err := a.ReconcileScoped(ReconcileScope{}, []SessionSpec{
		{Tenant: "t1", Class: "audio", Session: "old"},
		{Tenant: "t1", Class: "audio", Session: "new", StartedAt: began.Add(2 * time.Second)},
		{Tenant: "t1", Class: "audio", Session: "plain"},
	}); err != nil {
		t.Fatal(err)
	}
	// old 5 s; new from the previous reconcile (10 s), 5 s; plain from now.
	if micros, _ := shippedAfter(a); micros != 10_000_000 {
		t.Fatalf("after the second reconcile %d µs, want 10,000,000", micros)
	}
	// A session listed under another tenant is closed and reopened there
	// from now, whatever its start: its time so far was counted.
	clk.advance(2 * time.Second)
	if _, err := a.ReconcileScoped(ReconcileScope{}, []SessionSpec{
		{Tenant: "t2", Class: "audio", Session: "old", StartedAt: began},
		{Tenant: "t1", Class: "audio", Session: "new"},
		{Tenant: "t1", Class: "audio", Session: "plain"},
	}); err != nil {
		t.Fatal(err)
	}
	clk.advance(time.Second)
	es, _ := cutEntries(a)
	e1, _ := entryOf(es, "t1", "audio")
	e2, _ := entryOf(es, "t2", "audio")
	if e1.SessionMicros != 2_000_000+2*3_000_000 || e2.SessionMicros != 1_000_000 {
		t.Fatalf("after the move: t1 %d µs, t2 %d µs; want 8,000,000 and 1,000,000", e1.SessionMicros, e2.SessionMicros)
	}
}
