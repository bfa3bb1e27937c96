// Package agent is headroom's sidecar: it keeps the table of sessions open on
// one media server, answers admission questions locally from the latest
// tenant state pushed by the aggregator cluster, integrates open counts into
// usage, ships the changes in sequenced batches over one msgpack stream, and
// persists what it has not had acknowledged, so that a crash of the agent
// loses at most its last flush interval and counts nothing twice.
//
// Concurrency: every exported method of Agent is safe for concurrent use. One
// mutex guards the session table, the integrator, the tenant state and the
// shipping bookkeeping; it is held for microseconds per call and never across
// I/O. Persisting takes the session changes journalled since the last persist
// (and copies the small rest: pending usage, unacked batch bodies, tenants)
// under the mutex, then encodes and writes outside it. Cut batches are
// immutable and shared between the unacked list, the persister and the
// stream writer; slices returned to callers are theirs.
//
// Time: the agent measures time on the monotonic clock from its creation
// (agent nanos). Wall-clock times are derived from that base and used only
// in what is persisted and shown.
//
// An agent restarted after a crash restores its sessions, unacknowledged
// batches and pending usage from DataDir. Sessions that were open across the
// crash accrue usage again from the moment the state is loaded: the time
// between the agent's last persist and its restart is not counted (at most
// one flush interval per session if it crashed, plus the downtime itself).
// The media server's reconcile call restores exact session truth.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/headroom-rtc/headroom/plans"
	"github.com/headroom-rtc/headroom/wire"
)

// Config configures an Agent.
type Config struct {
	// DataDir (required) is where identity, sessions and unacked batches are
	// kept. It is created if missing.
	DataDir string
	// Servers (required) are wire addresses (host:port) of aggregator
	// servers; more are learnt from Welcome and Redirect.
	Servers []string
	// AgentID (optional, default: kept in DataDir, random on first start).
	// If set, it must match the id kept in DataDir.
	AgentID string
	// Labels (optional), e.g. region; sent sorted by key.
	Labels []wire.Label
	// Token (optional) is sent in Hello.
	Token string
	// FlushInterval (optional, default 100ms) is how often a batch is cut
	// and the state persisted.
	FlushInterval time.Duration
	// MaxBatchEntries (optional, default 1000): a batch is cut sooner when
	// this many tenant/class entries changed since the last one, and no
	// batch carries more entries (a larger cut is sent as several batches).
	MaxBatchEntries int
	// MaxFrame (optional, default wire.DefaultMaxFrame) is the largest frame
	// body read from or written to a server.
	MaxFrame int
	// Logger (optional, default hclog.NewNullLogger()).
	Logger hclog.Logger
	// Dial (optional, default a net.Dialer with a 1 s timeout) opens a
	// stream to a server.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// TopUpWait (optional, default DefaultTopUpWait) is how long an
	// admission of a strict tenant whose share is used up, while its
	// ceiling has room, waits for a top-up before grant-timeout.
	TopUpWait time.Duration

	// WallClock (optional, default time.Now) gives the wall-clock time the
	// agent's start is stamped with; durations are measured on the
	// monotonic clock whatever it does (wallclock.go).
	WallClock func() time.Time

	// clock replaces time.Now in tests (wall and agent time both follow it).
	clock func() time.Time
}

// Defaults.
const (
	DefaultFlushInterval   = 100 * time.Millisecond
	DefaultMaxBatchEntries = 1000
	// entryBudget is a generous bound of one encoded delta entry plus its
	// share of tenant peaks, used to keep batches under MaxFrame.
	entryBudget = 256
	maxServers  = 64
	// DefaultDialTimeout bounds a connection attempt: a server whose host
	// vanished (no RST) must not hold the agent for long, since it tries
	// the others in turn.
	DefaultDialTimeout = time.Second
)

// OpenResult is the answer to an Open.
type OpenResult struct {
	// Admitted: the session is open (now or already).
	Admitted bool
	// Reason tells why a session was refused (ReasonUnknownTenant, ...).
	Reason string
	// RetryAfter is how long to wait before asking again after a refusal.
	RetryAfter time.Duration
	// Existing: the session was already open with the same tenant and class;
	// nothing changed.
	Existing bool
}

