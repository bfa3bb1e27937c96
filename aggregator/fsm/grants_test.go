package fsm

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"pgregory.net/rapid"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

const (
	testLease  = 10 * time.Second
	testMargin = 2 * time.Second
)

// ask applies one agent's GrantAsk at time at and returns its shares.
func (h *Harness) ask(at time.Time, agent string, wants ...wire.GrantWant) []wire.GrantShare {
	h.T.Helper()
	cmd := ItemsCmd(at.UnixNano(), "", &wire.GrantAsk{AgentID: agent, ReqID: 1, Wants: wants})
	cmd.Lease, cmd.Margin = int64(testLease), int64(testMargin)
	res := h.Apply(CmdAgentItems, cmd)
	if res.Err != nil || len(res.Items) != 1 || res.Items[0].Status != StatusApplied {
		h.T.Fatalf("grant ask: %+v", res)
	}
	return res.Items[0].Shares
}

func defaultPlan(t interface{ Fatalf(string, ...any) }, name string) plans.Plan {
	for _, p := range plans.Defaults() {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no default plan %q", name)
	return plans.Plan{}
}

// want asks for n of a pool, holding on to min(n, what the test says the
// agent holds) until the answer: hold is the agent's share, lowered to n.
func want(tenant, class string, n uint64, hold ...uint64) wire.GrantWant {
	w := wire.GrantWant{Tenant: tenant, Class: class, Want: n}
	if len(hold) > 0 {
		w.Hold = min(n, hold[0])
	}
	return w
}

func TestGrantRules(t *testing.T) {
	h := NewHarness(t)
	h.SetPlan(t0, "t", "starter") // strict, ceiling 100
	at := t0.Add(time.Second)
	type step struct {
		name  string
		after time.Duration // since t0+1s
		agent string
		want  uint64
		hold  uint64 // the agent's share, lowered to want
		grant uint64
		free  uint64
	}
	for _, s := range []step{
		{"first ask is granted", 0, "a", 30, 0, 30, 70},
		{"second agent gets what is free", 0, "b", 60, 0, 60, 10},
		{"an ask beyond the free part gets the free part", 0, "c", 50, 0, 10, 0},
		{"nothing free: the holder keeps its share", 0, "c", 20, 10, 10, 0},
		{"handing back is always granted", 0, "b", 20, 20, 20, 40},
		{"the freed part goes to the next ask", 0, "a", 100, 30, 70, 0},
		{"renewal with the same want keeps the share", 5 * time.Second, "b", 20, 20, 20, 0},
		{"a live share is never taken: a's lease runs to t+10s, c's too", 11 * time.Second, "b", 100, 20, 20, 0},
		// a and c asked at t+0; their leases end at t+10s, reclaimed
		// after t+12s. b renewed at t+5s and t+11s.
		{"expired shares are reclaimed only after the margin", 12*time.Second + time.Millisecond, "b", 100, 20, 100, 0},
		{"an agent asking for nothing drops its share", 13 * time.Second, "b", 0, 0, 0, 100},
	} {
		got := h.ask(at.Add(s.after), s.agent, want("t", "", s.want, s.hold))
		if len(got) != 1 || got[0].Grant != s.grant || got[0].Free != s.free || got[0].Tenant != "t" {
			t.Fatalf("%s: %s asks %d holding %d: got %+v, want grant %d free %d", s.name, s.agent, s.want, s.hold, got, s.grant, s.free)
		}
	}
	if g := h.Tenant("t").Grants; len(g) != 0 {
		t.Errorf("grants left after every share went back: %+v", g)
	}
}

func TestGrantNonStrictAndUnknown(t *testing.T) {
	h := NewHarness(t)
	h.SetPlan(t0, "soft", "payg")
	got := h.ask(t0, "a", want("soft", "", 10), want("nobody", "", 10), want("soft", "audio", 5))
	for _, g := range got {
		if g.Grant != 0 {
			t.Errorf("granted %+v for a pool that does not exist", g)
		}
	}
}

func TestGrantLoweredCeilingTakesNothing(t *testing.T) {
	h := NewHarness(t)
	h.SetPlan(t0, "t", "growth") // strict 1000
	h.ask(t0, "a", want("t", "", 600))
	h.ask(t0, "b", want("t", "", 300))
	h.SetPlan(t0.Add(time.Second), "t", "starter") // 100: below the 900 leased
	if g := h.ask(t0.Add(2*time.Second), "a", want("t", "", 700, 600)); g[0].Grant != 600 || g[0].Free != 0 {
		t.Errorf("after a lowered ceiling, a asks more: %+v, want its 600 kept and nothing more", g)
	}
	if g := h.ask(t0.Add(2*time.Second), "a", want("t", "", 50, 600)); g[0].Grant != 50 || g[0].Free != 0 {
		t.Errorf("a hands back to 50: %+v (b still holds 300 of 100)", g)
	}
	if g := h.ask(t0.Add(3*time.Second), "b", want("t", "", 40, 300)); g[0].Grant != 40 || g[0].Free != 10 {
		t.Errorf("b hands back to 40: %+v, want 10 free", g)
	}
	// Over the lowered ceiling an agent asking for more than it holds
	// keeps what it holds and gets only room: a holds 50, room is 60.
	if g := h.ask(t0.Add(4*time.Second), "a", want("t", "", 80, 50)); g[0].Grant != 60 || g[0].Free != 0 {
		t.Errorf("a asks 80 holding 50 with 60 of room: %+v", g)
	}
	// Holding less than its old share (it saw the lower ceiling and
	// stopped using the rest) it cannot grow back into it.
	h.SetPlan(t0.Add(5*time.Second), "t", "growth")
	h.ask(t0.Add(5*time.Second), "a", want("t", "", 900, 60))
	h.SetPlan(t0.Add(6*time.Second), "t", "starter")
	if g := h.ask(t0.Add(6*time.Second), "a", want("t", "", 70, 65)); g[0].Grant != 65 {
		t.Errorf("a (share 900 under growth, holding 65 at starter, b holds 40) asks 70: %+v, want 65", g)
	}
}

func TestGrantClassPools(t *testing.T) {
	h := NewHarness(t)
	p := defaultPlan(t, "starter")
	p.Name = "starter-ai"
	p.ClassCeilings = []plans.ClassLimit{{Class: "ai", Ceiling: 5}}
	if res := h.Apply(CmdPutPlan, &PutPlanCmd{Time: t0.UnixNano(), Plan: p.Normalized(), Create: true}); res.Err != nil {
		t.Fatal(res.Err)
	}
	h.SetPlan(t0, "t", "starter-ai")
	got := h.ask(t0, "a", want("t", "", 50), want("t", "ai", 8), want("t", "audio", 3))
	if got[0].Grant != 50 || got[1].Grant != 5 || got[1].Free != 0 || got[2].Grant != 0 {
		t.Errorf("pools: %+v; want total 50, ai 5 of 5, audio none (no class ceiling)", got)
	}
}

func TestRecallTargets(t *testing.T) {
	h := NewHarness(t)
	h.SetPlan(t0, "t", "starter")
	h.Items(t0, "", Full("b", 1, 1, wire.CountEntry{Tenant: "t", Class: "audio", Open: 10}), Full("c", 1, 1, wire.CountEntry{Tenant: "t", Class: "audio", Open: 30}))
	h.ask(t0, "b", want("t", "", 60)) // uses 10 of 60
	h.ask(t0, "c", want("t", "", 30)) // uses all 30
	wants := []wire.GrantWant{want("t", "", 20)}
	got := h.ask(t0, "a", wants...)
	if got[0].Grant != 10 || got[0].Free != 0 {
		t.Fatalf("a: %+v", got)
	}
	var targets map[string][]wire.GrantPool
	h.F.Read(func(view View) { s := view.s; targets = RecallTargets(View{s}, "a", wants, got, int64(testMargin)) })
	if len(targets) != 1 || len(targets["b"]) != 1 || targets["b"][0] != (wire.GrantPool{Tenant: "t"}) {
		t.Errorf("recall targets %v, want only b (c uses its whole share, a is the asker)", targets)
	}
}

// TestGrantProperties drives the FSM's grant rules with agents that follow
// the agent's side of the protocol (admit only within a live share; lower a
// share before asking for less, never below what it has open; count the
// lease from sending), under random interleavings of admissions, closes,
// asks, lost and late answers, partitions, agent deaths, leader clock skew
// within the margin and time passing. The live shares the agents hold never
// sum to more than the ceiling, nor do the sessions open across the fleet
// (until an agent's lease ends with sessions open: they run on uncovered,
// by design); and once everyone is gone and the leases over, the whole
// ceiling can be granted again.
func TestGrantProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ceiling := rapid.Uint64Range(1, 12).Draw(rt, "ceiling")
		n := rapid.IntRange(2, 4).Draw(rt, "agents")
		lease, margin := int64(testLease), int64(testMargin)
		f := NewFSM(plans.Defaults())
		var index uint64
		apply := func(kind CmdKind, body any) *ApplyResult {
			data, err := EncodeCmd(kind, body)
			if err != nil {
				rt.Fatal(err)
			}
			index++
			return f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(*ApplyResult)
		}
		p := defaultPlan(rt, "starter")
		p.Name, p.Ceiling = "prop", ceiling
		if res := apply(CmdPutPlan, &PutPlanCmd{Time: t0.UnixNano(), Plan: p, Create: true}); res.Err != nil {
			rt.Fatal(res.Err)
		}
		if res := apply(CmdSetPlan, &SetPlanCmd{Time: t0.UnixNano(), Tenant: "t", Plan: "prop"}); res.Err != nil {
			rt.Fatal(res.Err)
		}

		type reply struct {
			sent  int64
			share uint64
		}
		type agent struct {
			grant    uint64
			leaseEnd int64
			open     uint64
			asking   bool    // an ask is unanswered
			sent     int64   // when it was sent
			want     uint64  //
			inbox    []reply // answers on their way
			cut      bool    // partitioned: asks and answers are lost
		}
		now := t0.UnixNano()
		agents := make([]*agent, n)
		for i := range agents {
			agents[i] = &agent{}
		}
		id := func(i int) string { return string(rune('a' + i)) }
		// orphaned is set once an agent's lease ended while it had sessions
		// open: they run on (a lease never ends a call), uncovered, so from
		// then on only the shares are checked, not the sessions.
		orphaned := false
		check := func() {
			var open, shares uint64
			for _, a := range agents {
				open += a.open
				if now < a.leaseEnd {
					shares += a.grant
				} else if a.open > 0 {
					orphaned = true
				}
			}
			if shares > ceiling {
				rt.Fatalf("agents hold live shares of %d in all, ceiling %d", shares, ceiling)
			}
			if !orphaned && open > ceiling {
				rt.Fatalf("%d sessions open across the fleet, ceiling %d", open, ceiling)
			}
		}
		leaderApply := func(i int, want, hold uint64) uint64 {
			// The leader's clock, off by less than half the margin either
			// way (so two leaders differ by less than the margin).
			skew := rapid.SampledFrom([]int64{-margin/2 + 1, 0, margin/2 - 1}).Draw(rt, "skew")
			cmd := ItemsCmd(now+skew, "", &wire.GrantAsk{AgentID: id(i), Wants: []wire.GrantWant{{Tenant: "t", Want: want, Hold: hold}}})
			cmd.Lease, cmd.Margin = lease, margin
			res := apply(CmdAgentItems, cmd)
			return res.Items[0].Shares[0].Grant
		}
		actions := map[string]func(*rapid.T){
			"open": func(rt *rapid.T) {
				a := agents[rapid.IntRange(0, n-1).Draw(rt, "agent")]
				for k := rapid.IntRange(1, 8).Draw(rt, "sessions"); k > 0 && a.open < a.grant && now < a.leaseEnd; k-- {
					a.open++
				}
			},
			"close": func(rt *rapid.T) {
				a := agents[rapid.IntRange(0, n-1).Draw(rt, "agent")]
				if a.open > 0 {
					a.open--
				}
			},
			"ask": func(rt *rapid.T) {
				i := rapid.IntRange(0, n-1).Draw(rt, "agent")
				a := agents[i]
				if a.asking && now-a.sent < lease/2 {
					return // an ask unanswered for long is given up (the stream is reset)
				}
				a.inbox = nil
				w := a.open + rapid.Uint64Range(0, ceiling).Draw(rt, "extra")
				if w < a.grant {
					a.grant = w // stop using what is handed back before asking
				}
				a.asking, a.sent, a.want = true, now, w
				if a.cut {
					return // lost on the way
				}
				g := leaderApply(i, w, a.grant)
				if rapid.IntRange(0, 9).Draw(rt, "answer lost") > 0 {
					a.inbox = append(a.inbox, reply{sent: a.sent, share: g})
				}
			},
			"answer": func(rt *rapid.T) {
				a := agents[rapid.IntRange(0, n-1).Draw(rt, "agent")]
				if len(a.inbox) == 0 || a.cut {
					return
				}
				r := a.inbox[0]
				a.inbox = a.inbox[1:]
				a.grant, a.leaseEnd, a.asking = r.share, r.sent+lease, false
			},
			"stream reset": func(rt *rapid.T) {
				a := agents[rapid.IntRange(0, n-1).Draw(rt, "agent")]
				a.inbox, a.asking = nil, false
			},
			"partition": func(rt *rapid.T) {
				a := agents[rapid.IntRange(0, n-1).Draw(rt, "agent")]
				a.cut = !a.cut
				if a.cut {
					a.inbox, a.asking = nil, false
				}
			},
			"agent dies": func(rt *rapid.T) {
				i := rapid.IntRange(0, n-1).Draw(rt, "agent")
				agents[i] = &agent{cut: agents[i].cut} // its sessions end with it
			},
			"time passes": func(rt *rapid.T) {
				now += rapid.Int64Range(1, lease/4).Draw(rt, "ns")
			},
			"long pause": func(rt *rapid.T) {
				now += rapid.SampledFrom([]int64{lease - margin/2, lease, lease + margin, 2 * lease}).Draw(rt, "ns")
			},
		}
		names := []string{"open", "open", "open", "close", "close", "ask", "ask", "ask", "answer", "answer", "answer",
			"stream reset", "partition", "agent dies", "time passes", "time passes", "long pause"}
		for steps := 0; steps < 300; steps++ {
			actions[rapid.SampledFrom(names).Draw(rt, "action")](rt)
			check()
		}
		// Liveness: everyone closes and goes; after the leases and the
		// margin, one agent gets the whole ceiling.
		now += lease + 2*margin
		if g := leaderApply(0, ceiling, 0); g != ceiling {
			rt.Fatalf("after every lease ended, an ask for the whole ceiling %d got %d", ceiling, g)
		}
	})
}

// TestGrantMarginCoversSkew: a share granted by a leader whose clock runs
// behind is not given away by a later leader whose clock runs ahead, while
// the agent's own lease (counted from sending) still runs.
func TestGrantMarginCoversSkew(t *testing.T) {
	h := NewHarness(t)
	h.SetPlan(t0.Add(-time.Hour), "t", "starter")
	sent := t0
	behind := testMargin/2 - time.Millisecond
	h.ask(sent.Add(-behind), "a", want("t", "", 100)) // entry time: behind the agent's clock
	agentLeaseEnd := sent.Add(testLease)
	ahead := testMargin/2 - time.Millisecond
	last := agentLeaseEnd.Add(-time.Nanosecond) // the agent still admits
	if g := h.ask(last.Add(ahead), "b", want("t", "", 100)); g[0].Grant != 0 {
		t.Fatalf("b got %d of a's share while a's lease still runs (clocks %v apart, margin %v)", g[0].Grant, behind+ahead, testMargin)
	}
}
