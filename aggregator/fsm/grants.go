package fsm

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

// Over causes: why a strict pool's bookings stand above its ceiling.
const (
	// OverLowered: the ceiling was lowered below the shares and sessions
	// already booked (a plan change).
	OverLowered = "lowered"
	// OverRestart: an agent booked sessions it had open beyond its share,
	// restored after its restart or opened by a reconcile.
	OverRestart = "restart"
	// OverReturned: an agent silent past its lease and margin came back
	// with sessions that others' shares had taken the room of meanwhile.
	OverReturned = "returned"
)

// PoolOver records that a strict pool's bookings stand above its ceiling.
type PoolOver struct {
	Since  int64  // entry time it went over, unix ns
	Cause  string // OverLowered, OverRestart or OverReturned
	Amount uint64 // by how much, at the last entry that touched the pool
}

// Bookings. What the leader counts against a pool for one agent is the
// larger of the agent's live share and the sessions of the pool it has open
// as far as the cluster knows (its counts, from batches and full states),
// the latter for as long as the agent was heard from within the lease and
// the margin. So sessions that exist stay on the books whatever their
// origin (restored after a restart, opened by a reconcile, running on while
// an agent's share had lapsed), and room under the ceiling is what the
// bookings leave. The one window: an agent silent past its lease and margin
// books nothing, so its room may be granted to others while its media
// server keeps its sessions; when it is heard from again its sessions are
// booked once more, and a pool left over its ceiling is paid down like one
// under a lowered ceiling (TenantInfo.Over, GrantShare.Over).

// bookingLife is how long after an agent was last heard from its open
// sessions stay booked.
func (s *State) bookingLife() int64 {
	lease, margin := s.GrantLease, s.GrantMargin
	if lease <= 0 {
		lease, margin = int64(DefaultGrantLease), int64(DefaultGrantMargin)
	}
	return lease + max(margin, 0)
}

// heard notes a message of rec's agent applied at the entry's time; one
// after a silence past the lease and margin marks its return.
func (a *applier) heard(rec *AgentRec) {
	if rec.LastSeen != 0 && a.now >= rec.LastSeen+a.s.bookingLife() {
		rec.Returned = a.now
	}
	rec.LastSeen = a.now
}

// count records that agent id holds counts of t (on) or no longer does.
func (t *Tenant) count(id string, on bool) {
	switch {
	case on && t.counted == nil:
		t.counted = map[string]struct{}{id: {}}
	case on:
		t.counted[id] = struct{}{}
	default:
		if delete(t.counted, id); len(t.counted) == 0 {
			t.counted = nil
		}
	}
}

// rebuildCounted recomputes which agents hold counts of each tenant.
func (s *State) rebuildCounted() {
	for _, t := range s.Tenants {
		t.counted = nil
	}
	for _, rec := range s.Agents {
		for name := range rec.Counts {
			if t := s.Tenants[name]; t != nil {
				t.count(rec.ID, true)
			}
		}
	}
}

// poolIdx is a pool's class index for classCounts, -1 for the total.
func poolIdx(class string) int {
	if class == "" {
		return -1
	}
	return ClassIndex(class)
}

// sessionsBooked is what of agent id's open sessions of a pool is booked
// at now: its counts while it was heard from recently, else nothing.
func (s *State) sessionsBooked(t *Tenant, id string, cls int, now int64) uint64 {
	rec := s.Agents[id]
	if rec == nil || rec.Expired || now >= rec.LastSeen+s.bookingLife() {
		return 0
	}
	c := rec.Counts[t.Name]
	if c == nil {
		return 0
	}
	if cls < 0 {
		return c.Total()
	}
	return c[cls]
}

// poolBooking is one agent's share and booking of a pool at now.
type poolBooking struct {
	share, sessions uint64
}

func (b poolBooking) booked() uint64 { return max(b.share, b.sessions) }

// bookings calls fn for every agent booked against pool class of t at
// now: those with a share (live or not) and those with counts.
func (s *State) bookings(t *Tenant, class string, now, margin int64, fn func(id string, b poolBooking)) {
	cls := poolIdx(class)
	pool := t.Grants[class]
	for id, sh := range pool {
		b := poolBooking{sessions: s.sessionsBooked(t, id, cls, now)}
		if sh.live(now, margin) {
			b.share = sh.Amount
		}
		fn(id, b)
	}
	for id := range t.counted {
		if _, ok := pool[id]; !ok {
			fn(id, poolBooking{sessions: s.sessionsBooked(t, id, cls, now)})
		}
	}
}

