package api

// GET /v1/events streams server-sent events to dashboards. Every server
// serves it from its own state machine, leader or not. Each event is
//
//	event: NAME
//	data: ONE-LINE-JSON
//
// followed by a blank line, with NAME one of:
//
//   - concurrency: {"at","tenants":[{"tenant","plan","ceiling",
//     "concurrency","utilization","by_class":{...}}]}, the tenants whose
//     plan, ceiling or open sessions changed since the previous concurrency
//     event (a deleted tenant comes once more with "deleted":true). The
//     hub gathers the tenants each log entry changed and, once a second,
//     sends the ones whose figures really differ from what it last sent, as
//     one event shared by every connection: at most one a second, none when
//     nothing changed.
//   - plan: one audit entry as GET /v1/audit lists it, for every change of
//     a tenant's plan or standing and of the catalogue, as the entry is
//     applied.
//   - alert: an alert as the webhook receives it (alerts.go), as this
//     server detects it. Every server detects the same crossings with the
//     same ids, so every server's stream carries them, whether or not the
//     webhook delivery (the leader's) has succeeded.
//   - leader: {"leader","address","term"} when this server sees another
//     leader or term (polled every eventLeaderPoll), and once at the start
//     of every stream. address is the leader's HTTP address, empty while
//     unknown; leader is empty while there is none.
//
// A comment line ": keepalive" goes out every eventKeepalive so proxies
// keep the stream open. ?tenant=ID limits concurrency, plan and alert
// events to one tenant (a tenant's ACL token always is).
//
// Nothing here blocks the state machine: the FSM's hooks only note changed
// tenants or queue an already encoded frame, without waiting for any
// client. Each connection has a bounded queue (eventQueueBytes, counting
// the frames being written too); a client that does not read fast enough
// to keep its queue under the bound is dropped: its connection is closed
// and its queue released. It may reconnect (EventSource does) and reload
// what it shows. A client should open the stream before it reads the
// figures it then keeps up to date, so that no change falls between the
// two.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/hashicorp/go-hclog"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
	"github.com/headroom-rtc/headroom/plans"
)

const (
	// eventCoalesce is how often concurrency events go out, at most.
	eventCoalesce = time.Second
	// eventKeepalive is how often a keepalive comment goes out.
	eventKeepalive = 15 * time.Second
	// eventLeaderPoll is how often the hub looks for a leader change.
	eventLeaderPoll = 100 * time.Millisecond
	// eventQueueBytes bounds what one connection holds: frames queued and
	// being written. A frame larger than the bound is still taken by an
	// empty queue, so one big concurrency event does not drop every client.
	eventQueueBytes = 4 << 20
	// eventQueueFrames bounds the frames queued on one connection.
	eventQueueFrames = 1024
	// eventWriteTimeout bounds one write to a client.
	eventWriteTimeout = 10 * time.Second
	// maxEventClients bounds the connections of one server.
	maxEventClients = 10_000
)

// Event names.
const (
	eventConcurrency = "concurrency"
	eventPlan        = "plan"
	eventAlert       = "alert"
	eventLeader      = "leader"
)

// ConcurrencyEventJSON is the data of a concurrency event.
type ConcurrencyEventJSON struct {
	At      string                  `json:"at"`
	Tenants []TenantConcurrencyJSON `json:"tenants"`
}

// TenantConcurrencyJSON is one tenant of a concurrency event.
type TenantConcurrencyJSON struct {
	Tenant      string            `json:"tenant"`
	Plan        string            `json:"plan"`
	Ceiling     uint64            `json:"ceiling"`
	Concurrency uint64            `json:"concurrency"`
	Utilization float64           `json:"utilization"`
	ByClass     map[string]uint64 `json:"by_class"`
	// Deleted: the tenant is gone (sent once).
	Deleted bool `json:"deleted,omitempty"`
}

// LeaderEventJSON is the data of a leader event.
type LeaderEventJSON struct {
	Leader  string `json:"leader"`
	Address string `json:"address"`
	Term    uint64 `json:"term"`
}

// tenantFigures is what a concurrency event says of a tenant.
type tenantFigures struct {
	plan    string
	ceiling uint64
	open    fsm.ClassCounts
}

var keepaliveFrame = []byte(": keepalive\n\n")

// eventFrame encodes one event.
func eventFrame(name string, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(name)+len(data)+16)
	b = append(b, "event: "...)
	b = append(b, name...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...), nil
}

