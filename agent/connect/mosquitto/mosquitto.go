// Package mosquitto is the Go side of headroom's Mosquitto plugin
// (plugin/, built with `make mosquitto-plugin` into
// build/headroom_mosquitto.so): the broker's events at CONNECT, DISCONNECT
// and TICK, turned into calls to the local agent's connector API
// (/v1/connectors/{name}/...). It is a thin client: the agent decides
// admission; the plugin keeps only the set of connections it admitted, so
// that a takeover of a client id counts once and a DISCONNECT closes only a
// session this plugin admitted.
//
// It imports nothing of headroom's and no cgo: the plugin's C entry points
// call it, and its tests drive it without a broker. A Plugin is not safe for
// concurrent use; Mosquitto calls its plugins from its one main loop.
package mosquitto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults of the plugin_opt_ lines.
const (
	DefaultAgent          = "http://127.0.0.1:9380"
	DefaultConnector      = "mosquitto"
	DefaultClass          = "device"
	DefaultTimeout        = 2 * time.Second
	DefaultReconcileEvery = 5 * time.Second
)

// Refusal reasons decided by the plugin itself (the agent's are passed on).
const (
	ReasonUnmappedTenant   = "unmapped-tenant"
	ReasonNoClientID       = "no-client-id"
	ReasonAgentUnreachable = "agent-unreachable"
	ReasonBadRequest       = "bad-request"
)

// reasonGrantTimeout is the agent's refusal while a strict share is topped up.
const reasonGrantTimeout = "grant-timeout"

// sessionPrefix starts the agent's session id of a client id.
const sessionPrefix = "mqtt:"

// Config is the plugin's configuration, from its plugin_opt_ lines
// (ParseOptions).
type Config struct {
	// Agent is the base URL of the local agent's API (Optional, default
	// DefaultAgent).
	Agent string
	// TenantFrom is "username" (default) or "client-id": what names the
	// tenant, up to Separator.
	TenantFrom string
	// Separator (Optional, default none): the tenant is the part of the
	// value before its first Separator, or the whole value when it has none.
	Separator string
	// Class of the sessions (Optional, default "device").
	Class string
	// FailOpen: a CONNECT is let in when the agent cannot be reached, and
	// counted by the next reconcile (Optional, default true).
	FailOpen bool
	// Connector is the connector's name at the agent, the source of its
	// sessions (Optional, default "mosquitto"; one per broker on the agent).
	Connector string
	// Timeout of one call to the agent (Optional, default 2 s).
	Timeout time.Duration
	// ReconcileEvery is how often the admitted set is reconciled with the
	// agent (Optional, default 5 s).
	ReconcileEvery time.Duration
	// Log writes one line to the broker's log (Optional); warn says it is a
	// warning rather than a notice.
	Log func(warn bool, msg string)
}

// ParseOptions reads the plugin_opt_ lines (keys without the prefix):
// agent, tenant_from, separator, class, fail, connector, timeout,
// reconcile_interval. An unknown key or a bad value is an error.
func ParseOptions(opts map[string]string) (Config, error) {
	c := Config{Agent: DefaultAgent, TenantFrom: "username", Class: DefaultClass, FailOpen: true,
		Connector: DefaultConnector, Timeout: DefaultTimeout, ReconcileEvery: DefaultReconcileEvery}
	for k, v := range opts {
		var err error
		switch k {
		case "agent":
			c.Agent = v
		case "tenant_from":
			c.TenantFrom = v
		case "separator":
			c.Separator = v
		case "class":
			c.Class = v
		case "connector":
			c.Connector = v
		case "fail":
			switch v {
			case "open":
				c.FailOpen = true
			case "closed":
				c.FailOpen = false
			default:
				err = fmt.Errorf("want open or closed")
			}
		case "timeout":
			c.Timeout, err = time.ParseDuration(v)
		case "reconcile_interval":
			c.ReconcileEvery, err = time.ParseDuration(v)
		default:
			err = fmt.Errorf("unknown option (known: agent, tenant_from, separator, class, fail, connector, timeout, reconcile_interval)")
		}
		if err != nil {
			return Config{}, fmt.Errorf("plugin_opt_%s %q: %v", k, v, err)
		}
	}
	return c, c.validate()
}

func (c Config) validate() error {
	u, err := url.Parse(c.Agent)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("plugin_opt_agent %q: want the agent's API as http://HOST:PORT", c.Agent)
	}
	switch c.TenantFrom {
	case "username", "client-id":
	default:
		return fmt.Errorf("plugin_opt_tenant_from %q: want username or client-id", c.TenantFrom)
	}
	if c.Class == "" {
		return fmt.Errorf("plugin_opt_class: empty")
	}
	if c.Connector == "" {
		return fmt.Errorf("plugin_opt_connector: empty")
	}
	if c.Timeout <= 0 || c.ReconcileEvery <= 0 {
		return fmt.Errorf("plugin_opt_timeout and plugin_opt_reconcile_interval must be above 0")
	}
	return nil
}

