package fsm

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
	"pgregory.net/rapid"

	"github.com/headroom-rtc/headroom/wire"
)

// TestStrictCeilingThroughCrashesProperty drives the real state machine with
// three agents that follow the agent's side of the protocol
// (agent/grants.go: admit only within a live share and while the pool is not
// tight, lower a share before asking for less, tell the open count in every
// ask, treat TenantInfo.Over and GrantShare.Over like a lowered ceiling,
// hand back the share of every session that ends in a tight pool), under
// random interleavings of admissions, closes, batches, asks, lost and late
// answers, pushes, partitions, agent restarts with and without lost
// persists, reconciles, whole-host crashes, expiries, leases lapsing and
// ceiling changes. Each agent's media server keeps its own truth.
//
// The property: no agent admits a session while the sessions really open
// across the fleet stand at or above the ceiling — except inside the
// documented window: while some agent's existing sessions are not booked by
// the leader (an agent silent past its lease and margin, sessions lost with
// a crash's last flush interval or reconciled and not yet reported), and
// afterwards until the admitting agent has heard from the leader (a push or
// an answer made after the window closed, or after a ceiling change).
func TestStrictCeilingThroughCrashesProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ceiling := rapid.SampledFrom([]uint64{1, 2, 3, 5, 8}).Draw(rt, "ceiling")
		lease, margin := int64(testLease), int64(testMargin)
		f := NewFSM(nil)
		var index uint64
		apply := func(kind CmdKind, body any) *ApplyResult {
			data, err := EncodeCmd(kind, body)
			if err != nil {
				rt.Fatal(err)
			}
			index++
			return f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(*ApplyResult)
		}
		now := t0.UnixNano()
		p := defaultPlan(rt, "starter")
		p.Name, p.Ceiling = "prop", ceiling
		if res := apply(CmdPutPlan, &PutPlanCmd{Time: now, Plan: p.Normalized(), Create: true}); res.Err != nil {
			rt.Fatal(res.Err)
		}
		if res := apply(CmdSetPlan, &SetPlanCmd{Time: now, Tenant: "t", Plan: "prop"}); res.Err != nil {
			rt.Fatal(res.Err)
		}

		type answer struct {
			id    uint64
			sent  int64
			share wire.GrantShare
			made  int // step at which the leader answered
		}
		type agent struct {
			id              string
			epoch, seq      uint64
			open, media     uint64 // the agent's table, its media server's truth
			reported        uint64 // what the leader's counts of the agent hold
			opened, closedN uint64 // since the last batch
			recon           uint64 // of opened, reconciled
			needFull        bool
			grant           uint64
			leaseEnd        int64
			tight           bool
			lowered, under  uint64
			ceiling         uint64 // the ceiling it knows
			known           bool
			askSeq          uint64
			asking          bool
			askID           uint64
			askSent         int64
			inbox           []answer
			cut             bool
			heard           int // latest step a push or answer it read was made at
			// What the leader was told, independent of how the state
			// machine books it: when (by the test's clock) the agent's
			// last message was applied, the share of its last answer and
			// until when it surely lives (the leaders' clocks may be up to
			// half the margin off either way, so: the lease from sending).
			lastApplied int64
			share       uint64
			shareUntil  int64
			askOpen     uint64 // the Open of its last ask applied
			expired     bool   // its counts left the figures
		}
		agents := make([]*agent, 3)
		for i := range agents {
			agents[i] = &agent{id: fmt.Sprintf("a%d", i), epoch: 1, heard: -1}
		}
		step := 0
		mark := 0 // agents must have heard since this step to be held to the property
		uncovered := false
		sessions := func() (m uint64) {
			for _, a := range agents {
				m += a.media
			}
			return m
		}
		skewed := func() int64 {
			return now + rapid.SampledFrom([]int64{-margin/2 + 1, 0, margin/2 - 1}).Draw(rt, "skew")
		}
		items := func(a *agent, m wire.Message) ItemResult {
			kind := ItemDelta
			switch m.(type) {
			case *wire.FullState:
				kind = ItemFull
			case *wire.GrantAsk:
				kind = ItemGrant
			}
			cmd := &AgentItemsCmd{Time: skewed(), Items: []AgentItem{{Kind: kind, Body: wire.Append(nil, m)}}, Lease: lease, Margin: margin}
			r := apply(CmdAgentItems, cmd).Items[0]
			if r.Status == StatusApplied {
				a.lastApplied = now
				if g, ok := m.(*wire.GrantAsk); ok {
					a.share, a.shareUntil, a.askOpen = r.Shares[0].Grant, now+lease, g.Wants[0].Open
				}
			}
			return r
		}
		// batch reports an agent's changes since its last batch.
		batch := func(a *agent) {
			if a.cut {
				return
			}
			if a.needFull {
				a.seq++
				r := items(a, &wire.FullState{AgentID: a.id, Epoch: a.epoch, Seq: a.seq, Counts: []wire.CountEntry{{Tenant: "t", Class: "audio", Open: a.open}}})
				if r.Status != StatusApplied {
					rt.Fatalf("full state of %s: %+v", a.id, r)
				}
				a.needFull, a.reported, a.opened, a.closedN, a.recon, a.expired = false, a.open, 0, 0, 0, false
				a.askOpen = 0
				return
			}
			if a.opened == 0 && a.closedN == 0 {
				return
			}
			a.seq++
			e := wire.DeltaEntry{Tenant: "t", Class: "audio", Opened: a.opened, Closed: a.closedN, Reconciled: a.recon, Peak: a.open}
			r := items(a, &wire.DeltaBatch{AgentID: a.id, Epoch: a.epoch, Seq: a.seq, Entries: []wire.DeltaEntry{e}})
			switch r.Status {
			case StatusApplied:
				a.reported, a.opened, a.closedN, a.recon = a.open, 0, 0, 0
				a.askOpen = 0 // the counts are newer
			case StatusNeedFull:
				a.seq--
				a.needFull = true
			default:
				rt.Fatalf("batch of %s: %+v", a.id, r)
			}
		}
		// tighten is what the agent does when told of a lowered ceiling or
		// of bookings over it.
		tighten := func(a *agent) {
			a.lowered = a.askSeq
			a.grant = min(a.grant, a.open)
			a.tight = true
		}
		// check notes whether some agent's existing sessions are more than
		// the leader was told of (an agent silent past its lease and
		// margin, sessions lost with a crash or reconciled and not yet
		// reported): the window the property excuses.
		check := func() {
			was := uncovered
			uncovered = false
			for _, a := range agents {
				var told uint64
				if now < a.shareUntil {
					told = a.share
				}
				if !a.expired && now < a.lastApplied+lease {
					told = max(told, a.reported, a.askOpen)
				}
				// Sessions the agent itself lost with a crash (until a
				// reconcile) are unknown to everyone but the media server.
				if a.media > told || a.media > a.open {
					uncovered = true
				}
			}
			if was && !uncovered {
				mark = step
			}
		}
		actions := map[string]func(*rapid.T){
			"open": func(rt *rapid.T) {
				a := agents[rapid.IntRange(0, 2).Draw(rt, "agent")]
				if !a.known {
					return
				}
				if a.tight && a.open < a.grant {
					a.grant = a.open
				}
				if !(now < a.leaseEnd && a.open < a.grant) {
					return // refused, or waits for a top-up (an ask)
				}
				if m := sessions(); m >= ceiling && !uncovered && a.heard >= mark {
					rt.Fatalf("%s admitted a session with %d open under a ceiling of %d (share %d, open %d, tight %v)", a.id, m, ceiling, a.grant, a.open, a.tight)
				}
				a.open++
				a.media++
				a.opened++
			},
			"close": func(rt *rapid.T) {
				a := agents[rapid.IntRange(0, 2).Draw(rt, "agent")]
				if a.media == 0 {
					return
				}
				// The media server ends one of its sessions; the agent
				// knows it unless it lost it in a crash.
				known := rapid.Uint64Range(1, a.media).Draw(rt, "which") <= a.open
				a.media--
				if known {
					a.open--
					a.closedN++
					if a.tight && a.grant > a.open {
						a.grant = a.open
					}
				}
			},
			"batch": func(rt *rapid.T) { batch(agents[rapid.IntRange(0, 2).Draw(rt, "agent")]) },
			"ask": func(rt *rapid.T) {
				a := agents[rapid.IntRange(0, 2).Draw(rt, "agent")]
				if !a.known || (a.asking && now-a.askSent < lease/2) {
					return
				}
				a.inbox = nil
				want := a.open
				if !a.tight {
					want += rapid.Uint64Range(0, ceiling).Draw(rt, "extra")
				} else {
					want += rapid.Uint64Range(0, 1).Draw(rt, "waiter")
				}
				if want < a.grant {
					a.grant = want // stop using what is handed back before asking
				}
				a.askSeq++
				a.asking, a.askID, a.askSent = true, a.askSeq, now
				if a.cut {
					return // lost on the way
				}
				r := items(a, &wire.GrantAsk{AgentID: a.id, ReqID: a.askID, Wants: []wire.GrantWant{{Tenant: "t", Want: want, Hold: a.grant, Open: a.open}}})
				if rapid.IntRange(0, 9).Draw(rt, "answer lost") > 0 {
					a.inbox = append(a.inbox, answer{id: a.askID, sent: a.askSent, share: r.Shares[0], made: step})
				}
			},
			"answer": func(rt *rapid.T) {
				a := agents[rapid.IntRange(0, 2).Draw(rt, "agent")]
				if len(a.inbox) == 0 || a.cut {
					return
				}
				r := a.inbox[0]
				a.inbox = a.inbox[1:]
				a.asking = false
				sh := r.share
				a.leaseEnd = r.sent + lease
				switch {
				case r.id <= a.lowered || sh.Ceiling > a.ceiling:
					a.grant = min(a.grant, sh.Grant)
					a.tight = true
					a.under = max(a.under, sh.Ceiling)
				case sh.Free > 0:
					a.grant, a.tight, a.under = sh.Grant, false, sh.Ceiling
				default:
					a.grant = sh.Grant
					if sh.Ceiling < a.under {
						a.tight = true
						a.grant = min(a.grant, a.open)
					} else {
						a.under = max(a.under, sh.Ceiling)
					}
				}
				if sh.Over > 0 {
					a.grant = min(a.grant, a.open)
					a.tight = true
				}
				a.heard = max(a.heard, r.made)
			},
			"push": func(rt *rapid.T) {
				a := agents[rapid.IntRange(0, 2).Draw(rt, "agent")]
				if a.cut {
					return
				}
				var info wire.TenantInfo
				f.Read(func(view View) { s := view.s; info, _ = TenantInfo(View{s}, s.Tenants["t"]) })
				if info.Over > 0 || (a.known && (info.Ceiling < a.ceiling || info.Ceiling < a.under)) {
					tighten(a)
				}
				a.ceiling, a.known = info.Ceiling, true
				a.heard = step
			},
			"partition": func(rt *rapid.T) {
				a := agents[rapid.IntRange(0, 2).Draw(rt, "agent")]
				a.cut = !a.cut
				if a.cut {
					a.inbox, a.asking = nil, false
				}
			},
			"restart": func(rt *rapid.T) {
				// The agent's process restarts on its data directory; its
				// media server keeps every session. With lost persists it
				// lost what it had not persisted (nor sent) since its last
				// batch.
				a := agents[rapid.IntRange(0, 2).Draw(rt, "agent")]
				if rapid.Bool().Draw(rt, "lost persists") {
					a.open = a.reported
					a.opened, a.closedN, a.recon = 0, 0, 0
				}
				a.grant, a.leaseEnd, a.tight, a.lowered, a.under = 0, 0, false, 0, 0
				a.askSeq, a.asking, a.inbox = 0, false, nil
			},
			"reconcile": func(rt *rapid.T) {
				a := agents[rapid.IntRange(0, 2).Draw(rt, "agent")]
				if d := a.media - a.open; d > 0 {
					a.open, a.opened, a.recon = a.media, a.opened+d, a.recon+d
				}
			},
			"host crash": func(rt *rapid.T) {
				// Media server and agent both go; the agent restarts and
				// resets (nothing survives on the media server).
				a := agents[rapid.IntRange(0, 2).Draw(rt, "agent")]
				a.media = 0
				a.closedN += a.open
				a.open = 0
				a.grant, a.leaseEnd, a.tight, a.lowered, a.under = 0, 0, false, 0, 0
				a.askSeq, a.asking, a.inbox = 0, false, nil
			},
			"expire": func(rt *rapid.T) {
				// The leader expires an agent it has not heard from for
				// its grace period (past the lease and margin).
				a := agents[rapid.IntRange(0, 2).Draw(rt, "agent")]
				var silent bool
				f.Read(func(view View) {
					s := view.s
					rec := s.Agents[a.id]
					silent = rec != nil && now-rec.LastSeen > lease+margin
				})
				if silent {
					apply(CmdExpire, &AgentsCmd{Time: now, Agents: []AgentRef{{ID: a.id, Epoch: a.epoch}}})
					a.needFull, a.expired = true, true
				}
			},
			"ceiling": func(rt *rapid.T) {
				q := p
				q.Ceiling = rapid.Uint64Range(1, 12).Draw(rt, "new ceiling")
				if res := apply(CmdPutPlan, &PutPlanCmd{Time: now, Plan: q.Normalized()}); res.Err != nil {
					rt.Fatal(res.Err)
				}
				ceiling = q.Ceiling
				mark = step // agents that have not heard of it admit under their old shares
			},
			"time passes": func(rt *rapid.T) {
				now += rapid.Int64Range(1, lease/4).Draw(rt, "ns")
			},
			"long pause": func(rt *rapid.T) {
				now += rapid.SampledFrom([]int64{lease - margin/2, lease, lease + margin, 2 * lease}).Draw(rt, "ns")
			},
		}
		names := []string{"open", "open", "open", "close", "close", "batch", "batch", "batch", "ask", "ask", "ask",
			"answer", "answer", "answer", "push", "push", "partition", "restart", "reconcile", "host crash", "expire",
			"ceiling", "time passes", "time passes", "long pause"}
		for step = 0; step < 600; step++ {
			actions[rapid.SampledFrom(names).Draw(rt, "action")](rt)
			check()
		}
		// Liveness: every session ends and is reported; after the leases
		// and the margin one agent gets the whole ceiling.
		for _, a := range agents {
			a.cut = false
			a.media = 0
			a.closedN += a.open
			a.open = 0
			batch(a)
		}
		now += lease + 2*margin
		r := items(agents[0], &wire.GrantAsk{AgentID: agents[0].id, ReqID: 99, Wants: []wire.GrantWant{{Tenant: "t", Want: ceiling}}})
		if g := r.Shares[0]; g.Grant != ceiling || g.Over != 0 {
			rt.Fatalf("after every session ended and every lease lapsed, an ask for the whole ceiling %d got %+v", ceiling, g)
		}
	})
}
