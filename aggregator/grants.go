package aggregator

import (
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// Grants: the shares of strict tenants' ceilings leased to agents.
//
// A strict tenant's ceiling is split into pools: the total ("") and each
// class with a ceiling of its own. Each agent holds a share of a pool, which
// it may have that many sessions of open. The rules, applied here through
// the log so every server agrees on them:
//
//   - an agent keeps what it goes on using until it reads the answer (the
//     ask's Hold, capped at its live share): its share never drops below
//     what it may have open;
//   - beyond that it gets what it wants out of the room under the ceiling
//     that other agents' live shares leave, never by lowering another
//     agent's share: max(Hold, min(Want, ceiling − others));
//   - so the live shares of a pool never sum to more than its ceiling
//     (a ceiling lowered below the sum grants nothing beyond Hold until
//     shares come back; it takes no share that is in use);
//   - a share lives until Until (the entry's time plus the lease) plus the
//     margin; after that it is reclaimed, whatever its agent does.
//
// The agent counts the same lease from the moment it sent the ask, which is
// before the entry's time, so its own view of the share ends first as long
// as the servers' clocks are within the margin of each other.

// Share is the part of one pool leased to one agent.
type Share struct {
	Amount uint64
	// Until is when the lease ends, by the entry clock, unix ns. The share
	// is reclaimed once an entry's time passes Until plus the margin.
	Until int64
}

// Default lease and margin of grants.
const (
	DefaultGrantLease  = 10 * time.Second
	DefaultGrantMargin = 2 * time.Second
)

// poolCeiling is the ceiling of a tenant's pool under plan p: the total
// for class "", a class's own ceiling otherwise. ok is false when the pool
// does not exist (the plan is not strict, or the class has no ceiling).
func poolCeiling(p plans.Plan, class string) (ceiling uint64, ok bool) {
	if p.Mode != plans.Strict {
		return 0, false
	}
	if class == "" {
		return p.Ceiling, true
	}
	c, err := plans.ParseClass(class)
	if err != nil {
		return 0, false
	}
	return p.ClassCeiling(c)
}

// live reports whether s is still leased at entry time now.
func (s *Share) live(now, margin int64) bool { return now < s.Until+margin }

// applyGrantAsk grants an agent's asks, in order.
func (a *applier) applyGrantAsk(g *wire.GrantAsk, lease, margin int64) itemResult {
	if lease <= 0 {
		lease = int64(DefaultGrantLease)
	}
	if margin < 0 {
		margin = 0
	}
	shares := make([]wire.GrantShare, len(g.Wants))
	for i := range g.Wants {
		shares[i] = a.grant(g.AgentID, &g.Wants[i], lease, margin)
	}
	return itemResult{Status: statusApplied, Shares: shares}
}

func (a *applier) grant(agent string, w *wire.GrantWant, lease, margin int64) wire.GrantShare {
	out := wire.GrantShare{Tenant: w.Tenant, Class: w.Class}
	t := a.s.Tenants[w.Tenant]
	if t == nil {
		return out
	}
	ceiling, _ := poolCeiling(a.s.Plans[t.Plan], w.Class)
	pool := t.Grants[w.Class]
	var others, mine uint64
	for id, s := range pool {
		switch {
		case !s.live(a.now, margin):
			delete(pool, id) // reclaimed: its lease and the margin are over
		case id == agent:
			mine = s.Amount
		default:
			others += s.Amount
		}
	}
	var room uint64
	if others < ceiling {
		room = ceiling - others
	}
	// The agent goes on using up to Hold (never more than its live share)
	// until it reads the answer: that much it keeps. Anything more comes
	// out of room under the ceiling.
	hold := min(w.Hold, mine)
	next := max(hold, min(w.Want, room))
	if next == 0 {
		delete(pool, agent)
	} else {
		if pool == nil {
			if t.Grants == nil {
				t.Grants = make(map[string]map[string]*Share)
			}
			pool = make(map[string]*Share)
			t.Grants[w.Class] = pool
		}
		pool[agent] = &Share{Amount: next, Until: a.now + lease}
	}
	if len(pool) == 0 && t.Grants != nil {
		delete(t.Grants, w.Class)
	}
	out.Grant, out.Ceiling = next, ceiling
	if held := others + next; held < ceiling {
		out.Free = ceiling - held
	}
	return out
}

// grantsJSON lists a strict tenant's pools with the shares live at now.
func grantsJSON(s *State, t *Tenant, now, margin int64) []GrantPoolJSON {
	p, ok := s.Plans[t.Plan]
	if !ok || p.Mode != plans.Strict {
		return nil
	}
	pools := []string{""}
	for _, cl := range p.ClassCeilings {
		pools = append(pools, cl.Class)
	}
	out := make([]GrantPoolJSON, 0, len(pools))
	for _, class := range pools {
		ceiling, _ := poolCeiling(p, class)
		j := GrantPoolJSON{Pool: class, Ceiling: ceiling, Agents: map[string]uint64{}}
		if class == "" {
			j.Pool = "total"
		}
		for id, sh := range t.Grants[class] {
			if sh.live(now, margin) {
				j.Agents[id] = sh.Amount
				j.Leased += sh.Amount
			}
		}
		if j.Leased < ceiling {
			j.Free = ceiling - j.Leased
		}
		out = append(out, j)
	}
	return out
}

// recallTargets returns, for the pools an ask of agent asker left short
// with nothing free, the other agents holding shares of them that their
// last reported counts do not use: the agents to send Recall.
func recallTargets(s *State, asker string, wants []wire.GrantWant, got []wire.GrantShare, margin int64) map[string][]wire.GrantPool {
	var out map[string][]wire.GrantPool
	for i := range got {
		g := &got[i]
		if i >= len(wants) || g.Grant >= wants[i].Want || g.Free > 0 {
			continue
		}
		t := s.Tenants[g.Tenant]
		if t == nil {
			continue
		}
		cls := -1
		if g.Class != "" {
			if cls = classIndex(g.Class); cls < 0 {
				continue
			}
		}
		for id, sh := range t.Grants[g.Class] {
			if id == asker || !sh.live(s.Time, margin) {
				continue
			}
			var used uint64
			if rec := s.Agents[id]; rec != nil {
				if c := rec.Counts[g.Tenant]; c != nil {
					if cls < 0 {
						used = c.total()
					} else {
						used = c[cls]
					}
				}
			}
			if used < sh.Amount {
				if out == nil {
					out = make(map[string][]wire.GrantPool)
				}
				out[id] = append(out[id], wire.GrantPool{Tenant: g.Tenant, Class: g.Class})
			}
		}
	}
	return out
}