// Tenant derives the tenant of a client from its username or client id, as
// c says; "" when there is none (the CONNECT is refused, never guessed).
func (c Config) Tenant(username, clientID string) string {
	v := username
	if c.TenantFrom == "client-id" {
		v = clientID
	}
	if c.Separator != "" {
		v, _, _ = strings.Cut(v, c.Separator)
	}
	return v
}

// SessionID is the agent's session id of an MQTT client id: "mqtt:" and the
// id when it is printable ASCII without spaces and short enough, else
// "mqtt:h-" and a 64-bit hash of it.
func SessionID(clientID string) string {
	if validID(clientID, maxID-len(sessionPrefix)) {
		return sessionPrefix + clientID
	}
	h := fnv.New64a()
	io.WriteString(h, clientID)
	return fmt.Sprintf("%sh-%016x", sessionPrefix, h.Sum64())
}

// conn is a connection this plugin admitted.
type conn struct {
	id      uintptr // the broker's connection (its struct mosquitto *)
	tenant  string
	session string
	at      time.Time // its CONNECT: where a reconcile that opens it counts from
}

// Plugin is the state of one plugin instance.
type Plugin struct {
	cfg    Config
	http   *http.Client
	base   string
	conns  map[string]conn // client id → the connection admitted under it
	nextAt time.Time       // the next reconcile
	dirty  bool            // a call failed: reconcile at the next tick
}

// New returns a plugin; call Start once the broker has loaded it.
func New(cfg Config) (*Plugin, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = func(bool, string) {}
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}
	return &Plugin{cfg: cfg, http: &http.Client{Timeout: cfg.Timeout, Transport: tr},
		base:  strings.TrimRight(cfg.Agent, "/") + "/v1/connectors/" + url.PathEscape(cfg.Connector),
		conns: map[string]conn{}}, nil
}

// Start reconciles the empty set: a broker that (re)starts holds nobody, so
// the sessions a previous run left open at the agent close now.
func (p *Plugin) Start(now time.Time) {
	p.reconcile(now)
}

// Open is the number of connections the plugin holds as admitted.
func (p *Plugin) Open() int { return len(p.conns) }

// Connect decides a CONNECT of connection id with clientID and username:
// true lets it in; false refuses it, with the reason (also logged).
func (p *Plugin) Connect(id uintptr, clientID, username string) (bool, string) {
	tenant := p.cfg.Tenant(username, clientID)
	if tenant == "" {
		p.refused(clientID, ReasonUnmappedTenant, "no tenant in its "+p.cfg.TenantFrom)
		p.report(ReasonUnmappedTenant)
		return false, ReasonUnmappedTenant
	}
	if clientID == "" {
		p.refused(clientID, ReasonNoClientID, "")
		p.report(ReasonNoClientID)
		return false, ReasonNoClientID
	}
	session := SessionID(clientID)
	at := time.Now()
	body, _ := json.Marshal(map[string]string{"tenant": tenant, "class": p.cfg.Class, "session": session, "user": userOf(clientID)})
	code, reply, err := p.call(http.MethodPost, "/sessions", body)
	// A strict tenant's share being topped up (the first device of a
	// tenant, a burst) answers grant-timeout after the agent's short wait:
	// ask again for up to a quarter of the timeout before refusing.
	for began := time.Now(); err == nil && code == http.StatusTooManyRequests && reply.Reason == reasonGrantTimeout &&
		time.Since(began) < p.cfg.Timeout/4; {
		code, reply, err = p.call(http.MethodPost, "/sessions", body)
	}
	switch {
	case err != nil || code >= 500:
		if err == nil {
			err = fmt.Errorf("HTTP %d: %s", code, reply.Error)
		}
		p.dirty = true
		if !p.cfg.FailOpen {
			p.refused(clientID, ReasonAgentUnreachable, err.Error())
			return false, ReasonAgentUnreachable
		}
		p.cfg.Log(true, fmt.Sprintf("headroom: the agent cannot be reached (%v): client %q of tenant %q let in (fail open), counted at the next reconcile", err, clientID, tenant))
	case code == http.StatusTooManyRequests:
		p.refused(clientID, reply.Reason, "tenant "+tenant)
		return false, reply.Reason
	case code != http.StatusCreated && code != http.StatusOK:
		p.refused(clientID, ReasonBadRequest, fmt.Sprintf("HTTP %d: %s", code, reply.Error))
		return false, ReasonBadRequest
	}
	// A takeover (the id already admitted on another connection) is the
	// same session: the new connection now owns it.
	p.conns[clientID] = conn{id: id, tenant: tenant, session: session, at: at}
	return true, ""
}

