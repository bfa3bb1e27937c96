package agent

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/headroom-rtc/headroom/plans"
)

// Sources: every session carries the name of what opened it: SourceAPI for
// the local HTTP API and the plain Go calls (Open, Reconcile), a
// connector's name ("nginx-rtmp", "livekit", ...) for the sessions a media
// server's own hooks opened. A reconcile is scoped to one source: the list a
// media server (or a connector) sends is the truth about its own sessions
// only, and never closes another source's.

// SourceAPI is the source of sessions opened through the local HTTP API and
// the plain Go API.
const SourceAPI = "api"

const maxSourceLen = 32

// ErrNotReservation: Confirm found no session of that id.
var ErrNotReservation = errors.New("no reservation of that id")

// validSource checks a source name: 1 to 32 bytes of lower-case letters,
// digits and '-', starting with a letter. "" means SourceAPI.
func validSource(s string) (string, error) {
	if s == "" {
		return SourceAPI, nil
	}
	ok := len(s) <= maxSourceLen && s[0] >= 'a' && s[0] <= 'z'
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if !ok {
		return "", fmt.Errorf("%w: source %q: want 1 to %d lower-case letters, digits or '-', starting with a letter", ErrInvalid, s, maxSourceLen)
	}
	return s, nil
}

// OpenOptions is an Open with every option.
type OpenOptions struct {
	Tenant  string
	Class   string
	Session string
	// TTL (optional): 0 means none; otherwise the session expires, at its
	// last keepalive, when no keepalive arrives for TTL.
	TTL time.Duration
	// Source (optional, default SourceAPI) names what opened the session;
	// see ReconcileScoped.
	Source string
	// Force opens the session without an admission decision: it exists on
	// the media server already (a participant that joined without asking),
	// so it is counted and metered whatever the plan says.
	Force bool
	// User (optional): the session's user, an opaque id validated like a
	// session id: counted among the tenant's active users (DAU, MAU).
	User string
}

// sameConnector reports whether s was opened by the connector src: a
// connector classes its sessions itself (by resolution, by the room's
// tracks), so a second open of the same id by it (a LiveKit token asked
// again for a participant in the call) is the session already open, in
// whatever class it is now.
func sameConnector(s *session, src string) bool { return src != SourceAPI && s.source == src }

