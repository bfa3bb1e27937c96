package fsm

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// The bookings of strict pools: sessions that exist are on the books,
// whatever covers them (grants.go, "Bookings").

// strictPlan puts a strict plan of the given ceiling into the catalogue.
func (h *Harness) strictPlan(at time.Time, name string, ceiling uint64) {
	h.T.Helper()
	p := defaultPlan(h.T, "starter")
	p.Name, p.Ceiling = name, ceiling
	if res := h.Apply(CmdPutPlan, &PutPlanCmd{Time: at.UnixNano(), Plan: p.Normalized(), Create: true}); res.Err != nil {
		h.T.Fatal(res.Err)
	}
}

// pool returns the JSON view of one pool of tenant at at.
func (h *Harness) pool(at time.Time, tenant, pool string) GrantPoolJSON {
	h.T.Helper()
	var out []GrantPoolJSON
	h.F.Read(func(view View) {
		s := view.s
		out = GrantsJSONOf(View{s}, s.Tenants[tenant], at.UnixNano(), int64(testMargin))
	})
	for _, p := range out {
		if p.Pool == pool {
			return p
		}
	}
	h.T.Fatalf("tenant %s has no pool %q: %+v", tenant, pool, out)
	return GrantPoolJSON{}
}

// info is what agents are told of tenant.
func (h *Harness) info(tenant string) wire.TenantInfo {
	var info wire.TenantInfo
	h.F.Read(func(view View) { s := view.s; info, _ = TenantInfo(View{s}, s.Tenants[tenant]) })
	return info
}

func askOpen(tenant string, want, hold, open uint64) wire.GrantWant {
	return wire.GrantWant{Tenant: tenant, Want: want, Hold: hold, Open: open}
}

// TestBookingCountsSessionsWithoutShare: an agent restarted with its
// sessions (it holds no share) is booked for them from its batches, so the
// room it leaves is not granted to another agent — the restart case of
// the issue, at the level of the state machine.
func TestBookingCountsSessionsWithoutShare(t *testing.T) {
	h := NewHarness(t)
	h.strictPlan(t0, "ten", 10)
	h.SetPlan(t0, "t", "ten")
	at := t0.Add(time.Second)
	// a reports 8 open and has no share (an agent of the previous version
	// after a restart, before it asks: it asks with Hold 0 and no Open).
	h.Items(at, "", Full("a", 1, 1, wire.CountEntry{Tenant: "t", Class: "audio", Open: 8}))
	if g := h.ask(at, "b", want("t", "", 5)); g[0].Grant != 2 || g[0].Free != 0 {
		t.Errorf("b asks 5 beside a's 8 sessions under 10: %+v, want the 2 of room and nothing free", g)
	}
	p := h.pool(at, "t", "total")
	if p.Booked != 10 || p.Over != 0 || p.Leased != 2 || p.Free != 0 || p.Agents["b"] != 2 {
		t.Errorf("pool: %+v, want 10 booked (a's 8 sessions, b's share of 2), nothing over", p)
	}
	// a asks as an agent of the previous version does: its share comes
	// out of room only, which its sessions take.
	if g := h.ask(at, "a", want("t", "", 9)); g[0].Grant != 8 || g[0].Free != 0 || g[0].Over != 0 {
		t.Errorf("a, with 8 open and no share, asks 9: %+v, want 8", g)
	}
	// a's sessions end and it hands its share back: room comes back to b.
	h.Items(at.Add(time.Second), "", Batch("a", 1, 2, Closed("t", "audio", 8)))
	h.ask(at.Add(time.Second), "a", want("t", "", 0))
	if g := h.ask(at.Add(time.Second), "b", want("t", "", 5, 2)); g[0].Grant != 5 || g[0].Free != 5 {
		t.Errorf("b asks 5 after a's sessions ended: %+v", g)
	}
}

