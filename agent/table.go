package agent

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// This file holds the session table: which sessions are open, of which tenant
// and class, with which TTL. It is pure logic: no goroutines, no clock reads,
// no locks. Time is passed in as int64 nanoseconds on the agent's monotonic
// time line ("agent nanos": time since the Agent was created; values before
// that, such as the open time of a session restored from disk, are negative).
// The caller (Agent) serialises every call with its mutex.
//
// Every change of an open count goes through the integrator (integrator.go),
// whose per tenant/class cells live inside the table's tenant entries.

// numClasses is the number of session classes; cells are indexed by class-1.
const numClasses = plans.NumClasses

// Limits on identifiers and TTLs.
const (
	maxSessionID = plans.MaxIDLen
	maxTenantID  = plans.MaxTenantIDLen
	// MaxTTL is the longest session TTL the agent accepts.
	MaxTTL = 24 * time.Hour
	// maxUnknownTenants bounds the tenant entries kept only to count refusals
	// of tenants the agent does not know (so that bad input cannot grow
	// memory without bound).
	maxUnknownTenants = 10_000
	// maxFreeSessions bounds the free list of session records.
	maxFreeSessions = 4096
)

// Errors returned by the session table and the Agent's Go API.
var (
	// ErrUnknownSession: no open session has that id.
	ErrUnknownSession = errors.New("unknown session")
	// ErrConflict: the session id is open with another tenant or class.
	ErrConflict = errors.New("session id is open with another tenant or class")
	// ErrInvalid: an argument failed validation; the wrapping error says which.
	ErrInvalid = errors.New("invalid argument")
)