// SessionSpec names a session in a reconcile list.
type SessionSpec struct {
	Tenant  string `json:"tenant"`
	Class   string `json:"class"`
	Session string `json:"session"`
	// User (optional): the session's user, counted among the tenant's
	// active users when the reconcile opens the session.
	User string `json:"user,omitempty"`
	// StartedAt (optional, reconcile only): when the media server says the
	// session began. A session the reconcile opens counts from then
	// rather than from the reconcile, but never from before what the agent
	// can have missed: its last persisted instant before it restarted (its
	// start, for a new agent) and the same source's previous reconcile;
	// and never from after now. It gives back the time of an open a crash
	// lost, or of a session admitted while the agent could not be asked.
	StartedAt time.Time `json:"started_at,omitzero"`
}

// SessionInfo describes an open session.
type SessionInfo struct {
	Session       string    `json:"session"`
	Tenant        string    `json:"tenant"`
	Class         string    `json:"class"`
	OpenedAt      time.Time `json:"opened_at"`
	LastKeepalive time.Time `json:"last_keepalive"`
	TTLSeconds    float64   `json:"ttl_seconds,omitempty"`
	// Source: what opened it (SourceAPI or a connector's name).
	Source string `json:"source"`
	// User: its user, if one was given.
	User string `json:"user,omitempty"`
}

// AckInfo is the last acknowledgement received.
type AckInfo struct {
	Seq   uint64     `json:"seq"`
	Index uint64     `json:"index"`
	At    *time.Time `json:"at"`
}

// Status is a snapshot of the agent's state.
type Status struct {
	ID             string      `json:"id"`
	Epoch          uint64      `json:"epoch"`
	Server         string      `json:"server"`
	Connected      bool        `json:"connected"`
	UnackedBatches int         `json:"unacked_batches"`
	LastAck        AckInfo     `json:"last_ack"`
	OpenSessions   int         `json:"open_sessions"`
	TenantsKnown   int         `json:"tenants_known"`
	Grants         GrantStatus `json:"grants"`
	// Connectors: each media server connector's counts (connector.go).
	Connectors map[string]ConnectorStatus `json:"connectors,omitempty"`
}

// GrantStatus tells how the agent's asks for shares of strict ceilings
// fare: the round trip is from sending a GrantAsk to reading its Grant
// (the leader commits the shares in between).
type GrantStatus struct {
	Asks     uint64 `json:"asks"`
	Answered uint64 `json:"answered"`
	Pending  bool   `json:"pending"`
	// TightPools counts the strict pools in which this agent admits
	// nothing beyond what it holds and hands back the share of every
	// session that ends: under a ceiling lowered, or with the fleet's
	// bookings over it (a restart, a return), until the leader reports
	// room again.
	TightPools int `json:"tight_pools"`
	// Over the last answered asks (up to 1024):
	RoundTripP50Ms float64 `json:"round_trip_p50_ms"`
	RoundTripP99Ms float64 `json:"round_trip_p99_ms"`
	RoundTripMaxMs float64 `json:"round_trip_max_ms"`
}

// batch is a cut DeltaBatch awaiting its Ack. It is immutable once cut, so
// it may be encoded outside the mutex.
type batch struct {
	msg  *wire.DeltaBatch
	body []byte // wire.Append(nil, msg): what is sent and persisted
}

