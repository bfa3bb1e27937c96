package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
)

// TestACLEveryRoute checks every operation the OpenAPI document lists
// against every role, through the real routes and the gate, with the
// handlers replaced by a stub (so that no request changes anything): the
// policy below is the issue's, written out independently of acl.go.
func TestACLEveryRoute(t *testing.T) {
	f := newGateFixture(t)
	public := map[string]bool{"GET /healthz": true, "POST /v1/acl/bootstrap": true, "GET /": true, "GET /ui/": true,
		"GET /v1/raft/stats": true}
	scoped := map[string]bool{"GET /v1/tenants": true, "GET /v1/events": true, "GET /metrics": true}
	ownTenant := map[string]bool{"GET /v1/tenants/{id}": true, "GET /v1/tenants/{id}/usage": true,
		"GET /v1/tenants/{id}/advice": true, "GET /v1/tenants/{id}/schedule": true, "GET /v1/tenants/{id}/history": true}
	operatorReads := map[string]bool{"GET /v1/tokens": true, "GET /v1/snapshot": true, "GET /v1/keyring": true,
		"GET /v1/keyring/local": true}
	const passed = 299
	gate := f.s.aclGate(f.s.mux(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(passed) }))
	roles := []struct {
		name   string
		secret string
	}{{"none", ""}, {"bad", "not-a-secret"}, {"agent", f.ag.Secret}, {"tenant", f.tenant.Secret}, {"reader", f.reader.Secret}, {"operator", f.operator.Secret}}
	checked := 0
	for _, op := range apiOps {
		key := op.method + " " + op.path
		for _, id := range []string{"acme", "globex"} {
			if id == "globex" && !strings.Contains(op.path, "{id}") {
				continue
			}
			path := examplePath(strings.ReplaceAll(op.path, "{id}", id))
			for _, role := range roles {
				want := http.StatusForbidden
				switch {
				case public[key]:
					want = passed
				case role.name == "none" || role.name == "bad":
					want = http.StatusUnauthorized
				case role.name == "operator":
					want = passed
				case role.name == "reader" && op.method == "GET" && !operatorReads[key]:
					want = passed
				case role.name == "tenant" && scoped[key]:
					want = passed
				case role.name == "tenant" && ownTenant[key] && id == "acme":
					want = passed
				case role.name == "tenant" && ownTenant[key]:
					want = http.StatusNotFound // as a tenant that does not exist
				}
				req := httptest.NewRequest(op.method, path, nil)
				req.RemoteAddr = fmt.Sprintf("198.51.100.%d:1234", checked%250) // spread: wrong secrets are rate-limited per address
				if role.secret != "" {
					req.Header.Set("Authorization", "Bearer "+role.secret)
				}
				rec := httptest.NewRecorder()
				gate.ServeHTTP(rec, req)
				if rec.Code != want {
					t.Errorf("%s token: %s %s: %d, want %d (%s)", role.name, op.method, path, rec.Code, want, rec.Body)
				}
				checked++
			}
		}
	}
	if checked < 6*25 {
		t.Fatalf("checked only %d (route, role) pairs", checked)
	}
}

// gateFixture is an API with ACLs on, bootstrapped, with a token of each
// role and two tenants, on a Raft cluster of its own.
type gateFixture struct {
	s                            *Server
	operator, reader, tenant, ag TokenJSON
}

func newGateFixture(t *testing.T) *gateFixture {
	s := raftAPI(t, func(c *Config) { c.ACL = true })
	h := s.Handler()
	call := func(method, path, secret, body string) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if secret != "" {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	token := func(rec *httptest.ResponseRecorder) TokenJSON {
		t.Helper()
		var tk TokenJSON
		if rec.Code != http.StatusCreated || json.Unmarshal(rec.Body.Bytes(), &tk) != nil || tk.Secret == "" {
			t.Fatalf("token: %d %s", rec.Code, rec.Body)
		}
		return tk
	}
	f := &gateFixture{s: s, operator: token(call("POST", "/v1/acl/bootstrap", "", ""))}
	for _, r := range []struct {
		tk           *TokenJSON
		role, tenant string
	}{{&f.reader, fsm.RoleReader, ""}, {&f.tenant, fsm.RoleTenant, "acme"}, {&f.ag, fsm.RoleAgent, ""}} {
		*r.tk = token(call("POST", "/v1/tokens", f.operator.Secret, `{"role":"`+r.role+`","tenant":"`+r.tenant+`"}`))
	}
	for _, tn := range []string{"acme", "globex"} {
		if rec := call("PUT", "/v1/tenants/"+tn+"/plan", f.operator.Secret, `{"plan":"starter"}`); rec.Code != 200 {
			t.Fatalf("set plan %s: %d %s", tn, rec.Code, rec.Body)
		}
	}
	return f
}