// poolBooked is everything booked against a pool at now.
func (s *State) poolBooked(t *Tenant, class string, now, margin int64) (total uint64) {
	s.bookings(t, class, now, margin, func(_ string, b poolBooking) { total += b.booked() })
	return total
}

// applyGrantAsk grants an agent's asks, in order.
func (a *applier) applyGrantAsk(g *wire.GrantAsk, lease, margin int64) ItemResult {
	if lease <= 0 {
		lease = int64(DefaultGrantLease)
	}
	if margin < 0 {
		margin = 0
	}
	if rec := a.s.Agents[g.AgentID]; rec != nil && !rec.Expired {
		a.heard(rec)
	}
	shares := make([]wire.GrantShare, len(g.Wants))
	for i := range g.Wants {
		shares[i] = a.grant(g.AgentID, &g.Wants[i], lease, margin)
	}
	return ItemResult{Status: StatusApplied, Shares: shares}
}

func (a *applier) grant(agent string, w *wire.GrantWant, lease, margin int64) wire.GrantShare {
	out := wire.GrantShare{Tenant: w.Tenant, Class: w.Class}
	t := a.s.Tenants[w.Tenant]
	if t == nil {
		return out
	}
	ceiling, strict := poolCeiling(a.s.Plans[t.Plan], w.Class)
	pool := t.Grants[w.Class]
	for id, s := range pool {
		if !s.live(a.now, margin) {
			delete(pool, id) // reclaimed: its lease and the margin are over
		}
	}
	var others, mine, mySessions uint64
	a.s.bookings(t, w.Class, a.now, margin, func(id string, b poolBooking) {
		if id == agent {
			mine, mySessions = b.share, b.sessions
		} else {
			others += b.booked()
		}
	})
	var room uint64
	if others < ceiling {
		room = ceiling - others
	}
	// The agent goes on using up to Hold (never more than its live share)
	// until it reads the answer: that much it keeps. Anything more comes
	// out of room under the ceiling, save the sessions it has open: those
	// exist, and are booked even beyond room.
	hold := min(w.Hold, mine)
	next := max(hold, min(w.Want, room))
	cause := "" // why the pool may go over: found by notePoolOver
	if strict && w.Open > next {
		next = w.Open
		cause = a.agentCause(agent)
	}
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
	held := others + max(next, mySessions)
	switch {
	case held < ceiling:
		out.Free = ceiling - held
	case held > ceiling && strict:
		out.Over = held - ceiling
	}
	if strict {
		a.notePoolOver(t, w.Class, held, ceiling, cause)
	}
	return out
}

// notePoolOver records whether a strict pool's bookings, held in all,
// stand above its ceiling; a pool that goes over or back under touches
// its tenant, so that agents are told (TenantInfo.Over). cause, if set,
// is why it would go over; else it is found from the bookings.
func (a *applier) notePoolOver(t *Tenant, class string, held, ceiling uint64, cause string) {
	rec := t.Over[class]
	switch {
	case held > ceiling && rec == nil:
		if t.Over == nil {
			t.Over = make(map[string]*PoolOver)
		}
		if cause == "" {
			cause = a.overCause(t, class)
		}
		t.Over[class] = &PoolOver{Since: a.now, Cause: cause, Amount: held - ceiling}
		a.touch(t)
	case held > ceiling:
		rec.Amount = held - ceiling
	case rec != nil:
		if delete(t.Over, class); len(t.Over) == 0 {
			t.Over = nil
		}
		a.touch(t)
	}
}

// overCause tells why a pool has just gone over its ceiling: in an entry
// of agents' messages, an agent whose sessions are booked beyond its share
// has restarted (or reconciled), or has returned from a silence; in any
// other entry (a plan change, a plan moved to), the ceiling was lowered.
func (a *applier) overCause(t *Tenant, class string) string {
	cause := OverLowered
	if !a.agentEntry {
		return cause // a plan's change: agents' messages are in entries of their own
	}
	a.s.bookings(t, class, a.now, a.s.GrantMargin, func(id string, b poolBooking) {
		if b.sessions > b.share && cause != OverReturned {
			cause = a.agentCause(id)
		}
	})
	return cause
}

