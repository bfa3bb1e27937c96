package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/cluster"
	"github.com/headroom-rtc/headroom/internal/jsonhttp"
)

// HTTP access control. With Config.ACL set, every request but the public
// ones (health, the one-time bootstrap, the dashboard's static files)
// needs `Authorization: Bearer SECRET` of a live token: 401 without one or
// with a bad one, 403 when the token's role may not do this. Tokens of
// role tenant read only their tenant: any other tenant answers 404 exactly
// as one that does not exist, and lists, events and metrics leave the
// others out.

// access is what a route requires.
type access uint8

const (
	accessPublic   access = iota + 1 // no token
	accessRead                       // reader or operator
	accessTenant                     // reader, operator, or the tenant's own token ({id})
	accessScoped                     // reader, operator, or a tenant token (the handler filters)
	accessOperator                   // operator
)

// routeAccess classifies a route pattern of the mux ("METHOD /path").
func routeAccess(pattern string) access {
	method, path, _ := strings.Cut(pattern, " ")
	switch pattern {
	case "GET /healthz", "POST /v1/acl/bootstrap", "GET /", "GET /{$}", "GET /ui/":
		return accessPublic
	case "GET " + cluster.StatsPath:
		// Raft indexes and term, which every server's autopilot reads
		// from the others: nothing a tenant or a guess could use.
		return accessPublic
	case "GET /v1/tenants", "GET /v1/events", "GET /metrics":
		return accessScoped
	}
	switch {
	case method != "GET" && method != "HEAD":
		return accessOperator
	case strings.HasPrefix(path, "/v1/tenants/{id}"):
		return accessTenant // reads of one tenant: its own token may
	case path == "/v1/tokens" || path == "/v1/snapshot":
		return accessOperator // secrets' metadata; the whole state
	case strings.HasPrefix(path, "/v1/keyring"):
		return accessOperator // the gossip keys
	}
	return accessRead
}

// serverPath reports whether servers call the route on each other: with
// mutual TLS their certificates let them through; otherwise an operator
// token is needed (a server leaving on SIGTERM without mutual TLS cannot
// remove itself, and is reaped after --dead-server-reap).
func serverPath(pattern string) bool {
	_, path, _ := strings.Cut(pattern, " ")
	return path == cluster.RemovePeerPath || path == cluster.KeyringLocalPath
}

type tokenKey struct{}

// requestToken is the token a request was authorised with (nil when ACLs
// are off or the route is public).
func requestToken(r *http.Request) *fsm.Token {
	tk, _ := r.Context().Value(tokenKey{}).(*fsm.Token)
	return tk
}

// tenantScope returns the only tenant a request may see, or "" for all.
func tenantScope(r *http.Request) string {
	if tk := requestToken(r); tk != nil && tk.Role == fsm.RoleTenant {
		return tk.Tenant
	}
	return ""
}

