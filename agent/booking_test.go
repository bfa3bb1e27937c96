package agent

import (
	"testing"

	"github.com/headroom-rtc/headroom/wire"
)

// The agent's side of bookings: sessions that exist are told to the leader
// (GrantWant.Open), and a pool over its ceiling (GrantShare.Over,
// TenantInfo.Over) is paid down like one under a lowered ceiling.

// askNow builds an ask of the pool now, handing back what is not in use.
func askNow(t *testing.T, a *Agent, tenant string) *wire.GrantAsk {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	p := &a.tab.tenants[tenant].g.pools[totalPool]
	p.dryUntil, p.recall = 0, true
	return a.askLocked(a.now())
}

// nextAsk builds the next ask the agent would send now, if any.
func nextAsk(a *Agent) *wire.GrantAsk {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.askLocked(a.now())
}

// TestRestartedAgentTellsItsSessions: an agent restarted on its data
// directory with sessions open holds no share, and its ask says how many
// sessions it has open, so that the leader books them.
func TestRestartedAgentTellsItsSessions(t *testing.T) {
	dir := t.TempDir()
	a, clk := newTestAgent(t, Config{DataDir: dir})
	pushTenants(t, a, true, strict("t", 10, 0))
	grantLocally(t, a, "t", "", 8, 0)
	for i := 0; i < 8; i++ {
		if res, _ := a.Open("t", "audio", "s"+itoa(i), 0); !res.Admitted {
			t.Fatalf("open %d: %+v", i, res)
		}
	}
	if err := a.persist(); err != nil {
		t.Fatal(err)
	}
	// Restart: a new process on the same directory.
	b, _ := newTestAgentClock(t, Config{DataDir: dir}, clk)
	pushTenants(t, b, true, strict("t", 10, 8))
	if res, _ := b.Open("t", "audio", "new", 0); res.Admitted {
		t.Fatalf("a restarted agent without a share admitted: %+v", res)
	}
	ask := nextAsk(b)
	if ask == nil || len(ask.Wants) != 1 || ask.Wants[0].Open != 8 || ask.Wants[0].Hold != 0 {
		t.Fatalf("first ask after the restart: %+v, want Open 8 and Hold 0", ask)
	}
}

// TestOverInAnswerTightens: an answer saying the pool is over its ceiling
// makes the agent use nothing unused and hand back the share of every
// session that ends, until an answer reports room.
func TestOverInAnswerTightens(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, strict("t", 10, 0))
	grantLocally(t, a, "t", "", 4, 0)
	for i := 0; i < 3; i++ {
		if res, _ := a.Open("t", "audio", "s"+itoa(i), 0); !res.Admitted {
			t.Fatalf("open %d: %+v", i, res)
		}
	}
	ask := askNow(t, a, "t")
	if ask == nil || ask.Wants[0].Open != 3 {
		t.Fatalf("ask %+v, want Open 3", ask)
	}
	// The leader booked another agent's restored sessions: over by 5.
	a.onGrant(&wire.Grant{ReqID: ask.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 4, Ceiling: 10, Over: 5}}})
	if res, _ := a.Open("t", "audio", "x", 0); res.Admitted {
		t.Fatalf("admitted into the unused part of a share while the pool is over: %+v", res)
	}
	if _, err := a.Close("s0"); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	p := a.tab.tenants["t"].g.pools[totalPool]
	a.mu.Unlock()
	if p.grant != 2 || !p.recall || !p.tight {
		t.Fatalf("after a close in a pool over its ceiling: grant %d recall %v tight %v, want 2 handed back at once", p.grant, p.recall, p.tight)
	}
	if res, _ := a.Open("t", "audio", "x", 0); res.Admitted {
		t.Fatalf("a closed session's share used again while the pool is over: %+v", res)
	}
	ask = askNow(t, a, "t")
	if ask.Wants[0].Want != 2 || ask.Wants[0].Hold != 2 {
		t.Fatalf("hand-back ask %+v, want 2", ask)
	}
	a.onGrant(&wire.Grant{ReqID: ask.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 3, Free: 1, Ceiling: 10}}})
	if res, _ := a.Open("t", "audio", "x", 0); !res.Admitted {
		t.Fatalf("with room again: %+v", res)
	}
}