// validID reports whether s is a valid session, tenant or agent id: non-empty,
// at most max bytes, printable ASCII without spaces.
func validID(what, s string, max int) error {
	if err := plans.ValidateID(what, s, max); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

func validSessionID(s string) error { return validID("session", s, maxSessionID) }
func validTenantID(s string) error  { return validID("tenant", s, maxTenantID) }

func parseClass(s string) (plans.Class, error) {
	c, err := plans.ParseClass(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return c, nil
}

// classNames caches the class names (plans.Class.String is not free).
var classNames = func() (n [numClasses + 1]string) {
	for _, c := range plans.AllClasses {
		n[c] = c.String()
	}
	return n
}()

// className returns the wire and API name of a valid class.
func className(c plans.Class) string { return classNames[c] }

func validTTL(ttl time.Duration) error {
	if ttl < 0 || ttl > MaxTTL {
		return fmt.Errorf("%w: ttl %v: want 0 (none) up to %v", ErrInvalid, ttl, MaxTTL)
	}
	return nil
}

// session is one open session. Records are reused through the table's free
// list: never keep a *session after the session was closed.
type session struct {
	id     string
	source string // SourceAPI or a connector's name (sources.go)
	// user is the session's user ("" when none was given): counted among
	// the tenant's active users (users.go).
	user     string
	tenant   *tenantEntry
	ttl      int64 // nanos; 0: no TTL
	openedAt int64 // agent nanos
	lastKA   int64 // agent nanos of the last keepalive (openedAt at first)
	// anchor is, for a TTL session, the time from which the session's
	// accrued time is still provisional: max(last keepalive, the time the
	// integrator started counting it). See integrator.go.
	anchor int64
	// heapKey is the deadline the session is filed under in the TTL heap (a
	// lower bound of lastKA+ttl); heapIdx its index there, -1 if none.
	heapKey int64
	heapIdx int
	class   plans.Class
	// doubt: a session without a TTL restored after the agent's crash and
	// not heard of since. It counted on through the downtime from the
	// agent's last persisted instant, its anchor, but that time is
	// provisional until the media server says the session lives (a
	// keepalive, a reconcile listing it, its close); a reconcile or reset
	// that omits it closes it at its anchor (persist.go).
	doubt bool
} // 112 bytes: the fields ordered so that class and doubt share a word

func (s *session) cell() *cell { return &s.tenant.cells[s.class-1] }

// provisional reports whether the time s accrued since its anchor may be
// taken back: a TTL session's (it may expire at its last keepalive) or one
// in doubt (it may have ended at the agent's last persisted instant).
func (s *session) provisional() bool { return s.ttl > 0 || s.doubt }

// tenantEntry interns a tenant id and holds everything kept per tenant: the
// integrator cells per class, the open count, the interval's peak of that
// count, and the tenant's admission info from the latest TenantState.
type tenantEntry struct {
	id    string
	cells [numClasses]cell
	open  int64 // open sessions, all classes
	peak  int64 // interval peak of open (wire.TenantPeak)
	// admission (admission.go)
	known bool
	info  wire.TenantInfo
	base  int64             // open when info was received
	cbase [numClasses]int64 // each class's open count then
	g     *grants           // strict plans: the shares held (grants.go)
	users *tenantUsers      // the users seen, by day (users.go)
}

// table is the session table plus the integrator state.
type table struct {
	sessions map[string]*session
	tenants  map[string]*tenantEntry
	bySource map[string]int // open sessions per source
	// reconciledAt is when each source last reconciled (agent nanos): a
	// session a later reconcile opens began after it, or was listed then.
	reconciledAt map[string]int64
	heap         ttlHeap
	free         []*session
	known        int // tenant entries with known set
	// tenantsGen counts changes of the tenants' admission states
	// (setTenant, forgetTenant): a journal record leaves them out when
	// they did not change since the previous one.
	tenantsGen uint64

	// The pending accumulator: cells with something to ship (events since
	// the last cut or an open count); see integrator.go.
	active   []cellRef
	cutAt    int64          // agent nanos of the last cut
	eventful int            // cells changed by an event (open/close/refusal) since the last cut
	idle     []*tenantEntry // scratch for cut

	// jr records session changes for the persister (persist.go), so that
	// persisting does not copy every session under the Agent's mutex.
	jr journal
	// askDue: a close handed a share back (grants.go); the stream's writer
	// should send an ask.
	askDue bool
	// Active users (users.go): wallBase is the agent's start in unix nanos
	// (agent nanos + wallBase = wall clock), userTenants the tenants with
	// users to ship, userDay the UTC day of the last cut, seenUsers how
	// many user hashes the days' dedup sets hold.
	wallBase    int64
	userTenants []*tenantEntry
	userDay     uint32
	seenUsers   int
}

// Journal operations.
const (
	jOpen  = iota + 1 // a session opened: every field set
	jClose            // a session closed or expired: id
	jTouch            // a keepalive: id, lastKA, anchor
)

// sessChange is one journal record; times are agent nanos.
type sessChange struct {
	op                            uint8
	class                         plans.Class
	id, tenant, source            string
	ttl, openedAt, lastKA, anchor int64
	doubt                         bool   // jOpen: in doubt since anchor
	user                          string // jOpen: the session's user
}

// journal holds the session changes since the persister last took them. It
// is bounded: past twice the number of open sessions (plus a margin) it is
// dropped and marked overflowed, and the persister copies the whole table
// once instead.
type journal struct {
	ch       []sessChange
	overflow bool
}

func (t *table) record(c sessChange) {
	j := &t.jr
	if j.overflow {
		return
	}
	if len(j.ch) >= 2*len(t.sessions)+4096 {
		clear(j.ch)
		j.ch, j.overflow = j.ch[:0], true
		return
	}
	j.ch = append(j.ch, c)
}

func newTable() *table {
	return &table{
		sessions:     make(map[string]*session),
		reconciledAt: map[string]int64{},
		tenants:      make(map[string]*tenantEntry),
		bySource:     make(map[string]int),
	}
}

// tenant returns the entry of id, creating it when create is set.
func (t *table) tenant(id string, create bool) *tenantEntry {
	te := t.tenants[id]
	if te == nil && create {
		te = &tenantEntry{id: id}
		t.tenants[id] = te
	}
	return te
}

// openCount is the number of open sessions.
func (t *table) openCount() int { return len(t.sessions) }

// open opens session id of tenant te and class cls at now, of SourceAPI.
// The caller has checked that id is not open.
func (t *table) open(te *tenantEntry, id string, cls plans.Class, ttl time.Duration, now int64) *session {
	return t.openFrom(te, id, cls, ttl, SourceAPI, now)
}

// openFrom is open for a session of source src.
func (t *table) openFrom(te *tenantEntry, id string, cls plans.Class, ttl time.Duration, src string, now int64) *session {
	var s *session
	if n := len(t.free); n > 0 {
		s = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		s = new(session)
	}
	*s = session{id: id, source: src, tenant: te, class: cls, ttl: int64(ttl), openedAt: now, lastKA: now, anchor: now, heapIdx: -1}
	t.sessions[id] = s
	t.bySource[src]++
	t.countOpen(s, now)
	if s.ttl > 0 {
		s.heapKey = now + s.ttl
		t.heap.push(s)
	}
	t.record(sessChange{op: jOpen, class: cls, id: id, tenant: te.id, source: src, ttl: s.ttl, openedAt: now, lastKA: now, anchor: now})
	return s
}

// backdate makes s, just opened at now, open since since (≤ now): its cell
// accrues the time in between, and its duration counts from since.
func (t *table) backdate(s *session, since, now int64) {
	if since >= now {
		return
	}
	s.cell().acc += now - since
	s.openedAt = since
	if j := &t.jr; !j.overflow && len(j.ch) > 0 {
		if c := &j.ch[len(j.ch)-1]; c.op == jOpen && c.id == s.id {
			c.openedAt = since
		}
	}
}

// close closes s at now and returns its duration. A session in doubt is
// known, by its close, to have lived until now.
func (t *table) close(s *session, now int64) time.Duration {
	t.settleDoubt(s)
	t.countClose(s, now, false)
	d := time.Duration(now - s.openedAt)
	t.release(s)
	return d
}

// expire closes s at its last keepalive (its TTL lapsed at now) and returns
// its duration, which ends at the last keepalive.
func (t *table) expire(s *session, now int64) time.Duration {
	t.countClose(s, now, true)
	d := time.Duration(s.lastKA - s.openedAt)
	t.release(s)
	return d
}

func (t *table) release(s *session) {
	t.record(sessChange{op: jClose, id: s.id})
	delete(t.sessions, s.id)
	if t.bySource[s.source]--; t.bySource[s.source] <= 0 {
		delete(t.bySource, s.source)
	}
	if s.heapIdx >= 0 {
		t.heap.remove(s.heapIdx)
	}
	if len(t.free) < maxFreeSessions {
		*s = session{}
		t.free = append(t.free, s)
	}
}

// lapsed reports whether s's TTL has lapsed at now.
func (s *session) lapsed(now int64) bool { return s.ttl > 0 && now-s.lastKA > s.ttl }

// lookup returns the open session id, expiring it first if its TTL lapsed.
func (t *table) lookup(id string, now int64) *session {
	s := t.sessions[id]
	if s != nil && s.lapsed(now) {
		t.expire(s, now)
		return nil
	}
	return s
}

// keepalive records a keepalive of s at now.
func (t *table) keepalive(s *session, now int64) {
	if now < s.lastKA {
		return
	}
	s.lastKA = now
	if s.ttl > 0 {
		t.confirm(s, now)
	}
	t.settleDoubt(s)
	t.record(sessChange{op: jTouch, id: s.id, lastKA: s.lastKA, anchor: s.anchor})
}

// expireDue expires every session whose TTL lapsed at now and returns how
// many. Cheap when nothing is due (one comparison).
func (t *table) expireDue(now int64) int {
	n := 0
	for len(t.heap) > 0 {
		s := t.heap[0]
		if now-s.heapKey <= 0 {
			break
		}
		if !s.lapsed(now) {
			// A keepalive moved the deadline since the session was filed.
			s.heapKey = s.lastKA + s.ttl
			t.heap.fix(0)
			continue
		}
		t.expire(s, now)
		n++
	}
	return n
}

// reset closes every open session at now and returns how many; sessions
// in doubt close at the agent's last persisted instant.
func (t *table) reset(now int64) int {
	n := 0
	for _, s := range t.sessions {
		if s.doubt {
			t.closeInDoubt(s, now)
		} else {
			t.close(s, now)
		}
		n++
	}
	return n
}

// settleDoubt ends the doubt about s: the media server says it lives, so
// the time it accrued through the agent's downtime is no longer
// provisional.
func (t *table) settleDoubt(s *session) {
	if !s.doubt {
		return
	}
	c := s.cell()
	c.ttlN--
	c.anchors -= s.anchor
	s.doubt = false
}

// closeInDoubt closes s, in doubt, at its anchor (the agent's last persisted
// instant before its crash), as of now: the time it accrued since is taken
// back. It returns its duration.
func (t *table) closeInDoubt(s *session, now int64) time.Duration {
	t.countClose(s, now, true)
	d := time.Duration(max(0, s.anchor-s.openedAt))
	t.release(s)
	return d
}

// reconItem is one entry of a reconcile list, validated.
type reconItem struct {
	tenant string
	class  plans.Class
	user   string
	// started: when the media server says it began (SessionSpec.StartedAt)
	// if hasStart; unix nanos, agent nanos once in reconcileScoped.
	started  int64
	hasStart bool
}

// reconcile makes the table hold exactly the SourceAPI sessions of want
// (id → tenant and class); see reconcileScoped. It returns the ids opened
// and closed, sorted; an id closed and reopened with another tenant or class
// is in both.
func (t *table) reconcile(want map[string]reconItem, now int64) (opened, closed []string) {
	r := t.reconcileScoped(want, reconScope{source: SourceAPI, seenBefore: now + 1, from: now}, now)
	return r.Opened, r.Closed
}

// sessionsOf returns the open sessions, of tenant if not empty, sorted by id.
// The records belong to the table: use them before the next call.
func (t *table) sessionsOf(tenant string) []*session {
	out := make([]*session, 0, len(t.sessions))
	for _, s := range t.sessions {
		if tenant == "" || s.tenant.id == tenant {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *session) int { return strings.Compare(a.id, b.id) })
	return out
}

// ttlHeap is a min-heap of TTL sessions by heapKey.
type ttlHeap []*session

func (h *ttlHeap) push(s *session) {
	s.heapIdx = len(*h)
	*h = append(*h, s)
	h.up(s.heapIdx)
}

func (h *ttlHeap) remove(i int) {
	old := *h
	n := len(old) - 1
	old[i].heapIdx = -1
	if i != n {
		old[i] = old[n]
		old[i].heapIdx = i
	}
	old[n] = nil
	*h = old[:n]
	if i != n {
		h.fix(i)
	}
}

func (h ttlHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h ttlHeap) less(i, j int) bool { return h[i].heapKey < h[j].heapKey }

func (h ttlHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (h ttlHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

func (h ttlHeap) down(i0 int) bool {
	i, n := i0, len(h)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && h.less(r, l) {
			j = r
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}