// eventSub is one connection's queue.
type eventSub struct {
	only string        // "" or the one tenant this client sees
	wake chan struct{} // cap 1: frames queued
	gone chan struct{} // closed when the hub dropped the client
	// kick unblocks a write in progress (sets a past deadline); set by the
	// handler before the stream starts, called by drop.
	kick func()

	mu     sync.Mutex
	queue  [][]byte
	bytes  int // queued plus being written
	closed bool
}

// offer queues a frame unless that would take the client over the bounds.
func (s *eventSub) offer(frame []byte, maxBytes, maxFrames int) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return true
	}
	if s.bytes > 0 && (s.bytes+len(frame) > maxBytes || len(s.queue) >= maxFrames) {
		s.mu.Unlock()
		return false
	}
	s.queue = append(s.queue, frame)
	s.bytes += len(frame)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// take returns the queued frames, whose bytes count until written, and
// arms the write deadline, unless the client was dropped (false). Arming
// under the lock orders it before a drop's kick, so a kick always wins.
func (s *eventSub) take(arm func()) ([][]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	q := s.queue
	s.queue = nil
	if arm != nil {
		arm()
	}
	return q, true
}

// written releases n bytes taken and written.
func (s *eventSub) written(n int) {
	s.mu.Lock()
	s.bytes -= n
	s.mu.Unlock()
}

// drop closes the client's stream; its queue is released.
func (s *eventSub) drop() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.queue = nil
	kick := s.kick
	s.mu.Unlock()
	close(s.gone)
	if kick != nil {
		kick()
	}
}

// eventHubStats counts what the hub did.
type eventHubStats struct {
	published [len(eventNames)]atomic.Uint64 // events, per name
	dropped   atomic.Uint64                  // clients dropped for being slow
	opened    atomic.Uint64                  // streams opened
}

var eventNames = [4]string{eventConcurrency, eventPlan, eventAlert, eventLeader}

func eventIndex(name string) int {
	for i, n := range eventNames {
		if n == name {
			return i
		}
	}
	return 0
}

// eventHub fans events out to the connections of GET /v1/events.
type eventHub struct {
	log    hclog.Logger
	fsm    fsm.Reader
	now    func() time.Time
	leader func() LeaderEventJSON
	// Bounds of one connection (tests lower them).
	maxBytes, maxFrames int
	writeTimeout        time.Duration
	stats               eventHubStats

	mu     sync.Mutex
	subs   map[*eventSub]struct{}
	dirty  map[string]struct{} // tenants changed since the last concurrency event
	reset  bool                // published is stale: forget it at the next flush
	lead   []byte              // the latest leader frame
	closed bool

	// Owned by the goroutine that calls flushConcurrency and pollLeader:
	published  map[string]tenantFigures
	lastLeader LeaderEventJSON
	polled     bool
}

func newEventHub(sm fsm.Reader, log hclog.Logger, now func() time.Time, leader func() LeaderEventJSON) *eventHub {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &eventHub{
		log: log, fsm: sm, now: now, leader: leader,
		maxBytes: eventQueueBytes, maxFrames: eventQueueFrames, writeTimeout: eventWriteTimeout,
		subs: make(map[*eventSub]struct{}), published: make(map[string]tenantFigures),
	}
}

var errEventsClosed = errors.New("the server is shutting down")

// subscribe adds a client; only limits its tenant events to one tenant.
func (h *eventHub) subscribe(only string) (*eventSub, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return nil, errEventsClosed
	case len(h.subs) >= maxEventClients:
		return nil, errors.New("too many event streams on this server; try another or later")
	}
	sub := &eventSub{only: only, wake: make(chan struct{}, 1), gone: make(chan struct{})}
	if len(h.subs) == 0 {
		// Changes were not tracked while nobody listened: what was last
		// published may be stale.
		h.reset, h.dirty = true, nil
	}
	h.subs[sub] = struct{}{}
	if h.lead != nil {
		sub.offer(h.lead, h.maxBytes, h.maxFrames)
	}
	h.stats.opened.Add(1)
	return sub, nil
}

func (h *eventHub) unsubscribe(sub *eventSub) {
	h.mu.Lock()
	delete(h.subs, sub)
	h.mu.Unlock()
	sub.drop()
}

// clients is the number of connected clients.
func (h *eventHub) clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// close drops every client and refuses new ones.
func (h *eventHub) close() {
	h.mu.Lock()
	h.closed = true
	subs := h.subs
	h.subs = map[*eventSub]struct{}{}
	h.mu.Unlock()
	for sub := range subs {
		sub.drop()
	}
}

