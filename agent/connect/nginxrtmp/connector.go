package nginxrtmp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/agent/connect"
	"github.com/headroom-rtc/headroom/plans"
)

// Name is the connector's name: the source of its sessions.
const Name = "nginx-rtmp"

// Defaults.
const (
	DefaultTTL          = 90 * time.Second
	DefaultStatInterval = 5 * time.Second
	DefaultTenantArg    = "tenant"
	DefaultClassArg     = "class"
	DefaultUserArg      = "user"
	// ReasonHeader carries the reason of a refusal (also in the body).
	ReasonHeader = "X-Headroom-Reason"
)

// Config configures the connector.
type Config struct {
	// Tenant (optional, default arg:tenant): how a hook's tenant is found.
	Tenant connect.Rules
	// Class (optional; default: the argument "class", else the app's
	// class, else video-hd).
	Class connect.ClassRule
	// UserArg (optional, default DefaultUserArg): the stream URL's query
	// argument that names the client's user, counted among the tenant's
	// active users ("-" for none).
	UserArg string
	// TTL (optional, default DefaultTTL; negative: none) of every session:
	// on_update (notify_update_timeout, well under the TTL) or a stat read
	// keeps it alive; one whose nginx died ends at its last sign of life.
	TTL time.Duration
	// StatURL (optional) is nginx-rtmp's /stat page (rtmp_stat all); with
	// it, Run classes sessions by their stream's resolution and closes
	// those whose client is no longer listed, every StatInterval
	// (optional, default DefaultStatInterval).
	StatURL      string
	StatInterval time.Duration
	// HTTPClient (optional) reads the stat page (default: a 5 s timeout).
	HTTPClient *http.Client
	// Logger (optional, default a null logger).
	Logger hclog.Logger
	// now replaces time.Now in tests.
	now func() time.Time
}

// Connector serves nginx-rtmp's hooks for one agent. It is safe for
// concurrent use.
type Connector struct {
	cfg Config
	h   *agent.Connector
	log hclog.Logger

	mu sync.Mutex
	// byClient maps kind/clientid to the session of that client of the
	// current nginx (a clientid seen again proves the earlier client gone).
	byClient map[clientKey]string
	statDown bool // the last stat read failed (logged once)
}

type clientKey struct {
	kind string
	id   uint64
}

// New makes the connector of agent a. It picks up the sessions of source
// nginx-rtmp the agent restored from its state.
func New(a *agent.Agent, cfg Config) (*Connector, error) {
	h, err := a.Connector(Name)
	if err != nil {
		return nil, err
	}
	if len(cfg.Tenant) == 0 {
		cfg.Tenant, _ = connect.ParseRules("arg", DefaultTenantArg)
	}
	if cfg.Class.Default == 0 {
		cfg.Class.Default = plans.VideoHD
	}
	if cfg.Class.Arg == "" {
		cfg.Class.Arg = DefaultClassArg
	}
	switch cfg.UserArg {
	case "":
		cfg.UserArg = DefaultUserArg
	case "-":
		cfg.UserArg = ""
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < 0 {
		cfg.TTL = 0
	}
	if cfg.TTL > agent.MaxTTL {
		return nil, fmt.Errorf("nginx-rtmp: TTL %v over %v", cfg.TTL, agent.MaxTTL)
	}
	if cfg.StatInterval <= 0 {
		cfg.StatInterval = DefaultStatInterval
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	c := &Connector{cfg: cfg, h: h, log: cfg.Logger, byClient: map[clientKey]string{}}
	for _, s := range h.Sessions() {
		if kind, id, _, ok := parseSessionID(s.Session); ok {
			k := clientKey{kind, id}
			if prev, dup := c.byClient[k]; !dup || prev < s.Session {
				c.byClient[k] = s.Session // the latest of a clientid
			}
		}
	}
	return c, nil
}

// ServeHTTP serves POST /hooks/nginx-rtmp: every on_* directive of
// nginx-rtmp may point at it (the call field tells which). Admitted: 200;
// refused: 403 with the reason in the body and the X-Headroom-Reason
// header; a malformed hook: 400; nothing is stored for either.
func (c *Connector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "nginx-rtmp hooks are POSTed", http.StatusMethodNotAllowed)
		return
	}
	c.h.Hook()
	defer c.h.Answered(time.Now())
	body, err := connect.ReadBody(w, r, MaxHookBody)
	if err != nil {
		c.bad(w, http.StatusRequestEntityTooLarge, err)
		return
	}
	h, err := ParseHook(body)
	if err != nil {
		c.bad(w, http.StatusBadRequest, err)
		return
	}
	switch h.Call {
	case CallPublish, CallPlay:
		c.admit(w, h)
	case CallUpdatePublish, CallUpdatePlay:
		c.update(w, h)
	default:
		c.done(h)
		w.WriteHeader(http.StatusOK)
	}
}

