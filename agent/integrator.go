package agent

import (
	"slices"
	"strings"
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// The integrator turns open counts into usage, exactly and without a loop
// over sessions. Per tenant and class a cell keeps the open count and the
// time of its last change; at each change and at each cut it accrues
// count × (now − last) nanoseconds into acc. A cut ships acc in whole
// microseconds and carries the sub-microsecond remainder into the next
// interval, so the shipped micros of a cell sum to its exact integral within
// one microsecond.
//
// TTL sessions need care: a session whose TTL lapses is closed at its last
// keepalive, yet the integrator counted it until the moment it expired. To
// ship nothing that may have to be taken back, the time a TTL session accrued
// since its anchor (its last keepalive, or when the integrator started
// counting it if later) is provisional: a cut holds it back in acc. A
// keepalive or an explicit close confirms it (the anchor moves, so the next
// cut ships it); an expiry subtracts it from acc. The provisional amount of a
// cell is ttlN×now − anchors, kept in O(1) per change; the sums may wrap
// around int64 but their difference is exact in two's complement.
//
// Peaks: the peak of an interval is the highest open count during it,
// including the count at its start; after a cut the next interval's peak
// starts at the count at the cut. The same holds per tenant for the total of
// all classes (wire.TenantPeak).

// cell is the integrator state of one tenant and class.
type cell struct {
	count int64 // open sessions
	last  int64 // agent nanos of the last accrual
	// acc: nanoseconds accrued and not shipped, including the carried
	// sub-microsecond remainder and the provisional time of TTL sessions.
	acc     int64
	ttlN    int64 // open sessions with a TTL
	anchors int64 // sum of their anchors (wrapping)
	peak    int64 // interval peak of count
	opened  uint64
	closed  uint64
	refused uint64
	// reconciled counts the opens of the interval that were not admitted
	// but taken from the media server's list (wire Reconciled).
	reconciled uint64
	// closedMin sums, over the sessions closed this interval, each one's
	// duration rounded up to a whole minute (wire ClosedMinutes).
	closedMin uint64
	listed    bool // in table.active
	evented   bool // counted in table.eventful
	// carried: acc holds time that the count since the last cut does not
	// say (restored from disk), until the next cut.
	carried bool
}

// cellRef names a cell of the pending accumulator.
type cellRef struct {
	te  *tenantEntry
	cls plans.Class
}

func (c *cell) accrue(now int64) {
	if c.count != 0 {
		c.acc += c.count * (now - c.last)
	}
	c.last = now
}

// settled reports whether the cell holds nothing that its open count since
// the last cut does not say: no TTL session (whose provisional time it
// holds), no event since the cut (so the count is the same since), its
// peak its count, nothing carried. Its acc is then count × (now − cut)
// plus the sub-microsecond remainder the cut left. A persist leaves such
// cells out, and restore rebuilds their time from the sessions and the
// time of the cut (stateFile.CutAt); what a crash loses of them is the
// remainder.
func (c *cell) settled() bool {
	return c.ttlN == 0 && c.opened|c.closed|c.refused|c.reconciled|c.closedMin == 0 &&
		c.peak <= c.count && !c.carried
}

// provisional is the accrued time of the cell's TTL sessions that an expiry
// could still take back, at now (after accrue(now)).
func (c *cell) provisional(now int64) int64 { return c.ttlN*now - c.anchors }

// touch puts a cell into the pending accumulator after an event.
func (t *table) touch(te *tenantEntry, cls plans.Class) {
	c := &te.cells[cls-1]
	if !c.listed {
		c.listed = true
		t.active = append(t.active, cellRef{te, cls})
	}
	if !c.evented {
		c.evented = true
		t.eventful++
	}
}

// countOpen accounts for s having been opened at now.
func (t *table) countOpen(s *session, now int64) {
	t.addOpen(s, now).opened++
	t.touch(s.tenant, s.class)
}

// addOpen adds s to its cell's and tenant's open counts from now (time
// accrued so far at the old count), raising the interval's peaks, and
// returns the cell.
func (t *table) addOpen(s *session, now int64) *cell {
	te, c := s.tenant, s.cell()
	c.accrue(now)
	c.count++
	c.peak = max(c.peak, c.count)
	te.open++
	te.peak = max(te.peak, te.open)
	if s.provisional() {
		c.ttlN++
		c.anchors += s.anchor
	}
	return c
}

// countClose accounts for s having been closed at now; with expired, s is
// closed at its last keepalive (in doubt: at its anchor) and its
// provisional time is taken back. The session's duration (to now, or to
// where it ended when expired) is added to the interval's ClosedMinutes,
// rounded up to a whole minute.
func (t *table) countClose(s *session, now int64, expired bool) {
	te := s.tenant
	c := s.cell()
	c.accrue(now)
	c.count--
	c.closed++
	end := now
	switch {
	case expired && s.doubt:
		end = s.anchor
	case expired:
		end = s.lastKA
	}
	c.closedMin += wholeMinutes(time.Duration(max(0, end-s.openedAt)))
	te.open--
	if te.g != nil && te.g.closed(te, s.class) {
		t.askDue = true
	}
	if s.provisional() {
		c.ttlN--
		c.anchors -= s.anchor
		if expired {
			c.acc -= now - s.anchor
		}
	}
	t.touch(te, s.class)
}

// wholeMinutes is d rounded up to a whole minute.
func wholeMinutes(d time.Duration) uint64 {
	return uint64((d + time.Minute - 1) / time.Minute)
}

// confirm moves a TTL session's anchor to now (a keepalive at now).
func (t *table) confirm(s *session, now int64) {
	if now > s.anchor {
		c := s.cell()
		c.anchors += now - s.anchor
		s.anchor = now
	}
}

// refuse counts a refused admission of tenant te and class cls.
func (t *table) refuse(te *tenantEntry, cls plans.Class) {
	te.cells[cls-1].refused++
	t.touch(te, cls)
}

// pendingEntries is the number of tenant/class entries in the pending
// accumulator.
func (t *table) pendingEntries() int { return len(t.active) }

// cut closes the interval at now: it returns the delta entries (sorted by
// tenant and class) and tenant peaks (sorted by tenant) of the interval and
// starts the next one. Entries are emitted for every cell with anything
// non-zero or a non-zero open count. The returned slices are newly allocated
// and owned by the caller.
func (t *table) cut(now int64) ([]wire.DeltaEntry, []wire.TenantPeak) {
	t.cutAt = now
	if len(t.active) == 0 {
		return nil, nil
	}
	slices.SortFunc(t.active, func(a, b cellRef) int {
		if a.te != b.te {
			return strings.Compare(a.te.id, b.te.id)
		}
		return int(a.cls) - int(b.cls)
	})
	entries := make([]wire.DeltaEntry, 0, len(t.active))
	var peaks []wire.TenantPeak
	idle := t.idle[:0]
	keep := t.active[:0] // in place: keep never overtakes the loop
	var prev *tenantEntry
	for _, r := range t.active {
		te, c := r.te, &r.te.cells[r.cls-1]
		c.accrue(now)
		micros := uint64(0)
		if ship := c.acc - c.provisional(now); ship > 0 {
			micros = uint64(ship / 1000)
			c.acc -= int64(micros) * 1000
		}
		if micros != 0 || c.opened != 0 || c.closed != 0 || c.refused != 0 || c.peak != 0 || c.count != 0 {
			entries = append(entries, wire.DeltaEntry{
				Tenant: te.id, Class: className(r.cls),
				Opened: c.opened, Closed: c.closed, SessionMicros: micros,
				Peak: uint64(c.peak), Refused: c.refused, ClosedMinutes: c.closedMin,
				Reconciled: c.reconciled,
			})
		}
		c.opened, c.closed, c.refused, c.closedMin, c.reconciled = 0, 0, 0, 0, 0
		c.peak = c.count
		c.evented, c.carried = false, false
		if c.count != 0 {
			keep = append(keep, r)
		} else {
			c.listed = false
			idle = append(idle, te)
		}
		if te != prev {
			prev = te
			if te.peak > 0 {
				peaks = append(peaks, wire.TenantPeak{Tenant: te.id, Peak: uint64(te.peak)})
			}
			te.peak = te.open
		}
	}
	clear(t.active[len(keep):])
	t.active = keep
	t.eventful = 0
	for _, te := range idle {
		t.maybeForget(te)
	}
	clear(idle)
	t.idle = idle[:0]
	return entries, peaks
}

// maybeForget deletes the entry of a tenant the agent does not know, once
// nothing refers to it and it holds nothing.
func (t *table) maybeForget(te *tenantEntry) {
	if te.known || te.open != 0 || te.g != nil || te.users != nil || t.tenants[te.id] != te {
		return
	}
	for i := range te.cells {
		if c := &te.cells[i]; c.listed || c.acc != 0 {
			return
		}
	}
	delete(t.tenants, te.id)
}

// counts returns the absolute open counts per tenant and class (non-zero
// only), sorted.
func (t *table) counts() []wire.CountEntry {
	var out []wire.CountEntry
	for _, te := range t.tenants {
		if te.open == 0 {
			continue
		}
		for i := range te.cells {
			if n := te.cells[i].count; n > 0 {
				out = append(out, wire.CountEntry{Tenant: te.id, Class: className(plans.Class(i + 1)), Open: uint64(n)})
			}
		}
	}
	slices.SortFunc(out, func(a, b wire.CountEntry) int {
		if c := strings.Compare(a.Tenant, b.Tenant); c != 0 {
			return c
		}
		return classOrder(a.Class) - classOrder(b.Class)
	})
	return out
}

func classOrder(name string) int {
	c, _ := plans.ParseClass(name)
	return int(c)
}
