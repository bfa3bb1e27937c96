package agent

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// A connector translates one media server's own hooks into the agent's
// calls (agent/connect/...). It works through a Connector handle, which
// opens its sessions under its name as their source, scopes its reconciles
// to them, and keeps the counts that GET /v1/status and /metrics show per
// connector. The handle is the one piece every connector shares; what is
// particular to a media server (its hook format, its status page or API)
// stays in the connector's package.

// ReasonUnmappedTenant is the refusal of a hook whose tenant the mapping
// rules could not derive: it is refused, never guessed, and nothing of it is
// stored.
const ReasonUnmappedTenant = "unmapped-tenant"

// Connector is a connector's handle on the agent. Its methods are safe for
// concurrent use; the counters have their own lock, taken after the
// Agent's mutex when both are held.
type Connector struct {
	a    *Agent
	name string

	mu         sync.Mutex
	hooks      uint64
	admitted   uint64
	refused    map[string]uint64 // by reason
	bad        uint64
	forced     uint64
	reconciles uint64
	recErrors  uint64
	recClosed  uint64
	last       *LastReconcile
	lat        [1024]time.Duration // the last hooks' handling times
	latN       uint64
}

// ConnectorStatus is what GET /v1/status shows of a connector.
type ConnectorStatus struct {
	// Open: its sessions open now.
	Open int `json:"open"`
	// Hooks received, sessions admitted and refused (by reason, including
	// unmapped-tenant), and hooks refused as malformed.
	Hooks       uint64            `json:"hooks"`
	Admitted    uint64            `json:"admitted"`
	Refused     map[string]uint64 `json:"refused"`
	BadRequests uint64            `json:"bad_requests"`
	// Forced: sessions counted without an admission decision, since they
	// exist on the media server already (a LiveKit participant that joined
	// without a reservation).
	Forced uint64 `json:"forced"`
	// Reconciles run (successful or not) and the sessions they closed (for
	// good: not counting those moved to another class).
	Reconciles      uint64         `json:"reconciles"`
	ReconcileErrors uint64         `json:"reconcile_errors"`
	ReconcileClosed uint64         `json:"reconcile_closed"`
	LastReconcile   *LastReconcile `json:"last_reconcile"`
	// How long the last hooks (up to 1,024) took to answer, from the
	// request's arrival to its reply.
	HookP50Ms float64 `json:"hook_p50_ms"`
	HookP99Ms float64 `json:"hook_p99_ms"`
	HookMaxMs float64 `json:"hook_max_ms"`
}

// LastReconcile describes a connector's last reconcile.
type LastReconcile struct {
	At     time.Time `json:"at"`
	Listed int       `json:"listed"`
	Opened int       `json:"opened"`
	Closed int       `json:"closed"`
	// Reclassed: sessions moved to another class.
	Reclassed int `json:"reclassed"`
	// Error: why it could not run (the media server's status unreachable);
	// nothing was changed then.
	Error string `json:"error,omitempty"`
}

