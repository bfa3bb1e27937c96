package agent

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
)

// The connector API: what a connector that runs outside the agent (the
// Mosquitto plugin, loaded into the broker) calls to work through a
// Connector handle of the agent. {name} is the connector's name, the source
// of its sessions (lower-case letters, digits and '-'; not "api").
//
//	POST   /v1/connectors/{name}/sessions           open (201 admitted, 200 already open, 429 refused, 409 conflict)
//	PUT    /v1/connectors/{name}/sessions           reconcile the connector's own sessions with its full list
//	GET    /v1/connectors/{name}/sessions           its open sessions, sorted by id
//	DELETE /v1/connectors/{name}/sessions/{session} close one of its sessions (404: unknown, or another source's)
//	POST   /v1/connectors/{name}/refusals           count a refusal it decided itself ({"reason":"unmapped-tenant"})

type connectorOpenRequest struct {
	Tenant  string `json:"tenant"`
	Class   string `json:"class"`
	Session string `json:"session"`
	User    string `json:"user"`
}

type refusalRequest struct {
	Reason string `json:"reason"`
}

// maxReasonLen bounds a reported refusal's reason.
const maxReasonLen = maxSourceLen

func (a *Agent) connectorOf(w http.ResponseWriter, r *http.Request) *Connector {
	c, err := a.Connector(r.PathValue("name"))
	if err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
		return nil
	}
	c.Hook()
	return c
}

func (a *Agent) handleConnectorOpen(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	c := a.connectorOf(w, r)
	if c == nil {
		return
	}
	defer c.Answered(began)
	var req connectorOpenRequest
	if !jsonhttp.Decode(w, r, maxOpenBody, &req) {
		c.BadRequest()
		return
	}
	res, err := c.Open(OpenOptions{Tenant: req.Tenant, Class: req.Class, Session: req.Session, User: req.User})
	writeOpen(w, res, err)
}

func (a *Agent) handleConnectorClose(w http.ResponseWriter, r *http.Request) {
	c := a.connectorOf(w, r)
	if c == nil {
		return
	}
	d, err := c.Close(r.PathValue("session"))
	switch {
	case errors.Is(err, ErrUnknownSession):
		jsonhttp.Error(w, http.StatusNotFound, err.Error())
	case err != nil:
		c.BadRequest()
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
	default:
		jsonhttp.Write(w, http.StatusOK, map[string]float64{"duration_seconds": d.Seconds()})
	}
}

func (a *Agent) handleConnectorReconcile(w http.ResponseWriter, r *http.Request) {
	c := a.connectorOf(w, r)
	if c == nil {
		return
	}
	var req reconcileRequest
	if !jsonhttp.Decode(w, r, maxReconcileBody, &req) {
		c.BadRequest()
		return
	}
	if req.Sessions == nil {
		c.BadRequest()
		jsonhttp.Error(w, http.StatusBadRequest, `missing "sessions" (send [] to close every session of the connector)`)
		return
	}
	res, err := c.Reconcile(ReconcileScope{}, req.Sessions)
	if err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	jsonhttp.Write(w, http.StatusOK, res)
}

func (a *Agent) handleConnectorList(w http.ResponseWriter, r *http.Request) {
	c, err := a.Connector(r.PathValue("name"))
	if err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	jsonhttp.Write(w, http.StatusOK, map[string]any{"sessions": c.Sessions()})
}

func (a *Agent) handleConnectorRefusal(w http.ResponseWriter, r *http.Request) {
	c := a.connectorOf(w, r)
	if c == nil {
		return
	}
	var req refusalRequest
	if !jsonhttp.Decode(w, r, maxOpenBody, &req) {
		c.BadRequest()
		return
	}
	if _, err := validSource(req.Reason); req.Reason == "" || len(req.Reason) > maxReasonLen || err != nil {
		c.BadRequest()
		jsonhttp.Error(w, http.StatusBadRequest, fmt.Sprintf("reason %q: want 1 to %d lower-case letters, digits or '-'", req.Reason, maxReasonLen))
		return
	}
	c.Refuse(req.Reason)
	jsonhttp.Write(w, http.StatusOK, map[string]bool{"ok": true})
}