// bearer returns the secret of an Authorization: Bearer header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// aclGate authorises requests to mux's routes, then serves them with
// next (mux, wrapped).
func (s *Server) aclGate(mux *http.ServeMux, next http.Handler) http.Handler {
	if !s.cfg.ACL {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		need := routeAccess(pattern)
		if pattern == "" || need == accessPublic {
			next.ServeHTTP(w, r) // public, or the mux's own 404/405
			return
		}
		if serverPath(pattern) && s.cfg.TLS != nil && s.cfg.TLS.PeerIsServer(r.TLS) {
			next.ServeHTTP(w, r) // another server, by its verified certificate
			return
		}
		host := remoteHost(r)
		if s.authFails.Blocked(host) {
			w.Header().Set("Retry-After", "1")
			jsonhttp.Error(w, http.StatusTooManyRequests, "too many failed authentications from this address; retry later")
			return
		}
		secret := bearer(r)
		var tk *fsm.Token
		if secret != "" {
			s.fsm.Read(func(st fsm.View) {
				if t := st.TokenBySecret(secret); t != nil {
					c := *t
					tk = &c
				}
			})
		}
		if tk == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="headroom"`)
			if secret == "" {
				jsonhttp.Error(w, http.StatusUnauthorized, "this server requires a token: Authorization: Bearer SECRET")
			} else {
				s.authFails.Fail(host) // a wrong secret, not a missing one
				jsonhttp.Error(w, http.StatusUnauthorized, "unknown or revoked token")
			}
			return
		}
		if code, msg := allowed(tk, need, pattern, r); code != 0 {
			jsonhttp.Error(w, code, msg)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenKey{}, tk)))
	})
}

// allowed reports whether tk may use a route: 0, or the code and message
// to answer.
func allowed(tk *fsm.Token, need access, pattern string, r *http.Request) (int, string) {
	switch tk.Role {
	case fsm.RoleOperator:
		return 0, ""
	case fsm.RoleReader:
		if need == accessOperator {
			return http.StatusForbidden, "a reader token may not do this"
		}
		return 0, ""
	case fsm.RoleTenant:
		switch need {
		case accessScoped:
			return 0, ""
		case accessTenant:
			if id := tenantIDOf(pattern, r); id != tk.Tenant {
				return http.StatusNotFound, fmt.Sprintf("no tenant %q", id)
			}
			return 0, ""
		}
		return http.StatusForbidden, "a tenant token reads only its tenant"
	}
	return http.StatusForbidden, "an agent token may only open agent streams"
}

// tenantIDOf is the {id} of a /v1/tenants/{id}... request (the mux sets
// path values only once it routes, after the gate).
func tenantIDOf(pattern string, r *http.Request) string {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v1/tenants/")
	if !ok {
		return ""
	}
	seg, _, _ := strings.Cut(rest, "/")
	id, err := url.PathUnescape(seg)
	if err != nil {
		return seg
	}
	return id
}

func remoteHost(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// FailLimiter slows down guessing: an address with more than burst failed
// authentications within window is refused (429) until the window passes.
type FailLimiter struct {
	mu     sync.Mutex
	now    func() time.Time
	burst  int
	window time.Duration
	fails  map[string][]time.Time
}

func newFailLimiter(now func() time.Time) *FailLimiter {
	return &FailLimiter{now: now, burst: 20, window: 10 * time.Second, fails: make(map[string][]time.Time)}
}

func (l *FailLimiter) prune(host string, now time.Time) []time.Time {
	ts := l.fails[host]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > l.window {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.fails, host)
	} else {
		l.fails[host] = ts
	}
	return ts
}

func (l *FailLimiter) Blocked(host string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.prune(host, l.now())) >= l.burst
}

func (l *FailLimiter) Fail(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	ts := l.prune(host, now)
	if len(l.fails) >= 100_000 && len(ts) == 0 {
		return // bounded: under a flood of addresses, forget new ones
	}
	l.fails[host] = append(ts, now)
}

// TokenJSON is a token as the API shows it; Secret only when created.
type TokenJSON struct {
	Accessor    string `json:"accessor"`
	Secret      string `json:"secret,omitempty"`
	Role        string `json:"role"`
	Tenant      string `json:"tenant,omitempty"`
	Description string `json:"description,omitempty"`
	Created     string `json:"created,omitempty"`
	CreatedBy   string `json:"created_by,omitempty"`
}

func tokenJSON(tk *fsm.Token) TokenJSON {
	return TokenJSON{Accessor: tk.Accessor, Role: tk.Role, Tenant: tk.Tenant, Description: tk.Description,
		Created: fsm.FormatTime(tk.Created), CreatedBy: tk.CreatedBy}
}

// handleBootstrap creates the first operator token, once.
func (s *Server) handleBootstrap(w http.ResponseWriter, r *http.Request) {
	var done bool
	s.fsm.Read(func(st fsm.View) { done = st.ACLBootstrapped() })
	if done {
		jsonhttp.Error(w, http.StatusForbidden, "ACL already bootstrapped: create tokens with an operator token")
		return
	}
	s.createToken(w, r, fsm.Token{Role: fsm.RoleOperator, Description: "bootstrap"}, true)
}

func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Role        string `json:"role"`
		Tenant      string `json:"tenant"`
		Description string `json:"description"`
	}
	if !jsonhttp.Decode(w, r, maxBody, &body) {
		return
	}
	tk := fsm.Token{Role: body.Role, Tenant: body.Tenant, Description: body.Description}
	if by := requestToken(r); by != nil {
		tk.CreatedBy = by.Accessor
	}
	s.createToken(w, r, tk, false)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, tk fsm.Token, bootstrap bool) {
	accessor, secret := fsm.NewSecret()
	tk.Accessor, tk.SecretHash, tk.Created = accessor, fsm.HashSecret(secret), s.stamp()
	if bootstrap {
		tk.CreatedBy = "bootstrap"
	}
	if res, _ := s.commit(w, fsm.CmdTokenCreate, &fsm.TokenCreateCmd{Time: tk.Created, Token: tk, Bootstrap: bootstrap, Operator: operator(r)}); res == nil {
		return
	}
	out := tokenJSON(&tk)
	out.Secret = secret
	jsonhttp.Write(w, http.StatusCreated, out)
}

func (s *Server) handleTokens(w http.ResponseWriter, r *http.Request) {
	var out []TokenJSON
	s.fsm.Read(func(st fsm.View) {
		out = make([]TokenJSON, 0, st.NumTokens())
		for _, tk := range st.Tokens() {
			out = append(out, tokenJSON(tk))
		}
	})
	sort.Slice(out, func(i, j int) bool {
		return out[i].Created < out[j].Created || out[i].Created == out[j].Created && out[i].Accessor < out[j].Accessor
	})
	jsonhttp.Write(w, http.StatusOK, out)
}

func (s *Server) handleRevokeToken(w http.ResponseWriter, r *http.Request) {
	acc := r.PathValue("accessor")
	if res, _ := s.commit(w, fsm.CmdTokenRevoke, &fsm.TokenRevokeCmd{Time: s.stamp(), Accessor: acc, Operator: operator(r)}); res != nil {
		jsonhttp.Write(w, http.StatusOK, map[string]string{"revoked": acc})
	}
}

// aclRoutes registers the token endpoints.
func (s *Server) aclRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/acl/bootstrap", s.leaderOnly(s.handleBootstrap))
	mux.HandleFunc("POST /v1/tokens", s.leaderOnly(s.handleCreateToken))
	mux.HandleFunc("GET /v1/tokens", s.consistentRead(s.handleTokens))
	mux.HandleFunc("DELETE /v1/tokens/{accessor}", s.leaderOnly(s.handleRevokeToken))
}