// Connector returns the handle of the connector name (a source name: lower
// case letters, digits and '-'), creating it on first use. SourceAPI is not
// a connector's name.
func (a *Agent) Connector(name string) (*Connector, error) {
	src, err := validSource(name)
	if err != nil {
		return nil, err
	}
	if name == "" || src == SourceAPI {
		return nil, fmt.Errorf("%w: connector name %q", ErrInvalid, name)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.connectors == nil {
		a.connectors = map[string]*Connector{}
	}
	c := a.connectors[name]
	if c == nil {
		c = &Connector{a: a, name: name, refused: map[string]uint64{}}
		a.connectors[name] = c
	}
	return c, nil
}

// Name is the connector's name, the source of its sessions.
func (c *Connector) Name() string { return c.name }

// Agent is the agent the connector works on.
func (c *Connector) Agent() *Agent { return c.a }

// Hook counts a hook received.
func (c *Connector) Hook() {
	c.mu.Lock()
	c.hooks++
	c.mu.Unlock()
}

// Admitted counts a session the connector admitted other than by Open (a
// reservation it confirmed).
func (c *Connector) Admitted() {
	c.mu.Lock()
	c.admitted++
	c.mu.Unlock()
}

// Answered records how long a hook took to answer, from began to now.
func (c *Connector) Answered(began time.Time) {
	d := time.Since(began)
	c.mu.Lock()
	c.lat[c.latN%uint64(len(c.lat))] = d
	c.latN++
	c.mu.Unlock()
}

// BadRequest counts a hook refused as malformed.
func (c *Connector) BadRequest() {
	c.mu.Lock()
	c.bad++
	c.mu.Unlock()
}

// Refuse counts a refusal the connector decided itself (ReasonUnmappedTenant).
func (c *Connector) Refuse(reason string) {
	c.mu.Lock()
	c.refused[reason]++
	c.mu.Unlock()
}

// Open opens a session of this connector (o.Source is set to its name) and
// counts the outcome: admitted, refused by reason, forced, or a bad request.
func (c *Connector) Open(o OpenOptions) (OpenResult, error) {
	o.Source = c.name
	res, err := c.a.OpenWith(o)
	c.mu.Lock()
	switch {
	case err != nil:
		c.bad++
	case o.Force:
		if !res.Existing {
			c.forced++
		}
	case res.Admitted:
		if !res.Existing {
			c.admitted++
		}
	default:
		c.refused[res.Reason]++
	}
	c.mu.Unlock()
	return res, err
}

// Reconcile runs a reconcile scoped to this connector's sessions
// (scope.Source is set to its name) and records it as the last one.
func (c *Connector) Reconcile(scope ReconcileScope, list []SessionSpec) (ReconcileResult, error) {
	scope.Source = c.name
	res, err := c.a.ReconcileScoped(scope, list)
	ended := len(res.Ended())
	lr := &LastReconcile{At: time.Now().UTC(), Listed: len(list), Opened: len(res.Opened) - len(res.Reclassed), Closed: ended,
		Reclassed: len(res.Reclassed)}
	if err != nil {
		lr.Error = err.Error()
	}
	c.mu.Lock()
	c.reconciles++
	c.recClosed += uint64(ended)
	if err != nil {
		c.recErrors++
	}
	c.last = lr
	c.mu.Unlock()
	return res, err
}

// ReconcileFailed records a reconcile that could not run (its list could not
// be had); nothing was changed.
func (c *Connector) ReconcileFailed(err error) {
	c.mu.Lock()
	c.reconciles++
	c.recErrors++
	c.last = &LastReconcile{At: time.Now().UTC(), Error: err.Error()}
	c.mu.Unlock()
}

// Sessions lists the connector's open sessions, sorted by id.
func (c *Connector) Sessions() []SessionInfo {
	all := c.a.Sessions("")
	out := all[:0]
	for _, s := range all {
		if s.Source == c.name {
			out = append(out, s)
		}
	}
	return slices.Clip(out)
}

// status copies the counters; open is the connector's open sessions.
func (c *Connector) status(open int) ConnectorStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := ConnectorStatus{
		Open: open, Hooks: c.hooks, Admitted: c.admitted, Refused: make(map[string]uint64, len(c.refused)),
		BadRequests: c.bad, Forced: c.forced, Reconciles: c.reconciles, ReconcileErrors: c.recErrors, ReconcileClosed: c.recClosed,
	}
	for r, n := range c.refused {
		st.Refused[r] = n
	}
	if c.last != nil {
		lr := *c.last
		st.LastReconcile = &lr
	}
	if n := int(min(c.latN, uint64(len(c.lat)))); n > 0 {
		ds := slices.Clone(c.lat[:n])
		slices.Sort(ds)
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		st.HookP50Ms, st.HookP99Ms, st.HookMaxMs = ms(ds[n/2]), ms(ds[(n*99)/100]), ms(ds[n-1])
	}
	return st
}

// connectorsLocked returns the status of every connector; a.mu is held.
func (a *Agent) connectorsLocked() map[string]ConnectorStatus {
	if len(a.connectors) == 0 {
		return nil
	}
	out := make(map[string]ConnectorStatus, len(a.connectors))
	for name, c := range a.connectors {
		out[name] = c.status(a.tab.bySource[name])
	}
	return out
}

// connectorNames returns the connectors' names, sorted.
func connectorNames(m map[string]ConnectorStatus) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.SortFunc(names, strings.Compare)
	return names
}

// Close closes a session this connector opened: ErrUnknownSession if no
// session of that id is open, or it is another source's (a connector never
// closes what it did not open).
func (c *Connector) Close(session string) (time.Duration, error) {
	if err := validSessionID(session); err != nil {
		return 0, err
	}
	a := c.a
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.expireLocked(now)
	s := a.tab.lookup(session, now)
	if s == nil || s.source != c.name {
		return 0, ErrUnknownSession
	}
	d := a.tab.close(s, now)
	a.noteEventLocked()
	return d, nil
}