// Disconnect handles a DISCONNECT of connection id: it closes the session
// only when that connection is the one admitted under clientID, so the old
// connection of a takeover, or a client that was refused (Mosquitto raises
// a DISCONNECT for it too, with an empty client id), closes nothing.
func (p *Plugin) Disconnect(id uintptr, clientID string) {
	c, ok := p.conns[clientID]
	if !ok || c.id != id {
		return
	}
	delete(p.conns, clientID)
	code, reply, err := p.call(http.MethodDelete, "/sessions/"+url.PathEscape(c.session), nil)
	if err != nil || (code != http.StatusOK && code != http.StatusNotFound) {
		if err == nil {
			err = fmt.Errorf("HTTP %d: %s", code, reply.Error)
		}
		p.dirty = true // the reconcile closes it
		p.cfg.Log(true, fmt.Sprintf("headroom: closing client %q: %v (the next reconcile closes it)", clientID, err))
	}
}

// Tick reconciles the admitted set with the agent when due (every
// ReconcileEvery), so that a lost close or an agent's restart heals.
func (p *Plugin) Tick(now time.Time) {
	if now.Before(p.nextAt) {
		return
	}
	p.reconcile(now)
}

// reconcile sends the admitted set as the connector's full list. A tenant
// over its ceiling after it kicks nobody: the devices are connected, so they
// are counted, and the fleet admits no more until closes bring it back.
func (p *Plugin) reconcile(now time.Time) {
	p.nextAt = now.Add(p.cfg.ReconcileEvery)
	type spec struct {
		Tenant  string `json:"tenant"`
		Class   string `json:"class"`
		Session string `json:"session"`
		User    string `json:"user,omitempty"`
		// A device let in while the agent could not be asked (fail open),
		// or whose admission the agent's crash lost, counts from its CONNECT.
		StartedAt time.Time `json:"started_at"`
	}
	list := make([]spec, 0, len(p.conns))
	for cid, c := range p.conns {
		list = append(list, spec{c.tenant, p.cfg.Class, c.session, userOf(cid), c.at})
	}
	body, _ := json.Marshal(map[string]any{"sessions": list})
	code, reply, err := p.call(http.MethodPut, "/sessions", body)
	if err != nil || code != http.StatusOK {
		if err == nil {
			err = fmt.Errorf("HTTP %d: %s", code, reply.Error)
		}
		if !p.dirty {
			p.cfg.Log(true, fmt.Sprintf("headroom: reconcile of %d clients with the agent: %v (retried every %v)", len(list), err, p.cfg.ReconcileEvery))
		}
		p.dirty = true
		return
	}
	if p.dirty {
		p.cfg.Log(false, fmt.Sprintf("headroom: reconciled %d clients with the agent (opened %d, closed %d)", len(list), len(reply.Opened), len(reply.Closed)))
	}
	p.dirty = false
}

func (p *Plugin) refused(clientID, reason, detail string) {
	msg := fmt.Sprintf("headroom: client %q refused (not authorised): %s", clientID, reason)
	if detail != "" {
		msg += ": " + detail
	}
	p.cfg.Log(false, msg)
}

// report tells the agent of a refusal the plugin decided itself (counted in
// its status); best effort.
func (p *Plugin) report(reason string) {
	body, _ := json.Marshal(map[string]string{"reason": reason})
	p.call(http.MethodPost, "/refusals", body)
}

// reply is what the agent's connector API answers.
type reply struct {
	Admitted bool     `json:"admitted"`
	Reason   string   `json:"reason"`
	Error    string   `json:"error"`
	Opened   []string `json:"opened"`
	Closed   []string `json:"closed"`
}

func (p *Plugin) call(method, path string, body []byte) (int, reply, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, p.base+path, rd)
	if err != nil {
		return 0, reply{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.http.Do(req)
	if err != nil {
		return 0, reply{}, err
	}
	defer resp.Body.Close()
	var r reply
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err == nil && len(b) > 0 {
		if jerr := json.Unmarshal(b, &r); jerr != nil && resp.StatusCode < 300 {
			err = errors.New("the agent's answer does not read: " + jerr.Error())
		}
	}
	return resp.StatusCode, r, err
}

// userOf is a client's user at the agent (a device counts among its
// tenant's active users): its client id when that is a valid id, else none.
func userOf(clientID string) string {
	if validID(clientID, maxID) {
		return clientID
	}
	return ""
}

// maxID is the agent's longest id.
const maxID = 128

// validID reports whether s is an id the agent takes: 1 to max bytes of
// printable ASCII without spaces.
func validID(s string, max int) bool {
	ok := s != "" && len(s) <= max
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] > ' ' && s[i] <= '~'
	}
	return ok
}