// Agent is a running agent. Create it with New; see the package comment for
// its concurrency contract.
type Agent struct {
	cfg Config
	// unsupported marks the classes the last server's Welcome did not list
	// (a server of before them); guarded by mu.
	unsupported [numClasses + 1]bool
	log         hclog.Logger
	dial        func(ctx context.Context, addr string) (net.Conn, error)
	labels      []wire.Label
	start       time.Time     // base of agent nanos (monotonic in production)
	clock       func() int64  // agent nanos
	flushNow    chan struct{} // cap 1: an early cut is due
	ackWake     chan struct{} // cap 1: an Ack arrived
	running     sync.Mutex    // held by Run
	persistM    sync.Mutex    // serialises persist
	knobs       knobs         // timings; tests may change them before Run
	startUnix   int64         // a.start in unix nanos: wall = startUnix + agent nanos
	wallSkew    int64         // WallClock minus the derived wall time at the last jump logged

	pst persister // the state's files; owned by persistM

	mu      sync.Mutex // guards everything below
	tab     *table
	servers serverList
	id      string
	epoch   uint64
	nextSeq uint64  // seq of the next batch cut
	unacked []batch // cut and not acknowledged, in seq order
	persSeq uint64  // batches up to this seq are persisted (may be sent)
	// missFrom (agent nanos) is the earliest instant this agent's count can
	// have missed a session: its last persisted instant before it restarted,
	// or its start (0) when it began afresh (SessionSpec.StartedAt).
	missFrom int64
	writes   int     // state records written (for tests)
	snaps    uint64  // persists that copied the state (journal.go)
	dirty    bool    // something to persist besides accrual
	stream   *stream // current stream, nil if none
	lastAck  AckInfo
	draining bool              // Run is shutting down
	cutDrain bool              // a cut happened while draining
	tsBuf    []wire.TenantInfo // frames of a Full TenantState with More
	tsBufOn  bool
	// grants (grants.go)
	ask     *pendingAsk   // the GrantAsk in flight
	askSeq  uint64        // ReqID of the last ask
	lease   time.Duration // of shares, from the last Grant
	grantCh chan struct{} // closed and replaced on every grant event
	rtts    rttRing       // round trips of answered asks
	// counters for metrics (metrics.go)
	stats    counters
	sentHigh uint64 // highest seq of this epoch written on any stream
	// connectors by name (connector.go)
	connectors map[string]*Connector
}

// knobs are timings the tests shorten.
type knobs struct {
	pingInterval time.Duration // Ping every this; a stream silent 3× this is dead
	writeTimeout time.Duration
	drainTimeout time.Duration // bounded drain at shutdown
	backoffMin   time.Duration
	backoffMax   time.Duration
}

var defaultKnobs = knobs{
	pingInterval: 3 * time.Second,
	writeTimeout: 10 * time.Second,
	drainTimeout: 2 * time.Second,
	backoffMin:   50 * time.Millisecond,
	backoffMax:   5 * time.Second,
}

