package emqx

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/headroom-rtc/headroom/agent"
	"github.com/headroom-rtc/headroom/agent/agenttest"
	"github.com/headroom-rtc/headroom/wire"
)

type rig struct {
	t   *testing.T
	a   *agent.Agent
	srv *httptest.Server
}

func newRig(t *testing.T, tenants ...wire.TenantInfo) *rig {
	t.Helper()
	a, _ := agenttest.StartAgent(t, tenants...)
	c, err := New(a, Config{Separator: "_"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, h := range c.Routes() {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &rig{t: t, a: a, srv: srv}
}

func testdata(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// with returns a copy of a documented body with fields replaced.
func with(m map[string]any, kv ...any) []byte {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		c[kv[i].(string)] = kv[i+1]
	}
	b, _ := json.Marshal(c)
	return b
}

func (r *rig) post(path string, body []byte) (int, string) {
	r.t.Helper()
	resp, err := http.Post(r.srv.URL+path, "application/json", strings.NewReader(string(body)))
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (r *rig) auth(body []byte, want string) {
	r.t.Helper()
	code, got := r.post("/hooks/emqx/auth", body)
	if code != 200 || got != `{"result":"`+want+`"}` {
		r.t.Fatalf("auth %s: %d %s, want 200 %s", body, code, got, want)
	}
}

func (r *rig) event(body []byte) {
	r.t.Helper()
	if code, got := r.post("/hooks/emqx/events", body); code != http.StatusNoContent {
		r.t.Fatalf("event %s: %d %s", body, code, got)
	}
}

func (r *rig) open(want int) {
	r.t.Helper()
	if got := r.a.Status().OpenSessions; got != want {
		r.t.Fatalf("%d sessions open at the agent, want %d: %+v", got, want, r.a.Sessions(""))
	}
}

// The documented bodies, each delivered twice and out of order; a takeover.
func TestEventsDedupReorderTakeover(t *testing.T) {
	r := newRig(t, wire.TenantInfo{Tenant: "u", Plan: "p", Mode: "soft", Ceiling: 2})
	authB, conn, disc := testdata(t, "auth.json"), testdata(t, "client_connected.json"), testdata(t, "client_disconnected.json")

	r.auth(with(authB), "allow")
	r.open(1) // reserved at auth
	r.event(with(conn))
	r.event(with(conn)) // twice
	r.open(1)
	if s := r.a.Sessions(""); s[0].Session != "mqtt:c_emqx" || s[0].Class != "device" || s[0].TTLSeconds != 0 || s[0].Source != Name {
		t.Fatalf("after client_connected: %+v", s[0])
	}
	r.event(with(disc))
	r.event(with(disc))
	r.open(0)
	r.event(with(conn)) // the connected event again, late: the connection is over
	r.open(0)

	// Reordered: a connection's disconnect arrives before its connect.
	r.auth(with(authB, "clientid", "c2"), "allow")
	r.event(with(disc, "clientid", "c2", "disconnected_at", 2000))
	r.event(with(conn, "clientid", "c2", "connected_at", 1000))
	r.open(0)

	// A takeover: c3 connects again under its id; the old connection's
	// disconnect (takenover) closes nothing; counted once.
	r.auth(with(authB, "clientid", "c3"), "allow")
	r.event(with(conn, "clientid", "c3", "connected_at", 5000))
	r.auth(with(authB, "clientid", "c3"), "allow")
	r.event(with(disc, "clientid", "c3", "disconnected_at", 5500, "reason", "takenover"))
	r.event(with(conn, "clientid", "c3", "connected_at", 6000))
	r.event(with(disc, "clientid", "c3", "disconnected_at", 5500)) // an older connection's, reason aside
	r.open(1)
	r.auth(with(authB, "clientid", "c4"), "allow") // counted once: room for one more
	r.auth(with(authB, "clientid", "c5"), "deny")  // ceiling 2
	r.event(with(disc, "clientid", "c3", "disconnected_at", 7000))
	r.open(1) // c4's reservation
}

// A body the hooks cannot read: deny from the authenticator (a 4xx would
// make EMQX ignore it and move on), 400 from the events; nothing stored.
func TestBadBodies(t *testing.T) {
	r := newRig(t, wire.TenantInfo{Tenant: "u", Plan: "p", Mode: "meter"})
	for _, b := range []string{`{`, `[]`, `{"username":"u_x"}`, `{"clientid":17}`, ""} {
		r.auth([]byte(b), "deny")
	}
	r.auth([]byte(`{"clientid":"c1","username":"_x"}`), "deny") // no tenant before the separator
	r.auth([]byte(`{"clientid":"c1","username":"nobody_x"}`), "deny")
	for _, b := range []string{`{`, `{"event":"client.connected","clientid":"c1"}`, `{"event":"session.subscribed","clientid":"c1","connected_at":1}`,
		`{"event":"client.disconnected","connected_at":1}`} {
		if code, got := r.post("/hooks/emqx/events", []byte(b)); code != http.StatusBadRequest {
			t.Fatalf("event %s: %d %s, want 400", b, code, got)
		}
	}
	r.open(0)
	if st := r.a.Status().Connectors[Name]; st.BadRequests != 9 || st.Refused[agent.ReasonUnmappedTenant] != 1 || st.Refused[agent.ReasonUnknownTenant] != 1 {
		t.Fatalf("connector status %+v", st)
	}
}

// A client_connected without a reservation (the agent restarted between
// auth and connect): the device is there, so it is counted.
func TestConnectedWithoutReservation(t *testing.T) {
	r := newRig(t, wire.TenantInfo{Tenant: "u", Plan: "p", Mode: "meter"})
	r.event(with(testdata(t, "client_connected.json")))
	r.open(1)
}
