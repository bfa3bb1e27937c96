package agent

import (
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/wire"
)

func strict(tenant string, ceiling, conc uint64, limits ...wire.ClassLimit) wire.TenantInfo {
	return wire.TenantInfo{Tenant: tenant, Plan: "p", Ceiling: ceiling, Mode: "strict", Concurrency: conc, ClassLimits: limits}
}

// grantLocally answers an ask sent at agent time sent as the leader would,
// without a stream.
func grantLocally(t testing.TB, a *Agent, tenant, class string, share uint64, sent time.Duration) {
	t.Helper()
	a.mu.Lock()
	te := a.tab.tenants[tenant]
	p := &te.g.pools[poolIndex(class)]
	p.grant, p.leaseEnd = share, int64(sent)+int64(a.lease)
	a.mu.Unlock()
}

// TestStrictAdmission: within a live share sessions are admitted; at the
// share, a fleet at its ceiling refuses with ceiling; once the lease ends
// with no stream, cluster-unreachable; per-class pools refuse with
// class-ceiling.
func TestStrictAdmission(t *testing.T) {
	a, clk := newTestAgent(t, Config{})
	pushTenants(t, a, true, strict("t", 10, 0, wire.ClassLimit{Class: "ai", Ceiling: 1}))
	grantLocally(t, a, "t", "", 3, 0)
	grantLocally(t, a, "t", "ai", 1, 0)
	for i := 0; i < 3; i++ {
		if res, _ := a.Open("t", "audio", "s"+itoa(i), 0); !res.Admitted {
			t.Fatalf("open %d within the share: %+v", i, res)
		}
	}
	// The share is used up; the fleet is at 3 of 10: no stream, lease live.
	if res, _ := a.Open("t", "audio", "s3", 0); res.Reason != ReasonGrantTimeout || res.RetryAfter != time.Second {
		t.Fatalf("beyond the share, no stream: %+v", res)
	}
	// The fleet reports the ceiling reached: ceiling, fleet-wide.
	pushTenants(t, a, false, strict("t", 10, 10, wire.ClassLimit{Class: "ai", Ceiling: 1}))
	if res, _ := a.Open("t", "audio", "s3", 0); res.Reason != ReasonCeiling {
		t.Fatalf("at the fleet's ceiling: %+v", res)
	}
	if _, err := a.Close("s0"); err != nil {
		t.Fatal(err)
	}
	// One ai session fits the class pool; a second meets the class ceiling.
	if res, _ := a.Open("t", "ai", "ai1", 0); !res.Admitted {
		t.Fatalf("ai within its class share: %+v", res)
	}
	pushTenants(t, a, false, strict("t", 10, 3, wire.ClassLimit{Class: "ai", Ceiling: 1, Concurrency: 1}))
	if _, err := a.Close("s1"); err != nil {
		t.Fatal(err)
	}
	if res, _ := a.Open("t", "ai", "ai2", 0); res.Reason != ReasonClassCeiling {
		t.Fatalf("second ai: %+v", res)
	}
	// The lease ends: nothing is admitted, even within the share.
	clk.advance(a.lease)
	if res, _ := a.Open("t", "audio", "late", 0); res.Reason != ReasonClusterUnreachable {
		t.Fatalf("after the lease: %+v", res)
	}
	a.mu.Lock()
	es, _ := a.tab.cut(a.now())
	a.mu.Unlock()
	if e, _ := entryOf(es, "t", "audio"); e.Refused != 3 {
		t.Errorf("audio refusals counted: %+v", e)
	}
}

// recvAsk reads messages until a GrantAsk.
func (fc *fakeConn) recvAsk() *wire.GrantAsk {
	fc.t.Helper()
	for {
		if g, ok := fc.recv().(*wire.GrantAsk); ok {
			return g
		}
	}
}