// New loads the agent's state from cfg.DataDir, or creates it there, and
// returns the agent. It does no network I/O; call Run to ship.
func New(cfg Config) (*Agent, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("agent: DataDir is required")
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("agent: at least one server address is required")
	}
	for _, s := range cfg.Servers {
		if s == "" {
			return nil, errors.New("agent: empty server address")
		}
	}
	if cfg.AgentID != "" {
		if err := validID("agent", cfg.AgentID, maxSessionID); err != nil {
			return nil, fmt.Errorf("agent: AgentID: %w", err)
		}
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.MaxBatchEntries <= 0 {
		cfg.MaxBatchEntries = DefaultMaxBatchEntries
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = wire.DefaultMaxFrame
	}
	if cfg.TopUpWait <= 0 {
		cfg.TopUpWait = DefaultTopUpWait
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	labels := slices.Clone(cfg.Labels)
	slices.SortStableFunc(labels, func(a, b wire.Label) int { return strings.Compare(a.Key, b.Key) })
	for i, l := range labels {
		if l.Key == "" {
			return nil, errors.New("agent: label with an empty key")
		}
		if i > 0 && labels[i-1].Key == l.Key {
			return nil, fmt.Errorf("agent: label %q given twice", l.Key)
		}
	}
	a := &Agent{
		cfg:      cfg,
		log:      cfg.Logger,
		dial:     cfg.Dial,
		labels:   labels,
		lease:    defaultLease,
		grantCh:  make(chan struct{}),
		flushNow: make(chan struct{}, 1),
		ackWake:  make(chan struct{}, 1),
		knobs:    defaultKnobs,
		tab:      newTable(),
	}
	if cfg.clock != nil {
		a.start = cfg.clock()
		a.startUnix = a.start.UnixNano()
		a.clock = func() int64 { return int64(cfg.clock().Sub(a.start)) }
	} else {
		mono := time.Now()
		a.start = mono
		if cfg.WallClock != nil {
			a.start = cfg.WallClock().Round(0)
		}
		a.startUnix = a.start.UnixNano()
		a.clock = func() int64 { return int64(time.Since(mono)) }
	}
	if a.dial == nil {
		d := &net.Dialer{Timeout: DefaultDialTimeout}
		a.dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	for _, s := range cfg.Servers {
		a.servers.add(s)
	}
	a.tab.wallBase = a.startUnix
	if err := a.load(); err != nil {
		return nil, err
	}
	return a, nil
}

// now returns the current agent nanos.
func (a *Agent) now() int64 { return a.clock() }

// wall converts agent nanos to wall-clock time.
func (a *Agent) wall(t int64) time.Time { return a.start.Add(time.Duration(t)).Round(0) }

// fromWall converts a wall-clock time in unix nanos to agent nanos.
func (a *Agent) fromWall(unixNanos int64) int64 { return unixNanos - a.startUnix }

func randomID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return "a-" + hex.EncodeToString(b[:])
}

// Open opens session of tenant and class if admitted. ttl 0 means no TTL;
// otherwise the session expires when no keepalive arrives for ttl. An id
// already open with the same tenant and class answers Admitted and Existing
// and changes nothing (so does one of the same tenant opened by the same
// connector, whatever its class: see OpenWith); with another tenant or
// class it is ErrConflict. Bad
// arguments give an error wrapping ErrInvalid. A refusal is not an error:
// Admitted is false and Reason says why. The agent keeps the strings given.
func (a *Agent) Open(tenant, class, session string, ttl time.Duration) (OpenResult, error) {
	return a.open(OpenOptions{Tenant: tenant, Class: class, Session: session, TTL: ttl, Source: SourceAPI})
}

// open is Open with the options of OpenWith but Force; o.Source is valid.
func (a *Agent) open(o OpenOptions) (OpenResult, error) {
	tenant, class, session, ttl := o.Tenant, o.Class, o.Session, o.TTL
	if err := validTenantID(tenant); err != nil {
		return OpenResult{}, err
	}
	if err := validUserID(o.User); err != nil {
		return OpenResult{}, err
	}
	if err := validSessionID(session); err != nil {
		return OpenResult{}, err
	}
	cls, err := parseClass(class)
	if err != nil {
		return OpenResult{}, err
	}
	if err := validTTL(ttl); err != nil {
		return OpenResult{}, err
	}
	a.mu.Lock()
	now := a.now()
	t := a.tab
	a.expireLocked(now)
	if s := t.sessions[session]; s != nil {
		if s.tenant.id == tenant && (s.class == cls || sameConnector(s, o.Source)) {
			a.mu.Unlock()
			return OpenResult{Admitted: true, Existing: true}, nil
		}
		other := s.tenant.id + "/" + className(s.class)
		a.mu.Unlock()
		return OpenResult{}, fmt.Errorf("%w: %s is open as %s", ErrConflict, session, other)
	}
	te := t.tenants[tenant]
	v, reason, short := decide(te, cls, now, a.streamLive())
	if v != refuse && a.unsupported[cls] {
		v, reason = refuse, ReasonClassUnsupported
	}
	if v == wait {
		v, reason, te = a.waitTopUpLocked(tenant, cls, session, short)
		if v == 0 { // the session was opened meanwhile (the same id)
			return a.openedMeanwhileLocked(tenant, cls, session)
		}
		now = a.now()
	}
	if v != admit {
		a.stats.refused[reasonIndex(reason)]++
		if te == nil && len(t.tenants)-t.known < maxUnknownTenants {
			te = t.tenant(tenant, true)
		}
		if te != nil {
			t.refuse(te, cls)
			a.noteEventLocked()
		}
		a.mu.Unlock()
		return OpenResult{Reason: reason, RetryAfter: retryAfter(reason)}, nil
	}
	if te == nil { // defensive: decide admits only known tenants
		te = t.tenant(tenant, true)
	}
	s := t.openFrom(te, session, cls, ttl, o.Source, now)
	t.setUser(s, o.User, now)
	a.stats.admitted++
	a.noteEventLocked()
	if te.g != nil && a.stream != nil {
		signal(a.stream.wake) // the writer checks whether the share runs low
	}
	a.mu.Unlock()
	return OpenResult{Admitted: true}, nil
}

// streamLive reports whether a stream to the leader is up (Welcome done).
func (a *Agent) streamLive() bool { return a.stream != nil && a.stream.live }

// waitTopUpLocked waits, for at most TopUpWait, until an admission that
// decide told to wait can be decided: it registers as a waiter of the
// pools short of a share (so the next ask covers it), wakes the writer and
// waits for grant events. It returns the final verdict (wait turned into a
// grant-timeout refusal), or 0 when the session id was opened by another
// call meanwhile. a.mu is held on entry and on return.
func (a *Agent) waitTopUpLocked(tenant string, cls plans.Class, session string, short [2]int) (verdict, string, *tenantEntry) {
	te := a.tab.tenants[tenant]
	var waiting []*pool
	for _, i := range short {
		if i >= 0 && te != nil && te.g != nil {
			p := &te.g.pools[i]
			p.waiters++
			waiting = append(waiting, p)
		}
	}
	defer func() {
		for _, p := range waiting {
			p.waiters--
		}
	}()
	if a.stream != nil {
		signal(a.stream.wake)
	}
	timer := time.NewTimer(a.cfg.TopUpWait)
	defer timer.Stop()
	// While it waits, the pool may be asked again every dryWait: a short
	// answer means other agents were asked to hand back meanwhile.
	retry := time.NewTicker(dryWait)
	defer retry.Stop()
	for {
		ch := a.grantCh
		a.mu.Unlock()
		expired := false
		select {
		case <-ch:
		case <-retry.C:
			a.mu.Lock()
			if a.stream != nil {
				signal(a.stream.wake)
			}
			continue // with a.mu held, as at the top of the loop
		case <-timer.C:
			expired = true
		}
		a.mu.Lock()
		if a.tab.sessions[session] != nil {
			return 0, "", nil
		}
		te = a.tab.tenants[tenant]
		v, reason, _ := decide(te, cls, a.now(), a.streamLive())
		if v != wait {
			return v, reason, te
		}
		if expired {
			return refuse, ReasonGrantTimeout, te
		}
	}
}

// openedMeanwhileLocked answers an Open whose session id another call
// opened while it waited; it unlocks a.mu.
func (a *Agent) openedMeanwhileLocked(tenant string, cls plans.Class, session string) (OpenResult, error) {
	s := a.tab.sessions[session]
	same, other := s.tenant.id == tenant && s.class == cls, s.tenant.id+"/"+className(s.class)
	a.mu.Unlock()
	if same {
		return OpenResult{Admitted: true, Existing: true}, nil
	}
	return OpenResult{}, fmt.Errorf("%w: %s is open as %s", ErrConflict, session, other)
}

// expireLocked expires the sessions whose TTL lapsed at now.
func (a *Agent) expireLocked(now int64) {
	if a.tab.expireDue(now) > 0 {
		a.dirty = true
		a.askIfDueLocked()
	}
}

// askIfDueLocked wakes the stream's writer when a close handed a share
// back, so that the leader books it free at once.
func (a *Agent) askIfDueLocked() {
	if a.tab.askDue {
		a.tab.askDue = false
		if a.stream != nil {
			signal(a.stream.wake)
		}
	}
}

// noteEventLocked marks the state dirty and, while a stream is live, asks
// for an early cut when MaxBatchEntries entries changed since the last one.
// (While no stream is live nothing is cut, so nothing is asked.)
func (a *Agent) noteEventLocked() {
	a.dirty = true
	a.askIfDueLocked()
	if a.tab.eventful >= a.cfg.MaxBatchEntries && a.stream != nil && a.stream.live {
		select {
		case a.flushNow <- struct{}{}:
		default:
		}
	}
}

// Close closes session and returns how long it was open; ErrUnknownSession
// if it is not open (or its TTL lapsed).
func (a *Agent) Close(session string) (time.Duration, error) {
	if err := validSessionID(session); err != nil {
		return 0, err
	}
	a.mu.Lock()
	now := a.now()
	a.expireLocked(now)
	s := a.tab.lookup(session, now)
	if s == nil {
		a.mu.Unlock()
		return 0, ErrUnknownSession
	}
	d := a.tab.close(s, now)
	a.noteEventLocked()
	a.mu.Unlock()
	return d, nil
}

// Keepalive records that session is alive; ErrUnknownSession if it is not
// open (or its TTL lapsed).
func (a *Agent) Keepalive(session string) error {
	if err := validSessionID(session); err != nil {
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
	a.tab.keepalive(s, now)
	a.dirty = true
	return nil
}

// Reset closes every open session and returns how many it closed.
func (a *Agent) Reset() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.expireLocked(now)
	n := a.tab.reset(now)
	a.dirty = true
	a.noteEventLocked()
	return n
}

// MaxReconcile is the most sessions a reconcile list may hold.
const MaxReconcile = 200_000

// Reconcile makes the open sessions of SourceAPI exactly those of list (the
// media server's full list of live sessions); it is ReconcileScoped with
// the default scope: it opens what is missing, without admission checks,
// closes what is not listed (a session with a TTL at its last keepalive),
// and closes and reopens an id open with another tenant or class. Sessions
// that connectors opened (another source) are left alone. The whole list is
// validated first; on any invalid entry (or an id listed twice with
// different tenants or classes) it returns an error wrapping ErrInvalid and
// changes nothing. It returns the ids opened and closed, sorted.
func (a *Agent) Reconcile(list []SessionSpec) (opened, closed []string, err error) {
	res, err := a.ReconcileScoped(ReconcileScope{}, list)
	if err != nil {
		return nil, nil, err
	}
	return res.Opened, res.Closed, nil
}

// overCeilingLocked counts, of the sessions just opened (ids), those that
// stand over their tenant's ceiling by this agent's estimate of the
// tenant's global count: per tenant, at most what it opened.
func (a *Agent) overCeilingLocked(ids []string) int {
	opened := map[*tenantEntry]uint64{}
	for _, id := range ids {
		if s := a.tab.sessions[id]; s != nil {
			opened[s.tenant]++
		}
	}
	n := 0
	for te, k := range opened {
		if !te.known || plans.Mode(te.info.Mode) == plans.Meter {
			continue
		}
		if est := estimate(te); est > te.info.Ceiling {
			n += int(min(k, est-te.info.Ceiling))
		}
	}
	return n
}

// Sessions lists the open sessions, of tenant only if tenant is not empty,
// sorted by id.
func (a *Agent) Sessions(tenant string) []SessionInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.expireLocked(now)
	ss := a.tab.sessionsOf(tenant)
	out := make([]SessionInfo, len(ss))
	for i, s := range ss {
		out[i] = SessionInfo{
			Session: s.id, Tenant: s.tenant.id, Class: className(s.class),
			OpenedAt: a.wall(s.openedAt).UTC(), LastKeepalive: a.wall(s.lastKA).UTC(),
			TTLSeconds: time.Duration(s.ttl).Seconds(), Source: s.source, User: s.user,
		}
	}
	return out
}

// Status returns a snapshot of the agent's state.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := Status{
		ID: a.id, Epoch: a.epoch,
		UnackedBatches: len(a.unacked),
		LastAck:        a.lastAck,
		OpenSessions:   a.tab.openCount(),
		TenantsKnown:   a.tab.known,
	}
	if a.lastAck.At != nil {
		at := *a.lastAck.At
		st.LastAck.At = &at
	}
	if s := a.stream; s != nil && s.live {
		st.Server, st.Connected = s.addr, true
	}
	st.Grants = a.grantStatusLocked()
	st.Connectors = a.connectorsLocked()
	return st
}

// ID returns the agent's id.
func (a *Agent) ID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.id
}