// publish offers a frame to every client that sees tenant ("" for all
// clients). It never blocks.
func (h *eventHub) publish(tenant string, frame []byte) {
	h.publishTo(func(sub *eventSub) bool { return tenant == "" || sub.only == "" || sub.only == tenant }, frame)
}

// publishTo offers a frame to the clients match selects; clients over
// their bounds are dropped. It never blocks.
func (h *eventHub) publishTo(match func(*eventSub) bool, frame []byte) {
	var slow []*eventSub
	h.mu.Lock()
	for sub := range h.subs {
		if match(sub) && !sub.offer(frame, h.maxBytes, h.maxFrames) {
			delete(h.subs, sub)
			slow = append(slow, sub)
		}
	}
	h.mu.Unlock()
	for _, sub := range slow {
		sub.drop()
	}
	if n := len(slow); n > 0 {
		h.stats.dropped.Add(uint64(n))
		h.log.Info("dropped event stream clients that did not keep up", "clients", n)
	}
}

// listening reports whether any client is connected.
func (h *eventHub) listening() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

// tenantsChanged notes tenants an entry changed (FSM.onChange). It does
// not block and does nothing while no client listens.
func (h *eventHub) tenantsChanged(names []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		return
	}
	if h.dirty == nil {
		h.dirty = make(map[string]struct{}, len(names))
	}
	for _, n := range names {
		h.dirty[n] = struct{}{}
	}
}

// audit publishes audit entries as plan events (FSM.onAudit).
func (h *eventHub) audit(entries []fsm.AuditEntry) {
	if !h.listening() {
		return
	}
	for _, e := range entries {
		frame, err := eventFrame(eventPlan, auditJSON(e))
		if err != nil {
			continue
		}
		h.stats.published[eventIndex(eventPlan)].Add(1)
		// A catalogue change (no tenant) goes to the clients that see
		// every tenant.
		h.publishTo(func(sub *eventSub) bool { return sub.only == "" || sub.only == e.Tenant }, frame)
	}
}

// alert publishes an alert (the alerter's onAlert); under the alerter's
// lock, so it must not block.
func (h *eventHub) alert(al Alert) {
	if !h.listening() {
		return
	}
	h.send(eventAlert, al.Tenant, al)
}

// send encodes and publishes one event.
func (h *eventHub) send(name, tenant string, v any) {
	frame, err := eventFrame(name, v)
	if err != nil {
		h.log.Error("event not encoded", "event", name, "error", err)
		return
	}
	h.stats.published[eventIndex(name)].Add(1)
	h.publish(tenant, frame)
}