// agentCause is why agent id's sessions, booked beyond room, put a pool
// over: it returned from a silence (heard from again within the last
// lease and margin), or else restarted or reconciled.
func (a *applier) agentCause(id string) string {
	if rec := a.s.Agents[id]; rec != nil && rec.Returned != 0 && a.now-rec.Returned < a.s.bookingLife() {
		return OverReturned
	}
	return OverRestart
}

// settlePools re-checks whether the pools of t, on strict plan p, stand
// over their ceilings.
func (a *applier) settlePools(t *Tenant, p plans.Plan) {
	a.notePoolOver(t, "", a.s.poolBooked(t, "", a.now, a.s.GrantMargin), p.Ceiling, "")
	for _, cl := range p.ClassCeilings {
		a.notePoolOver(t, cl.Class, a.s.poolBooked(t, cl.Class, a.now, a.s.GrantMargin), cl.Ceiling, "")
	}
	for class := range t.Over {
		if _, ok := poolCeiling(p, class); !ok {
			delete(t.Over, class) // the plan has no such pool any more
		}
	}
	if len(t.Over) == 0 {
		t.Over = nil
	}
}

// overBy is how far a pool of t stood over its ceiling at the last entry
// that touched it.
func (t *Tenant) overBy(class string) uint64 {
	if o := t.Over[class]; o != nil {
		return o.Amount
	}
	return 0
}

// admittedOver counts the sessions of class c admitted into t's pools
// while one of them stood over its ceiling.
func (a *applier) admittedOver(t *Tenant, c int, n uint64) {
	if t.Over[""] != nil || t.Over[plans.Class(c+1).String()] != nil {
		t.AdmittedOver += n
	}
}

// grantsJSON lists a strict tenant's pools with the shares live and the
// bookings at now.
func GrantsJSONOf(v View, t *Tenant, now, margin int64) []GrantPoolJSON {
	s := v.s
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
		s.bookings(t, class, now, margin, func(id string, b poolBooking) {
			if b.share > 0 {
				j.Agents[id] = b.share
				j.Leased += b.share
			}
			j.Booked += b.booked()
		})
		switch {
		case j.Booked < ceiling:
			j.Free = ceiling - j.Booked
		case j.Booked > ceiling:
			j.Over = j.Booked - ceiling
			j.OverCause = OverLowered
			if o := t.Over[class]; o != nil {
				j.OverCause, j.OverSince = o.Cause, time.Unix(0, o.Since).UTC().Format(time.RFC3339Nano)
			}
		}
		out = append(out, j)
	}
	return out
}

// RecallTargets returns, for the pools an ask of agent asker left short
// with nothing free, the other agents holding shares of them that their
// last reported counts do not use: the agents to send Recall.
func RecallTargets(v View, asker string, wants []wire.GrantWant, got []wire.GrantShare, margin int64) map[string][]wire.GrantPool {
	s := v.s
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
			if cls = ClassIndex(g.Class); cls < 0 {
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
						used = c.Total()
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

// GrantPoolJSON is one pool of a strict tenant's ceiling: the total or a
// class with a ceiling of its own, the live shares agents hold of it, and
// what the leader books against it: for each agent, its live share or the
// sessions of the pool it has open, whichever is more.
type GrantPoolJSON struct {
	Pool    string            `json:"pool"` // "total" or a class
	Ceiling uint64            `json:"ceiling"`
	Leased  uint64            `json:"leased"`
	Free    uint64            `json:"free"`
	Agents  map[string]uint64 `json:"agents"`
	// Booked is everything booked against the pool; Over how far it stands
	// above the ceiling (nothing is admitted into the pool while it does),
	// OverCause why: "lowered" (the ceiling was lowered), "restart" (an
	// agent's restored or reconciled sessions), "returned" (an agent back
	// from a lapsed lease with its sessions), and OverSince since when.
	Booked    uint64 `json:"booked"`
	Over      uint64 `json:"over"`
	OverCause string `json:"over_cause,omitempty"`
	OverSince string `json:"over_since,omitempty"`
}