// TestBookingOpenBeyondRoom: a restarted agent that tells its open
// sessions in its ask is booked for them even beyond room; the pool stands
// over its ceiling, the answer and the tenant's state say by how much and
// why, and nothing more is granted until closes bring it back under.
func TestBookingOpenBeyondRoom(t *testing.T) {
	h := NewHarness(t)
	h.strictPlan(t0, "ten", 10)
	h.SetPlan(t0, "t", "ten")
	at := t0.Add(time.Second)
	h.Items(at, "", Full("b", 1, 1, wire.CountEntry{Tenant: "t", Class: "audio", Open: 6}))
	h.ask(at, "b", want("t", "", 6))
	// a has 7 open (restored after its restart), no share: booked 7.
	h.Items(at, "", Full("a", 1, 1, wire.CountEntry{Tenant: "t", Class: "audio", Open: 7}))
	g := h.ask(at, "a", askOpen("t", 8, 0, 7))
	if g[0].Grant != 7 || g[0].Free != 0 || g[0].Over != 3 {
		t.Fatalf("a asks with 7 open beside b's 6 under 10: %+v, want a share of 7 (its sessions), 3 over", g)
	}
	if info := h.info("t"); info.Over != 3 {
		t.Errorf("agents are told the pool is over by %d, want 3", info.Over)
	}
	p := h.pool(at, "t", "total")
	if p.Booked != 13 || p.Over != 3 || p.OverCause != OverRestart {
		t.Errorf("pool: %+v, want 13 booked, 3 over, cause restart", p)
	}
	if g := h.ask(at, "b", want("t", "", 8, 6)); g[0].Grant != 6 || g[0].Over != 3 {
		t.Errorf("b asks for more while over: %+v, want its 6 kept and nothing more", g)
	}
	// Paid down: a's sessions end down to 3 and it hands its share back
	// as they end; at 3 + 6 there is room for 1, and only 1.
	h.Items(at.Add(time.Second), "", Batch("a", 1, 2, Closed("t", "audio", 4)))
	if g := h.ask(at.Add(time.Second), "a", askOpen("t", 3, 3, 3)); g[0].Grant != 3 || g[0].Free != 1 || g[0].Over != 0 {
		t.Errorf("a back to 3 open: %+v, want a share of 3 with 1 free", g)
	}
	if info := h.info("t"); info.Over != 0 {
		t.Errorf("the pool is back under its ceiling but agents are told it is over by %d", info.Over)
	}
	if g := h.ask(at.Add(time.Second), "b", want("t", "", 9, 6)); g[0].Grant != 7 {
		t.Errorf("b asks 9 with 1 of room: %+v, want 7", g)
	}
}

// TestBookingLapsesWithSilence: an agent silent past its lease and margin
// books nothing (its room may go to others: the documented window); when
// it is heard from again its sessions are booked once more and the pool
// stands over its ceiling, put down to its return.
func TestBookingLapsesWithSilence(t *testing.T) {
	h := NewHarness(t)
	h.strictPlan(t0, "ten", 10)
	h.SetPlan(t0, "t", "ten")
	at := t0.Add(time.Second)
	h.Items(at, "", Full("a", 1, 1, wire.CountEntry{Tenant: "t", Class: "audio", Open: 8}))
	h.ask(at, "a", askOpen("t", 8, 0, 8))
	if g := h.ask(at.Add(testLease), "b", want("t", "", 10)); g[0].Grant != 2 {
		t.Fatalf("b asks within a's lease and margin: %+v, want only the 2 a leaves", g)
	}
	later := at.Add(testLease + testMargin + time.Millisecond)
	if g := h.ask(later, "b", want("t", "", 10, 2)); g[0].Grant != 10 {
		t.Fatalf("b asks after a fell silent past its lease and margin: %+v, want the whole ceiling", g)
	}
	// a comes back: a batch of its (nothing changed) books its 8 again.
	h.Items(later.Add(time.Second), "", Batch("a", 1, 2, wire.DeltaEntry{Tenant: "t", Class: "audio", SessionMicros: 1}))
	p := h.pool(later.Add(time.Second), "t", "total")
	if p.Booked != 18 || p.Over != 8 || p.OverCause != OverReturned {
		t.Errorf("after a's return: %+v, want 18 booked (b's 10, a's 8), 8 over, cause returned", p)
	}
	if info := h.info("t"); info.Over != 8 {
		t.Errorf("agents are told over %d, want 8", info.Over)
	}
}

// TestBookingOverLowered: a ceiling lowered below what is booked puts the
// pool over, cause lowered; raising it again ends that.
func TestBookingOverLowered(t *testing.T) {
	h := NewHarness(t)
	h.strictPlan(t0, "forty", 40)
	h.strictPlan(t0, "ten", 10)
	h.SetPlan(t0, "t", "forty")
	at := t0.Add(time.Second)
	h.Items(at, "", Full("a", 1, 1, wire.CountEntry{Tenant: "t", Class: "audio", Open: 15}), Full("b", 1, 1, wire.CountEntry{Tenant: "t", Class: "video-hd", Open: 15}))
	h.ask(at, "a", askOpen("t", 16, 0, 15))
	h.ask(at, "b", askOpen("t", 16, 0, 15))
	h.SetPlan(at.Add(time.Second), "t", "ten")
	p := h.pool(at.Add(time.Second), "t", "total")
	if p.Booked != 32 || p.Over != 22 || p.OverCause != OverLowered {
		t.Errorf("after the downgrade: %+v, want 32 booked, 22 over, cause lowered", p)
	}
	h.SetPlan(at.Add(2*time.Second), "t", "forty")
	if p := h.pool(at.Add(2*time.Second), "t", "total"); p.Over != 0 || p.OverCause != "" || p.Free != 8 {
		t.Errorf("back on forty: %+v, want 8 free and nothing over", p)
	}
	if tn := h.Tenant("t"); tn.Over != nil {
		t.Errorf("over records left after the pool came back under: %+v", tn.Over)
	}
}

