// Package emqx connects EMQX 5 to the agent: its HTTP authenticator asks
// POST /hooks/emqx/auth whether a device may connect (admission), and its
// rule engine forwards $events/client_connected and
// $events/client_disconnected to POST /hooks/emqx/events (confirm, close).
//
// EMQX reads {"result":"allow"|"deny"|"ignore"} from a 200 and treats any
// 4xx/5xx of the authenticator as "ignore" — it moves on down its chain and
// may let the device in — so the auth hook answers 200 whatever happens: a
// refusal, and a request it cannot read, are {"result":"deny"}.
//
// A device is one session per client id (the id "mqtt:" + client id, as the
// Mosquitto plugin names it): a reconnect under the same id takes the old
// connection over and is counted once; the old connection's disconnect (its
// reason "takenover" or "discarded", or a disconnected_at before the current
// connection's connected_at) closes nothing. Events are deduplicated and
// tolerate reordering by the connection's connected_at (ms).
package emqx

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/agent/connect"
	"github.com/headroom-rtc/headroom/agent/connect/mosquitto"
)

// Name is the connector's name, the source of its sessions.
const Name = "emqx"

// DefaultReserveTTL is how long an admission at auth waits for its
// client_connected event before it lapses (the device never arrived).
const DefaultReserveTTL = 30 * time.Second

const maxBody = 64 << 10

// maxClients bounds the connections remembered for deduplication; beyond
// it the closed ones are forgotten.
const maxClients = 200_000

// Config configures the connector.
type Config struct {
	// TenantFrom is "username" (default) or "client-id"; Separator (optional)
	// ends the tenant within it, as the Mosquitto plugin's options do.
	TenantFrom string
	Separator  string
	// Class of the sessions (default device).
	Class string
	// ReserveTTL (optional, default DefaultReserveTTL).
	ReserveTTL time.Duration
	Logger     hclog.Logger
}

// Connector serves the two hooks; safe for concurrent use.
type Connector struct {
	cfg  Config
	a    *agent.Agent
	conn *agent.Connector
	log  hclog.Logger

	mu      sync.Mutex
	clients map[string]*client
}

// client is what the events said of one client id.
type client struct {
	connectedAt int64 // ms, of the current connection (0: none seen)
	closedAt    int64 // ms, its disconnect (0: open)
}

// New returns the connector of agent a.
func New(a *agent.Agent, cfg Config) (*Connector, error) {
	if cfg.TenantFrom == "" {
		cfg.TenantFrom = "username"
	}
	if cfg.TenantFrom != "username" && cfg.TenantFrom != "client-id" {
		return nil, fmt.Errorf("emqx: tenant from %q: want username or client-id", cfg.TenantFrom)
	}
	if cfg.Class == "" {
		cfg.Class = mosquitto.DefaultClass
	}
	if cfg.ReserveTTL <= 0 {
		cfg.ReserveTTL = DefaultReserveTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	h, err := a.Connector(Name)
	if err != nil {
		return nil, err
	}
	return &Connector{cfg: cfg, a: a, conn: h, log: cfg.Logger, clients: map[string]*client{}}, nil
}

// AuthRequest is the authenticator's body as an operator templates it, e.g.
// {"clientid":"${clientid}","username":"${username}","peerhost":"${peerhost}"}.
// Other fields are ignored.
type AuthRequest struct {
	ClientID string `json:"clientid"`
	Username string `json:"username"`
	PeerHost string `json:"peerhost"`
}

// Event is a forwarded $events/client_connected or client_disconnected.
type Event struct {
	Event          string `json:"event"` // client.connected, client.disconnected
	ClientID       string `json:"clientid"`
	Username       string `json:"username"`
	PeerName       string `json:"peername"`
	ConnectedAt    int64  `json:"connected_at"`
	DisconnectedAt int64  `json:"disconnected_at"`
	Reason         string `json:"reason"`
}

// DecodeAuth reads an authenticator body; a client id is required.
func DecodeAuth(b []byte) (AuthRequest, error) {
	var r AuthRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return AuthRequest{}, fmt.Errorf("body does not read as JSON: %v", err)
	}
	if r.ClientID == "" {
		return AuthRequest{}, errors.New(`no "clientid"`)
	}
	return r, nil
}

// DecodeEvent reads an event body: its event must be client.connected (with
// connected_at) or client.disconnected (with disconnected_at), with a client
// id.
func DecodeEvent(b []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("body does not read as JSON: %v", err)
	}
	switch {
	case e.ClientID == "":
		return Event{}, errors.New(`no "clientid"`)
	case e.Event == "client.connected" && e.ConnectedAt <= 0:
		return Event{}, errors.New(`client.connected without "connected_at"`)
	case e.Event == "client.disconnected" && e.DisconnectedAt <= 0:
		return Event{}, errors.New(`client.disconnected without "disconnected_at"`)
	case e.Event != "client.connected" && e.Event != "client.disconnected":
		return Event{}, fmt.Errorf("event %q: want client.connected or client.disconnected", connect.Truncate(e.Event))
	}
	return e, nil
}