// TestOverInTenantStateTightens: a push saying the pool is over its
// ceiling stops the unused part of the share at once (the agent need not
// ask first), and an answer to an ask sent before it cannot raise the
// share again.
func TestOverInTenantStateTightens(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, strict("t", 10, 0))
	grantLocally(t, a, "t", "", 6, 0)
	for i := 0; i < 2; i++ {
		if res, _ := a.Open("t", "audio", "s"+itoa(i), 0); !res.Admitted {
			t.Fatalf("open %d: %+v", i, res)
		}
	}
	early := askNow(t, a, "t")
	over := strict("t", 10, 14)
	over.Over = 4
	pushTenants(t, a, false, over)
	if res, _ := a.Open("t", "audio", "x", 0); res.Admitted {
		t.Fatalf("admitted with the pool over its ceiling: %+v", res)
	}
	// The answer to the ask sent before the push says there was room.
	a.onGrant(&wire.Grant{ReqID: early.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 6, Free: 2, Ceiling: 10}}})
	if res, _ := a.Open("t", "audio", "x", 0); res.Admitted {
		t.Fatalf("an answer older than the push raised the share again: %+v", res)
	}
}

// TestBookingRenewedWithoutShare: an agent holding sessions of a strict
// pool but no share still renews their booking every third of a lease.
func TestBookingRenewedWithoutShare(t *testing.T) {
	a, clk := newTestAgent(t, Config{})
	pushTenants(t, a, true, strict("t", 10, 10))
	if _, _, err := a.Reconcile([]SessionSpec{{Tenant: "t", Class: "audio", Session: "r1"}, {Tenant: "t", Class: "audio", Session: "r2"}}); err != nil {
		t.Fatal(err)
	}
	over := strict("t", 10, 12)
	over.Over = 2 // nothing is asked for beyond what is open
	pushTenants(t, a, false, over)
	ask := nextAsk(a)
	if ask == nil || ask.Wants[0].Open != 2 || ask.Wants[0].Want != 2 {
		t.Fatalf("ask with 2 open and no share: %+v", ask)
	}
	a.onGrant(&wire.Grant{ReqID: ask.ReqID, LeaseMillis: 10_000, Shares: []wire.GrantShare{{Tenant: "t", Grant: 0, Ceiling: 10, Over: 2}}})
	if g := nextAsk(a); g != nil {
		t.Fatalf("asked again at once: %+v", g)
	}
	clk.advance(a.lease / 2)
	if g := nextAsk(a); g == nil || g.Wants[0].Open != 2 {
		t.Fatalf("no renewal of the booking half a lease later: %+v", g)
	}
}

// TestReconcileReportsOverCeiling: a reconcile opens every session the
// media server has, strict or not, and says how many stand over the
// tenant's ceiling; they count as reconciled, not admitted.
func TestReconcileReportsOverCeiling(t *testing.T) {
	a, _ := newTestAgent(t, Config{})
	pushTenants(t, a, true, strict("t", 3, 2), soft("u", 10, 0))
	var list []SessionSpec
	for i := 0; i < 4; i++ {
		list = append(list, SessionSpec{Tenant: "t", Class: "audio", Session: "t" + itoa(i)})
	}
	list = append(list, SessionSpec{Tenant: "u", Class: "audio", Session: "u0"})
	res, err := a.ReconcileScoped(ReconcileScope{}, list)
	if err != nil {
		t.Fatal(err)
	}
	// t: 2 elsewhere + 4 here = 6 under a ceiling of 3: 3 over.
	if len(res.Opened) != 5 || res.OverCeiling != 3 {
		t.Fatalf("reconcile: %+v, want 5 opened, 3 over the ceiling", res)
	}
	a.mu.Lock()
	es, _ := a.tab.cut(a.now())
	a.mu.Unlock()
	if e, _ := entryOf(es, "t", "audio"); e.Opened != 4 || e.Reconciled != 4 {
		t.Errorf("t's entry %+v, want 4 opened, all reconciled", e)
	}
}