func (c *Connector) bad(w http.ResponseWriter, code int, err error) {
	c.h.BadRequest()
	c.log.Warn("nginx-rtmp hook refused as malformed", "error", err)
	http.Error(w, err.Error(), code)
}

func refuse(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set(ReasonHeader, reason)
	http.Error(w, msg, code)
}

// mapping derives the tenant and class of a hook.
func (c *Connector) mapping(h Hook) (tenant string, cls plans.Class, err error) {
	in := connect.Input{Args: h.Args, App: h.App, Name: h.Name}
	if tenant, err = c.cfg.Tenant.Tenant(in); err != nil {
		return "", 0, err
	}
	cls, err = c.cfg.Class.Class(in)
	return tenant, cls, err
}

// admit answers on_publish and on_play.
func (c *Connector) admit(w http.ResponseWriter, h Hook) {
	tenant, cls, err := c.mapping(h)
	if errors.Is(err, connect.ErrUnmapped) {
		c.h.Refuse(agent.ReasonUnmappedTenant)
		c.log.Warn("nginx-rtmp client refused: no tenant could be derived", "call", h.Call, "app", h.App,
			"name", connect.Truncate(h.Name), "clientid", h.ClientID, "addr", h.Addr, "rule", c.cfg.Tenant.String(), "why", err)
		refuse(w, http.StatusForbidden, agent.ReasonUnmappedTenant, err.Error())
		return
	}
	if err != nil {
		c.bad(w, http.StatusBadRequest, err)
		return
	}
	k := clientKey{h.Kind(), h.ClientID}
	now := c.cfg.now()
	id := sessionID(k.kind, k.id, now.UnixMilli())
	c.mu.Lock()
	prev := c.byClient[k]
	c.mu.Unlock()
	if prev != "" && prev != id {
		// nginx hands out a clientid once per run: the earlier client of
		// this id belonged to an nginx that is gone.
		if d, err := c.h.Agent().Lapse(prev); err == nil {
			c.log.Info("nginx-rtmp clientid seen again: nginx restarted; the earlier session ended at its last sign of life",
				"session", prev, "billed", d)
		}
	}
	res, err := c.h.Open(agent.OpenOptions{Tenant: tenant, Class: cls.String(), Session: id, TTL: c.cfg.TTL, User: c.userOf(&h)})
	switch {
	case err != nil:
		c.log.Warn("nginx-rtmp client refused", "call", h.Call, "tenant", tenant, "error", err)
		refuse(w, http.StatusForbidden, "invalid", err.Error())
	case !res.Admitted:
		c.log.Debug("nginx-rtmp client refused", "call", h.Call, "tenant", tenant, "class", cls, "clientid", h.ClientID, "reason", res.Reason)
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(res.RetryAfter/time.Second))))
		refuse(w, http.StatusForbidden, res.Reason, res.Reason)
	default:
		c.mu.Lock()
		c.byClient[k] = id
		c.mu.Unlock()
		c.log.Debug("nginx-rtmp client admitted", "call", h.Call, "tenant", tenant, "class", cls, "session", id)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, id)
	}
}

// update answers on_update: a keepalive. A client the agent does not know
// (its session lapsed while nothing kept it alive, or the agent lost it)
// is counted again rather than cut: it runs, so it is metered.
func (c *Connector) update(w http.ResponseWriter, h Hook) {
	k := clientKey{h.Kind(), h.ClientID}
	c.mu.Lock()
	id := c.byClient[k]
	c.mu.Unlock()
	if id != "" && c.h.Agent().Keepalive(id) == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	tenant, cls, err := c.mapping(h)
	if err != nil {
		// Not ours to cut: it was admitted by someone (an earlier config).
		c.log.Warn("nginx-rtmp update of a client the agent does not know, and cannot map; not counted", "clientid", h.ClientID, "error", err)
		w.WriteHeader(http.StatusOK)
		return
	}
	id = sessionID(k.kind, k.id, c.cfg.now().UnixMilli())
	if _, err := c.h.Open(agent.OpenOptions{Tenant: tenant, Class: cls.String(), Session: id, TTL: c.cfg.TTL, Force: true, User: c.userOf(&h)}); err != nil {
		c.log.Warn("nginx-rtmp update: cannot count the client again", "clientid", h.ClientID, "error", err)
	} else {
		c.mu.Lock()
		c.byClient[k] = id
		c.mu.Unlock()
		c.log.Info("nginx-rtmp client kept alive that the agent did not know: counted again from now", "session", id, "tenant", tenant)
	}
	w.WriteHeader(http.StatusOK)
}