func (c *Connector) tenant(username, clientID string) string {
	cfg := mosquitto.Config{TenantFrom: c.cfg.TenantFrom, Separator: c.cfg.Separator}
	return cfg.Tenant(username, clientID)
}

func result(w http.ResponseWriter, r string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, `{"result":%q}`, r)
}

// ServeAuth is POST /hooks/emqx/auth: always 200, allow or deny.
func (c *Connector) ServeAuth(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	c.conn.Hook()
	defer c.conn.Answered(began)
	b, err := connect.ReadBody(w, r, maxBody)
	var req AuthRequest
	if err == nil {
		req, err = DecodeAuth(b)
	}
	if err != nil {
		c.conn.BadRequest()
		c.log.Warn("auth request refused: deny", "error", err)
		result(w, "deny")
		return
	}
	tenant := c.tenant(req.Username, req.ClientID)
	if tenant == "" {
		c.conn.Refuse(agent.ReasonUnmappedTenant)
		c.log.Info("device refused: deny", "clientid", connect.Truncate(req.ClientID), "reason", agent.ReasonUnmappedTenant)
		result(w, "deny")
		return
	}
	res, err := c.conn.Open(agent.OpenOptions{Tenant: tenant, Class: c.cfg.Class, Session: mosquitto.SessionID(req.ClientID), TTL: c.cfg.ReserveTTL})
	switch {
	case err != nil:
		c.log.Warn("device refused: deny", "clientid", connect.Truncate(req.ClientID), "tenant", tenant, "error", err)
		result(w, "deny")
	case !res.Admitted:
		c.log.Info("device refused: deny", "clientid", connect.Truncate(req.ClientID), "tenant", tenant, "reason", res.Reason)
		result(w, "deny")
	default:
		result(w, "allow")
	}
}

// ServeEvents is POST /hooks/emqx/events: 204 when handled, 400 for a body
// it cannot read (EMQX's HTTP action logs it and retries per its settings).
func (c *Connector) ServeEvents(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	c.conn.Hook()
	defer c.conn.Answered(began)
	b, err := connect.ReadBody(w, r, maxBody)
	var e Event
	if err == nil {
		e, err = DecodeEvent(b)
	}
	if err != nil {
		c.conn.BadRequest()
		code := http.StatusBadRequest
		if errors.Is(err, connect.ErrTooLarge) {
			code = http.StatusRequestEntityTooLarge
		}
		http.Error(w, err.Error(), code)
		return
	}
	if err := c.Apply(e); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Apply handles one event.
func (c *Connector) Apply(e Event) error {
	session := mosquitto.SessionID(e.ClientID)
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.clients[e.ClientID]
	if cl == nil {
		c.forgetClosedLocked()
		cl = &client{}
		c.clients[e.ClientID] = cl
	}
	switch e.Event {
	case "client.connected":
		switch {
		case e.ConnectedAt < cl.connectedAt, e.ConnectedAt == cl.connectedAt && cl.connectedAt != 0:
			return nil // an older connection's, or a duplicate
		case cl.closedAt != 0 && cl.closedAt >= e.ConnectedAt:
			// its disconnect came first: the connection is over already
			cl.connectedAt = e.ConnectedAt
			return nil
		}
		cl.connectedAt, cl.closedAt = e.ConnectedAt, 0
		if err := c.a.Confirm(session, Name); err == nil {
			return nil
		} else if !errors.Is(err, agent.ErrNotReservation) {
			return err
		}
		// Connected without a reservation of ours (the agent restarted, or
		// another authenticator let it in): it exists, so it is counted.
		tenant := c.tenant(e.Username, e.ClientID)
		if tenant == "" {
			c.conn.Refuse(agent.ReasonUnmappedTenant)
			return nil
		}
		_, err := c.conn.Open(agent.OpenOptions{Tenant: tenant, Class: c.cfg.Class, Session: session, Force: true})
		return err
	default: // client.disconnected
		if e.Reason == "takenover" || e.Reason == "discarded" {
			return nil // the old connection of a takeover: the session goes on
		}
		if cl.closedAt != 0 && cl.closedAt >= e.DisconnectedAt || e.DisconnectedAt < cl.connectedAt {
			return nil // a duplicate, or an older connection's
		}
		cl.closedAt = e.DisconnectedAt
		if _, err := c.conn.Close(session); err != nil && !errors.Is(err, agent.ErrUnknownSession) {
			return err
		}
		return nil
	}
}

// forgetClosedLocked drops the closed clients when too many are kept.
func (c *Connector) forgetClosedLocked() {
	if len(c.clients) < maxClients {
		return
	}
	for id, cl := range c.clients {
		if cl.closedAt != 0 {
			delete(c.clients, id)
		}
	}
}

// Routes are the connector's hooks on the agent's API mux.
func (c *Connector) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"POST /hooks/emqx/auth":   http.HandlerFunc(c.ServeAuth),
		"POST /hooks/emqx/events": http.HandlerFunc(c.ServeEvents),
	}
}