// TestGrantStream: over a stream, an admission beyond the share waits for
// the top-up it asks for; a Grant answers it; a short answer ends in
// grant-timeout; a Recall hands the unused part back; an upgrade lets a
// waiting admission through.
func TestGrantStream(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}, TopUpWait: 5 * time.Second})
	startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{NeedFullState: false})
	fc.send(&wire.TenantState{Full: true, Tenants: []wire.TenantInfo{strict("t", 32, 0)}})
	waitFor(t, "tenant state", func() bool { return a.Status().TenantsKnown == 1 })

	opened := make(chan OpenResult, 1)
	go func() { res, _ := a.Open("t", "audio", "s0", 0); opened <- res }()
	ask := fc.recvAsk()
	if ask.AgentID != a.ID() || len(ask.Wants) != 1 || ask.Wants[0].Tenant != "t" || ask.Wants[0].Class != "" || ask.Wants[0].Want < 1 {
		t.Fatalf("first ask %+v", ask)
	}
	fc.send(&wire.Grant{ReqID: ask.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 1, Free: 31}}})
	if res := <-opened; !res.Admitted {
		t.Fatalf("admission waiting for its share: %+v", res)
	}
	// The share is used up: the next admission asks again; a short
	// answer (nothing free) leaves it waiting until TopUpWait.
	go func() { res, _ := a.Open("t", "audio", "s1", 0); opened <- res }()
	ask = fc.recvAsk()
	if w := ask.Wants[0].Want; w < 2 {
		t.Fatalf("top-up asks for %d, want at least 2 (1 open + 1 waiting)", w)
	}
	fc.send(&wire.Grant{ReqID: ask.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 1}}})
	// An upgrade arrives: the waiting admission asks again and gets it.
	ask = fc.recvAsk()
	fc.send(&wire.TenantState{Tenants: []wire.TenantInfo{strict("t", 64, 1)}})
	fc.send(&wire.Grant{ReqID: ask.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 6, Free: 58}}})
	if res := <-opened; !res.Admitted {
		t.Fatalf("admission after the top-up: %+v", res)
	}
	// A Recall hands back all but what is open.
	fc.send(&wire.Recall{Pools: []wire.GrantPool{{Tenant: "t"}}})
	for {
		ask = fc.recvAsk()
		if ask.Wants[0].Want == 2 {
			break
		}
		fc.send(&wire.Grant{ReqID: ask.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: ask.Wants[0].Want}}})
	}
	a.mu.Lock()
	held := a.tab.tenants["t"].g.pools[totalPool].grant
	a.mu.Unlock()
	if held != 2 {
		t.Fatalf("after a recall the agent holds %d before the answer, want the 2 it uses", held)
	}
	if st := a.Status().Grants; st.Answered < 3 || st.Asks != st.Answered+1 || !st.Pending || st.RoundTripMaxMs <= 0 {
		t.Errorf("grant status %+v: want 3 or more answered, the last ask pending, round trips measured", st)
	}
}

// TestGrantTimeout: no answer within TopUpWait refuses with grant-timeout.
func TestGrantTimeout(t *testing.T) {
	srv := newFakeServer(t)
	a := shipAgent(t, Config{Servers: []string{srv.addr()}, TopUpWait: 20 * time.Millisecond})
	startAgent(t, a)
	fc := srv.accept()
	fc.send(&wire.Welcome{})
	fc.send(&wire.TenantState{Full: true, Tenants: []wire.TenantInfo{strict("t", 32, 0)}})
	waitFor(t, "tenant state", func() bool { return a.Status().TenantsKnown == 1 })
	res, _ := a.Open("t", "audio", "s0", 0)
	if res.Admitted || res.Reason != ReasonGrantTimeout || res.RetryAfter != time.Second {
		t.Fatalf("no answer: %+v", res)
	}
}

// TestLoweredCeilingHandsBack: a lowered ceiling stops the unused part of
// the share at once, so a downgrade is enforced without waiting for a
// renewal.
func TestLoweredCeilingHandsBack(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, strict("t", 1000, 0))
	grantLocally(t, a, "t", "", 300, 0)
	for i := 0; i < 5; i++ {
		if res, _ := a.Open("t", "audio", "s"+itoa(i), 0); !res.Admitted {
			t.Fatalf("open %d: %+v", i, res)
		}
	}
	pushTenants(t, a, false, strict("t", 100, 5))
	if res, _ := a.Open("t", "audio", "over", 0); res.Admitted {
		t.Fatalf("admitted within a share kept from the higher ceiling: %+v", res)
	}
	a.mu.Lock()
	ask := a.askLocked(a.now())
	a.mu.Unlock()
	if ask == nil || len(ask.Wants) != 1 || ask.Wants[0].Want != 5 {
		t.Fatalf("hand-back ask %+v, want the 5 in use", ask)
	}
	// The leader keeps the 5 (nothing free: the fleet is over the new
	// ceiling). A session closes: its share is not used again.
	a.onGrant(&wire.Grant{ReqID: ask.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 5}}})
	if _, err := a.Close("s0"); err != nil {
		t.Fatal(err)
	}
	if res, _ := a.Open("t", "audio", "again", 0); res.Admitted {
		t.Fatalf("a closed session's share used again while the fleet may be over the lowered ceiling: %+v", res)
	}
	// Once the leader reports room, the pool is normal again.
	a.mu.Lock()
	ask = a.askLocked(a.now())
	a.mu.Unlock()
	a.onGrant(&wire.Grant{ReqID: ask.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 10, Free: 3}}})
	if res, _ := a.Open("t", "audio", "again", 0); !res.Admitted {
		t.Fatalf("with room again: %+v", res)
	}
}

