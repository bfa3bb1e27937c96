package agent

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/headroom-rtc/headroom/wire"
)

// Active users. A session may carry an opaque user id; the agent ships,
// per tenant and UTC day, the hashes of the users it saw active
// (wire.UserSet): those whose sessions it opened that day, and, when a day
// begins, those of the sessions still open. The cluster counts them
// distinct (DAU, MAU). Within a day the agent sends each user once, as far
// as its dedup sets reach (maxSeenUsers in all; beyond, a user may be sent
// again, which changes nothing but traffic).
//
// Like the rest of the table this runs with the Agent's mutex held and
// reads no clock: days come from agent nanos and table.wallBase.

const (
	dayNanos = int64(24 * time.Hour)
	// maxSeenUsers bounds the hashes the dedup sets of the days hold.
	maxSeenUsers = 1_000_000
	// maxUserSet bounds the hashes of one UserSet (PROTOCOL.md).
	maxUserSet = 10_000
	// usersPerBatch bounds the hashes one batch carries (9 bytes each at
	// most: well under the frame limit).
	usersPerBatch = 200_000
)

// UserHash is the hash of a user id that batches carry: XXH64, seed 0.
func UserHash(user string) uint64 { return xxhash.Sum64String(user) }

// UserOf turns a media server's own name for a user (a LiveKit identity, an
// RTMP query argument) into a session's user: itself when it is a valid id,
// else a stable id derived from its hash (one per distinct name), so that
// no session goes uncounted for the form of its user's name.
func UserOf(name string) string {
	if name == "" || validUserID(name) == nil {
		return name
	}
	return fmt.Sprintf("h-%016x", xxhash.Sum64String(name))
}

// validUserID checks a session's user: empty (none) or an id like a
// session id.
func validUserID(u string) error {
	if u == "" {
		return nil
	}
	return validID("user", u, maxSessionID)
}

// userDay is one tenant's users of one UTC day on this agent.
type userDay struct {
	seen    map[uint64]struct{} // sent or pending, for dedup
	pending []uint64            // to ship with the next cut
}

// tenantUsers are a tenant entry's users by day.
type tenantUsers struct {
	days   map[uint32]*userDay
	listed bool // in table.userTenants
}

// day is the UTC day of agent time now.
func (t *table) day(now int64) uint32 { return uint32((t.wallBase + now) / dayNanos) }

// setUser gives s its user, seen active at now.
func (t *table) setUser(s *session, user string, now int64) {
	if user == "" {
		return
	}
	s.user = user
	// The open was just journalled: give its record the user.
	if n := len(t.jr.ch); n > 0 && t.jr.ch[n-1].op == jOpen && t.jr.ch[n-1].id == s.id {
		t.jr.ch[n-1].user = user
	} else {
		t.recordOpen(s)
	}
	t.seeUser(s.tenant, UserHash(user), t.day(now))
}

// seeUser records that user hash h of te was active on day.
func (t *table) seeUser(te *tenantEntry, h uint64, day uint32) {
	u := te.users
	if u == nil {
		u = &tenantUsers{days: make(map[uint32]*userDay)}
		te.users = u
	}
	ud := u.days[day]
	if ud == nil {
		ud = &userDay{seen: make(map[uint64]struct{})}
		u.days[day] = ud
	}
	if _, ok := ud.seen[h]; ok {
		return
	}
	if t.seenUsers < maxSeenUsers {
		ud.seen[h] = struct{}{}
		t.seenUsers++
	}
	ud.pending = append(ud.pending, h)
	if !u.listed {
		u.listed = true
		t.userTenants = append(t.userTenants, te)
	}
}

// cutUsers returns the users to ship, sorted by tenant and day, in sets of
// at most maxUserSet hashes, and starts afresh. When the UTC day changed
// since the last cut, the users of the sessions still open are active on
// the new day too; the dedup sets of the days before yesterday go.
func (t *table) cutUsers(now int64) []wire.UserSet {
	if day := t.day(now); day != t.userDay {
		if t.userDay != 0 && day > t.userDay {
			for _, s := range t.sessions {
				if s.user != "" {
					t.seeUser(s.tenant, UserHash(s.user), day)
				}
			}
		}
		t.userDay = day
		for _, te := range t.tenants {
			if te.users == nil {
				continue
			}
			for d, ud := range te.users.days {
				if d+1 < day && len(ud.pending) == 0 {
					t.seenUsers -= len(ud.seen)
					delete(te.users.days, d)
				}
			}
		}
	}
	if len(t.userTenants) == 0 {
		return nil
	}
	slices.SortFunc(t.userTenants, func(a, b *tenantEntry) int { return strings.Compare(a.id, b.id) })
	var out []wire.UserSet
	for _, te := range t.userTenants {
		u := te.users
		u.listed = false
		days := make([]uint32, 0, len(u.days))
		for d, ud := range u.days {
			if len(ud.pending) > 0 {
				days = append(days, d)
			}
		}
		slices.Sort(days)
		for _, d := range days {
			ud := u.days[d]
			for hs := ud.pending; len(hs) > 0; {
				n := min(len(hs), maxUserSet)
				out = append(out, wire.UserSet{Tenant: te.id, Day: d, Hashes: slices.Clone(hs[:n])})
				hs = hs[n:]
			}
			ud.pending = ud.pending[:0]
		}
		if len(u.days) == 0 {
			te.users = nil
		}
	}
	clear(t.userTenants)
	t.userTenants = t.userTenants[:0]
	return out
}

// pendingUsers lists the users not yet cut, for the state file.
func (t *table) pendingUsers() []stUsers {
	var out []stUsers
	for _, te := range t.userTenants {
		for d, ud := range te.users.days {
			if len(ud.pending) > 0 {
				out = append(out, stUsers{Tenant: te.id, Day: d, Hashes: slices.Clone(ud.pending)})
			}
		}
	}
	return out
}

// splitUsers cuts sets into runs of at most usersPerBatch hashes.
func splitUsers(sets []wire.UserSet) [][]wire.UserSet {
	var out [][]wire.UserSet
	for len(sets) > 0 {
		n, hashes := 0, 0
		for n < len(sets) && (n == 0 || hashes+len(sets[n].Hashes) <= usersPerBatch) {
			hashes += len(sets[n].Hashes)
			n++
		}
		out = append(out, sets[:n:n])
		sets = sets[n:]
	}
	return out
}
