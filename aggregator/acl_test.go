package aggregator

import (
	"bufio"
	"context"
	"encoding/json"
	"github.com/headroom-rtc/headroom/aggregator/api"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/stream"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/wire"
)

func withACL(c *Config) { c.ACL = true }

// do sends a request with a bearer secret ("" for none) through the
// server's handler.
func do(t *testing.T, s *Server, method, path, secret, body string) *httptest.ResponseRecorder {
	t.Helper()
	var req *http.Request
	if body != "" {
		req = httptest.NewRequest(method, path, strings.NewReader(body))
	} else {
		req = httptest.NewRequest(method, path, nil)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	rec := httptest.NewRecorder()
	s.api.Handler().ServeHTTP(rec, req)
	return rec
}

func createToken(t *testing.T, s *Server, operator, role, tenant string) api.TokenJSON {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"role": role, "tenant": tenant})
	rec := do(t, s, "POST", "/v1/tokens", operator, string(body))
	var tk api.TokenJSON
	if rec.Code != http.StatusCreated || json.Unmarshal(rec.Body.Bytes(), &tk) != nil || tk.Secret == "" {
		t.Fatalf("create %s token: %d %s", role, rec.Code, rec.Body)
	}
	return tk
}

// aclFixture is a server with ACLs on, bootstrapped, with a token of each
// role and two tenants.
type aclFixture struct {
	s                            *Server
	operator, reader, tenant, ag api.TokenJSON
}