// TestShareGrantedUnderAnotherCeiling: the leader tells the ceiling it
// granted under. A share granted under a ceiling higher than the agent
// knows is not used beyond what is open; one granted under a lower ceiling
// than an earlier part of the share makes the pool hand back as it closes.
func TestShareGrantedUnderAnotherCeiling(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, strict("t", 100, 0))
	ask := func() *wire.GrantAsk {
		a.mu.Lock()
		defer a.mu.Unlock()
		p := &a.tab.tenants["t"].g.pools[totalPool]
		p.dryUntil, p.recall = 0, true // ask now, whatever the pool's state
		return a.askLocked(a.now())
	}
	// The leader granted under 1000 (it moved to growth; the push has not
	// come): nothing beyond what is open.
	g := ask()
	a.onGrant(&wire.Grant{ReqID: g.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 60, Free: 900, Ceiling: 1000}}})
	if res, _ := a.Open("t", "audio", "x", 0); res.Admitted {
		t.Fatalf("used a share granted under a ceiling the agent does not know: %+v", res)
	}
	// Under the ceiling it knows, with room: normal.
	g = ask()
	a.onGrant(&wire.Grant{ReqID: g.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 10, Free: 90, Ceiling: 100}}})
	for i := 0; i < 10; i++ {
		if res, _ := a.Open("t", "audio", "s"+itoa(i), 0); !res.Admitted {
			t.Fatalf("open %d within a share with room: %+v", i, res)
		}
	}
	// Growth is pushed and the share grows under it; then the leader
	// answers under 100 again before the agent hears of the downgrade.
	pushTenants(t, a, false, strict("t", 1000, 10))
	g = ask()
	a.onGrant(&wire.Grant{ReqID: g.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 80, Free: 800, Ceiling: 1000}}})
	g = ask()
	a.onGrant(&wire.Grant{ReqID: g.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 80, Ceiling: 100}}})
	if _, err := a.Close("s0"); err != nil {
		t.Fatal(err)
	}
	if res, _ := a.Open("t", "audio", "y", 0); res.Admitted {
		t.Fatalf("reused a share taken under a ceiling since lowered: %+v", res)
	}
}

// TestStepShrinksNearTheCeiling: with little free in the pool an agent
// asks for what it needs, not a sixteenth of the ceiling, so agents near
// the ceiling hold no unused shares to pass back and forth.
func TestStepShrinksNearTheCeiling(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, strict("t", 160, 0))
	a.mu.Lock()
	p := &a.tab.tenants["t"].g.pools[totalPool]
	full := p.step()
	p.free, p.answered = 4, true
	near := p.step()
	p.free = 0
	none := p.step()
	a.mu.Unlock()
	if full != 10 || near != 2 || none != 0 {
		t.Fatalf("steps: %d with the pool unknown, %d with 4 free, %d with none; want 10, 2, 0", full, near, none)
	}
}

// TestAskKeepsCountOfUnwrittenBatch: the writer sends a GrantAsk before
// batches still being persisted, so the leader may apply the ask first. An
// ask therefore never hands back below the pool's open count at the cut of
// a batch not yet written: the leader would book that batch's sessions
// beyond the share handed back, and count the pool over its ceiling (and
// the next admissions as admitted over it) when the fleet never was.
func TestAskKeepsCountOfUnwrittenBatch(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, strict("t", 100, 0))
	grantLocally(t, a, "t", "", 50, 0)
	for i := 0; i < 40; i++ {
		if res, _ := a.Open("t", "audio", "s"+itoa(i), 0); !res.Admitted {
			t.Fatalf("open %d: %+v", i, res)
		}
	}
	cutNow(a) // books 40 at the leader once applied; not written yet
	for i := 0; i < 30; i++ {
		if _, err := a.Close("s" + itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	ask := func() wire.GrantWant {
		t.Helper()
		a.mu.Lock()
		defer a.mu.Unlock()
		a.tab.tenants["t"].g.pools[totalPool].recall = true // hand back what is unused
		m := a.askLocked(a.now())
		if m == nil || len(m.Wants) != 1 {
			t.Fatalf("ask %+v", m)
		}
		a.ask = nil
		return m.Wants[0]
	}
	if w := ask(); w.Want < 40 || w.Hold < 40 || w.Open != 10 {
		t.Fatalf("ask before the batch with 40 open is written: %+v, want 40 kept, 10 open", w)
	}
	// Once the stream has written that batch, the share goes back to what
	// is open.
	a.mu.Lock()
	a.stream = &stream{sentUpTo: a.nextSeq - 1}
	a.mu.Unlock()
	defer func() { a.mu.Lock(); a.stream = nil; a.mu.Unlock() }()
	if w := ask(); w.Want != 10 || w.Open != 10 {
		t.Fatalf("ask after the batch is written: %+v, want 10", w)
	}
}