// done handles on_publish_done, on_play_done and on_done: the client's
// session (both kinds for done) closes; the second of them finds nothing.
func (c *Connector) done(h Hook) {
	kinds := []string{kindPub, kindPlay}
	if k := h.Kind(); k != "" {
		kinds = []string{k}
	}
	for _, kind := range kinds {
		k := clientKey{kind, h.ClientID}
		c.mu.Lock()
		id := c.byClient[k]
		delete(c.byClient, k)
		c.mu.Unlock()
		if id == "" {
			continue
		}
		if d, err := c.h.Agent().Close(id); err == nil {
			c.log.Debug("nginx-rtmp client left", "session", id, "duration", d)
		}
	}
}

// Run reads the stat page every StatInterval until ctx ends; without a
// StatURL it returns at once.
func (c *Connector) Run(ctx context.Context) {
	if c.cfg.StatURL == "" {
		return
	}
	t := time.NewTicker(c.cfg.StatInterval)
	defer t.Stop()
	for {
		c.ReconcileNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReconcileNow reads the stat page once and reconciles the connector's
// sessions with it: a session whose client is listed (same clientid and
// kind, of the nginx now running) is kept alive and classed by its stream's
// resolution; one whose client is not listed ends at its last sign of life.
// Sessions admitted after the read began are left alone. A read that fails
// changes nothing.
func (c *Connector) ReconcileNow(ctx context.Context) (agent.ReconcileResult, error) {
	began := c.cfg.now()
	st, err := c.fetch(ctx)
	if err != nil {
		c.h.ReconcileFailed(err)
		c.mu.Lock()
		first := !c.statDown
		c.statDown = true
		c.mu.Unlock()
		if first {
			c.log.Warn("nginx-rtmp stat unreadable; sessions are kept by on_update and their TTL until it answers", "url", c.cfg.StatURL, "error", err)
		}
		return agent.ReconcileResult{}, err
	}
	c.mu.Lock()
	if c.statDown {
		c.log.Info("nginx-rtmp stat readable again", "url", c.cfg.StatURL)
	}
	c.statDown = false
	c.mu.Unlock()
	list := c.match(st, began)
	res, err := c.h.Reconcile(agent.ReconcileScope{SeenBefore: began, NoOpen: true}, list)
	if err != nil {
		c.log.Error("nginx-rtmp stat reconcile refused", "error", err)
		return res, err
	}
	if ended := res.Ended(); len(ended) > 0 {
		c.mu.Lock()
		for k, id := range c.byClient {
			if slices.Contains(ended, id) {
				delete(c.byClient, k)
			}
		}
		c.mu.Unlock()
		c.log.Info("nginx-rtmp stat reconcile ended sessions whose client is gone", "ended", len(ended), "nginx_pid", st.PID)
	}
	if len(res.Reclassed) > 0 {
		c.log.Debug("nginx-rtmp stat reconcile classed sessions by their stream's resolution", "sessions", res.Reclassed)
	}
	return res, nil
}

// uptimeSlack covers nginx giving its uptime in whole seconds: a session
// first seen more than this before nginx started belongs to an earlier one.
const uptimeSlack = 2 * time.Second

// match lists the connector's sessions whose client the stat shows, with
// the class of their stream's resolution when known.
func (c *Connector) match(st *Stat, at time.Time) []agent.SessionSpec {
	clients := map[clientKey]Client{}
	for _, x := range st.Clients() {
		kind := kindPlay
		if x.Publishing {
			kind = kindPub
		}
		clients[clientKey{kind, x.ID}] = x
	}
	started := at.Add(-time.Duration(st.Uptime) * time.Second).Add(-uptimeSlack)
	var list []agent.SessionSpec
	for _, s := range c.h.Sessions() {
		kind, id, seenMs, ok := parseSessionID(s.Session)
		if !ok {
			continue // not one of ours: left to its TTL
		}
		x, listed := clients[clientKey{kind, id}]
		if !listed || time.UnixMilli(seenMs).Before(started) {
			continue // gone, or a client of an earlier nginx with the same clientid
		}
		class := s.Class
		if x.Known {
			class = plans.VideoClassForPixels(x.Pixels).String()
		}
		list = append(list, agent.SessionSpec{Tenant: s.Tenant, Class: class, Session: s.Session})
	}
	return list
}

func (c *Connector) fetch(ctx context.Context) (*Stat, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.StatURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", c.cfg.StatURL, resp.Status)
	}
	return ParseStat(resp.Body)
}

// userOf is the user of a hook's client, from its URL's query argument.
func (c *Connector) userOf(h *Hook) string {
	if c.cfg.UserArg == "" {
		return ""
	}
	return agent.UserOf(h.Args[c.cfg.UserArg])
}