func newACLFixture(t *testing.T) *aclFixture {
	clock := &fakeClock{t: time.Date(2026, 11, 3, 8, 0, 0, 0, time.UTC)}
	s := newTestServer(t, clock, withACL)
	rec := do(t, s, "POST", "/v1/acl/bootstrap", "", "")
	var op api.TokenJSON
	if rec.Code != http.StatusCreated || json.Unmarshal(rec.Body.Bytes(), &op) != nil || op.Secret == "" || op.Role != fsm.RoleOperator {
		t.Fatalf("bootstrap: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, s, "POST", "/v1/acl/bootstrap", "", ""); rec.Code != http.StatusForbidden {
		t.Fatalf("second bootstrap: %d %s", rec.Code, rec.Body)
	}
	f := &aclFixture{s: s, operator: op}
	f.reader = createToken(t, s, op.Secret, fsm.RoleReader, "")
	f.tenant = createToken(t, s, op.Secret, fsm.RoleTenant, "acme")
	f.ag = createToken(t, s, op.Secret, fsm.RoleAgent, "")
	for _, tn := range []string{"acme", "globex"} {
		if rec := do(t, s, "PUT", "/v1/tenants/"+tn+"/plan", op.Secret, `{"plan":"starter"}`); rec.Code != 200 {
			t.Fatalf("set plan %s: %d %s", tn, rec.Code, rec.Body)
		}
	}
	return f
}

func TestACLAuthentication(t *testing.T) {
	f := newACLFixture(t)
	s := f.s
	if rec := do(t, s, "GET", "/healthz", "", ""); rec.Code != 200 {
		t.Errorf("healthz without a token: %d", rec.Code)
	}
	if rec := do(t, s, "GET", "/v1/tenants/acme", "", ""); rec.Code != 401 || rec.Header().Get("WWW-Authenticate") == "" {
		t.Errorf("no token: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, s, "GET", "/v1/tenants/acme", "not-a-secret", ""); rec.Code != 401 {
		t.Errorf("bad token: %d %s", rec.Code, rec.Body)
	}
	// Tokens are listed without secrets; a revoked one stops working.
	rec := do(t, s, "GET", "/v1/tokens", f.operator.Secret, "")
	if rec.Code != 200 || strings.Contains(rec.Body.String(), f.reader.Secret) || !strings.Contains(rec.Body.String(), f.reader.Accessor) {
		t.Fatalf("token list: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, s, "DELETE", "/v1/tokens/"+f.reader.Accessor, f.operator.Secret, ""); rec.Code != 200 {
		t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, s, "GET", "/v1/plans", f.reader.Secret, ""); rec.Code != 401 {
		t.Errorf("revoked token: %d", rec.Code)
	}
	// The audit log names tokens by accessor, never by secret.
	rec = do(t, s, "GET", "/v1/audit", f.operator.Secret, "")
	if strings.Contains(rec.Body.String(), f.operator.Secret) || !strings.Contains(rec.Body.String(), "token:"+f.operator.Accessor) {
		t.Errorf("audit: %s", rec.Body)
	}
	// Guessing is slowed down: after a burst of failures, 429.
	for i := 0; i < 30; i++ {
		do(t, s, "GET", "/v1/plans", "guess", "")
	}
	if rec := do(t, s, "GET", "/v1/plans", f.operator.Secret, ""); rec.Code != http.StatusTooManyRequests {
		t.Errorf("after 30 failures from one address: %d", rec.Code)
	}
}

func TestACLRoles(t *testing.T) {
	f := newACLFixture(t)
	for _, c := range []struct {
		token        *api.TokenJSON
		method, path string
		body         string
		want         int
	}{
		{&f.reader, "GET", "/v1/tenants/globex", "", 200},
		{&f.reader, "GET", "/v1/status", "", 200},
		{&f.reader, "PUT", "/v1/tenants/acme/plan", `{"plan":"growth"}`, 403},
		{&f.reader, "GET", "/v1/tokens", "", 403},
		{&f.reader, "GET", "/v1/snapshot", "", 403},
		{&f.tenant, "GET", "/v1/tenants/acme", "", 200},
		{&f.tenant, "GET", "/v1/tenants/acme/usage", "", 200},
		{&f.tenant, "GET", "/v1/tenants/acme/advice", "", 200},
		{&f.tenant, "GET", "/v1/tenants/globex", "", 404},
		{&f.tenant, "GET", "/v1/tenants/globex/usage", "", 404},
		{&f.tenant, "GET", "/v1/tenants/nobody", "", 404},
		{&f.tenant, "GET", "/v1/audit", "", 403},
		{&f.tenant, "GET", "/v1/agents", "", 403},
		{&f.tenant, "PUT", "/v1/tenants/acme/plan", `{"plan":"growth"}`, 403},
		{&f.ag, "GET", "/v1/tenants/acme", "", 403},
		{&f.operator, "PUT", "/v1/tenants/acme/plan", `{"plan":"growth","at":"now"}`, 200},
	} {
		rec := do(t, f.s, c.method, c.path, c.token.Secret, c.body)
		if rec.Code != c.want {
			t.Errorf("%s token: %s %s: %d %s, want %d", c.token.Role, c.method, c.path, rec.Code, rec.Body, c.want)
		}
	}
	// Lists show a tenant token its tenant only.
	rec := do(t, f.s, "GET", "/v1/tenants", f.tenant.Secret, "")
	var list []fsm.TenantJSON
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &list) != nil || len(list) != 1 || list[0].Tenant != "acme" || strings.Contains(rec.Body.String(), "globex") {
		t.Errorf("tenant list with a tenant token: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, f.s, "GET", "/v1/tenants", f.reader.Secret, ""); !strings.Contains(rec.Body.String(), "globex") {
		t.Errorf("tenant list with a reader token: %d %s", rec.Code, rec.Body)
	}
	// Another tenant is indistinguishable from one that does not exist.
	a := do(t, f.s, "GET", "/v1/tenants/globex", f.tenant.Secret, "")
	b := do(t, f.s, "GET", "/v1/tenants/nobody", f.operator.Secret, "")
	if a.Code != b.Code || strings.ReplaceAll(a.Body.String(), "globex", "X") != strings.ReplaceAll(b.Body.String(), "nobody", "X") {
		t.Errorf("other tenant %d %s vs missing tenant %d %s", a.Code, a.Body, b.Code, b.Body)
	}
}

// TestACLAgentStream: with ACLs on, an agent stream needs the secret of an
// agent (or operator) token in Hello.
func TestACLAgentStream(t *testing.T) {
	f := newACLFixture(t)
	hello := func(token string) wire.Message {
		t.Helper()
		nc, err := net.Dial("tcp", f.s.WireAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if err := wire.WriteFrame(nc, &wire.Hello{AgentID: "a1", Epoch: uint64(time.Now().UnixNano()), Version: wire.ProtocolVersion, Token: token}); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, err := wire.NewReader(nc, 0).Read()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, c := range []struct {
		name, token string
		ok          bool
	}{
		{"no token", "", false}, {"bad token", "nope", false}, {"reader token", f.reader.Secret, false},
		{"tenant token", f.tenant.Secret, false}, {"agent token", f.ag.Secret, true}, {"operator token", f.operator.Secret, true},
	} {
		m := hello(c.token)
		_, welcomed := m.(*wire.Welcome)
		if e, isErr := m.(*wire.Error); welcomed != c.ok || (!c.ok && (!isErr || e.Code != wire.CodeUnauthenticated)) {
			t.Errorf("%s: %#v", c.name, m)
		}
	}
}

// TestAgentLimits: an agent claiming more sessions than an agent may hold
// is refused before anything reaches the log.
func TestAgentLimits(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 3, 8, 0, 0, 0, time.UTC)}
	s := newTestServer(t, clock)
	nc, err := net.Dial("tcp", s.WireAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rd := wire.NewReader(nc, 0)
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	epoch := uint64(time.Now().UnixNano())
	if err := wire.WriteFrame(nc, &wire.Hello{AgentID: "big", Epoch: epoch, Version: wire.ProtocolVersion}); err != nil {
		t.Fatal(err)
	}
	if m, err := rd.Read(); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*wire.Welcome); !ok {
		t.Fatalf("hello: %#v", m)
	}
	if err := wire.WriteFrame(nc, &wire.FullState{AgentID: "big", Epoch: epoch, Seq: 1, Counts: []wire.CountEntry{{Tenant: "t", Class: "audio", Open: stream.MaxAgentSessions + 1}}}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := rd.Read()
		if err != nil {
			t.Fatalf("no error before the stream ended: %v", err)
		}
		if e, ok := m.(*wire.Error); ok {
			if e.Code != wire.CodeTooLarge {
				t.Fatalf("error %v", e)
			}
			break
		}
	}
	if code := get(t, s, "/v1/tenants/t", nil); code != http.StatusNotFound {
		t.Errorf("the refused full state reached the state: GET tenant %d", code)
	}
}

// TestACLWireMessages: with ACLs on, the first message of a stream must be
// a Hello with an agent or operator token; any other message type first is
// refused without effect.
func TestACLWireMessages(t *testing.T) {
	f := newACLFixture(t)
	for _, m := range []wire.Message{
		&wire.DeltaBatch{AgentID: "a1", Epoch: 1, Seq: 1, Entries: []wire.DeltaEntry{{Tenant: "acme", Class: "audio", Opened: 5}}},
		&wire.FullState{AgentID: "a1", Epoch: 1, Seq: 1, Counts: []wire.CountEntry{{Tenant: "acme", Class: "audio", Open: 5}}},
		&wire.GrantAsk{AgentID: "a1", ReqID: 1, Wants: []wire.GrantWant{{Tenant: "acme", Want: 5}}},
		&wire.Ping{Nonce: 1}, &wire.Pong{Nonce: 1},
	} {
		nc, err := net.Dial("tcp", f.s.WireAddr())
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := wire.WriteFrame(nc, m); err != nil {
			t.Fatal(err)
		}
		got, err := wire.NewReader(nc, 0).Read()
		nc.Close()
		if e, ok := got.(*wire.Error); err == nil && (!ok || e.Code != wire.CodeBadMessage) {
			t.Errorf("%T first: answered %#v", m, got)
		}
	}
	var total uint64
	f.s.fsm.Read(func(s fsm.View) { total = s.Tenant("acme").Open.Total() })
	if total != 0 {
		t.Errorf("acme counts %d sessions from streams that never said Hello", total)
	}
}

// TestACLTenantIsolationStreams: a tenant token's event stream and metrics
// carry its own tenant and never another's name or figures.
func TestACLTenantIsolationStreams(t *testing.T) {
	f := newACLFixture(t)
	base := "http://" + f.s.HTTPAddr()
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+f.tenant.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `tenant="acme"`) || strings.Contains(string(body), "globex") {
		t.Errorf("tenant token's metrics: %d, acme %v, globex %v", resp.StatusCode, strings.Contains(string(body), `tenant="acme"`), strings.Contains(string(body), "globex"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", base+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+f.tenant.Secret)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// globex changes first, then acme: the stream must show acme's change
	// and nothing of globex before it.
	for _, tn := range []string{"globex", "acme"} {
		if rec := do(t, f.s, "PUT", "/v1/tenants/"+tn+"/plan", f.operator.Secret, `{"plan":"growth","at":"now"}`); rec.Code != 200 {
			t.Fatalf("plan %s: %d %s", tn, rec.Code, rec.Body)
		}
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "globex") {
			t.Fatalf("a tenant token's event stream shows another tenant: %s", line)
		}
		if strings.HasPrefix(line, "data:") && strings.Contains(line, `"acme"`) && strings.Contains(line, "growth") {
			return
		}
	}
	t.Fatalf("the stream ended without acme's plan change: %v", sc.Err())
}