// OpenWith opens a session as Open does, with the options of o.
func (a *Agent) OpenWith(o OpenOptions) (OpenResult, error) {
	src, err := validSource(o.Source)
	if err != nil {
		return OpenResult{}, err
	}
	o.Source = src
	if !o.Force {
		return a.open(o)
	}
	if err := validTenantID(o.Tenant); err != nil {
		return OpenResult{}, err
	}
	if err := validSessionID(o.Session); err != nil {
		return OpenResult{}, err
	}
	if err := validUserID(o.User); err != nil {
		return OpenResult{}, err
	}
	cls, err := parseClass(o.Class)
	if err != nil {
		return OpenResult{}, err
	}
	if err := validTTL(o.TTL); err != nil {
		return OpenResult{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.expireLocked(now)
	t := a.tab
	if s := t.sessions[o.Session]; s != nil {
		if s.tenant.id == o.Tenant && (s.class == cls || sameConnector(s, o.Source)) {
			return OpenResult{Admitted: true, Existing: true}, nil
		}
		return OpenResult{}, fmt.Errorf("%w: %s is open as %s/%s", ErrConflict, o.Session, s.tenant.id, className(s.class))
	}
	te := t.tenants[o.Tenant]
	if te == nil {
		te = t.tenant(o.Tenant, true)
	}
	s := t.openFrom(te, o.Session, cls, o.TTL, o.Source, now)
	s.cell().reconciled++ // it exists: counted, not admitted
	t.setUser(s, o.User, now)
	a.noteEventLocked()
	if te.g != nil && a.stream != nil {
		signal(a.stream.wake)
	}
	return OpenResult{Admitted: true}, nil
}

// TenantMode is the enforcement mode of tenant's plan ("strict", "soft",
// "meter") as the agent last heard it, or "" if it knows no plan of it.
func (a *Agent) TenantMode(tenant string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if te := a.tab.tenants[tenant]; te != nil && te.known {
		return te.info.Mode
	}
	return ""
}

// Confirm turns a reservation (a session opened with a TTL ahead of the
// client, e.g. when a LiveKit token was minted) into a confirmed session of
// source: its TTL is dropped and its time restarts now, so the reserved
// time before the client arrived is not billed. A session without a TTL is
// only moved to source. ErrNotReservation if no session of that id is open.
func (a *Agent) Confirm(session, source string) error {
	if err := validSessionID(session); err != nil {
		return err
	}
	src, err := validSource(source)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.expireLocked(now)
	s := a.tab.lookup(session, now)
	if s == nil {
		return ErrNotReservation
	}
	a.tab.confirmReservation(s, src, now)
	a.dirty = true
	return nil
}

// SetClass moves an open session to another class without an admission
// decision (the media server found its real resolution): it is closed in
// its old class and reopened in the new one at once, as Reconcile does, so
// its OpenedAt becomes now. Nothing happens if it has that class already.
// ErrUnknownSession if it is not open.
func (a *Agent) SetClass(session, class string) error {
	if err := validSessionID(session); err != nil {
		return err
	}
	cls, err := parseClass(class)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.expireLocked(now)
	s := a.tab.lookup(session, now)
	if s == nil {
		return ErrUnknownSession
	}
	if s.class != cls {
		a.tab.reclass(s, cls, now)
		a.noteEventLocked()
	}
	return nil
}

// Lapse ends a session that the media server lost (its client is gone and
// its end was never reported): one with a TTL ends at its last keepalive,
// its last sign of life, as if its TTL had lapsed now; one without a TTL
// ends now. It returns the duration billed; ErrUnknownSession if it is not
// open.
func (a *Agent) Lapse(session string) (time.Duration, error) {
	if err := validSessionID(session); err != nil {
		return 0, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.expireLocked(now)
	s := a.tab.lookup(session, now)
	if s == nil {
		return 0, ErrUnknownSession
	}
	var d time.Duration
	switch {
	case s.ttl > 0:
		d = a.tab.expire(s, now)
	case s.doubt:
		d = a.tab.closeInDoubt(s, now)
	default:
		d = a.tab.close(s, now)
	}
	a.noteEventLocked()
	return d, nil
}

// ReconcileScope limits a reconcile to one source's sessions.
type ReconcileScope struct {
	// Source (optional, default SourceAPI) whose sessions the list is the
	// truth of. Sessions of other sources are never opened, closed or
	// changed: a listed id open under another source is skipped.
	Source string
	// SeenBefore (optional): an unlisted session opened or kept alive at or
	// after this time is kept, since the list was taken before it showed
	// up (a media server's status page read while a hook was in flight).
	SeenBefore time.Time
	// KeepTTL: unlisted sessions with a TTL are left to their TTL
	// (reservations whose client has not arrived yet).
	KeepTTL bool
	// NoOpen: listed sessions that are not open are not opened (the list
	// says which sessions still live, not whom they belong to).
	NoOpen bool
}

// ReconcileResult says what a reconcile changed, each list sorted.
type ReconcileResult struct {
	Opened []string `json:"opened"`
	Closed []string `json:"closed"`
	// Skipped: listed ids open under another source, left as they are.
	Skipped []string `json:"skipped,omitempty"`
	// Reclassed: listed ids moved to another class (in Opened and Closed
	// too: the class they had closed, the new one opened).
	Reclassed []string `json:"reclassed,omitempty"`
	// OverCeiling counts the sessions opened into a tenant whose ceiling
	// they took it over, by this agent's latest figures: they exist, so
	// they are never refused, and on a strict plan the fleet admits nothing
	// more of the tenant until closes bring it back under its ceiling.
	OverCeiling int `json:"opened_over_ceiling"`
}

// Ended are the ids the reconcile closed for good (Closed but Reclassed).
func (r ReconcileResult) Ended() []string {
	var out []string
	for _, id := range r.Closed {
		if !slices.Contains(r.Reclassed, id) {
			out = append(out, id)
		}
	}
	return out
}

// ReconcileScoped makes the open sessions of one source exactly those of
// list, as Reconcile does for SourceAPI: it opens what is missing, without
// admission checks (unless NoOpen), closes what is not listed (unless
// SeenBefore or KeepTTL keep it), closes and reopens an id open with
// another tenant or class (with another class only it stays the same
// session, of the same source and TTL: SetClass), and counts a keepalive
// for every listed session it keeps. An unlisted session with a TTL ends at its last keepalive (the
// last sign of life), one without a TTL now. The whole list is validated
// first; on any invalid entry (or an id listed twice with different tenants
// or classes) it returns an error wrapping ErrInvalid and changes nothing.
func (a *Agent) ReconcileScoped(scope ReconcileScope, list []SessionSpec) (ReconcileResult, error) {
	src, err := validSource(scope.Source)
	if err != nil {
		return ReconcileResult{}, err
	}
	want, err := reconcileList(list)
	if err != nil {
		return ReconcileResult{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.expireLocked(now)
	rs := reconScope{source: src, keepTTL: scope.KeepTTL, noOpen: scope.NoOpen, seenBefore: now + 1, from: a.missFrom}
	if at, ok := a.tab.reconciledAt[src]; ok {
		rs.from = max(rs.from, at)
	}
	if !scope.SeenBefore.IsZero() {
		rs.seenBefore = a.fromWall(scope.SeenBefore.UnixNano())
	}
	for id, w := range want {
		if w.hasStart {
			w.started = a.fromWall(w.started)
			want[id] = w
		}
	}
	res := a.tab.reconcileScoped(want, rs, now)
	res.OverCeiling = a.overCeilingLocked(res.Opened)
	if len(res.Opened) > 0 {
		a.tab.askDue = true // strict pools book the sessions now open
	}
	a.dirty = true
	a.noteEventLocked()
	return res, nil
}

// reconcileList validates a reconcile list into id → tenant and class.
func reconcileList(list []SessionSpec) (map[string]reconItem, error) {
	if len(list) > MaxReconcile {
		return nil, fmt.Errorf("%w: %d sessions listed (at most %d)", ErrInvalid, len(list), MaxReconcile)
	}
	want := make(map[string]reconItem, len(list))
	for i, e := range list {
		if err := validTenantID(e.Tenant); err != nil {
			return nil, fmt.Errorf("sessions[%d]: %w", i, err)
		}
		if err := validSessionID(e.Session); err != nil {
			return nil, fmt.Errorf("sessions[%d]: %w", i, err)
		}
		cls, err := parseClass(e.Class)
		if err != nil {
			return nil, fmt.Errorf("sessions[%d]: %w", i, err)
		}
		if err := validUserID(e.User); err != nil {
			return nil, fmt.Errorf("sessions[%d]: %w", i, err)
		}
		it := reconItem{tenant: e.Tenant, class: cls, user: e.User}
		if prev, ok := want[e.Session]; ok {
			if prev.tenant != it.tenant || prev.class != it.class || prev.user != it.user {
				return nil, fmt.Errorf("%w: sessions[%d]: session %s listed twice with different tenants or classes", ErrInvalid, i, e.Session)
			}
			continue // the first entry's start stands
		}
		if !e.StartedAt.IsZero() {
			it.started, it.hasStart = e.StartedAt.UnixNano(), true
		}
		want[e.Session] = it
	}
	return want, nil
}

// SourceCounts returns the number of open sessions per source.
func (a *Agent) SourceCounts() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(a.now())
	out := make(map[string]int, len(a.tab.bySource))
	for s, n := range a.tab.bySource {
		out[s] = n
	}
	return out
}

// The table's side (pure, like table.go).

// reconScope is a validated ReconcileScope; seenBefore is in agent nanos.
// from (agent nanos) is the earliest instant a session the reconcile opens
// may count from, whatever its start (SessionSpec.StartedAt).
type reconScope struct {
	source     string
	seenBefore int64
	from       int64
	keepTTL    bool
	noOpen     bool
}

// reconcileScoped is reconcile restricted to the sessions of one source.
func (t *table) reconcileScoped(want map[string]reconItem, rs reconScope, now int64) ReconcileResult {
	res := ReconcileResult{Opened: []string{}, Closed: []string{}}
	for id, s := range t.sessions {
		if s.source != rs.source {
			if _, ok := want[id]; ok {
				res.Skipped = append(res.Skipped, id)
			}
			continue
		}
		w, ok := want[id]
		switch {
		case ok && w.tenant == s.tenant.id && w.class == s.class:
			t.keepalive(s, now)
			continue
		case ok && w.tenant == s.tenant.id: // another class: closed and reopened in it at once
			t.keepalive(s, now)
			t.reclass(s, w.class, now)
			res.Closed = append(res.Closed, id)
			res.Opened = append(res.Opened, id)
			res.Reclassed = append(res.Reclassed, id)
			continue
		case ok: // another tenant: close, and reopen below from now (its time so far was counted)
			t.close(s, now)
			w.hasStart = false
			want[id] = w
		case s.lastKA >= rs.seenBefore || rs.keepTTL && s.ttl > 0:
			continue
		case s.ttl > 0:
			t.expire(s, now)
		case s.doubt: // it may have ended while the agent was down
			t.closeInDoubt(s, now)
		default:
			t.close(s, now)
		}
		res.Closed = append(res.Closed, id)
	}
	if !rs.noOpen {
		for id, w := range want {
			if t.sessions[id] != nil {
				continue
			}
			s := t.openFrom(t.tenant(w.tenant, true), id, w.class, 0, rs.source, now)
			s.cell().reconciled++ // it exists: taken from the list, not admitted
			if w.hasStart {
				t.backdate(s, min(max(w.started, rs.from), now), now)
			}
			t.setUser(s, w.user, now)
			res.Opened = append(res.Opened, id)
		}
	}
	t.reconciledAt[rs.source] = now
	slices.Sort(res.Opened)
	slices.Sort(res.Closed)
	slices.Sort(res.Skipped)
	slices.Sort(res.Reclassed)
	return res
}

// confirmReservation makes s a confirmed session of src at now: a TTL
// session's provisional time is taken back (its reserved time is not
// billed) and it counts from now without a TTL.
func (t *table) confirmReservation(s *session, src string, now int64) {
	if s.ttl > 0 {
		c := s.cell()
		c.accrue(now)
		c.ttlN--
		c.anchors -= s.anchor
		c.acc -= now - s.anchor
		if s.heapIdx >= 0 {
			t.heap.remove(s.heapIdx)
		}
		s.ttl, s.openedAt, s.lastKA, s.anchor = 0, now, now, now
	}
	t.setSource(s, src)
	t.recordOpen(s)
}

// reclass closes s in its class and reopens it in cls at now.
func (t *table) reclass(s *session, cls plans.Class, now int64) {
	t.countClose(s, now, false)
	s.class = cls
	s.openedAt, s.anchor = now, now
	if s.lastKA < now {
		s.lastKA = now
	}
	t.countOpen(s, now)
	s.cell().reconciled++ // the same session in its new class: not an admission
	t.recordOpen(s)
}

func (t *table) setSource(s *session, src string) {
	if s.source == src {
		return
	}
	t.bySource[s.source]--
	if t.bySource[s.source] == 0 {
		delete(t.bySource, s.source)
	}
	s.source = src
	t.bySource[src]++
}

// recordOpen journals the whole of s again (the persister overwrites its
// copy).
func (t *table) recordOpen(s *session) {
	t.record(sessChange{op: jOpen, class: s.class, id: s.id, tenant: s.tenant.id, source: s.source,
		ttl: s.ttl, openedAt: s.openedAt, lastKA: s.lastKA, anchor: s.anchor, doubt: s.doubt, user: s.user})
}