// TestAdmittedOverCounted: sessions an agent admits (not reconciles) into a
// pool that stands over its ceiling are counted.
func TestAdmittedOverCounted(t *testing.T) {
	h := NewHarness(t)
	h.strictPlan(t0, "ten", 10)
	h.SetPlan(t0, "t", "ten")
	at := t0.Add(time.Second)
	h.Items(at, "", Full("a", 1, 1, wire.CountEntry{Tenant: "t", Class: "audio", Open: 12}))
	h.ask(at, "a", askOpen("t", 12, 0, 12))
	if tn := h.Tenant("t"); tn.Over[""] == nil {
		t.Fatalf("12 booked under 10, not recorded as over: %+v", tn.Over)
	}
	// 3 opened: 2 from a reconcile, 1 admitted.
	h.Items(at, "", Batch("a", 1, 2, wire.DeltaEntry{Tenant: "t", Class: "audio", Opened: 3, Reconciled: 2, Peak: 15}))
	if tn := h.Tenant("t"); tn.AdmittedOver != 1 {
		t.Errorf("admitted over the ceiling: %d, want 1", tn.AdmittedOver)
	}
	// Under the ceiling admissions are not counted.
	h.Items(at, "", Batch("a", 1, 3, Closed("t", "audio", 10)))
	h.ask(at, "a", askOpen("t", 5, 5, 5))
	h.Items(at, "", Batch("a", 1, 4, Open("t", "audio", 1)))
	if tn := h.Tenant("t"); tn.AdmittedOver != 1 || tn.Over != nil {
		t.Errorf("after the pool came back under: admitted over %d (want still 1), over %+v", tn.AdmittedOver, tn.Over)
	}
}

// TestBookingClassPool: a class pool books the agent's sessions of that
// class only.
func TestBookingClassPool(t *testing.T) {
	h := NewHarness(t)
	p := defaultPlan(t, "starter")
	p.Name = "starter-ai"
	p.ClassCeilings = []plans.ClassLimit{{Class: "ai", Ceiling: 5}}
	if res := h.Apply(CmdPutPlan, &PutPlanCmd{Time: t0.UnixNano(), Plan: p.Normalized(), Create: true}); res.Err != nil {
		t.Fatal(res.Err)
	}
	h.SetPlan(t0, "t", "starter-ai")
	at := t0.Add(time.Second)
	h.Items(at, "", Full("a", 1, 1, wire.CountEntry{Tenant: "t", Class: "ai", Open: 4}, wire.CountEntry{Tenant: "t", Class: "audio", Open: 20}))
	got := h.ask(at, "b", want("t", "", 90), want("t", "ai", 5))
	if got[0].Grant != 76 || got[1].Grant != 1 {
		t.Errorf("b beside a's 24 sessions (4 of them ai): %+v, want 76 of the total and 1 of ai", got)
	}
	if info := h.info("t"); info.Over != 0 || len(info.ClassLimits) != 1 || info.ClassLimits[0].Over != 0 {
		t.Errorf("nothing is over, but agents are told %+v", info)
	}
}

// TestBookingSurvivesSnapshot: the index of agents a pool books is rebuilt
// from a snapshot, so a restored server books as the one it came from.
func TestBookingSurvivesSnapshot(t *testing.T) {
	h := NewHarness(t)
	h.strictPlan(t0, "ten", 10)
	h.SetPlan(t0, "t", "ten")
	at := t0.Add(time.Second)
	h.Items(at, "", Full("a", 1, 1, wire.CountEntry{Tenant: "t", Class: "audio", Open: 8}))
	g := restoredCopy(t, h.F)
	h2 := &Harness{T: t, F: g, Index: h.Index}
	if got := h2.ask(at, "b", want("t", "", 10)); got[0].Grant != 2 {
		t.Errorf("after a restore, b asks 10 beside a's 8 sessions: %+v, want 2", got)
	}
}

// restoredCopy is a new state machine restored from a snapshot of f.
func restoredCopy(t *testing.T, f *FSM) *FSM {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink MemSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestBookingOverOnMoveToStrict: sessions open when a tenant moves to a
// strict plan whose ceiling is below them put its pool over, cause
// lowered (not a restart: no agent did anything).
func TestBookingOverOnMoveToStrict(t *testing.T) {
	h := NewHarness(t)
	h.strictPlan(t0, "one", 1)
	h.SetPlan(t0, "t", "payg")
	at := t0.Add(time.Second)
	h.Items(at, "", Full("a", 1, 1, wire.CountEntry{Tenant: "t", Class: "audio", Open: 3}))
	h.SetPlan(at.Add(time.Second), "t", "one")
	if p := h.pool(at.Add(time.Second), "t", "total"); p.Over != 2 || p.OverCause != OverLowered {
		t.Errorf("moved to a strict plan of 1 with 3 open: %+v, want 2 over, cause lowered", p)
	}
}
