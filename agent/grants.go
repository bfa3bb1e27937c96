package agent

import (
	"slices"
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// Grants: the agent's side of strict ceilings (see wire/PROTOCOL.md,
// "Grants"). A strict tenant's ceiling is split into pools: the total and
// each class with a ceiling of its own. The agent may have open at most
// the share it holds of each pool, while the share's lease runs. It holds
// the lease from the moment it sent the GrantAsk that the Grant answered,
// on its own monotonic clock, so it always ends before the leader's view
// of it.
//
// Everything here runs with Agent.mu held. One GrantAsk is in flight at a
// time; the stream's writer sends it (askLocked), the reader applies the
// answer (onGrant).

// totalPool is the index of the tenant's total pool; pool i > 0 is class i.
const totalPool = 0

// pool is the agent's share of one pool.
type pool struct {
	on       bool   // the pool exists under the tenant's plan
	ceiling  uint64 // the pool's ceiling, from the latest TenantState
	grant    uint64 // the share held
	leaseEnd int64  // agent nanos; the share is usable before it
	waiters  int    // admissions waiting for a top-up
	recall   bool   // hand back what is unused with the next ask
	// tight: the pool's ceiling was lowered, so the shares of the fleet may
	// sum to more than it; until the leader reports room again (Free > 0),
	// a share unused is handed back rather than used.
	tight bool
	// lowered is the id of the last ask sent before the ceiling was last
	// lowered: an answer to it or an earlier one may have been granted
	// under the higher ceiling, so it may lower the share but not raise
	// it, nor end tight.
	lowered uint64
	// under is the highest ceiling some part of the share was granted
	// under, since the leader last reported room (Free > 0).
	under    uint64
	dryUntil int64  // the last answer left nothing free: no top-up before this
	free     uint64 // Free of the last answer
	answered bool   // an answer set free
	// cutMax is the highest open count of the pool at the cuts of the
	// batches up to cutSeq not yet written: the writer may send an ask
	// before them, and the leader books their counts once it applies
	// them, so until the stream has written cutSeq an ask keeps that much.
	cutMax uint64
	cutSeq uint64
}

// grants is what a strict tenant's entry holds of its pools.
type grants struct {
	pools [numClasses + 1]pool
}

// pendingAsk is the GrantAsk in flight.
type pendingAsk struct {
	id    uint64
	sent  int64 // agent nanos when it was built, just before it was written
	wants []wire.GrantWant
}

// Timings of grants.
const (
	// DefaultTopUpWait is how long an admission that found its share used
	// up while the ceiling has room waits for a top-up before it is
	// refused with grant-timeout.
	DefaultTopUpWait = 50 * time.Millisecond
	// defaultLease is assumed for renewals until a Grant tells the lease.
	defaultLease = 10 * time.Second
	// dryWait spaces asks for a pool the leader had nothing free of, while
	// admissions wait (other agents are asked to hand back meanwhile);
	// dryIdle does when none waits.
	dryWait = 5 * time.Millisecond
	dryIdle = 250 * time.Millisecond
	// maxAskWants bounds the wants of one GrantAsk (the rest go next time).
	maxAskWants = 50_000
)

// closed notes that a session of class cls of te ended: in a tight pool
// (a lowered ceiling, or bookings over it) its share goes back at once
// instead of being used again. It reports whether an ask is due.
func (g *grants) closed(te *tenantEntry, cls plans.Class) bool {
	due := false
	for _, i := range [2]int{totalPool, int(cls)} {
		p := &g.pools[i]
		if open := uint64(max(0, poolOpen(te, i))); p.on && p.tight && p.grant > open {
			p.grant, p.recall, due = open, true, true
		}
	}
	return due
}

// noteCut records the pools' open counts at a cut whose last batch is seq;
// written is the highest seq the stream has written.
func (g *grants) noteCut(te *tenantEntry, seq, written uint64) {
	for i := range g.pools {
		p := &g.pools[i]
		if !p.on {
			continue
		}
		if p.cutSeq <= written {
			p.cutMax = 0
		}
		p.cutMax = max(p.cutMax, uint64(max(0, poolOpen(te, i))))
		p.cutSeq = seq
	}
}

// unwritten is what an ask keeps of p for the batches not yet written.
func (p *pool) unwritten(written uint64) uint64 {
	if p.cutSeq > written {
		return p.cutMax
	}
	return 0
}

// writtenLocked is the highest seq written on the current stream (or known
// applied); 0 without a stream.
func (a *Agent) writtenLocked() uint64 {
	if a.stream != nil {
		return a.stream.sentUpTo
	}
	return 0
}

// poolOpen is the open count a pool's share covers.
func poolOpen(te *tenantEntry, i int) int64 {
	if i == totalPool {
		return te.open
	}
	return te.cells[i-1].count
}

// step is how much a top-up asks beyond what is used: a sixteenth of the
// ceiling (at most 1024), but no more than half of what the leader last
// reported free. Near the ceiling agents then hold no unused shares to
// hand back and forth: each admission asks for exactly what it needs.
func (p *pool) step() uint64 {
	s := max(1, min(p.ceiling/16, 1024))
	if p.answered && p.free < 2*s {
		s = p.free / 2
	}
	return s
}

// setPools updates a tenant's pools from its TenantInfo: strict plans
// have a total pool and one per class limit. When a pool's ceiling is
// lowered, the agent stops using the unused part of its share at once and
// hands it back with the next ask: the shares of other agents may sum to
// more than the new ceiling, and only shares handed back make room.
func (te *tenantEntry) setPools(info *wire.TenantInfo, lastAsk uint64) {
	if plans.Mode(info.Mode) != plans.Strict {
		if te.g != nil {
			for i := range te.g.pools {
				p := &te.g.pools[i]
				p.on, p.ceiling, p.recall = false, 0, p.grant > 0
			}
		}
		return
	}
	if te.g == nil {
		te.g = &grants{}
	}
	var on [numClasses + 1]bool
	var ceil, over [numClasses + 1]uint64
	on[totalPool], ceil[totalPool], over[totalPool] = true, info.Ceiling, info.Over
	for _, cl := range info.ClassLimits {
		if c, err := plans.ParseClass(cl.Class); err == nil {
			on[c], ceil[c], over[c] = true, cl.Ceiling, cl.Over
		}
	}
	for i := range te.g.pools {
		p := &te.g.pools[i]
		if on[i] && (over[i] > 0 || p.on && (ceil[i] < p.ceiling || ceil[i] < p.under)) {
			p.lowered = lastAsk
			// A lowered ceiling, or a pool whose bookings stand over it
			// (an agent restarted or back from a lapsed lease with its
			// sessions): stop using what is not in use at once (the
			// leader may book more than the ceiling), and hand it back
			// with the next ask.
			p.grant = min(p.grant, uint64(max(0, poolOpen(te, i))))
			p.recall, p.tight = true, true
		}
		p.on, p.ceiling = on[i], ceil[i]
		if p.grant > p.ceiling {
			p.recall = true
		}
	}
}

// strictVerdict decides an admission of class cls for a strict tenant at
// now: admit, refuse with a reason, or wait for a top-up (short names the
// pools to top up). live tells whether a stream to the leader is up.
func strictVerdict(te *tenantEntry, cls plans.Class, now int64, live bool) (v verdict, reason string, short [2]int) {
	short = [2]int{-1, -1}
	g := te.g
	if g == nil {
		return wait, ReasonGrantTimeout, short
	}
	n := 0
	for _, i := range [2]int{totalPool, int(cls)} {
		p := &g.pools[i]
		if !p.on {
			continue
		}
		open := poolOpen(te, i)
		if p.tight && open < int64(p.grant) {
			// Sessions closed since the ceiling was lowered: their share
			// goes back instead of being used again.
			p.grant, p.recall = uint64(max(0, open)), true
		}
		if now < p.leaseEnd && open < int64(p.grant) {
			continue
		}
		if at := poolEstimate(te, i); at >= p.ceiling {
			if i == totalPool {
				return refuse, ReasonCeiling, short
			}
			return refuse, ReasonClassCeiling, short
		}
		short[n] = i
		n++
	}
	if n == 0 {
		return admit, "", short
	}
	if !live {
		for _, i := range short[:n] {
			if now >= g.pools[i].leaseEnd {
				return refuse, ReasonClusterUnreachable, short
			}
		}
		return refuse, ReasonGrantTimeout, short
	}
	return wait, ReasonGrantTimeout, short
}

// poolEstimate is the agent's estimate of a pool's global open count.
func poolEstimate(te *tenantEntry, i int) uint64 {
	if i == totalPool {
		return estimate(te)
	}
	for _, cl := range te.info.ClassLimits {
		if c, _ := plans.ParseClass(cl.Class); int(c) == i {
			return addDelta(cl.Concurrency, te.cells[i-1].count-te.cbase[i-1])
		}
	}
	return 0
}

// askLocked builds the next GrantAsk, or returns nil when nothing needs
// asking. It lowers the shares it hands back before the ask is sent.
func (a *Agent) askLocked(now int64) *wire.GrantAsk {
	if a.ask != nil {
		return nil
	}
	lease := a.lease
	written := a.writtenLocked()
	var wants []wire.GrantWant
	for _, te := range a.tab.tenants {
		g := te.g
		if g == nil {
			continue
		}
		for i := range g.pools {
			p := &g.pools[i]
			if len(wants) >= maxAskWants {
				break
			}
			open := uint64(max(0, poolOpen(te, i)))
			var want uint64
			switch {
			case !p.on:
				if p.grant == 0 {
					continue
				}
				want = 0 // the plan has no such pool any more
			case p.recall:
				want = open + uint64(p.waiters)
			case p.waiters > 0 && now >= p.dryUntil && p.tight:
				want = open + uint64(p.waiters)
			case p.waiters > 0 && now >= p.dryUntil:
				want = open + uint64(p.waiters) + p.step()
			case !p.tight && p.step() > 0 && open+p.step()/2 >= p.grant && now >= p.dryUntil && (p.grant > 0 || open > 0):
				want = open + p.step() // running low
			case (p.grant > 0 || open > 0) && now >= p.leaseEnd-2*int64(lease)/3:
				// Renew, handing back the unused beyond a step; with
				// sessions open and no share (after a restart, under a
				// pool over its ceiling), renew their booking.
				want = max(open, min(p.grant, open+p.step()))
			default:
				continue
			}
			keep := p.unwritten(written)
			if p.on {
				want = max(want, open, keep) // never below what is open, or booked once applied
			}
			if want < p.grant {
				p.grant = want
			}
			p.recall = false
			w := wire.GrantWant{Tenant: te.id, Class: poolClass(i), Want: want, Hold: max(p.grant, keep)}
			if p.on {
				w.Open = open // booked by the leader even beyond room: these sessions exist
			}
			wants = append(wants, w)
		}
		if !g.any() {
			te.g = nil
		}
	}
	if len(wants) == 0 {
		return nil
	}
	a.askSeq++
	a.rtts.asks++
	a.ask = &pendingAsk{id: a.askSeq, sent: now, wants: wants}
	return &wire.GrantAsk{AgentID: a.id, ReqID: a.askSeq, Wants: wants}
}

// any reports whether g holds or is about anything: a share, a pool of a
// strict plan, a waiter.
func (g *grants) any() bool {
	for i := range g.pools {
		if p := &g.pools[i]; p.on || p.grant > 0 || p.waiters > 0 {
			return true
		}
	}
	return false
}

func poolClass(i int) string {
	if i == totalPool {
		return ""
	}
	return className(plans.Class(i))
}

func poolIndex(class string) int {
	if class == "" {
		return totalPool
	}
	c, err := plans.ParseClass(class)
	if err != nil {
		return -1
	}
	return int(c)
}

// onGrant applies the answer to the ask in flight.
func (a *Agent) onGrant(m *wire.Grant) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ask := a.ask
	if ask == nil || m.ReqID != ask.id {
		return // the answer to an ask given up with its stream
	}
	a.ask = nil
	now := a.now()
	a.rtts.add(time.Duration(now - ask.sent))
	if m.LeaseMillis > 0 {
		a.lease = time.Duration(m.LeaseMillis) * time.Millisecond
	}
	for k := range m.Shares {
		sh := &m.Shares[k]
		i := poolIndex(sh.Class)
		te := a.tab.tenants[sh.Tenant]
		if i < 0 || te == nil || te.g == nil {
			continue
		}
		p := &te.g.pools[i]
		p.leaseEnd = ask.sent + int64(a.lease)
		switch {
		case ask.id <= p.lowered || (sh.Ceiling > p.ceiling && p.on):
			// Granted under a ceiling higher than the one this agent
			// knows now (lowered since, or the leader moved on before its
			// TenantState came): keep the lower share, hand the rest back,
			// and do not trust Free.
			p.grant = min(p.grant, sh.Grant)
			p.recall = p.recall || sh.Grant > p.grant
			p.tight = true
			p.under = max(p.under, sh.Ceiling)
		case sh.Free > 0:
			// The shares are within the ceiling the agent knows.
			p.grant, p.tight, p.under = sh.Grant, false, sh.Ceiling
		default:
			p.grant = sh.Grant
			if sh.Ceiling < p.under {
				// The leader lowered the ceiling before this agent heard:
				// part of the share dates from the higher one.
				p.tight, p.recall = true, true
				p.grant = min(p.grant, uint64(max(0, poolOpen(te, i))))
			} else {
				p.under = max(p.under, sh.Ceiling)
			}
		}
		if sh.Over > 0 && p.on {
			// The pool's bookings stand over its ceiling: as under a
			// lowered ceiling, nothing unused is used, and the share of
			// every session that ends goes back, until an answer reports
			// room again.
			if open := uint64(max(0, poolOpen(te, i))); p.grant > open {
				p.grant, p.recall = open, true
			}
			p.tight = true
		}
		if k < len(ask.wants) && sh.Grant < ask.wants[k].Want && sh.Free == 0 {
			if p.waiters > 0 {
				p.dryUntil = now + int64(dryWait)
			} else {
				p.dryUntil = now + int64(dryIdle)
			}
		} else {
			p.dryUntil = 0
		}
		if p.on {
			p.free, p.answered = sh.Free, true
		}
	}
	a.grantEventLocked()
}

