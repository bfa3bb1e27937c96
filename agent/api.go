package agent

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/headroom-rtc/headroom/internal/jsonhttp"
)

// The local HTTP API, for the media server on the same host. Every response
// is JSON; every error body is {"error":"..."}.
//
//	POST   /v1/sessions                     open (201 admitted, 200 already open, 429 refused, 409 conflict)
//	PUT    /v1/sessions                     reconcile with the full list of live sessions (of source "api" only)
//	GET    /v1/sessions?tenant=t            list open sessions, sorted by id
//	DELETE /v1/sessions/{session}           close (200 with duration_seconds, 404 unknown)
//	POST   /v1/sessions/{session}/keepalive keepalive (200, 404 unknown)
//	POST   /v1/reset                        close every session
//	GET    /v1/status                       the agent's status
//	       /v1/connectors/{name}/...        a connector outside the agent (connector_api.go)
//	GET    /healthz                         200 once the state is loaded
//	GET    /metrics                         Prometheus metrics (metrics.go)

// Body limits.
const (
	maxOpenBody      = 64 << 10
	maxReconcileBody = 16 << 20
)

// Handler returns the local HTTP API. It is safe for concurrent use.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sessions", a.handleOpen)
	mux.HandleFunc("PUT /v1/sessions", a.handleReconcile)
	mux.HandleFunc("GET /v1/sessions", a.handleList)
	mux.HandleFunc("DELETE /v1/sessions/{session}", a.handleClose)
	mux.HandleFunc("POST /v1/sessions/{session}/keepalive", a.handleKeepalive)
	mux.HandleFunc("POST /v1/reset", a.handleReset)
	mux.HandleFunc("POST /v1/connectors/{name}/sessions", a.handleConnectorOpen)
	mux.HandleFunc("PUT /v1/connectors/{name}/sessions", a.handleConnectorReconcile)
	mux.HandleFunc("GET /v1/connectors/{name}/sessions", a.handleConnectorList)
	mux.HandleFunc("DELETE /v1/connectors/{name}/sessions/{session}", a.handleConnectorClose)
	mux.HandleFunc("POST /v1/connectors/{name}/refusals", a.handleConnectorRefusal)
	mux.HandleFunc("GET /v1/status", a.handleStatus)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		jsonhttp.Write(w, http.StatusOK, map[string]bool{"ok": true})
	})
	mux.Handle("GET /metrics", a.metricsHandler())
	return jsonhttp.Errors(mux)
}

type openRequest struct {
	Tenant     string   `json:"tenant"`
	Class      string   `json:"class"`
	Session    string   `json:"session"`
	TTLSeconds *float64 `json:"ttl_seconds"`
	// Source (optional, default "api"): e.g. "livekit" for a reservation
	// made by a LiveKit token endpoint, so that the LiveKit connector's
	// reconcile owns it.
	Source string `json:"source"`
	// User (optional): the session's user, counted among the tenant's
	// active users.
	User string `json:"user"`
}

type openResponse struct {
	Admitted bool   `json:"admitted"`
	Reason   string `json:"reason,omitempty"`
}

func (a *Agent) handleOpen(w http.ResponseWriter, r *http.Request) {
	var req openRequest
	if !jsonhttp.Decode(w, r, maxOpenBody, &req) {
		return
	}
	var ttl time.Duration
	if req.TTLSeconds != nil {
		s := *req.TTLSeconds
		if math.IsNaN(s) || s < 0 || s > MaxTTL.Seconds() {
			jsonhttp.Error(w, http.StatusBadRequest, fmt.Sprintf("ttl_seconds %v: want 0 (none) up to %v", s, MaxTTL.Seconds()))
			return
		}
		ttl = time.Duration(s * float64(time.Second))
	}
	res, err := a.OpenWith(OpenOptions{Tenant: req.Tenant, Class: req.Class, Session: req.Session, TTL: ttl, Source: req.Source, User: req.User})
	writeOpen(w, res, err)
}

// writeOpen answers an open: 201 admitted, 200 already open, 429 refused
// (with Retry-After), 409 a conflict, 400 bad input.
func writeOpen(w http.ResponseWriter, res OpenResult, err error) {
	switch {
	case errors.Is(err, ErrConflict):
		jsonhttp.Error(w, http.StatusConflict, err.Error())
	case err != nil:
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
	case !res.Admitted:
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(res.RetryAfter/time.Second))))
		jsonhttp.Write(w, http.StatusTooManyRequests, openResponse{Reason: res.Reason})
	case res.Existing:
		jsonhttp.Write(w, http.StatusOK, openResponse{Admitted: true})
	default:
		jsonhttp.Write(w, http.StatusCreated, openResponse{Admitted: true})
	}
}

func (a *Agent) handleClose(w http.ResponseWriter, r *http.Request) {
	d, err := a.Close(r.PathValue("session"))
	switch {
	case errors.Is(err, ErrUnknownSession):
		jsonhttp.Error(w, http.StatusNotFound, err.Error())
	case err != nil:
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
	default:
		jsonhttp.Write(w, http.StatusOK, map[string]float64{"duration_seconds": d.Seconds()})
	}
}

func (a *Agent) handleKeepalive(w http.ResponseWriter, r *http.Request) {
	err := a.Keepalive(r.PathValue("session"))
	switch {
	case errors.Is(err, ErrUnknownSession):
		jsonhttp.Error(w, http.StatusNotFound, err.Error())
	case err != nil:
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
	default:
		jsonhttp.Write(w, http.StatusOK, map[string]bool{"ok": true})
	}
}

func (a *Agent) handleReset(w http.ResponseWriter, r *http.Request) {
	jsonhttp.Write(w, http.StatusOK, map[string]int{"closed": a.Reset()})
}

type reconcileRequest struct {
	Sessions []SessionSpec `json:"sessions"`
}

func (a *Agent) handleReconcile(w http.ResponseWriter, r *http.Request) {
	var req reconcileRequest
	if !jsonhttp.Decode(w, r, maxReconcileBody, &req) {
		return
	}
	if req.Sessions == nil {
		jsonhttp.Error(w, http.StatusBadRequest, `missing "sessions" (send [] to close every session)`)
		return
	}
	res, err := a.ReconcileScoped(ReconcileScope{}, req.Sessions)
	if err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	jsonhttp.Write(w, http.StatusOK, res)
}

func (a *Agent) handleList(w http.ResponseWriter, r *http.Request) {
	tenant := r.URL.Query().Get("tenant")
	if tenant != "" {
		if err := validTenantID(tenant); err != nil {
			jsonhttp.Error(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	jsonhttp.Write(w, http.StatusOK, a.Sessions(tenant))
}

func (a *Agent) handleStatus(w http.ResponseWriter, r *http.Request) {
	jsonhttp.Write(w, http.StatusOK, a.Status())
}