// flushConcurrency sends one concurrency event with the changed tenants
// whose figures differ from those last sent.
func (h *eventHub) flushConcurrency() {
	h.mu.Lock()
	dirty := h.dirty
	h.dirty = nil
	if h.reset {
		h.reset = false
		h.published = make(map[string]tenantFigures)
	}
	scoped := map[string]bool{} // tenants some client is limited to
	all := false                // a client sees every tenant
	for sub := range h.subs {
		if sub.only == "" {
			all = true
		} else {
			scoped[sub.only] = true
		}
	}
	h.mu.Unlock()
	if len(dirty) == 0 {
		return
	}
	var out []TenantConcurrencyJSON
	h.fsm.Read(func(st fsm.View) {
		for name := range dirty {
			t := st.Tenant(name)
			old, had := h.published[name]
			if t == nil {
				delete(h.published, name)
				out = append(out, TenantConcurrencyJSON{Tenant: name, ByClass: fsm.ByClass(&fsm.ClassCounts{}), Deleted: true})
				continue
			}
			fig := tenantFigures{plan: t.Plan, open: t.Open}
			if p, ok := st.Plan(t.Plan); ok {
				fig.ceiling = p.Ceiling
			}
			if had && fig == old {
				continue
			}
			h.published[name] = fig
			total := t.Open.Total()
			out = append(out, TenantConcurrencyJSON{
				Tenant: name, Plan: fig.plan, Ceiling: fig.ceiling, Concurrency: total,
				Utilization: fsm.Utilization(total, fsm.CeilingOf(st, t.Plan)), ByClass: fsm.ByClass(&t.Open),
			})
		}
	})
	if len(out) == 0 {
		return
	}
	slices.SortFunc(out, func(a, b TenantConcurrencyJSON) int { return compareStrings(a.Tenant, b.Tenant) })
	at := h.now().UTC().Format(time.RFC3339Nano)
	if all {
		h.sendConcurrency(at, "", out)
	}
	for only := range scoped {
		i, found := slices.BinarySearchFunc(out, only, func(e TenantConcurrencyJSON, t string) int { return compareStrings(e.Tenant, t) })
		if found {
			h.sendConcurrency(at, only, out[i:i+1])
		}
	}
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sendConcurrency publishes a concurrency event to the clients that see
// every tenant (only "") or to those limited to tenant only.
func (h *eventHub) sendConcurrency(at, only string, tenants []TenantConcurrencyJSON) {
	frame, err := eventFrame(eventConcurrency, ConcurrencyEventJSON{At: at, Tenants: tenants})
	if err != nil {
		h.log.Error("event not encoded", "event", eventConcurrency, "error", err)
		return
	}
	h.stats.published[eventIndex(eventConcurrency)].Add(1)
	h.publishTo(func(sub *eventSub) bool { return sub.only == only }, frame)
}

// pollLeader sends a leader event when the leader, its address or the term
// changed since the last poll.
func (h *eventHub) pollLeader() {
	if h.leader == nil {
		return
	}
	l := h.leader()
	if h.polled && l == h.lastLeader {
		return
	}
	h.polled, h.lastLeader = true, l
	frame, err := eventFrame(eventLeader, l)
	if err != nil {
		return
	}
	h.mu.Lock()
	h.lead = frame
	h.mu.Unlock()
	h.stats.published[eventIndex(eventLeader)].Add(1)
	h.publish("", frame)
}

// run sends concurrency events at each tick of coalesce, keepalives at
// each tick of keepalive and leader events when a tick of leaderPoll finds
// a change, until ctx ends; then it drops every client.
func (h *eventHub) run(ctx context.Context, coalesce, keepalive, leaderPoll <-chan time.Time) {
	defer h.close()
	h.pollLeader()
	for {
		select {
		case <-ctx.Done():
			return
		case <-coalesce:
			h.flushConcurrency()
		case <-keepalive:
			h.publish("", keepaliveFrame)
		case <-leaderPoll:
			h.pollLeader()
		}
	}
}

// runTickers runs the hub on real tickers.
func (h *eventHub) runTickers(ctx context.Context) {
	c, k, l := time.NewTicker(eventCoalesce), time.NewTicker(eventKeepalive), time.NewTicker(eventLeaderPoll)
	defer c.Stop()
	defer k.Stop()
	defer l.Stop()
	h.run(ctx, c.C, k.C, l.C)
}

// ServeHTTP serves GET /v1/events.
func (h *eventHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	only := r.URL.Query().Get("tenant")
	if only != "" {
		if err := plans.ValidateTenantID(only); err != nil {
			jsonhttp.Error(w, http.StatusBadRequest, "tenant: "+err.Error())
			return
		}
	}
	if scope := tenantScope(r); scope != "" {
		only = scope // a tenant's token sees its tenant alone
	}
	h.serve(w, r, only)
}

// serve streams events to one client limited to tenant only ("" for all).
func (h *eventHub) serve(w http.ResponseWriter, r *http.Request, only string) {
	sub, err := h.subscribe(only)
	if err != nil {
		jsonhttp.Error(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer h.unsubscribe(sub)
	rc := http.NewResponseController(w)
	sub.mu.Lock()
	sub.kick = func() { rc.SetWriteDeadline(time.Unix(1, 0)) }
	sub.mu.Unlock()
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	// Each write sets its own deadline: the server's WriteTimeout, counted
	// from the request, must not end the stream.
	rc.SetWriteDeadline(time.Now().Add(h.writeTimeout))
	if err := rc.Flush(); err != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.gone:
			return
		case <-sub.wake:
		}
		frames, ok := sub.take(func() { rc.SetWriteDeadline(time.Now().Add(h.writeTimeout)) })
		if !ok {
			return
		}
		n := 0
		var err error
		for _, f := range frames {
			if _, err = w.Write(f); err != nil {
				break
			}
			n += len(f)
		}
		if err == nil {
			err = rc.Flush()
		}
		sub.written(n)
		if err != nil {
			return
		}
	}
}

// auditJSON is an audit entry as GET /v1/audit and plan events show it.
func auditJSON(e fsm.AuditEntry) AuditJSON {
	return AuditJSON{Index: e.Index, Time: time.Unix(0, e.Time).UTC().Format(time.RFC3339Nano), Tenant: e.Tenant,
		Kind: e.Kind, Operator: e.Operator, Before: e.Before, After: e.After}
}