// onRecall marks pools whose unused share another agent waits for.
func (a *Agent) onRecall(m *wire.Recall) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, pl := range m.Pools {
		te := a.tab.tenants[pl.Tenant]
		if i := poolIndex(pl.Class); i >= 0 && te != nil && te.g != nil {
			te.g.pools[i].recall = true
		}
	}
	a.grantEventLocked()
}

// grantEventLocked wakes the admissions waiting for a top-up and the
// stream's writer (which may have an ask to send).
func (a *Agent) grantEventLocked() {
	close(a.grantCh)
	a.grantCh = make(chan struct{})
	if a.stream != nil {
		signal(a.stream.wake)
	}
}

// sendAsk writes the next GrantAsk, if any is due.
func (a *Agent) sendAsk(s *stream) error {
	a.mu.Lock()
	if !s.live || a.stream != s {
		a.mu.Unlock()
		return nil
	}
	m := a.askLocked(a.now())
	a.mu.Unlock()
	if m == nil {
		return nil
	}
	return a.write(s, m)
}

// rttRing keeps the round trips of the last answered asks.
type rttRing struct {
	asks, answered uint64
	d              [1024]time.Duration
}

func (r *rttRing) add(d time.Duration) {
	r.d[r.answered%uint64(len(r.d))] = d
	r.answered++
}

func (a *Agent) grantStatusLocked() GrantStatus {
	r := &a.rtts
	st := GrantStatus{Asks: r.asks, Answered: r.answered, Pending: a.ask != nil}
	for _, te := range a.tab.tenants {
		if te.g != nil {
			for i := range te.g.pools {
				if p := &te.g.pools[i]; p.on && p.tight {
					st.TightPools++
				}
			}
		}
	}
	n := int(min(r.answered, uint64(len(r.d))))
	if n == 0 {
		return st
	}
	ds := slices.Clone(r.d[:n])
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	st.RoundTripP50Ms, st.RoundTripP99Ms, st.RoundTripMaxMs = ms(ds[n/2]), ms(ds[(n*99)/100]), ms(ds[n-1])
	return st
}
